"""``verify_dataset``: check a dataset against its manifest, recomputing everything from disk."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from collector.errors import CorruptDatasetError
from collector.storage import digests, durable, index
from collector.storage.digests import fingerprint
from collector.storage.hdf5 import read_shard
from collector.storage.ids import DATA_DIR, dataset_path, index_name
from collector.storage.manifest import dataset_files, id_ranges, map_shard_ids, read_metadata

__all__ = [
    "VerifyReport",
    "verify_dataset",
]


@dataclass
class VerifyReport:
    """What ``verify_dataset`` found: ``problems`` is empty for a sound dataset."""

    dataset_id: str
    episodes: int = 0
    steps: int = 0
    fingerprint: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def verify_dataset(dataset_id: str, root: str | os.PathLike[str] | None = None) -> VerifyReport:
    """Check a dataset against its manifest, recomputing digests and fingerprint from disk.

    Every shard's sha256, episode ids and step data are checked; nothing is trusted from memory.
    """
    path = dataset_path(dataset_id, root)
    report = VerifyReport(dataset_id)
    try:
        meta = read_metadata(path, dataset_id)
        files = dataset_files(meta, dataset_id)  # plain shard names in data/, sha256s, sizes
    except CorruptDatasetError as e:
        report.problems.append(str(e))
        return report
    all_ids, all_digests = [], []
    for (rel, sha, expected), entry in zip(files, meta.get("shards", []), strict=True):
        file, name = path / rel, entry["file"]
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            report.problems.append(f"{name}: missing")
            continue
        if size != expected:
            report.problems.append(
                f"{name}: {size:,} bytes, metadata.json says {expected:,} "
                f"({'truncated' if size < expected else 'grown'})"
            )
            continue
        if durable.sha256_file(file) != sha:
            report.problems.append(f"{name}: sha256 mismatch (file changed or corrupt)")
            continue
        try:
            batch = read_shard(file)
        except (CorruptDatasetError, OSError, KeyError) as e:
            report.problems.append(f"{name}: unreadable ({e})")
            continue
        pos, ids = map_shard_ids(entry, batch.table["id"])
        if id_ranges(np.sort(ids)) != entry["id_ranges"]:
            report.problems.append(f"{name}: episode ids differ from the manifest")
        found = digests.episode_digests(batch)
        bad = np.flatnonzero(np.any(found != batch.table["digest"], axis=1)[pos])
        if len(bad):
            report.problems.append(
                f"{name}: {len(bad)} episode digest(s) do not match their data "
                f"(first id {int(ids[bad[0]])})"
            )
        problem = _index_problem(path / DATA_DIR, entry, batch.table)
        if problem:
            report.problems.append(problem)
        all_ids.append(ids)
        all_digests.append(found[pos])
        report.steps += int(batch.table["length"][pos].sum())
    ids = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)
    found = np.concatenate(all_digests) if all_digests else np.zeros((0, 32), np.uint8)
    report.episodes = len(ids)
    if not report.problems:
        report.fingerprint = fingerprint(ids, found)
        if report.fingerprint != meta.get("fingerprint"):
            report.problems.append("fingerprint recomputed from disk differs from metadata.json")
        if report.episodes != meta.get("total_episodes"):
            report.problems.append("total_episodes in metadata.json differs from the shards")
        if report.steps != meta.get("total_steps"):
            report.problems.append("total_steps in metadata.json differs from the shards")
    if len(np.unique(ids)) != len(ids):
        report.problems.append("duplicate episode ids across shards")
    return report


def _index_problem(data_dir: Path, entry: dict[str, Any], table: dict[str, Any]) -> str | None:
    """What is wrong with a shard's index file (None: sound, or a shard without one).

    It must be the exact bytes the shard's own episode table gives (``build_index_bytes``).
    """
    expected = entry.get("index")
    if expected is None:
        return None
    name = index_name(entry["file"])
    try:
        size = (data_dir / name).stat().st_size
    except FileNotFoundError:
        return f"{name}: missing"
    if size != expected["bytes"]:
        how = "truncated" if size < expected["bytes"] else "grown"
        return f"{name}: {size:,} bytes, metadata.json says {expected['bytes']:,} ({how})"
    data = (data_dir / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        return f"{name}: sha256 mismatch (file changed or corrupt)"
    if data != index.build_index_bytes(table):
        return f"{name}: differs from the episode table of {entry['file']}"
    return None
