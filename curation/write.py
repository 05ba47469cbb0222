"""Write views as new datasets: the one writer of curation (save, combine, recipes, imports).

A saved view or a combination of datasets is written as a new dataset whose shards are the
sources' own immutable files, hard-linked where the filesystem allows (else copied without
re-encoding), and renumbered 0..N-1 by the manifest's id map (DESIGN.md section 8). Only a
shard a view keeps less than half of is not linked: its kept episodes are copied, column by
column. So a curated dataset keeps its sources' digests, seeds, options and episode
statistics, and its ``lineage`` says where every episode came from: the source ids and
fingerprints, their episode ids, and the operations, with their parameters, that picked them.

This module sits below ``curation.dataset``: it needs only a dataset's public read API
(``snapshot``, ``positions``, ``episode_indices``, ...) and ``collector.storage``'s writer,
and it returns nothing; the caller (``Dataset.save``, ``curation.ops``) opens the result.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from collector import storage
from collector.errors import (
    CorruptDatasetError,
    DatasetExistsError,
    IncompatibleDatasetsError,
    UsageError,
)

if TYPE_CHECKING:
    from curation.dataset import Dataset

__all__ = ["compare_datasets", "new_dataset_writer", "write_views"]

#: A shard is linked when a view keeps at least this fraction of its steps; otherwise the
#: kept episodes are copied, so a small filtered or split dataset does not carry (or push)
#: its source's whole files.
LINK_MIN_FRACTION = 0.5
#: Copied episodes are gathered into new shards of about this many bytes (uncompressed).
COPY_SHARD_BYTES = 64 * 2**20

#: Metadata fields a combined dataset keeps when every source agrees on them.
_SHARED_FIELDS = (
    "description",
    "algorithm_name",
    "code_permalink",
    "ref_min_score",
    "ref_max_score",
    "eval_env_spec",
)


# -- comparing ---------------------------------------------------------------------------------


def _diff(a: Any, b: Any, path: str) -> list[tuple[str, Any, Any]]:
    """Leaf-level differences between two JSON values, as (path, a, b)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{path}.{key}")
        return out
    if (
        isinstance(a, list)
        and isinstance(b, list)
        and len(a) == len(b)
        and any(isinstance(v, dict | list) for v in [*a, *b])
    ):  # Tuple spaces recurse; shapes and bounds are compared whole
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _diff(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [(path, a, b)]


def _env_spec_dict(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    spec = meta.get("env_spec")
    return json.loads(spec) if isinstance(spec, str) else spec


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def compare_datasets(datasets: Sequence[Dataset]) -> list[str]:
    """Why ``datasets`` cannot be combined, one readable line per difference (empty: they can).

    Compares against the first dataset, field by field: observation and action spaces,
    the env spec (all but ``max_episode_steps``, as Minari does), whether infos were
    recorded, and info columns that exist in both with different shapes or kinds.
    """
    if not datasets:
        return []
    first = datasets[0]
    a_meta = first.snapshot.meta
    out: list[str] = []
    for other in datasets[1:]:
        b_meta = other.snapshot.meta
        pair = f"{first.id} vs {other.id}"
        for key in ("observation_space", "action_space"):
            for path, x, y in _diff(a_meta[key], b_meta[key], key):
                out.append(f"{path}: {_short(x)} != {_short(y)} ({pair})")
        a_spec, b_spec = _env_spec_dict(a_meta), _env_spec_dict(b_meta)
        if (a_spec is None) != (b_spec is None):
            which = first.id if a_spec is None else other.id
            out.append(f"env_spec: {which} has none, the other has one ({pair})")
        elif a_spec is not None and b_spec is not None:
            a_cmp = {k: v for k, v in a_spec.items() if k != "max_episode_steps"}
            b_cmp = {k: v for k, v in b_spec.items() if k != "max_episode_steps"}
            for path, x, y in _diff(a_cmp, b_cmp, "env_spec"):
                out.append(f"{path}: {_short(x)} != {_short(y)} ({pair})")
        if bool(a_meta.get("record_infos")) != bool(b_meta.get("record_infos")):
            out.append(
                f"record_infos: {a_meta.get('record_infos')} != {b_meta.get('record_infos')} "
                f"({pair})"
            )
        # the readers' union of the shards' info schemas: (widened dtype, shape) per column
        a_info, b_info = first.snapshot.info_schema, other.snapshot.info_schema
        for name in sorted(set(a_info) & set(b_info)):
            (x_dtype, x_shape), (y_dtype, y_shape) = a_info[name], b_info[name]
            if x_shape != y_shape:
                out.append(f"infos.{name}.shape: [{x_shape}] != [{y_shape}] ({pair})")
            if (x_dtype.kind in "biuf") != (y_dtype.kind in "biuf"):
                out.append(
                    f"infos.{name}.dtype: kinds ['{x_dtype.kind}'] != ['{y_dtype.kind}'] ({pair})"
                )
    return out


def _combined_env_spec(metas: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The first source's env spec, with ``max_episode_steps`` = max (None if any is None)."""
    specs = [_env_spec_dict(m) for m in metas]
    if specs[0] is None:
        return None
    steps = [s.get("max_episode_steps") for s in specs if s is not None]
    spec = dict(specs[0])
    spec["max_episode_steps"] = None if any(v is None for v in steps) else max(steps)
    return spec


def _combined_fields(metas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Author fields: authors, emails and requirements unioned; the rest kept if all agree."""
    out: dict[str, Any] = {}
    for key in ("author", "author_email", "requirements"):
        values: list[str] = []
        for m in metas:
            v = m.get(key)
            for item in [v] if isinstance(v, str) else v or []:
                if item not in values:
                    values.append(item)
        if values:
            out[key] = values if key == "requirements" or len(values) > 1 else values[0]
    for key in _SHARED_FIELDS:
        values = [m.get(key) for m in metas]
        if values[0] is not None and all(v == values[0] for v in values):
            out[key] = values[0]
    return out


# -- writing -------------------------------------------------------------------------------------


def _source_entry(ds: Dataset, first_id: int) -> dict[str, Any]:
    return {
        "dataset_id": ds.id,
        "fingerprint": ds.fingerprint,
        "first_id": first_id,
        "episodes": ds.total_episodes,
        "episode_ids": storage.id_ranges(ds.episode_indices),
        "steps": list(ds.lineage_steps),
    }


class _Copies:
    """Episodes copied out of shards a view uses little of, written as a few new shards.

    ``write_shard`` recomputes every copied episode's digest from its data; a digest that
    differs from the source's table means a damaged source, and the new shard is never
    committed.
    """

    def __init__(self, writer: storage.DatasetWriter) -> None:
        self.writer = writer
        self.batches: list[storage.EpisodeBatch] = []
        self.files: list[Path] = []
        self.compression: str | None = None

    def add(self, file: Path, entry: dict[str, Any], stored: np.ndarray, new: np.ndarray) -> None:
        batch = storage.read_shard(file)
        order = np.argsort(batch.table["id"])
        positions = order[np.searchsorted(batch.table["id"], stored, sorter=order)]
        self.batches.append(storage.select_episodes(batch, positions, new))
        self.files.append(file)
        comp = entry.get("compression")
        self.compression = None if comp in (None, "none") else comp
        if sum(b.nbytes for b in self.batches) >= COPY_SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.batches:
            return
        want = np.concatenate([b.table["digest"] for b in self.batches])
        owner = np.repeat(np.arange(len(self.files)), [b.num_episodes for b in self.batches])
        batch = storage.concat_batches(self.batches)
        self.writer.write_shard(batch, self.compression)  # fills batch.table["digest"] anew
        bad = np.flatnonzero(np.any(batch.table["digest"] != want, axis=1))
        if len(bad):
            raise CorruptDatasetError(
                f"shard {self.files[owner[bad[0]]]} does not match its own digests; run verify "
                "on its dataset"
            )
        self.batches, self.files = [], []


@contextmanager
def new_dataset_writer(
    dataset_id: str, root: str | Path | None, overwrite: bool
) -> Iterator[storage.DatasetWriter]:
    """The writer of a dataset built whole (curation, imports), to be committed in the block.

    Refuses an existing id unless ``overwrite``. If the block raises, a new id leaves no
    folder behind; an overwritten dataset keeps its last commit (the files written for the
    failed build are unreferenced, and the next writer removes them).

    Raises:
        DatasetExistsError: ``dataset_id`` exists and ``overwrite`` is false.
        LockHeldError: another writer holds ``dataset_id``.
    """
    storage.parse_dataset_id(dataset_id)
    path = storage.dataset_path(dataset_id, root)
    existed = path.exists()
    with storage.DatasetWriter(dataset_id, root) as writer:
        if writer.exists and not overwrite:
            raise DatasetExistsError(
                f"dataset {dataset_id!r} already exists at {path}; pick another id or pass "
                "overwrite=True (--overwrite)",
                dataset_id=dataset_id,
            )
        try:
            yield writer
        except BaseException:
            if not existed:
                shutil.rmtree(path, ignore_errors=True)
            raise


def _write_linked(
    parts: Sequence[Dataset],
    new_dataset_id: str,
    meta: dict[str, Any],
    operation: dict[str, Any],
    root: str | Path | None,
    overwrite: bool,
) -> None:
    """Write ``parts`` (datasets or views) in order as a new dataset of linked shards."""
    storage.parse_dataset_id(new_dataset_id)
    path = storage.dataset_path(new_dataset_id, root)
    for ds in parts:
        if not ds.snapshot.native:
            raise UsageError(
                f"{ds.id!r} is a Minari dataset read in place; import it first "
                "(curation.from_minari or curate import-minari), then combine or save that"
            )
        if Path(ds.snapshot.path).resolve() == path.resolve():
            raise UsageError(
                f"{new_dataset_id!r} is also a source of this operation; save to a new id"
            )
    sources: list[dict[str, Any]] = []
    with new_dataset_writer(new_dataset_id, root, overwrite) as writer:
        meta["lineage"] = {"operation": operation, "sources": sources}
        writer.start(meta, commit=False)
        copies = _Copies(writer)
        next_id = 0
        for ds in parts:
            sources.append(_source_entry(ds, next_id))
            snap, pos = ds.snapshot, ds.positions
            new = next_id + np.arange(len(pos), dtype=np.int64)
            shards = snap.shard[pos]
            for s in np.unique(shards).tolist():
                sel = shards == s
                entry = snap.meta["shards"][s]
                stored = snap.stored_id[pos[sel]]
                if snap.length[pos[sel]].sum() >= LINK_MIN_FRACTION * entry["step_rows"]:
                    runs = storage.id_map_runs(stored, new[sel])
                    writer.link_shard(snap.files[s], entry, runs)
                else:
                    copies.add(snap.files[s], entry, stored, new[sel])
            next_id += len(pos)
        copies.flush()
        writer.commit()


def write_views(
    parts: Sequence[Dataset],
    new_dataset_id: str,
    *,
    operation: Mapping[str, Any],
    root: str | Path | None = None,
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> None:
    """Write ``parts`` (datasets or views, in order) as one new dataset; the writer of curation.

    Checks the parts can be combined, merges their metadata (authors, emails and
    requirements unioned; other author fields kept where all agree; ``max_episode_steps``
    as in ``combine_datasets``; ``metadata`` overrides), then links their shards under new
    ids 0..N-1 and records ``operation`` in ``lineage``. Returns nothing: the caller opens
    ``new_dataset_id`` (``curation.ops.write_views`` does).

    Raises:
        IncompatibleDatasetsError: the parts differ; the message lists every difference.
        DatasetExistsError: ``new_dataset_id`` exists and ``overwrite`` is false.
        LockHeldError: another writer holds ``new_dataset_id``.
    """
    from collector.provenance import versions

    problems = compare_datasets(parts)
    if problems:
        raise IncompatibleDatasetsError(
            f"cannot combine {', '.join(dict.fromkeys(d.id for d in parts))} into "
            f"{new_dataset_id!r}: {len(problems)} difference(s):\n  " + "\n  ".join(problems),
            differences=tuple(problems),
        )
    metas = list({id(d.snapshot.meta): d.snapshot.meta for d in parts}.values())
    fields = _combined_fields(metas)
    fields.update({k: v for k, v in (metadata or {}).items() if v is not None})
    first = parts[0]
    meta = storage.new_metadata(
        first.observation_space,
        first.action_space,
        _combined_env_spec(metas),
        record_infos=bool(first.snapshot.meta.get("record_infos")),
        provenance={
            "command": operation["name"],
            "created": time.time(),
            "versions": versions(),
            **(provenance or {}),
        },
        **fields,
    )
    _write_linked(parts, new_dataset_id, meta, dict(operation), root, overwrite)
