"""Shard index files: a compact copy of each shard's episode table, read without HDF5.

Each committed shard ``data/shard-<seq>-<hash8>.h5`` may have an **index file** next to it,
``data/shard-<seq>-<hash8>.idx``: the shard's episode table (ids as stored, seeds, lengths,
offsets, returns, flags, digests, options and metadata text) in a fixed little-endian
columnar layout. It is written once, when the shard joins a dataset, and recorded in the
shard's manifest entry (``index``: file, sha256, bytes, rows), so every read checks it like a
shard. Opening a dataset or a writer then costs one small plain-file read per shard instead
of an HDF5 open and a table read (issue 18). Shards committed without one (datasets written
before it) are read from their HDF5 table, as before (``read_shard_index`` decides).

``COMMITTED_INDEXES`` keeps the ids and digests of the last commits this process made, so
the next writer of the same commit (``add_to_dataset`` opens one per call) reads nothing.

Layout (no pickle, nothing parsed but fixed-size integers)::

    b"harvidx1" | rows <u8 | text bytes <u8
    id <i8, seed <u8, length <i8, obs_offset <i8, step_offset <i8, return <f8, text_end <i8
    (2 * rows: options of every row, then metadata), digest 32 x u1, has_seed, terminated,
    truncated (1 byte each), then the text bytes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from collector.errors import CorruptDatasetError
from collector.storage.batch import TABLE_FIELDS
from collector.storage.hdf5 import read_shard_table
from collector.storage.ids import DATA_DIR, index_name
from collector.storage.manifest import id_ranges, map_shard_ids
from collector.storage.text import human_size

__all__ = [
    "COMMITTED_INDEXES",
    "CommittedIndexes",
    "INDEX_MAX_BYTES",
    "build_index_bytes",
    "index_entry",
    "read_index_file",
    "forget_committed_indexes",
    "read_shard_index",
]

#: An index file larger than this is refused unread.
INDEX_MAX_BYTES: Final = 1 << 31

_MAGIC: Final = b"harvidx1"
_HEADER: Final = np.dtype([("magic", "S8"), ("rows", "<u8"), ("text", "<u8")])
#: (field, dtype, values per row), in file order: 8-byte columns first, so all stay aligned.
_COLUMNS: Final = (
    ("id", "<i8", 1),
    ("seed", "<u8", 1),
    ("length", "<i8", 1),
    ("obs_offset", "<i8", 1),
    ("step_offset", "<i8", 1),
    ("return", "<f8", 1),
    ("text_end", "<i8", 2),
    ("digest", "u1", 32),
    ("has_seed", "?", 1),
    ("terminated", "?", 1),
    ("truncated", "?", 1),
)
_ROW_BYTES: Final = sum(np.dtype(d).itemsize * k for _, d, k in _COLUMNS)


def _texts(values: Sequence[Any]) -> list[bytes]:
    """Options or metadata as stored: UTF-8 bytes, ``b""`` for none (as the HDF5 table)."""
    return [
        b"" if v is None else v if isinstance(v, bytes | np.bytes_) else str(v).encode()
        for v in values
    ]


def _all_none(values: Sequence[Any]) -> bool:
    """True when every value is None (a set of types: values may be arrays, ``==`` is not)."""
    return set(map(type, values)) <= {type(None)}


def build_index_bytes(table: Mapping[str, Any]) -> bytes:
    """The index file of a shard whose episode table is ``table`` (every ``TABLE_FIELDS``).

    Deterministic: the same table always gives the same bytes, so ``verify`` can rebuild it.
    """
    n = len(table["id"])
    if _all_none(table["options"]) and _all_none(table["metadata"]):  # no loop per episode
        ends, blob = np.zeros(2 * n, np.int64), b""
    else:
        texts = _texts(table["options"]) + _texts(table["metadata"])
        ends = np.cumsum([len(t) for t in texts], dtype=np.int64)
        blob = b"".join(texts)
    header = np.array([(_MAGIC, n, len(blob))], _HEADER).tobytes()
    parts = [header]
    for field, dtype, k in _COLUMNS:
        values = ends if field == "text_end" else table[field]
        arr = np.ascontiguousarray(np.asarray(values).astype(dtype, copy=False)).reshape(n * k)
        parts.append(arr.tobytes())
    parts.append(blob)
    return b"".join(parts)


def index_entry(shard_file: str, data: bytes, rows: int) -> dict[str, Any]:
    """The manifest entry's ``index`` field for index bytes ``data`` of ``shard_file``."""
    return {
        "file": index_name(shard_file),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "rows": int(rows),
    }


