"""Read episodes: the Minari-style reading API (``curation.api.load_dataset`` opens one).

A ``Dataset`` is a snapshot of one commit: opening it reads ``metadata.json`` only (``len``,
totals, spaces, metadata); the numpy episode index is read from the shards' index files on
first use, once per commit and process (issue 18). Step data is read in **blocks**:
contiguous runs of whole episodes inside one shard (starting in one ``block_rows`` window
and holding at most ``max_memory / 8``, at most 32 MiB, of decompressed rows unless one
episode is larger), read and decompressed once and kept in a byte-bounded LRU. Episodes are
sliced out of cached blocks, so iterating, sampling and the training iterators
(``curation.pipeline``) all read HDF5 in large contiguous pieces [review 10]. The index,
blocks and cache live in ``curation.snapshot``; ``Dataset`` exposes them (``snapshot``,
``positions``, ``read_block``, ``view``) for code that reads rows.

``dataset[i]`` is positional over the snapshot's sorted episode ids (``episode_indices``);
``filter_episodes`` and ``sample``-style helpers return views over the same snapshot.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from collector import storage
from collector.data_collector import DatasetSummary
from collector.envs import stored_spec_gate
from collector.errors import HarvestWarning, InvalidValueError, UsageError
from collector.spaces import columns, unescape_key, unflatten
from curation.expr import compile_expression
from curation.snapshot import (
    DEFAULT_BLOCK_ROWS,
    DEFAULT_MAX_MEMORY,
    BlockCache,
    ShardSnapshot,
    Snapshot,
    block_bytes_for,
    env_spec_from_json,
    nested_row,
    warn_large_block,
)
from curation.write import write_views

if TYPE_CHECKING:
    from curation.pipeline import Pipeline

__all__ = [
    "Dataset",
    "DatasetSpec",
    "EpisodeData",
    "open_dataset",
]


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

    Args:
        snapshot: the commit to read (``curation.snapshot``).
        episode_indices: episode ids of a view (None: every episode).
        cache_bytes: byte budget of the block cache (default: half of ``max_memory``).
        block_rows: steps per block window (kept for ``refresh``).
        max_memory: the memory budget of every reader of this dataset: blocks hold at most
            ``max_memory / 8`` (at most 32 MiB) decompressed bytes, the block cache half of
            it, and ``batch_iter``/``sarsd_iter`` derive their window and read-ahead from it.
        cache: a block cache to share (views share their parent's).
        lineage_steps: the operations that made this view, recorded by ``save``.
    """

    #: The per-episode fields of ``episodes()``, which filter expressions can use.
    EPISODE_FIELDS = ("id", "seed", "has_seed", "length", "return", "terminated", "truncated")

    def __init__(
        self,
        snapshot: Snapshot,
        episode_indices: np.ndarray | None = None,
        *,
        cache_bytes: int | None = None,
        block_rows: int = DEFAULT_BLOCK_ROWS,
        cache: BlockCache | None = None,
        lineage_steps: tuple[dict[str, Any], ...] = (),
        max_memory: int = DEFAULT_MAX_MEMORY,
    ) -> None:
        if max_memory <= 0:
            raise InvalidValueError(f"max_memory={max_memory} must be a positive byte count")
        if cache_bytes is None:
            cache_bytes = int(max_memory) // 2
        snapshot.split_blocks(block_bytes_for(max_memory))  # a no-op once split
        self._max_memory = int(max_memory)
        self._snap = snapshot
        self._steps = lineage_steps  # the operations that made this view, for lineage
        self._view = episode_indices is not None
        # (positions in the snapshot's index, ids): a whole dataset's on first use, so that
        # opening reads no episode index (issue 18); a view's ids are checked now
        self._index: tuple[np.ndarray, np.ndarray] | None = None
        if episode_indices is not None:
            self._set_index(snapshot.positions(np.asarray(episode_indices, np.int64)))
        self._cache_bytes = cache_bytes
        self._block_rows = block_rows
        self._cache = cache or BlockCache(cache_bytes)
        self._rng = np.random.default_rng()

    def _set_index(self, pos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        pos = np.arange(len(self._snap.ids)) if pos is None else pos
        ids = self._snap.ids[pos]
        pos.flags.writeable = ids.flags.writeable = False
        self._index = (pos, ids)
        return self._index

    _pos = property(lambda self: (self._index or self._set_index())[0], doc="index rows")
    _ids = property(lambda self: (self._index or self._set_index())[1], doc="sorted ids")

    # -- pickling (torch DataLoader workers, multiprocessing) ----------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None  # handles and blocks are per process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = BlockCache(self._cache_bytes)

    # -- the read layer (``curation.snapshot``), for code that needs rows, not episodes -------

    @property
    def snapshot(self) -> Snapshot:
        """The commit this dataset or view reads: episode index, block geometry, metadata.

        Views share their parent's snapshot (no copy of the index).
        """
        return self._snap

    @property
    def max_memory(self) -> int:
        """The memory budget of this dataset's readers, in bytes (``load_dataset``)."""
        return self._max_memory

    @property
    def positions(self) -> np.ndarray:
        """Rows of ``snapshot``'s episode index holding this view's episodes, in id order."""
        return self._pos

    @property
    def block_cache(self) -> BlockCache:
        """This process's cache of decompressed blocks (shared with views of this dataset)."""
        return self._cache

    @property
    def lineage_steps(self) -> tuple[dict[str, Any], ...]:
        """The operations (filter, split, ...) that made this view, recorded in ``lineage``."""
        return self._steps

    def read_block(self, block: int) -> storage.ShardRows:
        """The decompressed rows of ``snapshot``'s block ``block``, through the block cache."""
        return self._cache.get(self._snap, int(block))

    def view(self, ids: np.ndarray, step: dict[str, Any] | None = None) -> Dataset:
        """A view of episodes ``ids`` of this snapshot, sharing its index and block cache.

        Args:
            ids: episode ids (any order; the view is sorted by id).
            step: the operation that selected them, appended to ``lineage_steps``.

        Raises:
            EpisodeNotFoundError: an id not in the snapshot (a ``KeyError``).
        """
        steps = self._steps if step is None else (*self._steps, step)
        return Dataset(self._snap, np.sort(ids), cache_bytes=self._cache_bytes,
                       block_rows=self._block_rows, cache=self._cache,
                       lineage_steps=steps, max_memory=self._max_memory)  # fmt: skip

    # -- what it is ----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The dataset id."""
        return self._snap.dataset_id

    #: ``DatasetSummary``'s name for ``id`` (``create_dataset`` returned a summary before).
    dataset_id = id

    @property
    def path(self) -> Path:
        """The dataset's folder."""
        return self._snap.path

    @property
    def summary(self) -> DatasetSummary:
        """The commit's id, folder, totals and fingerprint (of the whole dataset, not a view)."""
        meta = self._snap.meta
        return DatasetSummary(self.id, self._snap.path, int(meta["total_episodes"]),
                              int(meta["total_steps"]), meta["fingerprint"])  # fmt: skip

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
        return env_spec_from_json(self._snap.meta.get("env_spec"))

    @property
    def episode_indices(self) -> np.ndarray:
        """Episode ids of this dataset or view, sorted (read-only)."""
        return self._ids

    @property
    def total_episodes(self) -> int:
        """Episodes in this dataset or view."""
        return len(self._ids) if self._view else self._snap.num_episodes

    @property
    def total_steps(self) -> int:
        """Steps in this dataset or view."""
        if not self._view:
            return self._snap.num_steps
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
        if s.block_nbytes[s.block[pos]] > self._max_memory:
            warn_large_block(s, int(s.block[pos]), self._max_memory)
        rows = self._cache.get(s, int(s.block[pos]))
        length = int(s.length[pos])
        o0, t0 = (int(r) for r in s.rows_in_block(pos))
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

    def transition(self, index: int, t: int) -> dict[str, Any]:
        """Step ``t`` of the episode at position ``index`` (as ``dataset[index]``), alone.

        Reads only that step's rows from the cached block (for map-style loaders). Keys:
        ``observation``, ``action``, ``reward``, ``next_observation``, ``terminated``,
        ``truncated``.
        """
        s = self._snap
        pos = int(self._pos[index])
        rows = self._cache.get(s, int(s.block[pos]))
        o, k = (int(r) + t for r in s.rows_in_block(pos))

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
        n = self.total_episodes
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
            InvalidValueError: ``n_episodes`` is larger than the dataset or view.
        """
        if n_episodes > len(self._ids):
            raise InvalidValueError(
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
            return self.view(self._ids[mask], {"name": "filter", "where": condition})
        keep = [pos for pos in self._pos.tolist() if condition(self._episode(pos))]
        name = getattr(condition, "__qualname__", type(condition).__qualname__)
        step = {"name": "filter", "callable": f"{getattr(condition, '__module__', '?')}.{name}"}
        return self.view(self._snap.ids[np.asarray(keep, np.int64)], step)

    def evaluate(self, expression: str) -> np.ndarray:
        """The boolean mask of ``expression`` over this view's episodes (no step data read)."""
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
        metadata: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """Write this dataset or view as a new dataset with ``lineage`` (see ``save_dataset``)."""
        write_views(
            [self],
            new_dataset_id,
            operation={"name": "save"},
            root=root,
            overwrite=overwrite,
            metadata=metadata,
        )
        return open_dataset(new_dataset_id, root)

    def refresh(self) -> Dataset:
        """Move to the latest commit (a view keeps its episodes that still exist); returns self."""
        snap = self._snap.reopen(self._block_rows)
        ids = None
        if self._view:
            ids = np.intersect1d(self._ids, snap.ids)
        self._cache.clear()
        Dataset.__init__(self, snap, ids, cache_bytes=self._cache_bytes,
                         block_rows=self._block_rows, cache=self._cache,
                         lineage_steps=self._steps, max_memory=self._max_memory)  # fmt: skip
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
            starts_o, starts_t = s.rows_in_block(group)
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
        entry points, and wrappers that are classes of ``gymnasium.wrappers``, is made
        (``collector.envs.check_registered_spec``). An id of a known namespace (``ALE/``)
        first imports the package that registers it (``collector.envs.register_namespace``).

        Warns (``HarvestWarning``) when the recorded ``requirements`` are missing or installed
        at other versions.

        Args:
            eval_env: make the evaluation env (falls back to the dataset's env).
            trust_remote_code: make whatever entry point the stored spec names.
            **kwargs: passed to ``gym.make``.

        Raises:
            UsageError: the dataset has no env spec, or its spec names code Gymnasium's
                registry does not (without ``trust_remote_code``).
            MissingExtraError: the env's package (e.g. ale-py) is not installed.
        """
        _check_requirements(self._snap.meta.get("requirements") or [])
        spec_json = self._snap.meta.get("eval_env_spec") if eval_env else None
        spec = env_spec_from_json(spec_json) or self.env_spec
        if spec is None:
            raise UsageError(f"dataset {self.id!r} has no env_spec to recover an environment from")
        stored_spec_gate(spec, f"dataset {self.id!r}", trust_remote_code)
        return gym.make(spec, **kwargs)

    def get_normalized_score(self, returns: np.ndarray | float) -> np.ndarray | float:
        """``(returns - ref_min_score) / (ref_max_score - ref_min_score)`` (D4RL's score).

        Raises:
            InvalidValueError: the dataset has no reference scores.
        """
        lo, hi = self._snap.meta.get("ref_min_score"), self._snap.meta.get("ref_max_score")
        if lo is None or hi is None:
            raise InvalidValueError(
                f"dataset {self.id!r} has no ref_min_score/ref_max_score; pass them to "
                "create_dataset to enable normalized scores"
            )
        return (np.asarray(returns, np.float64) - lo) / (hi - lo)

    # -- training iterators --------------------------------------------------------------------

    def pipeline(self, num_workers: int = 4, **kwargs: Any) -> Pipeline:
        """MineRL-style training iterators over this dataset or view (``curation.pipeline``)."""
        from curation.pipeline import Pipeline

        return Pipeline(self, num_workers=num_workers, **kwargs)


def _loads(text: bytes | str | None) -> Any:
    if isinstance(text, bytes | np.bytes_):
        text = text.decode()
    return json.loads(text) if text else None


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


def open_dataset(
    dataset_id: str,
    root: str | Path | None = None,
    *,
    cache_mb: float | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Dataset:
    """Open a local harvest dataset at its latest commit (no download, no Minari folder).

    ``curation.load_dataset`` is the front door; this is the local step it ends in, and what
    the modules below it (ops, minari, recipes) open their outputs with.

    Raises:
        DatasetIdError: a malformed id.
        DatasetNotFoundError: no such dataset under ``root``.
        CorruptDatasetError: unreadable metadata or shard tables.
    """
    path = storage.dataset_path(dataset_id, root)
    snap = ShardSnapshot(path, dataset_id, int(block_rows))
    cache = None if cache_mb is None else int(cache_mb * 2**20)
    return Dataset(snap, cache_bytes=cache, block_rows=int(block_rows), max_memory=max_memory)
