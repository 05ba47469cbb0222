"""What is on disk, as text and pictures: the API under ``curate list/show/report/namespace``.

Every function returns plain data or plain text (no ANSI codes, tables drawn by ``rich`` into
a string), so the command line only prints it and tests compare it. ``plot_report`` needs the
``plot`` extra (matplotlib, drawn without pyplot's global state).

Namespaces are Minari's: the folder part of dataset ids (``cartpole`` in
``cartpole/random-v0``), optionally described by ``<root>/<namespace>/namespace_metadata.json``.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from rich.console import Console
from rich.table import Table

from collector import storage
from collector.errors import (
    CorruptDatasetError,
    DatasetExistsError,
    DatasetIdError,
    DatasetNotFoundError,
    HarvestWarning,
    MissingExtraError,
    UsageError,
)
from collector.redact import redact
from curation.dataset import _env_spec, list_local_datasets

if TYPE_CHECKING:
    from curation.dataset import Dataset

__all__ = [
    "create_namespace",
    "dataset_rows",
    "describe_dataset",
    "describe_namespace",
    "get_namespace_metadata",
    "list_namespaces",
    "plain_text",
    "plot_report",
    "provenance_summary",
    "render_table",
    "step_text",
]

_STATS = ("count", "min", "mean", "std", "max")
#: Keys of ``get_namespace_metadata`` that are not free-form metadata.
_NAMESPACE_KEYS = ("namespace", "description", "datasets")


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
            "size": int(meta.get("dataset_bytes", 0)),
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
    size = int(meta.get("dataset_bytes", 0))
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
        authored["eval_env_spec"] = _env_spec(authored["eval_env_spec"]).id
    if authored:
        sections.append(_block("Author", {k: plain_text(v) for k, v in authored.items()}))
    sections.append(_statistics(ds))
    sections.append(_block("Provenance", provenance_summary(meta.get("provenance") or {})))
    if meta.get("lineage"):
        sections.append(_lineage(meta["lineage"]))
    return "\n\n".join(sections) + "\n"


# -- report plot ----------------------------------------------------------------------------


def _groups(
    ds: Dataset, by: str = "source", splits: Mapping[str, Dataset] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Episode ``return`` and ``length`` per legend label, in legend order."""
    if by == "split":
        if not splits:
            raise UsageError(
                "plot_report(by='split') needs splits={'train': view, ...}; pass the named "
                "views or datasets to compare"
            )
        return {name: _columns(view.episodes()) for name, view in splits.items()}
    if by != "source":
        raise UsageError(f"by={by!r} is not a grouping; use by='source' or by='split'")
    if splits is not None:
        raise UsageError("splits=... are plotted with by='split'; pass by='split'")
    episodes, source = ds.episodes(), ds.episode_sources()["source"]
    names = list(dict.fromkeys(source.tolist())) or [ds.id]
    return {name: _columns(episodes, source == name) for name in names}


def _columns(episodes: Mapping[str, np.ndarray], mask: Any = slice(None)) -> dict[str, Any]:
    return {"return": episodes["return"][mask], "length": episodes["length"][mask]}


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingExtraError(
            f'plot_report needs matplotlib ({e}); pip install "harvest[plot]"'
        ) from e
    return Figure, FigureCanvasAgg


def plot_report(
    ds: Dataset,
    out: str | os.PathLike[str],
    by: Literal["source", "split"] = "source",
    bins: int = 30,
    *,
    splits: Mapping[str, Dataset] | None = None,
) -> Path:
    """Write a PNG of episode-return and episode-length histograms, one colour per group.

    Args:
        ds: the dataset (or view) to plot.
        out: the PNG path; its folder is created, and the file replaced atomically.
        by: ``"source"``: one colour per source dataset of a combined or saved dataset (a
            collected dataset is one group). ``"split"``: one colour per entry of ``splits``.
        bins: histogram bins, shared by all groups.
        splits: named views or datasets, e.g. ``{"train": train, "val": val}`` (``by="split"``).

    Returns:
        The path written.

    Raises:
        MissingExtraError: matplotlib is not installed.
        UsageError: an unknown ``by``, or ``splits`` without ``by="split"`` (or the reverse).
    """
    groups = _groups(ds, by, splits)
    figure_class, canvas_class = _matplotlib()
    fig = figure_class(figsize=(12, 4.5), dpi=100, layout="constrained")
    canvas_class(fig)
    axes = fig.subplots(1, 2)
    for ax, field, label in zip(
        axes, ("return", "length"), ("episode return", "episode length (steps)"), strict=True
    ):
        values = [g[field].astype(np.float64) for g in groups.values()]
        edges = np.histogram_bin_edges(np.concatenate(values), bins=bins)
        for name, v in zip(groups, values, strict=True):
            ax.hist(v, bins=edges, alpha=0.55, label=f"{name} ({len(v)})")
        ax.set_xlabel(label)
        ax.set_ylabel("episodes")
        ax.yaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, title=by, loc="outside right upper", fontsize="small")
    fig.suptitle(f"{ds.id}: {ds.total_episodes:,} episodes, {ds.total_steps:,} steps")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    storage.atomic_write(path, buffer.getvalue())
    return path


# -- namespaces -----------------------------------------------------------------------------