def read_index_file(
    path: Path, expected: Mapping[str, Any], fields: Sequence[str] = TABLE_FIELDS
) -> dict[str, np.ndarray]:
    """Read and check an index file against its manifest ``index`` field ``expected``.

    Size, sha256, header and layout are checked before any value is used; the columns are
    views of the file's bytes (``options``/``metadata`` are bytes arrays, ``b""`` for none,
    split out only when in ``fields``).

    Raises:
        CorruptDatasetError: missing, of another size or sha256, or not a valid index file.
    """
    fix = "run `curate verify`, or restore the dataset from a copy or a remote"
    size, sha, rows = expected.get("bytes"), expected.get("sha256"), expected.get("rows")
    try:
        with open(path, "rb") as f:
            data = f.read(min(int(size or 0), INDEX_MAX_BYTES) + 1)
    except FileNotFoundError as e:  # as a missing shard: a stale snapshot's, or damage
        raise CorruptDatasetError(
            f"index file {path} is missing; the dataset was changed underneath this reader "
            "(refresh() it) or damaged (run `curate verify`)"
        ) from e
    except OSError as e:
        raise CorruptDatasetError(f"index file {path} is unreadable ({e}); {fix}") from e
    if len(data) != size:
        raise CorruptDatasetError(
            f"index file {path} has {human_size(len(data))}, metadata.json says "
            f"{human_size(int(size or 0))}; {fix}"
        )
    if hashlib.sha256(data).hexdigest() != sha:
        raise CorruptDatasetError(f"index file {path} does not match its sha256; {fix}")
    if len(data) < _HEADER.itemsize:
        raise CorruptDatasetError(f"index file {path} is too short to be an index; {fix}")
    head = np.frombuffer(data, _HEADER, 1)[0]
    n, text = int(head["rows"]), int(head["text"])
    if (
        head["magic"] != _MAGIC
        or n != rows
        or len(data) != _HEADER.itemsize + n * _ROW_BYTES + text
    ):
        raise CorruptDatasetError(
            f"index file {path} is not a harvest index of {rows} rows (bad header or size); {fix}"
        )
    out: dict[str, np.ndarray] = {}
    at = _HEADER.itemsize
    for field, dtype, k in _COLUMNS:
        arr = np.frombuffer(data, dtype, n * k, at)
        out[field] = arr.reshape(n, 32) if field == "digest" else arr
        at += arr.nbytes
    ends = out.pop("text_end")
    if np.any(np.diff(ends) < 0) or (n and (ends[0] < 0 or ends[-1] != text)):
        raise CorruptDatasetError(f"index file {path} has bad text offsets; {fix}")
    if np.any(out["length"] < 0):
        raise CorruptDatasetError(f"index file {path} has a negative episode length; {fix}")
    for k, field in enumerate(("options", "metadata")):
        if field in fields:
            bounds = ends[k * n : (k + 1) * n].tolist()
            first = int(ends[k * n - 1]) if k and n else 0
            starts = [first, *bounds[:-1]][: len(bounds)]
            texts = [data[at + a : at + b] for a, b in zip(starts, bounds, strict=True)]
            out[field] = _bytes_column(texts)
    return out


def _bytes_column(texts: list[bytes]) -> np.ndarray:
    """Like the HDF5 table's raw text column: fixed-width bytes, ``b""`` for none."""
    return np.array(texts, dtype=f"S{max(1, max(map(len, texts), default=1))}")


def read_shard_index(
    path: str | os.PathLike[str],
    entry: Mapping[str, Any],
    fields: Sequence[str] = TABLE_FIELDS,
) -> dict[str, np.ndarray]:
    """The episode table of one committed shard of the dataset at ``path``, as stored.

    From its index file when the manifest ``entry`` names one (checked, then checked against
    the entry: the episodes the entry maps, their id ranges and steps), else from the shard's
    HDF5 table (shards committed before index files existed). Text columns are raw bytes.

    Raises:
        CorruptDatasetError: the index file or the table is damaged, or disagrees with the
            manifest.
    """
    data_dir = Path(path) / DATA_DIR
    index = entry.get("index")
    if index is None:
        return read_shard_table(data_dir / entry["file"], fields, raw_text=True)
    file = data_dir / index_name(entry["file"])
    table = read_index_file(file, index, fields)
    pos, ids = map_shard_ids(dict(entry), table["id"])  # the check needs ids and lengths
    if (
        len(ids) != entry["episodes"]
        or int(table["length"][pos].sum()) != entry["step_rows"]
        or id_ranges(np.sort(ids)) != entry["id_ranges"]
    ):
        raise CorruptDatasetError(
            f"index file {file} does not hold the episodes metadata.json lists for "
            f"{entry['file']}; run `curate verify`, or restore the dataset from a copy"
        )
    return {k: table[k] for k in fields}


class CommittedIndexes:
    """The (ids, digests) of the last few commits this process made, by manifest checksum.

    Bounded: at most ``MAX_ENTRIES`` commits and ``MAX_BYTES`` of arrays (a larger index is
    not kept). Only a commit made here is kept, and its arrays are read-only, so a hit is
    exactly what reading the index files would give.
    """

    MAX_ENTRIES: Final = 4
    MAX_BYTES: Final = 256 << 20

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str] | None) -> tuple[np.ndarray, np.ndarray] | None:
        """The (ids, digests) kept under ``key``, or None."""
        with self._lock:
            hit = self._items.pop(key, None) if key is not None else None
            if hit is not None:
                self._items[key] = hit  # most recently used last
            return hit

    def put(self, key: tuple[str, str] | None, ids: np.ndarray, digests: np.ndarray) -> None:
        """Keep ``ids`` and ``digests`` under ``key`` (None: nothing), made read-only.

        Not copied: the writer never changes its arrays in place, it replaces them.
        """
        if key is None or ids.nbytes + digests.nbytes > self.MAX_BYTES:
            return
        ids.flags.writeable = digests.flags.writeable = False
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (ids, digests)
            while len(self._items) > self.MAX_ENTRIES or (
                sum(a.nbytes + b.nbytes for a, b in self._items.values()) > self.MAX_BYTES
            ):
                self._items.pop(next(iter(self._items)))

    def clear(self) -> None:
        """Forget every index."""
        with self._lock:
            self._items.clear()


#: This process's ``CommittedIndexes`` (``DatasetWriter`` puts and gets).
COMMITTED_INDEXES: Final = CommittedIndexes()


def forget_committed_indexes() -> None:
    """Forget the committed indexes this process keeps: the next writer reads index files."""
    COMMITTED_INDEXES.clear()
