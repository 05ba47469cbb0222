"""The read layer under ``Dataset``: one commit's episode index, its blocks, the block cache.

A ``Snapshot`` is one commit of a dataset as numpy columns sorted by episode id (the
**episode index**: shard, offsets, length, seed, return, flags) plus its **block geometry**:
a block is a run of whole episodes inside one shard, read and decompressed in one piece. Its
episodes start in one ``block_rows`` window, and ``split_blocks`` cuts blocks further so that
each holds at most ``block_bytes_for(max_memory)`` decompressed bytes (an episode larger
than that is a block alone). ``ShardSnapshot`` reads
harvest shards; ``curation.minari.inplace.MinariSnapshot`` reads a Minari dataset in place.
``BlockCache`` keeps decompressed blocks of one process in a byte-bounded LRU.

``Dataset`` (``curation.dataset``), the training iterators (``curation.pipeline``), the torch
adapters and the curation operations all read through this module: it is the public API for
code that needs rows rather than episodes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from collector import storage
from collector.envs import env_spec_from_json
from collector.errors import CorruptDatasetError, EpisodeNotFoundError, HarvestWarning
from collector.spaces import columns, space_from_json

__all__ = [
    "DEFAULT_BLOCK_ROWS",
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_MAX_MEMORY",
    "INDEX_CACHE",
    "INDEX_COLUMNS",
    "IndexCache",
    "MAX_BLOCK_BYTES",
    "BlockCache",
    "BlockRef",
    "ShardSnapshot",
    "Snapshot",
    "block_bytes_for",
    "env_spec_from_json",
    "nested_row",
    "warn_large_block",
]

DEFAULT_BLOCK_ROWS = 65_536
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
#: The default memory budget of a dataset's readers (``load_dataset(max_memory=...)``).
DEFAULT_MAX_MEMORY = 512 * 1024 * 1024
#: Blocks hold at most this many decompressed bytes, whatever the budget.
MAX_BLOCK_BYTES = 32 * 1024 * 1024


def block_bytes_for(max_memory: int) -> int:
    """Decompressed bytes a block may hold under ``max_memory``: an eighth, 1 to 32 MiB.

    Budgets of 256 MiB and more give the same blocks, hence the same batches for a seed.
    """
    return int(min(MAX_BLOCK_BYTES, max(2**20, int(max_memory) // 8)))


#: The per-episode columns a ``Snapshot`` is built from (each one value per episode).
INDEX_COLUMNS = (
    "ids",  # episode id in the dataset
    "stored_id",  # the id inside the file it is read from
    "shard",  # index into ``files``
    "length",  # steps
    "obs_offset",  # first observation row in its file
    "step_offset",  # first step row in its file
    "seed",  # uint64, meaningful where ``has_seed``
    "has_seed",
    "returns",
    "terminated",
    "truncated",
)

_DTYPES = {
    "ids": np.int64,
    "stored_id": np.int64,
    "shard": np.int32,
    "length": np.int64,
    "obs_offset": np.int64,
    "step_offset": np.int64,
    "seed": np.uint64,
    "has_seed": bool,
    "returns": np.float64,
    "terminated": bool,
    "truncated": bool,
}


#: Serializes building episode indexes (``Snapshot.__getattr__``).
_BUILD_LOCK = threading.RLock()


@dataclass(frozen=True)
class BlockRef:
    """Where a block's rows are: all a worker needs (small, cheap to send to any process)."""

    file: str
    obs: tuple[int, int]
    steps: tuple[int, int]


