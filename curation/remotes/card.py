"""The Hub dataset card (``README.md``) of a repo holding harvest datasets.

Contents:
    ``dataset_card``    YAML front matter (Hub conventions) plus a Markdown body per dataset
    ``size_category``   the Hub's ``size_categories`` bucket of a step count

The card is built from ``metadata.json`` alone (no step data is read) and is deterministic:
the same metadata gives the same bytes, so re-pushing an unchanged repo changes nothing.
Provenance is summarised with ``curate show``'s helpers after dropping every key that names a
credential (``SECRET_KEY_RE``), at any depth; no URL in the card keeps its credentials
(``collector.redact``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

import yaml

from collector import storage
from collector.errors import MissingExtraError, UsageError
from collector.redact import redact, redact_url
from curation.describe import plain_text, provenance_summary, step_text

__all__ = ["SECRET_KEY_RE", "dataset_card", "size_category"]

#: Keys dropped from provenance and lineage before they reach a card (case-insensitive).
SECRET_KEY_RE: Final = re.compile(r"token|secret|passw|credential|key", re.IGNORECASE)
#: Tags of every harvest repo; env ids are added after these.
BASE_TAGS: Final = ("harvest", "reinforcement-learning", "offline-rl", "gymnasium")
# The Hub's size_categories values (hub-docs datasets-cards); bucket i holds n < 10**(i + 3).
_SIZE_BUCKETS: Final = (
    *("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M"),
    *("100M<n<1B", "1B<n<10B", "10B<n<100B", "100B<n<1T"),
)


def size_category(n: int) -> str:
    """The Hub ``size_categories`` value for ``n`` rows (here: steps).

    >>> size_category(999), size_category(1000), size_category(10**12)
    ('n<1K', '1K<n<10K', 'n>1T')
    """
    return next((name for i, name in enumerate(_SIZE_BUCKETS) if n < 10 ** (i + 3)), "n>1T")


def _scrub(value: Any) -> Any:
    """``value`` without mapping keys that name credentials, recursively; overrides filtered.

    ``collector.redact.redact`` masks what it knows first; what is left of a broader
    ``SECRET_KEY_RE`` is dropped.
    """
    return _drop(redact(value))


def _drop(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop(v) for k, v in value.items() if not SECRET_KEY_RE.search(str(k))}
    if isinstance(value, list | tuple):
        # Hydra overrides are "key=value" strings: judge them by their key
        return [
            _drop(v)
            for v in value
            if not (isinstance(v, str) and "=" in v and SECRET_KEY_RE.search(v.split("=")[0]))
        ]
    return value


def _spec(spec: Any) -> Mapping[str, Any]:
    """An ``env_spec`` stored as a dict or as ``EnvSpec.to_json()`` text, as a dict ({} if none)."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            return {}
    return spec if isinstance(spec, Mapping) else {}


def _env_id(spec: Any) -> str | None:
    """The env id of an ``env_spec`` (dict or JSON text), or None."""
    return _spec(spec).get("id")


def _space(data: Any) -> str:
    """A space as Gymnasium prints it, e.g. ``Discrete(2)``; its JSON if it does not load."""
    from collector.errors import UnsupportedSpaceError
    from collector.spaces import space_from_json

    try:
        return repr(space_from_json(data))
    except (UnsupportedSpaceError, KeyError, TypeError, ValueError, AttributeError):
        return json.dumps(data, sort_keys=True)  # a card must render even for an odd space


def _cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines folded."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fenced(lang: str, text: str) -> str:
    return f"```{lang}\n{text.rstrip()}\n```"


