"""``DatasetWriter``: write shards, commit, repack and clean up a dataset (DESIGN.md section 4).

``export.exact_shards`` (a manifest and files holding only a dataset's episodes) lives apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import stat
import time
import uuid
from pathlib import Path
from typing import Any, Final

import numpy as np

from collector.errors import CorruptDatasetError, HarvestError, UsageError
from collector.storage import compaction, digests, durable, hdf5, index
from collector.storage.batch import EpisodeBatch
from collector.storage.digests import fingerprint
from collector.storage.durable import (
    DatasetLock,
    free_bytes,
    fsync_path,
    place_file,
    storage_errors,
)
from collector.storage.hdf5 import (
    missing_shard_error,
    open_shard,
    read_table,
)
from collector.storage.ids import (
    DATA_DIR,
    INDEX_FILE_RE,
    METADATA_FILE,
    METADATA_TMP,
    SHARD_RE,
    check_not_nested,
    dataset_path,
    datasets_root,
    index_name,
    shard_name,
)
from collector.storage.manifest import (
    FORMAT_VERSION,
    MANIFEST_SHA256,
    decoded_bytes,
    id_ranges,
    loads_metadata,
    map_shard_ids,
    read_metadata,
    seal_metadata,
)
from collector.storage.text import human_size

log = logging.getLogger(__name__)

__all__ = [
    "DatasetWriter",
    "REPACK_SPARE_BYTES",
    "SMALL_SHARD_FRACTION",
]


#: Free space a repack leaves besides twice the shards it merges.
REPACK_SPARE_BYTES: Final = 1 << 20
#: ``repack`` merges shards under ``target / SMALL_SHARD_FRACTION`` bytes.
SMALL_SHARD_FRACTION: Final = 64


class DatasetWriter:
    """The single committer of one dataset: writes shards durably and commits the manifest.

    Opening takes the writer lock, reads the last commit (if any), removes files no commit
    references (temp files, shards of a crashed window or a replaced generation) and loads a
    numpy index of committed episode ids and digests.
    """

    def __init__(self, dataset_id: str, root: str | os.PathLike[str] | None = None) -> None:
        self.dataset_id = dataset_id
        self.root = datasets_root(root)
        self.path = dataset_path(dataset_id, self.root)
        self.data_dir = self.path / DATA_DIR
        self._lock = DatasetLock(dataset_id, self.root).acquire()
        try:
            self.meta: dict[str, Any] | None = (
                read_metadata(self.path, dataset_id)
                if (self.path / METADATA_FILE).exists()
                else None
            )
            self._ids = np.zeros(0, np.int64)
            self._digests = np.zeros((0, 32), np.uint8)
            self._installed: set[str] = set()  # shards installed since the last commit
            if self.meta is not None:
                self._load_index()
            self.cleanup()
        except BaseException:
            self._lock.release()
            raise

    # -- state ---------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        """True when the dataset has a commit."""
        return self.meta is not None

    def committed_ids(self) -> np.ndarray:
        """Episode ids of the last commit (numpy, unsorted)."""
        return self._ids

    def _load_index(self) -> None:
        """Committed ids and digests: what this process last committed, else index files.

        A writer that commits leaves its index in ``COMMITTED_INDEXES`` under the manifest's
        checksum, so the next writer of the same commit (``add_to_dataset`` opens one per
        call) reads no file at all; otherwise each shard's index file is read (its HDF5
        table for shards written before index files existed). Issue 18.
        """
        if self.meta is None:
            raise UsageError("DatasetWriter.start() must be called before loading its index")
        hit = index.COMMITTED_INDEXES.get(self._cache_key(self.meta))
        if hit is not None:
            self._ids, self._digests = hit
            return
        ids, digests = [], []
        for entry in self.meta.get("shards", []):
            table = index.read_shard_index(self.path, entry, ("id", "digest"))
            pos, mapped = map_shard_ids(entry, table["id"])
            ids.append(mapped)
            digests.append(table["digest"][pos])
        if ids:
            self._ids = np.concatenate(ids)
            self._digests = np.concatenate(digests)

    def _cache_key(self, meta: dict[str, Any]) -> tuple[str, str] | None:
        """``COMMITTED_INDEXES``' key of commit ``meta``: the folder and the manifest's seal."""
        seal = meta.get(MANIFEST_SHA256)
        return None if seal is None else (os.path.realpath(self.path), str(seal))

    def cleanup(self) -> list[str]:
        """Delete this writer's own leftovers: files no commit references.

        Only what it can prove is its own (issue 16 item 4): regular files (``lstat``: never a
        link, never a folder) named as this module names shards and their temp files, that
        the manifest does not reference, plus a regular ``metadata.json.tmp``. A ``data/``
        that is a symlink is not cleaned at all: the folder it points to may be shared (two
        datasets' ``data/`` linked to one place name shards alike), so a name proves nothing
        there; its leftovers only cost space, and a warning says so.
        """
        shards = (self.meta or {}).get("shards", [])
        keep = {e["file"] for e in shards} | {
            index_name(e["file"]) for e in shards if e.get("index")
        }
        removed: list[str] = []
        if self.data_dir.is_symlink():
            log.warning(
                "not cleaning %s: it is a symbolic link, so its files may not be this dataset's",
                self.data_dir,
            )
        elif self.data_dir.is_dir():
            for p in self.data_dir.iterdir():
                if p.name not in keep and _is_own_file(p):
                    _force_unlink(p)
                    removed.append(p.name)
        tmp = self.path / METADATA_TMP
        if _is_regular(tmp):
            tmp.unlink()
            removed.append(METADATA_TMP)
        if removed:
            log.info("removed %d uncommitted file(s) from %s", len(removed), self.path)
        return removed

    def remove_superseded(self) -> list[str]:
        """Remove the shards the last commit no longer lists, unless a reader may open them.

        A finished run calls it after its repack, so the folder holds the dataset, not twice
        it (issue 19 item 4). While a reader holds a ``ReaderLease`` (a snapshot of an older
        commit may still open those shards) they stay for the next writer's ``cleanup``.
        """
        with durable.no_readers(self.path) as alone:
            if alone:
                return self.cleanup()
        log.info("kept superseded shards of %s: a reader has it open", self.dataset_id)
        return []

    # -- generations -----------------------------------------------------------------------

    def start(self, base: dict[str, Any], *, commit: bool = True) -> None:
        """Begin a new, empty generation with ``base`` metadata (new dataset or overwrite).

        ``commit=False`` leaves the previous commit in place until the first ``commit()``:
        curation builds a whole generation and publishes it at once. An overwrite only swaps
        the manifest: the old generation's shards stay on disk until the next writer opens
        the dataset (``cleanup``), so snapshots opened on the old generation stay readable
        meanwhile [review 8].
        """
        check_not_nested(self.dataset_id, self.root)
        now = time.time()
        self.meta = {
            "format_version": FORMAT_VERSION,
            "dataset_id": self.dataset_id,
            **base,
            "generation": uuid.uuid4().hex,
            "created": now,
            # keep counting across generations: a shard name is never reused [review 8]
            "next_shard_seq": int((self.meta or {}).get("next_shard_seq", 0)),
            "shards": [],
        }
        self._ids = np.zeros(0, np.int64)
        self._digests = np.zeros((0, 32), np.uint8)
        with storage_errors(self.data_dir, "create"):
            self.data_dir.mkdir(parents=True, exist_ok=True)
        if commit:
            self.commit()

    # -- shards ----------------------------------------------------------------------------

    def write_shard(self, batch: EpisodeBatch, compression: str | None = "gzip") -> dict[str, Any]:
        """Durably write ``batch`` as a new shard; it is part of the dataset after ``commit``.

        The file is written under a hidden temp name (``write_shard_file``: a full disk leaves
        none), then installed.
        """
        tmp = self.shard_temp_path()
        digests.fill_digests(batch)
        try:
            hdf5.write_shard_file(batch, tmp, compression)
            return self._install(tmp, batch.table, batch.info_schema(), compression, id_offset=0)
        except BaseException:  # e.g. a second Ctrl-C during the fsync (issue 16, item 19)
            _force_unlink(tmp)
            raise

    def write_image(
        self, image: bytes, table: dict[str, Any], schema: Any, compression: str | None
    ) -> dict[str, Any]:
        """Durably install a shard built elsewhere as bytes (``build_shard_bytes``).

        E.g. by a Ray worker; ``table`` must carry its digests.
        """
        tmp = self.shard_temp_path()
        durable.write_new_file(tmp, image)  # a failed write leaves no file
        # hashed from memory: reading the file back cost a read of every byte just written
        return self.install_shard_file(
            tmp, table, schema, compression, hashlib.sha256(image).hexdigest()
        )

    def shard_temp_path(self) -> Path:
        """A fresh hidden name in ``data/`` for a shard file to ``install_shard_file``.

        Named as this writer names its temp files, so ``cleanup`` removes one a crash left.
        """
        if self.meta is None:
            raise UsageError("DatasetWriter.start() must be called before writing shards")
        return self.data_dir / f".shard-{uuid.uuid4().hex[:12]}.h5.tmp"

    def discard_shard_temp(self, tmp: Path) -> None:
        """Remove ``tmp``, a ``shard_temp_path`` of this writer, if it is there."""
        if tmp.parent != self.data_dir or not _OWN_TMP_RE.match(tmp.name):
            raise UsageError(f"{tmp} is not a temp shard of {self.dataset_id!r}")
        _force_unlink(tmp)

    def install_shard_file(
        self,
        tmp: Path,
        table: dict[str, Any],
        schema: Any,
        compression: str | None,
        sha256: str | None = None,
    ) -> dict[str, Any]:
        """Durably install shard file ``tmp`` (a ``shard_temp_path``), written elsewhere.

        E.g. by the encoder process, which writes the shard it built (``write_image`` for
        bytes). ``table`` must carry its digests; ``sha256``: the file's, when its writer
        hashed the bytes it wrote (else the file is read to hash it). ``tmp`` is removed if
        it cannot be installed.
        """
        if self.meta is None:
            raise UsageError("DatasetWriter.start() must be called before writing shards")
        try:
            return self._install(tmp, table, schema, compression, id_offset=0, sha256=sha256)
        except BaseException:  # e.g. a second Ctrl-C during the fsync (issue 16, item 19)
            _force_unlink(tmp)
            raise

    def adopt_shard(
        self,
        src: Path,
        id_offset: int = 0,
        compression: str | None = None,
        written: tuple[dict[str, Any], Any] | None = None,
        batch: EpisodeBatch | None = None,
    ) -> dict[str, Any]:
        """Move an already-written shard file (e.g. a DataCollector spill) into ``data/``.

        ``src`` must be on the same filesystem; its episode ids are shifted by ``id_offset`` in
        the manifest, never in the immutable file. ``written``: the episode table (digests
        filled) and info schema this process wrote ``src`` from, so it is not read back (an
        ``add_to_dataset`` every 10 episodes spent ~6 ms a call reopening its own spill).
        ``batch``: the whole batch ``src`` was written from, kept (``compaction.RECENT``) so
        that merging the shard soon after reads nothing; not to be changed afterwards.
        """
        if self.meta is None:
            raise UsageError("DatasetWriter.start() must be called before adopting shards")
        if batch is not None:
            written = written or (batch.table, batch.info_schema())
        if written is not None:
            table, schema = written
        else:
            with open_shard(src) as f:
                table = read_table(f)
                schema = json.loads(f.attrs.get("info_schema", "null"))
        entry = self._install(src, table, schema, compression, id_offset)
        if batch is not None:
            compaction.RECENT.put(entry["sha256"], batch)
        return entry

    def link_shard(
        self, src: Path, entry: dict[str, Any], id_map: list[list[int]]
    ) -> dict[str, Any]:
        """Add another dataset's committed shard ``src`` (manifest ``entry``) under ``id_map``.

        The file is hard-linked (else copied without re-encoding, see ``place_file``); only
        the manifest renumbers its episodes. The shard's sha256 is the source manifest's: a
        link is the same file, and a copy is checked against it.
        """
        if self.meta is None:
            raise UsageError("DatasetWriter.start() must be called before linking shards")
        name = self._next_name(entry["sha256"])
        dest = self.data_dir / name
        tmp = self.data_dir / f".link-{uuid.uuid4().hex[:12]}.h5.tmp"
        placed = None
        try:
            try:
                how = place_file(src, tmp)
            except FileNotFoundError as e:
                if src.exists():
                    raise
                # a stale snapshot's shard: superseded, and removed by a later writer
                raise missing_shard_error(src) from e
            if how == "copy":
                fsync_path(tmp)
                os.chmod(tmp, 0o444)
                if durable.sha256_file(tmp) != entry["sha256"]:
                    raise CorruptDatasetError(
                        f"shard {src} does not match its sha256 in the source's metadata.json; "
                        "run verify on the source"
                    )
            table = index.read_shard_index(src.parent.parent, entry)
            placed = self._place_index(name, table)
            os.rename(tmp, dest)
        except BaseException:
            _force_unlink(tmp)
            if placed is not None:
                _force_unlink(self.data_dir / index_name(name))
            raise
        fsync_path(self.data_dir)
        return self._register(
            name,
            table,
            entry.get("info_schema"),
            entry.get("compression"),
            0,
            entry["sha256"],
            dest.stat().st_size,
            id_map=id_map,
            index_field=placed,
        )

    def _next_name(self, sha: str) -> str:
        if self.meta is None:
            raise UsageError("DatasetWriter.start() must be called before naming shards")
        seq = int(self.meta["next_shard_seq"])
        self.meta["next_shard_seq"] = seq + 1
        return shard_name(seq, sha)

    def _install(
        self,
        src: Path,
        table: dict[str, Any],
        schema: Any,
        compression: str | None,
        id_offset: int,
        sha256: str | None = None,
    ) -> dict[str, Any]:
        """Install ``src`` in ``data/``: fsync, make read-only, rename, fsync the folder.

        ``sha256``: the file's digest, when the caller has it (else it is read and hashed).
        """
        with storage_errors(self.data_dir, "install a shard in"):
            fsync_path(src)
            os.chmod(src, 0o444)
            sha = durable.sha256_file(src) if sha256 is None else sha256
            name = self._next_name(sha)
            dest = self.data_dir / name
            # the index first: if it cannot be written, ``src`` (e.g. a spill) stays where it is
            placed = self._place_index(name, table)
            try:
                os.rename(src, dest)
            except BaseException:
                _force_unlink(self.data_dir / index_name(name))
                raise
            fsync_path(self.data_dir)
        return self._register(
            name,
            table,
            schema,
            compression,
            id_offset,
            sha,
            dest.stat().st_size,
            index_field=placed,
        )

    def _place_index(self, name: str, table: dict[str, Any]) -> dict[str, Any]:
        """Write shard ``name``'s index file (fsynced; the caller fsyncs ``data/``).

        Written before the manifest that names it, like the shard; costs what the shard adds.
        """
        self._installed.add(name)  # a failure from here on leaves it to remove_uncommitted
        data = index.build_index_bytes(table)
        tmp = self.data_dir / f".index-{uuid.uuid4().hex[:12]}.idx.tmp"
        try:
            durable.write_new_file(tmp, data, sync=True)
            os.chmod(tmp, 0o444)
            os.rename(tmp, self.data_dir / index_name(name))
        except BaseException:
            _force_unlink(tmp)
            raise
        return index.index_entry(name, data, len(table["id"]))

    def _register(
        self,
        name: str,
        table: dict[str, Any],
        schema: Any,
        compression: str | None,
        id_offset: int,
        sha: str,
        nbytes: int,
        id_map: list[list[int]] | None = None,
        index_field: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if self.meta is None:
            raise UsageError("DatasetWriter.start() must be called before adding shards")
        entry: dict[str, Any] = {"file": name, "id_offset": int(id_offset)}
        if id_map is not None:
            entry["id_map"] = id_map
        pos, ids = map_shard_ids(entry, table["id"])
        if len(ids) == 0:
            raise CorruptDatasetError(f"shard {name}: its id map selects no episode")
        steps = int(table["length"][pos].sum())
        entry.update(
            {
                "episodes": int(len(ids)),
                "id_ranges": id_ranges(np.sort(ids)),  # the set of ids; shard order may differ
                "obs_rows": steps + len(ids),
                "step_rows": steps,
                "bytes": int(nbytes),
                "sha256": sha,
                "compression": compression or "none",
                "info_schema": schema,
            }
        )
        if index_field is not None:
            entry["index"] = index_field
        self.meta["shards"].append(entry)
        self._installed.add(name)
        self._ids = np.concatenate([self._ids, ids])
        self._digests = np.concatenate([self._digests, table["digest"][pos]])
        return entry

    # -- commit ----------------------------------------------------------------------------

    def commit(self, **updates: Any) -> dict[str, Any]:
        """Atomically publish the current shard list (plus ``updates``) as the new commit."""
        if self.meta is None:
            raise UsageError("nothing to commit: call start() first")
        meta = self.meta
        meta.update(updates)
        if not digests.is_increasing(self._ids):  # kept in id order: appends stay O(added)
            order = np.argsort(self._ids, kind="stable")
            self._ids, self._digests = self._ids[order], self._digests[order]
        if not digests.is_increasing(self._ids):  # sorted, so only duplicates remain
            raise CorruptDatasetError(
                f"refusing to commit {self.dataset_id!r}: duplicate episode ids in the shard list"
            )
        meta["total_episodes"] = int(len(self._ids))
        meta["total_steps"] = int(sum(e["step_rows"] for e in meta["shards"]))
        meta["dataset_bytes"] = int(sum(e["bytes"] for e in meta["shards"]))
        meta["fingerprint"] = fingerprint(self._ids, self._digests)
        meta["updated"] = time.time()
        meta["format_version"] = FORMAT_VERSION  # a version 1 dataset is sealed from now on
        meta.pop(MANIFEST_SHA256, None)
        data = seal_metadata(meta).encode()
        # never publish a manifest that readers refuse (a bug here must not cost the dataset)
        sealed = loads_metadata(
            data, f"the new {METADATA_FILE} of {self.dataset_id}", self.dataset_id
        )
        with storage_errors(self.path, "create"):
            self.path.mkdir(parents=True, exist_ok=True)
        durable.atomic_write(self.path / METADATA_FILE, data)
        self._installed.clear()
        index.COMMITTED_INDEXES.put(self._cache_key(sealed), self._ids, self._digests)
        return meta

    def remove_uncommitted(self) -> list[str]:
        """Delete the shards this writer installed that the commit on disk does not list.

        For a run stopped between installing a shard and committing it (a second Ctrl-C,
        issue 16 item 19): nothing is left for the next writer to clean. Files some commit
        listed are never touched (a reader's snapshot may still use a merged-away shard). The
        writer's view returns to the commit on disk. Returns the names removed.
        """
        if not self._installed:
            return []
        try:
            disk = read_metadata(self.path, self.dataset_id)
        except (OSError, HarvestError):  # no commit on disk to compare with: keep them
            return []
        listed = {e["file"] for e in disk.get("shards", [])}
        removed = sorted(self._installed - listed)
        for name in removed:
            _force_unlink(self.data_dir / name)
            _force_unlink(self.data_dir / index_name(name))
        self._installed.clear()
        if removed:
            self.meta = disk
            self._ids = np.zeros(0, np.int64)
            self._digests = np.zeros((0, 32), np.uint8)
            self._load_index()
            fsync_path(self.data_dir)
        return removed

    # -- repack ----------------------------------------------------------------------------

    def repack(
        self, target_bytes: int, compression: str | None = "gzip", *, linked: bool = False
    ) -> int:
        """Merge runs of small shards into shards of about ``target_bytes``; returns shards merged.

        A shard is small when under ``1/SMALL_SHARD_FRACTION`` of the target decoded (4 MiB at the
        default 256 MB). Above that, what a shard costs on its own (opening its episode
        table, one manifest entry) is a few percent of reading its data, and re-encoding it
        would cost more than it saves: a full commit window stays as it is, the many small
        shards of short windows or Ray batches are merged. Shards appended with an id
        offset are merged too (the merged shard stores dataset ids); shards linked from
        another dataset (an ``id_map``) stay shared unless ``linked``. The fingerprint does
        not change: digests ignore shard boundaries and compression.
        """
        if self.meta is None:
            raise UsageError("DatasetWriter.start() must be called before repacking")
        merged = 0
        small = self._small(target_bytes, linked)
        for group in compaction.by_size(sorted(small, key=compaction.first_id), target_bytes):
            merged += self._merge_if_room(group, compression)
        return merged

    def compact(self, target_bytes: int, compression: str | None = "gzip") -> list[dict[str, Any]]:
        """Merge small shards by tiers after an append (``compaction``); returns the new entries.

        Each merge commits. Called after every ``add_to_dataset``: N calls re-write O(N log N)
        bytes in all and leave O(log N) small shards, where ``repack`` at every call would
        re-write the whole dataset each time.
        """
        if self.meta is None:
            raise UsageError("DatasetWriter.start() must be called before compacting")
        made: list[dict[str, Any]] = []
        while group := compaction.next_merge(self._small(target_bytes), math.inf):
            done = 0
            for part in compaction.by_size(group, target_bytes):
                if self._merge_if_room(part, compression):
                    done += 1
                    made.append(self.meta["shards"][-1])
            if not done:
                break
        return made

    def _small(self, target_bytes: int, linked: bool = False) -> list[dict[str, Any]]:
        """Shards under ``target_bytes / SMALL_SHARD_FRACTION`` decoded (``decoded_bytes``).

        Judged decoded, not on disk: a window of frames that zstd made 100x smaller is still
        a large shard to read and would be costly to re-encode (issue 19 item 4). Shards
        linked from another dataset (``id_map``) stay shared unless ``linked``.
        """
        assert self.meta is not None
        limit = target_bytes // SMALL_SHARD_FRACTION
        return [
            e
            for e in self.meta["shards"]
            if decoded_bytes(self.meta, e) < limit and (linked or "id_map" not in e)
        ]

    def _merge_if_room(self, group: list[dict[str, Any]], compression: str | None) -> int:
        """``_merge`` ``group`` if the disk has room for it; else 0, with a warning."""
        # merge_shards streams through HDF5, which crashes on a full disk: merge only with
        # room to spare (small shards are complete data; the next run repacks them)
        need = 2 * sum(e["bytes"] for e in group) + REPACK_SPARE_BYTES
        if free_bytes(self.data_dir) < need:
            log.warning(
                "not repacking %d small shards of %s: under %s free",
                len(group),
                self.dataset_id,
                human_size(need),
            )
            return 0
        return self._merge(group, compression)

    def _merge(self, group: list[dict[str, Any]], compression: str | None) -> int:
        """Replace ``group`` by one merged shard (stored under dataset ids) and commit."""
        if self.meta is None:
            raise UsageError("DatasetWriter.start() must be called before merging shards")
        names = {e["file"] for e in group}
        before = fingerprint(self._ids, self._digests)
        keep_shards, keep_ids, keep_digests = list(self.meta["shards"]), self._ids, self._digests
        tmp = self.data_dir / f".merge-{uuid.uuid4().hex[:8]}.h5.tmp"
        new_name = None
        try:
            decoded = sum(decoded_bytes(self.meta, e) for e in group)
            table, schema, batch = compaction.write_merged(
                self.data_dir, group, decoded, tmp, compression
            )
            self.meta["shards"] = [e for e in self.meta["shards"] if e["file"] not in names]
            self._ids, self._digests = _drop_ids(self._ids, self._digests, table["id"])
            made = self._install(tmp, table, schema, compression, 0)
            new_name = made["file"]
            if fingerprint(self._ids, self._digests) != before:
                raise CorruptDatasetError(
                    "repack would change the fingerprint; nothing was committed (a bug in "
                    "harvest: please report it)"
                )
        except BaseException:
            self.meta["shards"] = keep_shards
            self._ids, self._digests = keep_ids, keep_digests
            _force_unlink(tmp)
            if new_name is not None:
                _force_unlink(self.data_dir / new_name)
                _force_unlink(self.data_dir / index_name(new_name))
            raise
        self.commit()
        compaction.RECENT.discard(e["sha256"] for e in group)
        if batch is not None:  # merged again later, in a higher tier
            compaction.RECENT.put(made["sha256"], batch)
        # the merged shards stay until the next writer opens the dataset (cleanup), so a
        # reader's snapshot taken before this commit stays readable
        return len(group)

    def close(self) -> None:
        """Release the writer lock."""
        self._lock.release()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_ids(
    ids: np.ndarray, digests: np.ndarray, drop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isin(ids, drop)
    return ids[keep], digests[keep]


#: Names this module gives files in ``data/``: shards and the temp files of ``write_shard``,
#: ``write_image``, ``shard_temp_path``, ``link_shard`` and ``_merge`` (``.shard-…``,
#: ``.link-…``, ``.merge-…``), and of index files (``.index-…``).
_OWN_TMP_RE: Final = re.compile(
    r"^\.(?:(?:shard|link|merge)-[A-Za-z0-9_-]+\.h5|index-[A-Za-z0-9_-]+\.idx)\.tmp$", re.ASCII
)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_own_file(path: Path) -> bool:
    """A regular file (not followed if a link) named as a shard, its index or a temp file."""
    named = (
        SHARD_RE.match(path.name)
        or _OWN_TMP_RE.match(path.name)
        or INDEX_FILE_RE.fullmatch(path.name)
    )
    return named is not None and _is_regular(path)


def _force_unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
