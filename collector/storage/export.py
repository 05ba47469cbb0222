"""What an export of a dataset carries: ``exact_shards`` (only the dataset's own episodes)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from collector.errors import CorruptDatasetError
from collector.storage import digests, durable, index
from collector.storage.batch import select_episodes
from collector.storage.hdf5 import build_shard_bytes, read_shard
from collector.storage.ids import DATA_DIR, SHARD_RE, index_name, shard_name
from collector.storage.manifest import dataset_files, index_files, map_shard_ids

__all__ = ["exact_shards"]


def exact_shards(
    path: Path, meta: dict[str, Any], staging: Path
) -> tuple[dict[str, Any], dict[str, Path]]:
    """A manifest and files for exporting a dataset whose shards hold only its episodes.

    A saved view links whole shards of its source (copy-free), so a shard may also hold
    episodes the manifest leaves out, e.g. a split's held-out part [issue 16]. An export must
    carry exactly the dataset's episodes: each such shard is rewritten into ``staging`` with
    just the episodes the manifest maps, under their dataset ids, in id order. Ids and
    digests are unchanged, so the fingerprint is too; the same dataset always gives the same
    bytes, so a repeated push finds them in place.

    Returns:
        ``(manifest, {relative path: local file})``; the manifest is ``meta`` itself when no
        shard holds foreign episodes.

    Raises:
        CorruptDatasetError: a shard to rewrite does not match its sha256 or its digests.
    """
    files: dict[str, Path] = {}
    entries: list[dict[str, Any]] = []
    label = str(meta.get("dataset_id", path))
    for rel, _, _ in index_files(meta, label):
        files[rel] = path / rel
    for (rel, sha, _), entry in zip(dataset_files(meta, label), meta["shards"], strict=True):
        src = path / rel
        entries.append(entry)
        files[rel] = src
        if entry.get("id_map") is None:  # an id offset keeps every episode of the file
            continue
        stored = index.read_shard_index(path, entry, ("id",))["id"]
        pos, ids = map_shard_ids(entry, stored)
        if len(pos) == len(stored):
            continue
        if durable.sha256_file(src) != sha:
            raise CorruptDatasetError(
                f"{src} does not match its sha256 in metadata.json; run `curate verify` on {label}"
            )
        order = np.argsort(ids, kind="stable")
        batch = read_shard(src)
        part = select_episodes(batch, pos[order], ids[order])
        want = part.table["digest"].copy()
        digests.fill_digests(part)
        if not np.array_equal(part.table["digest"], want):
            raise CorruptDatasetError(
                f"{src} does not match its own digests; run `curate verify` on {label}"
            )
        compression = entry.get("compression")
        data = build_shard_bytes(part, None if compression in (None, "none") else compression)
        new_sha = hashlib.sha256(data).hexdigest()
        seq = SHARD_RE.match(entry["file"])
        name = shard_name(int(seq[1]) if seq else len(entries) - 1, new_sha)
        staging.mkdir(parents=True, exist_ok=True)
        durable.write_new_file(staging / name, data, sync=True)
        new = {k: v for k, v in entry.items() if k not in ("id_map", "index")}
        new.update(file=name, id_offset=0, sha256=new_sha, bytes=len(data))
        index_data = index.build_index_bytes(part.table)
        durable.write_new_file(staging / index_name(name), index_data, sync=True)
        new["index"] = index.index_entry(name, index_data, part.num_episodes)
        entries[-1] = new
        del files[rel]
        files.pop(f"{DATA_DIR}/{index_name(entry['file'])}", None)
        files[f"{DATA_DIR}/{name}"] = staging / name
        files[f"{DATA_DIR}/{index_name(name)}"] = staging / index_name(name)
    if all(a is b for a, b in zip(entries, meta["shards"], strict=True)):
        return meta, files
    return {**meta, "shards": entries, "dataset_bytes": sum(e["bytes"] for e in entries)}, files