def _statistics(meta: Mapping[str, Any], path: str) -> str:
    spec = _spec(meta.get("env_spec"))
    size = storage.stored_bytes(meta)  # the data/ folder: shards and index files
    max_steps = spec.get("max_episode_steps")
    rows = [
        ("Episodes", f"{int(meta.get('total_episodes', 0)):,}"),
        ("Steps", f"{int(meta.get('total_steps', 0)):,}"),
        ("Size", f"{storage.human_size(size)} ({size:,} bytes)"),
        ("Fingerprint", f"`{meta.get('fingerprint', '')}`"),
        ("Format version", meta.get("format_version", storage.FORMAT_VERSION)),
        ("Environment", f"`{_env_id(spec)}`" if _env_id(spec) else "none"),
        ("Max episode steps", "none" if max_steps is None else max_steps),
        ("Infos recorded", "yes" if meta.get("record_infos") else "no"),
        ("Path in repo", f"`{path}`"),
    ]
    return _table(("Statistic", "Value"), rows)


def _authors(meta: Mapping[str, Any]) -> str | None:
    fields = {k: meta[k] for k in storage.AUTHOR_FIELDS if k != "description" and meta.get(k)}
    if "eval_env_spec" in fields:
        fields["eval_env_spec"] = _env_id(fields["eval_env_spec"]) or "(unreadable spec)"
    return "\n".join(f"- **{k}**: {plain_text(v)}" for k, v in fields.items()) or None


def _provenance_block(meta: Mapping[str, Any]) -> str | None:
    prov = _scrub(meta.get("provenance") or {})
    # a collected dataset's creation time is the commit's, not the command's
    summary = provenance_summary({"created": meta.get("created"), **prov})
    if "seed_entropy" in prov:
        summary["seed entropy"] = prov["seed_entropy"]
    if not summary:
        return None
    return _fenced("yaml", yaml.safe_dump(summary, sort_keys=False, width=1000))


def _lineage(lineage: Mapping[str, Any]) -> str:
    lineage = _scrub(lineage)
    sources = lineage.get("sources") or []
    rows = [
        (
            f"`{src.get('dataset_id')}`",
            f"`{src.get('fingerprint')}`",
            f"{src.get('episodes')}",
            f"{src.get('first_id')}",
            "; ".join(step_text(step) for step in src.get("steps") or []) or "-",
        )
        for src in sources
    ]
    operation = step_text(lineage.get("operation") or {"name": "?"})
    head = f"Made by `{operation}` from {len(sources)} source(s):\n\n"
    return head + _table(("Source", "Fingerprint", "Episodes", "First id", "Steps"), rows)


def _how_to_load(dataset_id: str, remote: str) -> str:
    code = f'from curation import load_dataset\n\nds = load_dataset("{dataset_id}", download=True)'
    return "\n\n".join(
        [
            _fenced("bash", 'pip install "harvest[hf]"'),
            _fenced("python", f"{code}  # with HARVEST_REMOTE={remote}"),
            "or from the command line:",
            _fenced("bash", f"curate pull {dataset_id} --remote {remote}"),
        ]
    )


def _section(dataset_id: str, meta: Mapping[str, Any], path: str, remote: str) -> str:
    parts = [f"## {dataset_id}"]
    if meta.get("description"):
        parts.append(plain_text(meta["description"]))
    parts += ["### Statistics", _statistics(meta, path), "### Spaces"]
    spaces = f"observations: {_space(meta.get('observation_space'))}\n"
    parts.append(_fenced("text", spaces + f"actions: {_space(meta.get('action_space'))}"))
    if authors := _authors(meta):
        parts += ["### Authors", authors]
    if prov := _provenance_block(meta):
        parts += ["### Provenance", prov]
    if meta.get("lineage"):
        parts += ["### Lineage", _lineage(meta["lineage"])]
    parts += ["### How to load", _how_to_load(dataset_id, remote)]
    return "\n\n".join(parts)


