"""What a dataset or namespace is, as plain text: the API under ``curate list/show/namespace``.

Every function returns plain text (no ANSI codes, tables drawn by ``rich`` into a string), so
the command line only prints it and tests compare it. ``Dataset`` is only a type here: this
module is imported by the Hub's dataset card (``curation.remotes.card``) without the reader.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.table import Table

from collector import storage
from collector.redact import redact
from curation.catalog import NAMESPACE_KEYS, read_namespace
from curation.snapshot import env_spec_from_json

if TYPE_CHECKING:
    from curation.dataset import Dataset

__all__ = [
    "dataset_rows",
    "describe_dataset",
    "describe_namespace",
    "plain_text",
    "provenance_summary",
    "render_table",
    "step_text",
]

_STATS = ("count", "min", "mean", "std", "max")


# -- small formatting helpers ---------------------------------------------------------------


def plain_text(value: Any) -> str:
    """A metadata value as one readable string (lists of strings joined with ', ')."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return json.dumps(value, default=repr)


def _block(title: str, pairs: Mapping[str, Any]) -> str:
    """A titled section of aligned ``key  value`` lines (continuation lines indented)."""
    width = max(map(len, pairs), default=0)
    pad = "\n" + " " * (width + 4)
    lines = [f"  {k:<{width}}  {str(v).replace(chr(10), pad)}" for k, v in pairs.items()]
    return "\n".join([title, *lines])


def _render(renderable: Any) -> str:
    """Draw a rich renderable as plain text (no colour, no markup), 120 columns wide."""
    file = io.StringIO()
    console = Console(
        file=file, width=120, color_system=None, force_terminal=False,
        markup=False, emoji=False, highlight=False,
    )  # fmt: skip
    console.print(renderable)
    return "\n".join(line.rstrip() for line in file.getvalue().splitlines()).strip("\n")


# -- listing --------------------------------------------------------------------------------