class Snapshot:
    """One commit of a dataset: metadata, the episode index sorted by id, and its blocks.

    Subclasses read their files and call this constructor with the index columns, or with
    ``columns=None`` and implement ``load_columns``: the index is then built on first use of
    any of its arrays (``INDEX_COLUMNS``, ``order``, the block geometry), so opening costs
    only what the metadata needs (issue 18). They implement ``read_block``, ``reopen`` and
    ``read_texts``.

    Args:
        path: the dataset folder.
        dataset_id: the dataset id.
        meta: the commit's metadata (``metadata.json`` contents).
        observation_space: the stored observation space.
        action_space: the stored action space.
        files: the files ``shard`` indexes.
        info_schema: recorded info keys as ``{name: (dtype, shape)}``.
        columns: one array per name of ``INDEX_COLUMNS``, in any episode order (None: from
            ``load_columns`` on first use).
        block_rows: steps per block window.

    Raises:
        CorruptDatasetError: an episode id listed twice.
    """

    #: harvest shards (False: another format read in place, e.g. a Minari dataset): only
    #: native snapshots can be read by worker processes from file paths, or linked by ops.
    native = False

    def __init__(
        self,
        path: Path,
        dataset_id: str,
        meta: dict[str, Any],
        *,
        observation_space: gym.Space,
        action_space: gym.Space,
        files: list[Path],
        info_schema: dict[str, tuple[np.dtype, tuple[int, ...]]],
        columns: Mapping[str, np.ndarray] | None,
        block_rows: int,
    ) -> None:
        self.path = path
        self.dataset_id = dataset_id
        self.meta = meta
        self.observation_space = observation_space
        self.action_space = action_space
        self.files = files
        self.info_schema = info_schema
        self.block_rows = block_rows
        if columns is not None:
            self._set_index(columns)

    #: The attributes the episode index sets (``_set_index``), built on first use.
    LAZY_ATTRIBUTES: tuple[str, ...] = (
        *INDEX_COLUMNS,
        "order",
        "block",
        "block_shard",
        "block_obs_start",
        "block_step_start",
        "block_obs_stop",
        "block_step_stop",
    )

    def __getattr__(self, name: str) -> Any:
        # only called for attributes not set yet: the index, until it is built (once, whatever
        # the threads asking; a build that asks for what it builds gets an AttributeError)
        if name in type(self).LAZY_ATTRIBUTES:
            with _BUILD_LOCK:
                if name not in self.__dict__ and not self.__dict__.get("_building"):
                    self._building = True
                    try:
                        self.build_index()
                    finally:
                        del self._building
                if name in self.__dict__:
                    return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def build_index(self) -> None:
        """Build the episode index now (``load_columns``); it is built on first use anyway."""
        self._set_index(self.load_columns())

    def load_columns(self) -> Mapping[str, np.ndarray]:
        """The index columns of a snapshot made with ``columns=None``."""
        raise NotImplementedError

    @property
    def num_episodes(self) -> int:
        """Episodes of this commit."""
        return len(self.ids)

    @property
    def num_steps(self) -> int:
        """Steps of this commit."""
        return int(self.length.sum())

    def _set_index(self, columns: Mapping[str, np.ndarray]) -> None:
        dataset_id, block_rows = self.dataset_id, self.block_rows
        order = np.argsort(np.asarray(columns["ids"], np.int64), kind="stable")
        index = {n: np.asarray(columns[n]).astype(_DTYPES[n])[order] for n in INDEX_COLUMNS}
        if len(np.unique(index["ids"])) != len(index["ids"]):
            raise CorruptDatasetError(
                f"dataset {dataset_id!r} lists an episode id twice; run verify"
            )
        self.__dict__.update(index)
        self.ids: np.ndarray
        #: index row -> position in the ``columns`` given (subclasses map their own rows)
        self.order = order
        # a block holds the episodes whose first step falls in one block_rows window
        self._set_blocks(self.step_offset // block_rows)

    # declared for type checkers; set from ``columns`` above
    stored_id: np.ndarray
    shard: np.ndarray
    length: np.ndarray
    obs_offset: np.ndarray
    step_offset: np.ndarray
    seed: np.ndarray
    has_seed: np.ndarray
    returns: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def _set_blocks(self, local_block: np.ndarray) -> None:
        """Number the blocks: (shard, local block) pairs, cut at ``max_block_bytes`` if set."""
        self._number_blocks(local_block)
        cap = self.__dict__.get("max_block_bytes")
        if cap is not None:
            local = self._cut_blocks(cap)
            if local is not None:
                self._number_blocks(local)

    def _number_blocks(self, local_block: np.ndarray) -> None:
        """Number the blocks: (shard, local block) pairs; row ranges from their episodes."""
        key = self.shard.astype(np.int64) << 32 | local_block.astype(np.int64)
        uniq, self.block = np.unique(key, return_inverse=True)
        n = len(uniq)
        self.block_shard = (uniq >> 32).astype(np.int32)
        self.block_obs_start = np.full(n, np.iinfo(np.int64).max, np.int64)
        self.block_step_start = np.full(n, np.iinfo(np.int64).max, np.int64)
        self.block_obs_stop = np.zeros(n, np.int64)
        self.block_step_stop = np.zeros(n, np.int64)
        np.minimum.at(self.block_obs_start, self.block, self.obs_offset)
        np.minimum.at(self.block_step_start, self.block, self.step_offset)
        np.maximum.at(self.block_obs_stop, self.block, self.obs_offset + self.length + 1)
        np.maximum.at(self.block_step_stop, self.block, self.step_offset + self.length)
        self.__dict__.pop("block_nbytes", None)

    def split_blocks(self, block_bytes: int) -> None:
        """Cut blocks of more than ``block_bytes`` decompressed bytes between whole episodes.

        Episodes are kept in file order and a block is closed before the episode that would
        take it past ``block_bytes``; an episode larger than that is a block alone. A no-op
        when every block fits (e.g. CartPole-sized rows in ``block_rows`` windows). Kept as
        ``max_block_bytes``: blocks numbered later (an index built on first use) are cut too.
        """
        self.max_block_bytes = int(block_bytes)
        if "block" in self.__dict__:  # numbered already
            local = self._cut_blocks(self.max_block_bytes)
            if local is not None:
                self._number_blocks(local)

    def _cut_blocks(self, block_bytes: int) -> np.ndarray | None:
        """Local block numbers cutting blocks at ``block_bytes`` (None: every block fits)."""
        if self.num_blocks == 0 or self.block_nbytes.max() <= block_bytes:
            return None
        order = np.lexsort((self.step_offset, self.block))
        sizes = self.episode_nbytes[order].tolist()
        old = self.block[order].tolist()
        local = np.empty(len(order), np.int64)
        n, held, prev = -1, 0, -1
        for i, (size, blk) in enumerate(zip(sizes, old, strict=True)):
            if blk != prev or (held and held + size > block_bytes):
                n, held, prev = n + 1, 0, blk
            held += size
            local[i] = n
        new = np.empty_like(local)
        new[order] = local
        return new

    @functools.cached_property
    def row_nbytes(self) -> tuple[int, int]:
        """Decompressed bytes of one observation row and of one step row (all columns)."""

        def width(space: gym.Space) -> int:
            return sum(c.dtype.itemsize * int(np.prod(c.shape)) for c in columns(space))

        infos = sum(d.itemsize * int(np.prod(shape)) + 1 for d, shape in self.info_schema.values())
        # rewards (float64), terminations and truncations (bool)
        return width(self.observation_space) + infos, width(self.action_space) + 10

    @functools.cached_property
    def episode_nbytes(self) -> np.ndarray:
        """Decompressed bytes of each episode (index order): ``T + 1`` obs rows, ``T`` steps."""
        obs, step = self.row_nbytes
        return (self.length + 1) * obs + self.length * step

    @functools.cached_property
    def block_nbytes(self) -> np.ndarray:
        """Decompressed bytes of each block (its episodes' ``episode_nbytes``)."""
        return np.bincount(
            self.block, weights=self.episode_nbytes, minlength=self.num_blocks
        ).astype(np.int64)

    # -- block geometry ---------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        """Blocks of this snapshot."""
        return len(self.block_shard)

    def block_ref(self, block: int) -> BlockRef:
        """Where ``block``'s rows are (file and row ranges), for a reader in any process."""
        return BlockRef(
            str(self.files[self.block_shard[block]]),
            (int(self.block_obs_start[block]), int(self.block_obs_stop[block])),
            (int(self.block_step_start[block]), int(self.block_step_stop[block])),
        )

    def rows_in_block(self, pos: np.ndarray | int) -> tuple[Any, Any]:
        """(first observation row, first step row) of index rows ``pos`` inside their block."""
        block = self.block[pos]
        return (
            self.obs_offset[pos] - self.block_obs_start[block],
            self.step_offset[pos] - self.block_step_start[block],
        )

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Rows of the index holding episode ``ids`` (``EpisodeNotFoundError`` for unknown ids)."""
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return np.zeros(0, np.int64)
        pos = np.searchsorted(self.ids, ids)
        bad = (pos >= len(self.ids)) | (self.ids[np.minimum(pos, len(self.ids) - 1)] != ids)
        if len(self.ids) == 0 or np.any(bad):
            missing = np.asarray(ids)[bad] if len(self.ids) else np.asarray(ids)
            raise EpisodeNotFoundError(
                f"episode id(s) {missing[:5].tolist()} not in {self.dataset_id!r}; "
                "ds.episode_indices lists the ids it holds"
            )
        return pos

    # -- what subclasses read ----------------------------------------------------------------

    @functools.cached_property
    def texts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-episode options and metadata JSON (bytes, index order), read on first use."""
        return self.read_texts()

    def read_texts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-episode options and metadata JSON in index order."""
        raise NotImplementedError

    def read_block(self, block: int, reader: storage.ShardReader) -> storage.ShardRows:
        """Read one block's rows."""
        raise NotImplementedError

    def reopen(self, block_rows: int) -> Snapshot:
        """The latest commit of the same dataset."""
        raise NotImplementedError


_INDEX_FIELDS = tuple(f for f in storage.TABLE_FIELDS if f not in ("digest", "options", "metadata"))
_TABLE_COLUMNS = {  # index column <- shard table field
    "stored_id": "id",
    "length": "length",
    "obs_offset": "obs_offset",
    "step_offset": "step_offset",
    "seed": "seed",
    "has_seed": "has_seed",
    "returns": "return",
    "terminated": "terminated",
    "truncated": "truncated",
}


class ShardSnapshot(Snapshot):
    """A harvest dataset's commit: ``metadata.json``, then the shards' episode index on use.

    Opening reads only ``metadata.json``: ``len``, totals, spaces and metadata come from it.
    The episode index is read on first use, from the shards' index files (their episode
    tables for shards written before those existed; no step data, no digests, options and
    metadata on first use of ``texts``), and kept per process for the commit
    (``INDEX_CACHE``), so opening the same commit again reads nothing but the manifest.
    """

    native = True
    LAZY_ATTRIBUTES = (*Snapshot.LAZY_ATTRIBUTES, "kept", "index_state")

    def __init__(self, path: Path, dataset_id: str, block_rows: int) -> None:
        # before the manifest: a writer then keeps the shards this commit lists while the
        # snapshot lives (storage.ReaderLease)
        self.lease = storage.ReaderLease.acquire(path)
        meta, files, info_schema = _read_manifest(path, dataset_id)
        super().__init__(
            path,
            dataset_id,
            meta,
            observation_space=space_from_json(meta["observation_space"]),
            action_space=space_from_json(meta["action_space"]),
            files=files,
            info_schema=info_schema,
            columns=None,
            block_rows=block_rows,
        )

    @property
    def num_episodes(self) -> int:
        """Episodes of this commit (from the manifest, which ``check_metadata`` checked)."""
        return int(self.meta["total_episodes"])

    @property
    def num_steps(self) -> int:
        """Steps of this commit (from the manifest)."""
        return int(self.meta["total_steps"])

    def build_index(self) -> None:
        """Build the episode index: from ``INDEX_CACHE`` if this process has it, else files."""
        seal = self.meta.get(storage.MANIFEST_SHA256)
        geometry = (self.block_rows, self.__dict__.get("max_block_bytes"))  # blocks differ
        key = None if seal is None else (os.path.realpath(self.path), seal, geometry)
        state = INDEX_CACHE.get(key)
        if state is None:
            super().build_index()
            state = {k: self.__dict__[k] for k in self.LAZY_ATTRIBUTES if k != "index_state"}
            INDEX_CACHE.put(key, state)
        self.__dict__.update(state)
        #: what ``INDEX_CACHE`` keeps of this commit (``texts`` too, once read)
        self.index_state = state

    def read_texts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-episode options and metadata JSON, from the shards' index files (or tables).

        Read once per commit and process: they are kept with the commit's index.
        """
        state = self.index_state  # (the index is built first)
        if "texts" not in state:
            options, metadata = [], []
            for entry, kept in zip(self.meta.get("shards", []), self.kept, strict=True):
                t = storage.read_shard_index(self.path, entry, ("options", "metadata"))
                options.append(t["options"] if kept is None else t["options"][kept])
                metadata.append(t["metadata"] if kept is None else t["metadata"][kept])
            state["texts"] = _text_column(options, self.order), _text_column(metadata, self.order)
        return state["texts"]

    def load_columns(self) -> dict[str, np.ndarray]:
        """The index columns, one shard index (or table) at a time."""
        cols: dict[str, list[np.ndarray]] = {k: [] for k in INDEX_COLUMNS}
        kept: list[np.ndarray | None] = []  # per shard: table rows in the dataset
        for s, entry in enumerate(self.meta.get("shards", [])):
            t = storage.read_shard_index(self.path, entry, _INDEX_FIELDS)
            pos, ids = storage.map_shard_ids(entry, t["id"])
            partial = len(pos) != len(t["id"])  # a linked shard with only some episodes in
            kept.append(pos if partial else None)
            if partial:
                t = {k: v[pos] for k, v in t.items()}
            cols["ids"].append(ids)
            cols["shard"].append(np.full(len(ids), s, np.int32))
            for name, field in _TABLE_COLUMNS.items():
                cols[name].append(t[field])
        self.kept = kept
        return {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in cols.items()}

    def reopen(self, block_rows: int) -> ShardSnapshot:
        """The latest commit of the same dataset."""
        return ShardSnapshot(self.path, self.dataset_id, block_rows)

    def read_block(self, block: int, reader: storage.ShardReader) -> storage.ShardRows:
        """Read one block's rows from its shard."""
        ref = self.block_ref(block)
        return reader.read_rows(Path(ref.file), slice(*ref.obs), slice(*ref.steps))


#: Manifests read by this process, checked and parsed, by (folder, sha256 of the file's
#: bytes): a second open of the same commit reads and hashes the file, and parses nothing.
_MANIFESTS: OrderedDict[tuple[str, str], tuple[dict[str, Any], list[Path], dict[str, Any]]] = (
    OrderedDict()
)
_MANIFESTS_MAX = 8
_MANIFESTS_LOCK = threading.Lock()


def _read_manifest(
    path: Path, dataset_id: str
) -> tuple[dict[str, Any], list[Path], dict[str, tuple[np.dtype, tuple[int, ...]]]]:
    """A commit's metadata, shard files and info schema (the union of the shards')."""
    data = storage.read_metadata_bytes(path, dataset_id)
    key = (os.path.realpath(path), hashlib.sha256(data).hexdigest())
    with _MANIFESTS_LOCK:
        hit = _MANIFESTS.get(key)
        if hit is not None:
            _MANIFESTS.move_to_end(key)
            return hit
    meta = storage.loads_metadata(data, str(path / storage.METADATA_FILE), dataset_id)
    shards = meta.get("shards", [])
    folder = path / storage.DATA_DIR
    files = [folder / e["file"] for e in shards]
    # readers take the union of the shards' info schemas (DESIGN.md section 4)
    info_schema: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    for entry in shards:
        for name, spec in (entry.get("info_schema") or {}).items():
            dtype = np.dtype(spec["dtype"])
            if name in info_schema:
                dtype = np.result_type(info_schema[name][0], dtype)
            info_schema[name] = (dtype, tuple(spec["shape"]))
    with _MANIFESTS_LOCK:
        _MANIFESTS[key] = (meta, files, info_schema)
        while len(_MANIFESTS) > _MANIFESTS_MAX:
            _MANIFESTS.popitem(last=False)
    return meta, files, info_schema


def _text_column(parts: list[np.ndarray], order: np.ndarray) -> np.ndarray:
    """Per-episode JSON text as one compact bytes array (``b""`` where there is none)."""
    if not parts:
        return np.zeros(0, "S1")
    joined = np.concatenate([np.asarray(p, dtype=object) for p in parts])
    width = max(1, max(map(len, joined), default=1))
    if width > 64:  # a few long values must not widen every row
        return joined[order]
    return np.asarray(joined, dtype=f"S{width}")[order]


class IndexCache:
    """Episode indexes of the last few commits opened in this process (``ShardSnapshot``).

    Keyed by (dataset folder, manifest checksum, block rows): a commit's files never change,
    so a second ``load_dataset`` of the same commit reuses its index. Bounded: at most
    ``max_entries`` indexes and ``max_bytes`` of arrays (a larger index is not kept).
    """

    def __init__(self, max_entries: int = 4, max_bytes: int = 512 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str, int], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Indexes held."""
        return len(self._items)

    def get(self, key: tuple[str, str, int] | None) -> dict[str, Any] | None:
        """The index state kept under ``key``, or None."""
        with self._lock:
            state = self._items.get(key) if key is not None else None
            if state is not None:
                self._items.move_to_end(key)
            return state

    def put(self, key: tuple[str, str, int] | None, state: dict[str, Any]) -> None:
        """Keep ``state`` (its arrays made read-only) under ``key``."""
        if key is None or _nbytes(state) > self.max_bytes:
            return
        for value in state.values():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
        with self._lock:
            self._items[key] = state
            while len(self._items) > self.max_entries or (
                sum(map(_nbytes, self._items.values())) > self.max_bytes
            ):
                self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every index."""
        with self._lock:
            self._items.clear()


def _nbytes(state: dict[str, Any]) -> int:
    return sum(v.nbytes for v in state.values() if isinstance(v, np.ndarray))


#: This process's ``IndexCache``.
INDEX_CACHE = IndexCache()


class BlockCache:
    """Decompressed blocks of one process, least recently used evicted past a byte budget.

    Args:
        budget: bytes of decompressed rows kept.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.reader = storage.ShardReader()
        self._blocks: OrderedDict[tuple[str, int], storage.ShardRows] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        """Blocks held."""
        return len(self._blocks)

    @property
    def nbytes(self) -> int:
        """Bytes of the blocks held."""
        return self._bytes

    def get(self, snap: Snapshot, block: int) -> storage.ShardRows:
        """``block`` of ``snap``, read on a miss (room is made before reading, not after)."""
        rows = self.peek(snap, block)
        if rows is None:
            self._evict(self.budget - int(snap.block_nbytes[block]))
            rows = snap.read_block(block, self.reader)
            self.put(snap, block, rows)
        return rows

    def peek(self, snap: Snapshot, block: int) -> storage.ShardRows | None:
        """``block`` of ``snap`` if it is held (then it is the most recently used), or None."""
        key = _cache_key(snap, block)
        rows = self._blocks.pop(key, None)
        if rows is not None:
            self._blocks[key] = rows
        return rows

    def put(self, snap: Snapshot, block: int, rows: storage.ShardRows) -> None:
        """Hold ``rows`` (read elsewhere, e.g. by a worker process) as ``block`` of ``snap``."""
        key = _cache_key(snap, block)
        old = self._blocks.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._bytes += rows.nbytes
        self._evict(self.budget - rows.nbytes)
        self._blocks[key] = rows

    def _evict(self, keep: int) -> None:
        """Drop least recently used blocks until at most ``keep`` bytes are held."""
        while self._blocks and self._bytes > keep:
            _, old = self._blocks.popitem(last=False)
            self._bytes -= old.nbytes

    def evict_all(self) -> None:
        """Drop every block; the file handles stay open."""
        self._blocks.clear()
        self._bytes = 0

    def clear(self) -> None:
        """Drop every block and close the file handles."""
        self.evict_all()
        self.reader.close()


def _cache_key(snap: Snapshot, block: int) -> tuple[str, int, int]:
    """A block's cache key: its file and observation rows (geometry-proof)."""
    ref = snap.block_ref(block)
    return (ref.file, *ref.obs)


def warn_large_block(snap: Snapshot, block: int, budget: int) -> None:
    """One line: ``block`` alone is larger than the memory ``budget`` (it is read anyway)."""
    eps = np.flatnonzero(snap.block == block)
    warnings.warn(
        f"episode(s) {snap.ids[eps[:3]].tolist()} of {snap.dataset_id!r} take "
        f"{snap.block_nbytes[block] / 2**20:.0f} MiB decompressed, more than the memory "
        f"budget of {budget / 2**20:.0f} MiB: read alone; raise max_memory to avoid this",
        HarvestWarning,
        stacklevel=3,
    )


def nested_row(value: Any, t: int) -> Any:
    """Row ``t`` of a nested value (dict / tuple / ``list[str]`` / ndarray), same nesting."""
    if isinstance(value, dict):
        return {k: nested_row(v, t) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(nested_row(v, t) for v in value)
    return value[t]