def _parents(name: str) -> list[str]:
    """Proper folder prefixes: ``a/b/c-v0`` -> ``["a", "a/b"]``."""
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _namespace_files(base: Path) -> list[str]:
    """Namespaces with a metadata file under ``base`` (not looking inside datasets)."""
    found = []
    for folder, dirs, files in os.walk(base):
        if storage.METADATA_FILE in files:  # a dataset holds no namespaces
            dirs.clear()
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(base).as_posix()
        if storage.NAMESPACE_METADATA_FILE in files and rel != ".":
            try:
                found.append(storage.check_namespace(rel))
            except DatasetIdError as e:  # one bad folder must not hide the others
                warnings.warn(f"skipping {folder}: {e}", HarvestWarning, stacklevel=3)
    return found


def _read_namespace_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise CorruptDatasetError(f"{path} is not UTF-8 JSON ({e}); fix or delete it") from e
    if not isinstance(data, dict):
        raise CorruptDatasetError(f"{path} does not hold a JSON object; fix or delete it")
    return data


def create_namespace(
    namespace: str,
    description: str | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    exist_ok: bool = False,
    **metadata: Any,
) -> dict[str, Any]:
    """Write ``<root>/<namespace>/namespace_metadata.json``; return its content.

    The file holds ``{"namespace": ..., "description": ..., **metadata}`` (strict JSON). With
    ``exist_ok`` an existing file is updated: given keys replace stored ones, and a
    ``description`` of None keeps the stored one.

    Raises:
        DatasetIdError: ``namespace`` is not ``segment[/segment...]`` or ends in ``-vN``.
        DatasetExistsError: the namespace has a metadata file and ``exist_ok`` is false.
        UsageError: the namespace would lie inside a dataset, or ``metadata`` is not JSON.
    """
    storage.check_namespace(namespace)
    base = storage.datasets_root(root)
    for prefix in [*_parents(namespace), namespace]:
        if (base / prefix / storage.METADATA_FILE).is_file():
            raise UsageError(
                f"namespace {namespace!r} would be inside dataset {prefix!r}; a dataset cannot "
                "hold a namespace, pick another name"
            )
    if "datasets" in metadata:
        raise UsageError("'datasets' is listed from the folders, not stored; use another key")
    file = base / namespace / storage.NAMESPACE_METADATA_FILE
    old = _read_namespace_file(file)
    if old is not None and not exist_ok:
        raise DatasetExistsError(
            f"namespace {namespace!r} already exists ({file}); pass exist_ok=True "
            "(--exist-ok) to update it"
        )
    old = old or {}
    content = {
        "namespace": namespace,
        "description": old.get("description") if description is None else description,
    }
    content.update((k, v) for k, v in {**old, **metadata}.items() if k not in content)
    try:
        data = storage.dumps_metadata(content).encode()
    except (TypeError, ValueError) as e:
        raise UsageError(f"namespace metadata must be strict JSON: {e}") from e
    file.parent.mkdir(parents=True, exist_ok=True)
    storage.atomic_write(file, data)
    return content


def list_namespaces(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Sorted namespaces under the root: folders of dataset ids and of namespace files."""
    names = {p for dataset_id in list_local_datasets(root) for p in _parents(dataset_id)}
    for ns in _namespace_files(storage.datasets_root(root)):
        names.update([ns, *_parents(ns)])
    return sorted(names)


def _namespace(
    namespace: str, root: str | os.PathLike[str] | None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The namespace's metadata (plus ``datasets``) and its datasets' ``{id: metadata}``."""
    storage.check_namespace(namespace)
    base = storage.datasets_root(root)
    stored = _read_namespace_file(base / namespace / storage.NAMESPACE_METADATA_FILE)
    metas = {k: v for k, v in list_local_datasets(root).items() if k.startswith(namespace + "/")}
    if (
        stored is None
        and not metas
        and not any(ns.startswith(namespace + "/") for ns in _namespace_files(base))
    ):
        raise DatasetNotFoundError(
            f"no namespace {namespace!r} under {base} (no {storage.NAMESPACE_METADATA_FILE}, no "
            f"datasets); create it with `curate namespace create {namespace}`"
        )
    info = {"namespace": namespace, "description": None, **(stored or {})}
    info.update(namespace=namespace, datasets=sorted(metas))
    return info, metas


def get_namespace_metadata(
    namespace: str, root: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """The namespace file's content plus ``datasets``: the ids under it, at any depth.

    Raises:
        DatasetIdError: an invalid namespace.
        DatasetNotFoundError: nothing under that namespace (no file, no datasets).
    """
    return _namespace(namespace, root)[0]


def describe_namespace(namespace: str, root: str | os.PathLike[str] | None = None) -> str:
    """The text of ``curate namespace show NS``: description, other keys, datasets table."""
    info, metas = _namespace(namespace, root)
    pairs = {"description": info["description"] or "(none)"}
    pairs.update((k, plain_text(v)) for k, v in info.items() if k not in _NAMESPACE_KEYS)
    table = render_table(
        dataset_rows(metas),
        f"Datasets in {namespace}",
        empty_message=f"No datasets in namespace {namespace}",
    )
    return _block(f"Namespace {namespace}", pairs) + "\n\n" + table