def dataset_rows(metas: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One JSON-ready row per dataset of ``{id: metadata}`` (as ``list_local_datasets`` gives).

    >>> dataset_rows({"cart/a-v0": {"total_episodes": 6, "total_steps": 151,
    ...                             "dataset_bytes": 27160, "author": ["ann", "bob"]}})
    [{'name': 'cart/a-v0', 'episodes': 6, 'steps': 151, 'size': 27160, 'author': 'ann, bob'}]
    """
    return [
        {
            "name": dataset_id,
            "episodes": int(meta.get("total_episodes", 0)),
            "steps": int(meta.get("total_steps", 0)),
            "size": storage.stored_bytes(meta),
            "author": plain_text(meta.get("author") or ""),
        }
        for dataset_id, meta in metas.items()
    ]


def render_table(
    rows: Sequence[Mapping[str, Any]], title: str, *, empty_message: str | None = None
) -> str:
    """``rows`` of ``dataset_rows`` as a plain-text table, like ``minari list local``.

    Args:
        rows: the rows to show, in order.
        title: the line above the table, e.g. ``Local datasets (<root>)``.
        empty_message: the text when there are no rows (default ``"<title>: no datasets"``).

    Returns:
        Title, table and a ``Number of datasets: N, total size: X MB`` line, newline-ended.
    """
    if not rows:
        return (empty_message or f"{title}: no datasets") + "\n"
    total = sum(int(r["size"]) for r in rows)
    table = Table()
    table.add_column("Name", overflow="fold")
    for name in ("Episodes", "Steps", "Size"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Author", overflow="fold")
    for r in rows:
        size = storage.human_size(r["size"])
        table.add_row(r["name"], f"{r['episodes']:,}", f"{r['steps']:,}", size, r["author"])
    # title and caption as plain lines: rich would wrap them to the table's width
    caption = f"Number of datasets: {len(rows)}, total size: {storage.human_size(total)}"
    return f"{title}\n{_render(table)}\n{caption}\n"


# -- one dataset ----------------------------------------------------------------------------


def _statistics(ds: Dataset) -> str:
    """Count, min, mean, std (population) and max of episode returns and lengths."""
    columns = ds.episodes()
    lines = [f"Episode statistics ({ds.total_episodes:,} episodes)"]
    lines.append(f"  {'':<8}" + "".join(f"{h:>12}" for h in _STATS))
    for name in ("return", "length"):
        v = np.asarray(columns[name], np.float64)
        cells = [f"{len(v)}"]
        cells += [f"{f(v):.6g}" for f in (np.min, np.mean, np.std, np.max)] if len(v) else ["-"] * 4
        lines.append(f"  {name:<8}" + "".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def step_text(step: Mapping[str, Any]) -> str:
    """One lineage step, e.g. ``filter where "return > 10"`` or ``split part 0 of ...``."""
    name = step.get("name", "?")
    if name == "filter" and "where" in step:
        return f'filter where "{step["where"]}"'
    if name == "filter" and "callable" in step:
        return f"filter by {step['callable']}"
    if name == "split":
        sizes = json.dumps(step.get("sizes"))
        return f"split part {step.get('part')} of sizes {sizes} seed {step.get('seed')}"
    rest = {k: v for k, v in step.items() if k != "name"}
    return f"{name} {json.dumps(rest, default=repr)}" if rest else str(name)


def provenance_summary(prov: Mapping[str, Any]) -> dict[str, Any]:
    """The readable parts of a dataset's provenance (command, config summary, versions)."""
    prov = redact(prov)  # a dataset written elsewhere (or before redaction) may hold secrets
    out: dict[str, Any] = {}
    if "command" in prov:
        out["command"] = prov["command"]
    elif "created_by" in prov:  # DataCollector
        out["created by"] = prov["created_by"]
    if prov.get("command") == "collect":
        config = prov.get("config") or {}
        policy, runner = config.get("policy"), config.get("runner") or {}
        out["env"] = config.get("env")
        out["policy"] = policy.get("_target_") if isinstance(policy, Mapping) else policy
        out["seed"], out["episodes"] = config.get("seed"), config.get("episodes")
        out["runner"] = runner.get("name", "local") if isinstance(runner, Mapping) else runner
        if prov.get("overrides"):
            out["overrides"] = " ".join(prov["overrides"])
    if isinstance(prov.get("created"), int | float):
        when = datetime.fromtimestamp(prov["created"], UTC)
        out["created"] = when.isoformat(timespec="seconds")
    if prov.get("versions"):
        out["versions"] = ", ".join(f"{k} {v}" for k, v in prov["versions"].items())
    if "git_commit" in prov:
        out["git commit"] = prov["git_commit"] or "unknown"
    return out


def _lineage(lineage: Mapping[str, Any]) -> str:
    operation = (lineage.get("operation") or {}).get("name", "?")
    lines = [f"Lineage: {operation} of {len(lineage.get('sources') or [])} source(s)"]
    for src in lineage.get("sources") or []:
        lines.append(
            f"  {src['dataset_id']}  fingerprint {str(src.get('fingerprint'))[:16]}  "
            f"{src.get('episodes')} episodes, first id {src.get('first_id')}"
        )
        lines += [f"      {step_text(step)}" for step in src.get("steps") or []]
    return "\n".join(lines)


def describe_dataset(ds: Dataset) -> str:
    """The text of ``curate show ID``: what the dataset is, holds and came from.

    Reads the episode tables only (no step data). The text ends with a newline.
    """
    meta, spec = ds.metadata, ds.env_spec
    size = storage.stored_bytes(meta)  # the data/ folder: shards and index files
    head = {
        "path": ds.spec.data_path,
        "format version": meta.get("format_version", storage.FORMAT_VERSION),
        "fingerprint": ds.fingerprint,
        "episodes": f"{ds.total_episodes:,}",
        "steps": f"{ds.total_steps:,}",
        "size": f"{storage.human_size(size)} ({size:,} bytes)",
        "observations": repr(ds.observation_space),
        "actions": repr(ds.action_space),
    }
    sections = [_block(f"Dataset {ds.id}", head), "Environment: none"]
    if spec is not None:
        env = {"id": spec.id, "entry_point": spec.entry_point}
        env["max_episode_steps"] = spec.max_episode_steps
        env["kwargs"] = json.dumps(redact(spec.kwargs), default=repr)
        sections[1] = _block("Environment", env)
    authored = {k: meta[k] for k in storage.AUTHOR_FIELDS if meta.get(k) is not None}
    if "eval_env_spec" in authored:
        authored["eval_env_spec"] = env_spec_from_json(authored["eval_env_spec"]).id
    if authored:
        sections.append(_block("Author", {k: plain_text(v) for k, v in authored.items()}))
    sections.append(_statistics(ds))
    sections.append(_block("Provenance", provenance_summary(meta.get("provenance") or {})))
    if meta.get("lineage"):
        sections.append(_lineage(meta["lineage"]))
    return "\n\n".join(sections) + "\n"


def describe_namespace(namespace: str, root: str | os.PathLike[str] | None = None) -> str:
    """The text of ``curate namespace show NS``: description, other keys, datasets table."""
    info, metas = read_namespace(namespace, root)
    pairs = {"description": info["description"] or "(none)"}
    pairs.update((k, plain_text(v)) for k, v in info.items() if k not in NAMESPACE_KEYS)
    table = render_table(
        dataset_rows(metas),
        f"Datasets in {namespace}",
        empty_message=f"No datasets in namespace {namespace}",
    )
    return _block(f"Namespace {namespace}", pairs) + "\n\n" + table
