"""Load datasets and read episodes: the Minari-style reading API.

A ``Dataset`` is a snapshot of one commit: opening it reads ``metadata.json`` and the shard
episode tables (never step data) into a numpy index. Step data is read in **blocks**:
contiguous runs of whole episodes inside one shard (those whose first step falls in one
``block_rows`` window, so at most ``block_rows`` plus one episode), read and decompressed
once and kept in a byte-bounded LRU. Episodes are sliced out of cached blocks, so iterating,
sampling and the training iterators (``curation.pipeline``) all read HDF5 in large contiguous
pieces [review 10].

``dataset[i]`` is positional over the snapshot's sorted episode ids (``episode_indices``);
``filter_episodes`` and ``sample``-style helpers return views over the same snapshot.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from collector import storage
from collector.envs import check_registered_spec
from collector.errors import CorruptDatasetError, HarvestError, HarvestWarning, UsageError
from collector.spaces import columns, space_from_json, unescape_key, unflatten

if TYPE_CHECKING:
    from curation.pipeline import Pipeline

__all__ = [
    "Dataset",
    "DatasetSpec",
    "EpisodeData",
    "delete_dataset",
    "list_local_datasets",
    "load_dataset",
]

DEFAULT_BLOCK_ROWS = 65_536
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class EpisodeData:
    """One episode: T steps, T+1 observations (the reset observation first).

    ``observations`` and ``actions`` are nested like their spaces (dict for Dict, tuple for
    Tuple, ``list[str]`` for Text, ndarray otherwise). ``infos`` is a dict with one array of
    T+1 rows per recorded key plus a ``_key`` presence mask (Gymnasium's convention), or empty
    when infos were not recorded.
    """

    id: int
    seed: int | None
    options: dict[str, Any] | None
    observations: Any
    actions: Any
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    infos: dict[str, Any]

    def __len__(self) -> int:
        return len(self.rewards)

    def __repr__(self) -> str:
        return (
            f"EpisodeData(id={self.id}, seed={self.seed}, steps={len(self)}, "
            f"observations={_describe(self.observations)}, actions={_describe(self.actions)}, "
            f"return={float(self.rewards.sum()):.6g}, "
            f"terminated={bool(self.terminations[-1:].any())}, "
            f"truncated={bool(self.truncations[-1:].any())}, infos={sorted(self.infos)})"
        )


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_describe(v) for v in value) + ")"
    if isinstance(value, list):
        return f"list[str] x{len(value)}"
    return f"ndarray{tuple(value.shape)} {value.dtype}"


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is, without its data (Minari's ``MinariDatasetSpec`` fields)."""

    dataset_id: str
    namespace: str | None
    dataset_name: str
    version: int
    env_spec: gym.envs.registration.EnvSpec | None
    total_episodes: int
    total_steps: int
    observation_space: gym.Space
    action_space: gym.Space
    data_path: str
    fingerprint: str
    combined_datasets: tuple[str, ...] = ()


class _Snapshot:
    """One commit of a dataset: metadata, the episode index (numpy, sorted by id), blocks."""

    #: harvest shards (False: another format read in place, e.g. a Minari dataset): only
    #: native snapshots can be read by worker processes from file paths, or linked by ops.
    native = True

    def __init__(self, path: Path, dataset_id: str, block_rows: int) -> None:
        self.path = path
        self.dataset_id = dataset_id
        self.meta = storage.read_metadata(path, dataset_id)
        self.observation_space = space_from_json(self.meta["observation_space"])
        self.action_space = space_from_json(self.meta["action_space"])
        self.files = [path / storage.DATA_DIR / e["file"] for e in self.meta.get("shards", [])]
        # readers take the union of the shards' info schemas (DESIGN.md section 4)
        self.info_schema: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        for entry in self.meta.get("shards", []):
            for name, spec in (entry.get("info_schema") or {}).items():
                dtype = np.dtype(spec["dtype"])
                if name in self.info_schema:
                    dtype = np.result_type(self.info_schema[name][0], dtype)
                self.info_schema[name] = (dtype, tuple(spec["shape"]))
        cols: dict[str, list[Any]] = {
            k: [] for k in ("id", "stored", "shard", "length", "obs", "step")
        }
        cols.update({k: [] for k in ("seed", "has_seed", "return", "terminated", "truncated")})
        self._kept: list[np.ndarray | None] = []  # per shard: table rows in the dataset
        block_parts: list[np.ndarray] = []
        for s, (entry, file) in enumerate(
            zip(self.meta.get("shards", []), self.files, strict=True)
        ):
            # no digests, and options/metadata only when asked (``texts``): the index is per
            # episode, so it is what grows with the dataset
            t = storage.read_shard_table(file, _INDEX_FIELDS, raw_text=True)
            pos, ids = storage.map_shard_ids(entry, t["id"])
            partial = len(pos) != len(t["id"])  # a linked shard with only some episodes in
            self._kept.append(pos if partial else None)
            if partial:
                t = {k: v[pos] for k, v in t.items()}
            cols["id"].append(ids)
            cols["stored"].append(t["id"])
            cols["shard"].append(np.full(len(ids), s, np.int32))
            cols["length"].append(t["length"])
            cols["obs"].append(t["obs_offset"])
            cols["step"].append(t["step_offset"])
            for key in ("seed", "has_seed", "return", "terminated", "truncated"):
                cols[key].append(t[key])
            # a block holds the episodes whose first step falls in one block_rows window
            block_parts.append(t["step_offset"] // block_rows)
        if cols["id"]:
            arrays = {k: np.concatenate(v) for k, v in cols.items()}
            local_block = np.concatenate(block_parts)
        else:
            arrays = {k: np.zeros(0, np.int64) for k in cols}
            local_block = np.zeros(0, np.int64)
        order = np.argsort(arrays["id"], kind="stable")
        self.ids = arrays["id"][order]
        if len(np.unique(self.ids)) != len(self.ids):
            raise CorruptDatasetError(
                f"dataset {dataset_id!r} lists an episode id twice; run verify"
            )
        self.stored_id = arrays["stored"][order]  # the id inside the shard file
        self.shard = arrays["shard"][order]
        self.length = arrays["length"][order]
        self.obs_offset = arrays["obs"][order]
        self.step_offset = arrays["step"][order]
        self.seed = arrays["seed"][order].astype(np.uint64)
        self.has_seed = arrays["has_seed"][order].astype(bool)
        self.returns = arrays["return"][order].astype(np.float64)
        self.terminated = arrays["terminated"][order].astype(bool)
        self.truncated = arrays["truncated"][order].astype(bool)
        self._order = order
        self._set_blocks(local_block[order])

    def _set_blocks(self, local_block: np.ndarray) -> None:
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

    def reopen(self, block_rows: int) -> _Snapshot:
        """The latest commit of the same dataset."""
        return _Snapshot(self.path, self.dataset_id, block_rows)

    def read_block(self, block: int, reader: storage.ShardReader) -> storage.ShardRows:
        """Read one block's rows from its shard."""
        return reader.read_rows(
            self.files[self.block_shard[block]],
            slice(int(self.block_obs_start[block]), int(self.block_obs_stop[block])),
            slice(int(self.block_step_start[block]), int(self.block_step_stop[block])),
        )

    @functools.cached_property
    def texts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-episode options and metadata JSON (stored bytes), read on first use."""
        options, metadata = [], []
        for file, kept in zip(self.files, self._kept, strict=True):
            t = storage.read_shard_table(file, ("options", "metadata"), raw_text=True)
            options.append(t["options"] if kept is None else t["options"][kept])
            metadata.append(t["metadata"] if kept is None else t["metadata"][kept])
        return _text_column(options, self._order), _text_column(metadata, self._order)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Rows of the index holding episode ``ids`` (KeyError for unknown ids)."""
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return np.zeros(0, np.int64)
        pos = np.searchsorted(self.ids, ids)
        bad = (pos >= len(self.ids)) | (self.ids[np.minimum(pos, len(self.ids) - 1)] != ids)
        if len(self.ids) == 0 or np.any(bad):
            missing = np.asarray(ids)[bad] if len(self.ids) else np.asarray(ids)
            raise KeyError(f"episode id(s) {missing[:5].tolist()} not in {self.dataset_id!r}")
        return pos


class _BlockCache:
    """Decompressed blocks of one process, least recently used evicted past a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.reader = storage.ShardReader()
        self._blocks: OrderedDict[tuple[str, int], storage.ShardRows] = OrderedDict()
        self._bytes = 0

    def get(self, snap: _Snapshot, block: int) -> storage.ShardRows:
        key = (str(snap.files[snap.block_shard[block]]), int(snap.block_obs_start[block]))
        rows = self._blocks.pop(key, None)
        if rows is None:
            rows = snap.read_block(block, self.reader)
            self._bytes += rows.nbytes
            while self._blocks and self._bytes > self.budget:
                _, old = self._blocks.popitem(last=False)
                self._bytes -= old.nbytes
        self._blocks[key] = rows
        return rows

    def clear(self) -> None:
        self._blocks.clear()
        self._bytes = 0
        self.reader.close()


def nest_infos(values: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict[str, Any]:
    """Turn flat info columns (``"episode/r"``) into nested dicts with ``_key`` masks."""
    out: dict[str, Any] = {}
    for name, arr in values.items():
        *parents, leaf = [unescape_key(p) for p in name.split("/")]
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = arr
        node["_" + leaf] = masks[name]
    return out


class Dataset:
    """A snapshot of one dataset commit, or a view (a subset of its episodes).

    Create with ``load_dataset``. Reading never changes the files; a ``collect`` run writing
    the same dataset does not disturb it (call ``refresh()`` to see newer commits).
    """

    #: The per-episode fields of ``episodes()``, which filter expressions can use.
    EPISODE_FIELDS = ("id", "seed", "has_seed", "length", "return", "terminated", "truncated")

    def __init__(
        self,
        snapshot: _Snapshot,
        episode_indices: np.ndarray | None = None,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        block_rows: int = DEFAULT_BLOCK_ROWS,
        _cache: _BlockCache | None = None,
        _steps: tuple[dict[str, Any], ...] = (),
    ) -> None:
        self._snap = snapshot
        self._steps = _steps  # the operations that made this view, for lineage
        self._view = episode_indices is not None
        ids = snapshot.ids if episode_indices is None else np.asarray(episode_indices, np.int64)
        self._pos = snapshot.positions(ids) if self._view else np.arange(len(ids))
        self._ids = snapshot.ids[self._pos]
        self._ids.flags.writeable = False
        self._cache_bytes = cache_bytes
        self._block_rows = block_rows
        self._cache = _cache or _BlockCache(cache_bytes)
        self._rng = np.random.default_rng()

    # -- pickling (torch DataLoader workers, multiprocessing) ----------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None  # handles and blocks are per process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = _BlockCache(self._cache_bytes)

    # -- what it is ----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The dataset id."""
        return self._snap.dataset_id

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of this commit's ``metadata.json`` contents."""
        return json.loads(json.dumps(self._snap.meta))

    @property
    def observation_space(self) -> gym.Space:
        """The stored observation space."""
        return self._snap.observation_space

    @property
    def action_space(self) -> gym.Space:
        """The stored action space."""
        return self._snap.action_space

    @property
    def env_spec(self) -> gym.envs.registration.EnvSpec | None:
        """The environment's ``EnvSpec``, or None when the data has no env."""
        return _env_spec(self._snap.meta.get("env_spec"))

    @property
    def episode_indices(self) -> np.ndarray:
        """Episode ids of this dataset or view, sorted (read-only)."""
        return self._ids

    @property
    def total_episodes(self) -> int:
        """Episodes in this dataset or view."""
        return len(self._ids)

    @property
    def total_steps(self) -> int:
        """Steps in this dataset or view."""
        return int(self._snap.length[self._pos].sum())

    @property
    def fingerprint(self) -> str:
        """The commit's fingerprint (of the whole dataset, not of a view)."""
        return self._snap.meta["fingerprint"]

    @property
    def spec(self) -> DatasetSpec:
        """A ``DatasetSpec`` of this dataset or view."""
        ns, name, version = storage.parse_dataset_id(self.id)
        lineage = self._snap.meta.get("lineage") or {}
        return DatasetSpec(
            dataset_id=self.id,
            namespace=ns,
            dataset_name=name,
            version=version,
            env_spec=self.env_spec,
            total_episodes=self.total_episodes,
            total_steps=self.total_steps,
            observation_space=self.observation_space,
            action_space=self.action_space,
            data_path=str(self._snap.path),
            fingerprint=self.fingerprint,
            combined_datasets=tuple(
                src["dataset_id"]
                for src in lineage.get("sources", ())
                if len(lineage["sources"]) > 1
            ),
        )

    def __len__(self) -> int:
        return self.total_episodes

    def __repr__(self) -> str:
        kind = "view of " if self._view else ""
        return (
            f"<Dataset {kind}{self.id!r}: {self.total_episodes} episodes, {self.total_steps} steps>"
        )

    # -- per-episode metadata (no step data read) --------------------------------------------

    def episodes(self) -> dict[str, np.ndarray]:
        """Per-episode fields of this view as numpy columns (no step data is read).

        Keys: ``id``, ``seed`` (uint64, exact; 0 where ``has_seed`` is False), ``has_seed``,
        ``length``, ``return``, ``terminated``, ``truncated``.
        """
        p = self._pos
        return {
            "id": self._ids.copy(),
            "seed": np.where(self._snap.has_seed[p], self._snap.seed[p], np.uint64(0)),
            "has_seed": self._snap.has_seed[p].copy(),
            "length": self._snap.length[p].copy(),
            "return": self._snap.returns[p].copy(),
            "terminated": self._snap.terminated[p].copy(),
            "truncated": self._snap.truncated[p].copy(),
        }

    def episode_sources(self) -> dict[str, np.ndarray]:
        """Where each episode of this view came from: ``source`` (dataset id) and ``source_id``.

        For a dataset written by ``combine_datasets`` or ``save`` these name the source
        dataset and the episode's id there, from ``lineage``; otherwise the dataset itself.
        """
        sources = (self._snap.meta.get("lineage") or {}).get("sources") or []
        ids = self._ids
        if not sources:
            return {"source": np.full(len(ids), self.id, object), "source_id": ids.copy()}
        firsts = np.asarray([src["first_id"] for src in sources], np.int64)
        k = np.searchsorted(firsts, ids, side="right") - 1
        names = np.asarray([src["dataset_id"] for src in sources], object)
        original = np.zeros(len(ids), np.int64)
        for i, src in enumerate(sources):
            sel = k == i
            if sel.any():
                original[sel] = storage.ids_from_ranges(src["episode_ids"])[ids[sel] - firsts[i]]
        return {"source": names[k], "source_id": original}

    def get_episode_metadata(
        self, episode_indices: Iterable[int] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Minari-style per-episode metadata dicts (no step data is read).

        Each has id, seed, options, length, return, terminated, truncated, plus whatever an
        ``episode_metadata_callback`` stored.
        """
        ids = self._ids if episode_indices is None else np.asarray(list(episode_indices), np.int64)
        for pos in self._snap.positions(ids):
            yield self._meta_at(int(pos))

    def _meta_at(self, pos: int) -> dict[str, Any]:
        s = self._snap
        meta = {
            "id": int(s.ids[pos]),
            "seed": int(s.seed[pos]) if s.has_seed[pos] else None,
            "options": _loads(s.texts[0][pos]),
            "length": int(s.length[pos]),
            "return": float(s.returns[pos]),
            "terminated": bool(s.terminated[pos]),
            "truncated": bool(s.truncated[pos]),
        }
        extra = _loads(s.texts[1][pos])
        if isinstance(extra, dict):
            meta.update({k: v for k, v in extra.items() if k not in meta})
        return meta

    # -- episodes ------------------------------------------------------------------------------

    def _episode(self, pos: int) -> EpisodeData:
        s = self._snap
        rows = self._cache.get(s, int(s.block[pos]))
        length = int(s.length[pos])
        o0 = int(s.obs_offset[pos] - s.block_obs_start[s.block[pos]])
        t0 = int(s.step_offset[pos] - s.block_step_start[s.block[pos]])
        obs_rows, step_rows = slice(o0, o0 + length + 1), slice(t0, t0 + length)
        obs = {k: v[obs_rows].copy() for k, v in rows.observations.items()}
        act = {k: v[step_rows].copy() for k, v in rows.actions.items()}
        infos: dict[str, Any] = {}
        if s.info_schema:
            values, masks = {}, {}
            for name, (dtype, shape) in s.info_schema.items():
                if rows.infos and name in rows.infos:
                    values[name] = rows.infos[name][obs_rows].astype(dtype)
                    masks[name] = rows.info_masks[name][obs_rows].copy()
                else:  # a key another shard has: absent here
                    values[name] = np.zeros((length + 1, *shape), dtype)
                    masks[name] = np.zeros(length + 1, bool)
            infos = nest_infos(values, masks)
        return EpisodeData(
            id=int(s.ids[pos]),
            seed=int(s.seed[pos]) if s.has_seed[pos] else None,
            options=_loads(s.texts[0][pos]),
            observations=obs[""]
            if len(obs) == 1 and "" in obs
            else unflatten(s.observation_space, obs),
            actions=act[""] if len(act) == 1 and "" in act else unflatten(s.action_space, act),
            rewards=rows.rewards[step_rows].copy(),
            terminations=rows.terminations[step_rows].copy(),
            truncations=rows.truncations[step_rows].copy(),
            infos=infos,
        )

    def _transition(self, pos: int, t: int) -> dict[str, Any]:
        """Step ``t`` of the episode at index row ``pos`` (for map-style loaders)."""
        s = self._snap
        b = int(s.block[pos])
        rows = self._cache.get(s, b)
        o = int(s.obs_offset[pos] - s.block_obs_start[b]) + t
        k = int(s.step_offset[pos] - s.block_step_start[b]) + t

        def one(space: gym.Space, cols: dict[str, np.ndarray], r: int) -> Any:
            return nested_row(
                unflatten(space, {n: v[r : r + 1].copy() for n, v in cols.items()}), 0
            )

        return {
            "observation": one(s.observation_space, rows.observations, o),
            "action": one(s.action_space, rows.actions, k),
            "reward": rows.rewards[k],
            "next_observation": one(s.observation_space, rows.observations, o + 1),
            "terminated": bool(rows.terminations[k]),
            "truncated": bool(rows.truncations[k]),
        }

    def __getitem__(self, index: int) -> EpisodeData:
        n = len(self._ids)
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"episode position {index} out of range for {n} episodes")
        return self._episode(int(self._pos[i]))

    def __iter__(self) -> Iterator[EpisodeData]:
        return self.iterate_episodes()

    def iterate_episodes(
        self, episode_indices: Iterable[int] | None = None
    ) -> Iterator[EpisodeData]:
        """Yield episodes (all of this view, or the given ids) in order, reading block by block."""
        if episode_indices is None:
            positions = self._pos
        else:
            positions = self._snap.positions(np.asarray(list(episode_indices), np.int64))
        for pos in positions.tolist():
            yield self._episode(pos)

    def set_seed(self, seed: int | None) -> None:
        """Seed ``sample_episodes`` (and nothing else)."""
        self._rng = np.random.default_rng(seed)

    def sample_episodes(self, n_episodes: int) -> list[EpisodeData]:
        """``n_episodes`` distinct episodes, uniformly at random (see ``set_seed``).

        Raises:
            ValueError: ``n_episodes`` is larger than the dataset or view.
        """
        if n_episodes > len(self._ids):
            raise ValueError(
                f"cannot sample {n_episodes} episodes without replacement from {len(self._ids)}"
            )
        picked = self._rng.choice(len(self._ids), n_episodes, replace=False)
        return [self._episode(int(self._pos[i])) for i in picked]

    def filter_episodes(self, condition: Callable[[EpisodeData], bool] | str) -> Dataset:
        """A view of the episodes for which ``condition`` holds.

        ``condition`` is a callable on each ``EpisodeData`` (reads every episode, as in
        Minari), or an expression over the per-episode fields of ``episodes()`` plus
        ``source``/``source_id`` (``"return >= 200 and length < 500"``; see
        ``curation.expr``), evaluated on the episode tables without reading step data.

        Raises:
            ExpressionError: a malformed expression or an unknown field (before any read).
        """
        if isinstance(condition, str):
            mask = self.evaluate(condition)
            return self._view_of(self._ids[mask], {"name": "filter", "where": condition})
        keep = [pos for pos in self._pos.tolist() if condition(self._episode(pos))]
        name = getattr(condition, "__qualname__", type(condition).__qualname__)
        step = {"name": "filter", "callable": f"{getattr(condition, '__module__', '?')}.{name}"}
        return self._view_of(self._snap.ids[np.asarray(keep, np.int64)], step)

    def evaluate(self, expression: str) -> np.ndarray:
        """The boolean mask of ``expression`` over this view's episodes (no step data read)."""
        from curation.expr import compile_expression

        expr = compile_expression(expression, [*self.EPISODE_FIELDS, "source", "source_id"])
        columns: dict[str, np.ndarray] = {"id": self._ids}
        if expr.fields & set(self.EPISODE_FIELDS):
            columns.update(self.episodes())
        if expr.fields & {"source", "source_id"}:
            columns.update(self.episode_sources())
        # an unseeded episode's seed behaves as NaN: `seed % 2 == 0` is false for it
        missing = {"seed": ~self._snap.has_seed[self._pos]}
        return expr.evaluate(columns, missing)

    def save(
        self,
        new_dataset_id: str,
        *,
        root: str | Path | None = None,
        overwrite: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> Dataset:
        """Write this dataset or view as a new dataset with ``lineage`` (see ``save_dataset``)."""
        from curation.ops import save_dataset

        return save_dataset(self, new_dataset_id, root=root, overwrite=overwrite, metadata=metadata)

    def _view_of(self, ids: np.ndarray, step: dict[str, Any] | None = None) -> Dataset:
        steps = self._steps if step is None else (*self._steps, step)
        return Dataset(self._snap, np.sort(ids), cache_bytes=self._cache_bytes,
                       block_rows=self._block_rows, _cache=self._cache, _steps=steps)  # fmt: skip

    def refresh(self) -> Dataset:
        """Move to the latest commit (a view keeps its episodes that still exist); returns self."""
        snap = self._snap.reopen(self._block_rows)
        ids = None
        if self._view:
            ids = np.intersect1d(self._ids, snap.ids)
        self._cache.clear()
        Dataset.__init__(self, snap, ids, cache_bytes=self._cache_bytes,
                         block_rows=self._block_rows, _cache=self._cache,
                         _steps=self._steps)  # fmt: skip
        return self

    # -- whole-dataset arrays ------------------------------------------------------------------

    def to_transitions(self) -> dict[str, Any]:
        """All transitions of this view in the D4RL layout offline-RL code expects.

        Keys: ``observations``, ``actions``, ``rewards``, ``next_observations``, ``terminals``
        (terminations) and ``timeouts`` (truncations); observations and actions are nested like
        their spaces. Rows are in episode-id order.
        """
        s = self._snap
        parts: dict[str, list[Any]] = {
            k: [] for k in ("obs", "next", "act", "rew", "term", "trunc")
        }
        order = np.argsort(s.block[self._pos], kind="stable")
        pos_sorted = self._pos[order]
        blocks = s.block[pos_sorted]
        bounds = np.flatnonzero(np.diff(blocks)) + 1
        for group in np.split(pos_sorted, bounds):
            if len(group) == 0:
                continue
            b = int(s.block[group[0]])
            rows = self._cache.get(s, b)
            lengths = s.length[group]
            starts_o = s.obs_offset[group] - s.block_obs_start[b]
            starts_t = s.step_offset[group] - s.block_step_start[b]
            within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            obs_idx = np.repeat(starts_o, lengths) + within
            step_idx = np.repeat(starts_t, lengths) + within
            parts["obs"].append({k: v[obs_idx] for k, v in rows.observations.items()})
            parts["next"].append({k: v[obs_idx + 1] for k, v in rows.observations.items()})
            parts["act"].append({k: v[step_idx] for k, v in rows.actions.items()})
            parts["rew"].append(rows.rewards[step_idx])
            parts["term"].append(rows.terminations[step_idx])
            parts["trunc"].append(rows.truncations[step_idx])
        # back to episode-id order
        ep_order = np.argsort(s.ids[pos_sorted], kind="stable")
        lengths_sorted = s.length[pos_sorted]
        starts = np.cumsum(lengths_sorted) - lengths_sorted
        row_order = (
            np.concatenate([np.arange(starts[i], starts[i] + lengths_sorted[i]) for i in ep_order])
            if len(ep_order)
            else np.zeros(0, np.int64)
        )

        def cat(key: str) -> Any:
            chunks = parts[key]
            if not chunks:
                return {}
            if isinstance(chunks[0], dict):
                return {n: np.concatenate([c[n] for c in chunks])[row_order] for n in chunks[0]}
            return np.concatenate(chunks)[row_order]

        obs_cols, next_cols, act_cols = cat("obs"), cat("next"), cat("act")
        if not obs_cols:
            obs_cols = next_cols = {
                c.name: np.zeros((0, *c.shape), c.dtype) for c in columns(s.observation_space)
            }
            act_cols = {c.name: np.zeros((0, *c.shape), c.dtype) for c in columns(s.action_space)}
        return {
            "observations": unflatten(s.observation_space, obs_cols),
            "actions": unflatten(s.action_space, act_cols),
            "rewards": cat("rew") if parts["rew"] else np.zeros(0, np.float64),
            "next_observations": unflatten(s.observation_space, next_cols),
            "terminals": cat("term") if parts["term"] else np.zeros(0, bool),
            "timeouts": cat("trunc") if parts["trunc"] else np.zeros(0, bool),
        }

    # -- environments and scores -------------------------------------------------------------

    def recover_environment(
        self, eval_env: bool = False, *, trust_remote_code: bool = False, **kwargs: Any
    ) -> gym.Env:
        """Make the dataset's environment (or its evaluation env) with ``gym.make``.

        The stored spec names code to import and call, and a dataset may come from anyone:
        unless ``trust_remote_code=True``, only an env registered in this process with the same
        entry points (and no extra wrappers) is made (``collector.envs.check_registered_spec``).

        Warns (``HarvestWarning``) when the recorded ``requirements`` are missing or installed
        at other versions.

        Args:
            eval_env: make the evaluation env (falls back to the dataset's env).
            trust_remote_code: make whatever entry point the stored spec names.
            **kwargs: passed to ``gym.make``.

        Raises:
            UsageError: the dataset has no env spec, or its spec names code Gymnasium's
                registry does not (without ``trust_remote_code``).
        """
        _check_requirements(self._snap.meta.get("requirements") or [])
        spec_json = self._snap.meta.get("eval_env_spec") if eval_env else None
        spec = _env_spec(spec_json) or self.env_spec
        if spec is None:
            raise UsageError(f"dataset {self.id!r} has no env_spec to recover an environment from")
        if not trust_remote_code:
            check_registered_spec(spec, f"dataset {self.id!r}")
        return gym.make(spec, **kwargs)

    def get_normalized_score(self, returns: np.ndarray | float) -> np.ndarray | float:
        """``(returns - ref_min_score) / (ref_max_score - ref_min_score)`` (D4RL's score).

        Raises:
            ValueError: the dataset has no reference scores.
        """
        lo, hi = self._snap.meta.get("ref_min_score"), self._snap.meta.get("ref_max_score")
        if lo is None or hi is None:
            raise ValueError(
                f"dataset {self.id!r} has no ref_min_score/ref_max_score; pass them to "
                "create_dataset to enable normalized scores"
            )
        return (np.asarray(returns, np.float64) - lo) / (hi - lo)

    # -- training iterators --------------------------------------------------------------------

    def pipeline(self, num_workers: int = 4, **kwargs: Any) -> Pipeline:
        """MineRL-style training iterators over this dataset or view (``curation.pipeline``)."""
        from curation.pipeline import Pipeline

        return Pipeline(self, num_workers=num_workers, **kwargs)


def nested_row(value: Any, t: int) -> Any:
    """Row ``t`` of a nested value (dict / tuple / ``list[str]`` / ndarray), same nesting."""
    if isinstance(value, dict):
        return {k: nested_row(v, t) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(nested_row(v, t) for v in value)
    return value[t]


_INDEX_FIELDS = tuple(f for f in storage.TABLE_FIELDS if f not in ("digest", "options", "metadata"))


def _text_column(parts: list[np.ndarray], order: np.ndarray) -> np.ndarray:
    """Per-episode JSON text as one compact bytes array (``b""`` where there is none)."""
    if not parts:
        return np.zeros(0, "S1")
    joined = np.concatenate([np.asarray(p, dtype=object) for p in parts])
    width = max(1, max(map(len, joined), default=1))
    if width > 64:  # a few long values must not widen every row
        return joined[order]
    return np.asarray(joined, dtype=f"S{width}")[order]


def _loads(text: bytes | str | None) -> Any:
    if isinstance(text, bytes | np.bytes_):
        text = text.decode()
    return json.loads(text) if text else None


def _env_spec(data: dict[str, Any] | str | None) -> gym.envs.registration.EnvSpec | None:
    if data is None:
        return None
    # specs of older gymnasiums (imported from Minari) may lack additional_wrappers
    text = data if isinstance(data, str) else json.dumps({"additional_wrappers": [], **data})
    return gym.envs.registration.EnvSpec.from_json(text)


def _check_requirements(requirements: list[str]) -> None:
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    for line in requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            warnings.warn(
                f"requirement {line!r} is not valid; skipped", HarvestWarning, stacklevel=3
            )
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            warnings.warn(
                f"requirement {line!r} is not installed; pip install {line!r}",
                HarvestWarning,
                stacklevel=3,
            )
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            warnings.warn(
                f"requirement {line!r} is installed at {version}; the environment may differ",
                HarvestWarning,
                stacklevel=3,
            )


# --------------------------------------------------------------------------------------------
# module functions


def _is_minari_path(dataset_id: str | os.PathLike[str]) -> bool:
    """A folder path (not a dataset id) holding a Minari dataset's ``data/metadata.json``."""
    if not isinstance(dataset_id, os.PathLike):
        try:
            storage.parse_dataset_id(dataset_id)
            return False  # ids win over relative paths that happen to exist
        except HarvestError:
            pass
    try:
        path = Path(dataset_id).expanduser()
    except RuntimeError:  # "~name" of no user: not a path either
        return False
    return (path / "data" / storage.METADATA_FILE).is_file() or (
        path.name == "data" and (path / storage.METADATA_FILE).is_file()
    )


def load_dataset(
    dataset_id: str | os.PathLike[str],
    download: bool = False,
    *,
    root: str | Path | None = None,
    remote: str | None = None,
    cache_mb: float = DEFAULT_CACHE_BYTES / 2**20,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> Dataset:
    """Open a local dataset at its latest commit, or a Minari dataset folder read-only.

    A path to a Minari dataset (the folder holding ``data/metadata.json``) opens it in place
    without importing it (``curation.minari.open_minari``).

    Args:
        dataset_id: ``[namespace/...]name-vN``, or a Minari dataset folder.
        download: pull it from the remote first when it is not here (a local copy wins).
        root: datasets root (default ``$HARVEST_DATASETS`` or ``~/.harvest/datasets``).
        remote: the remote to download from (default ``$HARVEST_REMOTE``).
        cache_mb: byte budget of decompressed blocks kept in memory.
        block_rows: steps per block read from disk (larger: fewer, bigger reads).

    Raises:
        DatasetIdError: a malformed id.
        DatasetNotFoundError: no such dataset locally (nor, with ``download``, remotely).
        CorruptDatasetError: unreadable metadata or shard tables.
    """
    if _is_minari_path(dataset_id):
        from curation.minari import open_minari

        return open_minari(dataset_id, cache_mb=cache_mb, block_rows=block_rows)
    path = storage.dataset_path(str(dataset_id), root)
    if download and not (path / storage.METADATA_FILE).exists():
        from curation.remotes import pull_dataset

        pull_dataset(dataset_id, remote, root=root)
    snap = _Snapshot(path, dataset_id, int(block_rows))
    return Dataset(snap, cache_bytes=int(cache_mb * 2**20), block_rows=int(block_rows))


def list_local_datasets(root: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Every dataset under the root, as ``{id: metadata}``, sorted by id."""
    base = storage.datasets_root(root)
    found: dict[str, dict[str, Any]] = {}
    if not base.is_dir():
        return found
    stack = [base]
    while stack:
        folder = stack.pop()
        for child in folder.iterdir():
            if not child.is_dir() or child.name.startswith("."):
                continue
            if (child / storage.METADATA_FILE).is_file():
                dataset_id = child.relative_to(base).as_posix()
                try:
                    storage.parse_dataset_id(dataset_id)
                    found[dataset_id] = storage.read_metadata(child, dataset_id)
                except HarvestError as e:  # one bad folder must not hide the others
                    warnings.warn(f"skipping {child}: {e}", HarvestWarning, stacklevel=2)
            else:
                stack.append(child)
    return dict(sorted(found.items()))


def delete_dataset(dataset_id: str, root: str | Path | None = None) -> None:
    """Delete a local dataset, under its writer lock (a running writer makes this fail).

    A dataset folder or ``data/`` folder that is a symbolic link is refused before anything
    is removed (issue 16 item 4): deleting through the link would remove files that may not
    be this dataset's, and removing only the link would free nothing while saying "deleted".

    Raises:
        DatasetNotFoundError: no such dataset.
        LockHeldError: a writer is using it.
        UsageError: another dataset is nested inside its folder, or the folder or its ``data/``
            is a symbolic link (nothing is deleted).
    """
    path = storage.dataset_path(dataset_id, root)
    with storage.DatasetLock(dataset_id, root):
        storage.read_metadata(path, dataset_id)  # DatasetNotFoundError, with the usual message
        for link in (path, path / storage.DATA_DIR):
            if link.is_symlink():
                raise UsageError(
                    f"not deleting {dataset_id!r}: {link} is a symbolic link (to "
                    f"{os.readlink(link)}); remove the link and the files it points to yourself"
                )
        inner = storage.contained_datasets(dataset_id, root)
        if inner:  # nested by an older harvest: deleting the folder would delete them too
            raise UsageError(
                f"dataset {dataset_id!r} contains dataset {inner[0]!r} at {path}; nothing was "
                f"deleted: delete {inner[0]!r} first"
            )
        # the commit point goes first: a crash mid-delete leaves no half dataset that opens
        (path / storage.METADATA_FILE).unlink()
        shutil.rmtree(path)