def _overview(datasets: Mapping[str, Mapping[str, Any]], where: Mapping[str, str]) -> str:
    """One table row per dataset, sorted by id."""
    rows = []
    for dataset_id, meta in sorted(datasets.items()):
        episodes, steps = int(meta.get("total_episodes", 0)), int(meta.get("total_steps", 0))
        size = storage.human_size(storage.stored_bytes(meta))
        env = _env_id(meta.get("env_spec")) or "none"
        path = where[dataset_id]
        rows.append((f"`{dataset_id}`", f"`{path}`", f"{episodes:,}", f"{steps:,}", size, env))
    return _table(("Dataset", "Path", "Episodes", "Steps", "Size", "Environment"), rows)


def _licenses(metas: list[Mapping[str, Any]]) -> str | list[str]:
    """Declared licenses (Hub ids are lowercase), ``unknown`` for datasets that declare none."""
    found: set[str] = set()
    for meta in metas:
        value = meta.get("license") or "unknown"
        values = value if isinstance(value, list | tuple) else [value]
        found.update(str(v).strip().lower() for v in values)
    return found.pop() if len(found) == 1 else sorted(found)


def dataset_card(
    repo_id: str,
    datasets: Mapping[str, Mapping[str, Any]],
    *,
    paths: Mapping[str, str] | None = None,
    remote_uri: str | None = None,
) -> str:
    """The Hub dataset card (README.md) of a repo holding one or more harvest datasets.

    Args:
        repo_id: the Hub repo, ``org/name`` (e.g. ``my-org/cartpole``).
        datasets: ``{dataset_id: metadata}`` of the datasets in the repo (any order; the card
            lists them sorted by id).
        paths: dataset id -> folder in the repo; default: the id minus its first segment
            (``cartpole/expert-v0`` -> ``expert-v0``), or the whole id if it has one segment.
        remote_uri: the remote users pull from, for the load snippets (default ``hf://<org>``).

    Returns:
        ``---``-delimited YAML front matter (license, task_categories, tags, size_categories,
        pretty_name) followed by the Markdown body, newline-ended.

    Raises:
        UsageError: ``repo_id`` is not ``org/name``, ``datasets`` is empty, or ``paths`` names
            a dataset not in ``datasets``.
        MissingExtraError: huggingface_hub is not installed.
    """
    org, _, name = repo_id.partition("/")
    if not org or not name or "/" in name:
        raise UsageError(f"repo id {repo_id!r} is not org/name, e.g. my-org/cartpole")
    if not datasets:
        raise UsageError(f"no datasets to describe in the card of {repo_id!r}")
    unknown = sorted(set(paths or {}) - set(datasets))
    if unknown:
        raise UsageError(f"paths given for dataset(s) {unknown} that are not in the card")
    try:
        from huggingface_hub import DatasetCardData
    except ImportError as e:
        raise MissingExtraError(
            f'dataset cards need huggingface_hub ({e}); pip install "harvest[hf]"'
        ) from e
    ids = sorted(datasets)
    metas = [datasets[i] for i in ids]
    remote = remote_uri or f"hf://{org}"
    env_ids = sorted({e for m in metas if (e := _env_id(m.get("env_spec")))})
    total_steps = sum(int(m.get("total_steps", 0)) for m in metas)
    data = DatasetCardData(
        license=_licenses(metas),
        task_categories=["reinforcement-learning"],
        tags=list(dict.fromkeys([*BASE_TAGS, *env_ids])),
        size_categories=[size_category(total_steps)],
        pretty_name=ids[0] if len(ids) == 1 else name,
    )
    default = {i: i.partition("/")[2] or i for i in ids}
    where = {**default, **(paths or {})}
    intro = (
        f"# {data.pretty_name}\n\nReinforcement-learning episodes recorded with harvest: "
        f"{len(ids)} dataset(s), {total_steps:,} steps in total, in the repo `{repo_id}`."
    )
    sections = [_section(i, m, where[i], remote) for i, m in zip(ids, metas, strict=True)]
    body = "\n\n".join([intro, _overview(datasets, where), *sections])
    # a manifest may predate redaction or come from elsewhere: no URL credentials in any line
    return redact_url(f"---\n{data.to_yaml()}\n---\n\n{body}\n")
