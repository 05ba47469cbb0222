"""Record a vector env's episodes with whole-batch numpy writes (no per-sub-env Python).

``VectorRecorder`` keeps one row pointer per sub-env over env-major arrays shaped
``(num_envs, rows, ...)``: a vector step scatters every recording sub-env's observation,
action, reward and flags to its own next row in a handful of numpy calls, so each sub-env's
episode is a contiguous run of rows. ``take()`` gathers the finished episodes, in episode-id
order, into an ``EpisodeBatch`` with one fancy-index per column, and moves the open
episodes' rows to the front.

Step data sit on the row of the observation they produced (the reset row's step slot is
unused), so one pointer serves observations, infos and steps. The recorder does not know
autoreset rules: the caller says which sub-envs begin an episode (``begin``) and which took
a transition (``step``); ``VectorDataCollector`` and the ``vector_entry_point`` runner do.

As in ``EpisodeRecorder``, a batched value its columns cannot hold exactly is refused with one
line naming an episode, its step, the leaf and the mismatch; the open episodes are dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from collector.errors import CollectionError, HarvestWarning
from collector.recorder import refusal
from collector.spaces import (
    ValueMismatch,
    columns,
    escape_key,
    exact_value,
    join_name,
    make_batch_setter,
    make_checker,
    make_leaf_checker,
)
from collector.storage import EpisodeBatch, make_table, row_ranges

__all__ = ["VectorRecorder", "flatten_batched_infos"]

_MIN_ROWS = 64


def flatten_batched_infos(
    infos: Mapping[str, Any], num_envs: int, prefix: str = ""
) -> list[tuple[str, Any, np.ndarray]]:
    """``(column name, batched values, presence mask)`` per leaf of a vector env's infos.

    Gymnasium marks which sub-envs have a key with a ``_key`` boolean array; a key without
    one is present everywhere.
    """
    out: list[tuple[str, Any, np.ndarray]] = []
    for key, value in infos.items():
        if isinstance(key, str) and key.startswith("_"):
            continue
        name = join_name(prefix, escape_key(str(key)))
        mask = infos.get(f"_{key}")
        mask = np.ones(num_envs, bool) if mask is None else np.asarray(mask, bool)
        if isinstance(value, Mapping):
            out.extend((n, v, m & mask) for n, v, m in flatten_batched_infos(value, num_envs, name))
        else:
            out.append((name, value, mask))
    return out


class _Store:
    """Time-major column arrays ``(rows, num_envs, *shape)``: one row per vector step."""

    def __init__(self, num_envs: int, rows: int) -> None:
        self.num_envs, self.rows = num_envs, rows
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        arr = self.arrays[name] = np.zeros((self.rows, self.num_envs, *shape), dtype)
        return arr

    def resize(self, rows: int, start: int, stop: int, *, clear: bool = True) -> None:
        """Arrays of ``rows`` rows holding rows ``[start, stop)`` at the front.

        The rows after them are zero, or left as they are with ``clear=False`` (for columns
        whose every row is written before it is read). Same size: moved in place, so a
        recorder that commits windows of one size allocates once (rows from ``stop`` on
        are still zero: nothing wrote them since they were last cleared).
        """
        kept = stop - start
        for name, arr in self.arrays.items():
            if rows == self.rows:
                arr[:kept] = arr[start:stop]  # numpy buffers overlapping ranges
                if clear:
                    arr[kept:stop] = 0
                continue
            new = np.zeros((rows, *arr.shape[1:]), arr.dtype)
            new[:kept] = arr[start:stop]
            self.arrays[name] = new
        self.rows = rows

    def gather(
        self, flat_index: np.ndarray, names: Iterable[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Entries at ``row * num_envs + env`` of the arrays ``names`` (default all; a copy)."""
        chosen = self.arrays if names is None else {n: self.arrays[n] for n in names}
        # np.take: several times faster than fancy indexing for rows of several values
        return {
            name: np.take(arr.reshape(-1, *arr.shape[2:]), flat_index, axis=0)
            for name, arr in chosen.items()
        }


def _row_setter(space: spaces.Space, store: dict[str, np.ndarray]) -> Callable[[int, Any], None]:
    """``set(row, value)``: a batched ``value`` of ``space`` into row ``row`` of ``store``.

    A plain array leaf is one numpy assignment; Dict, Tuple and Text spaces go through
    ``make_batch_setter``.
    """
    if len(store) == 1 and not isinstance(space, spaces.Dict | spaces.Tuple | spaces.Text):
        (arr,) = store.values()

        def set_row(row: int, value: Any) -> None:
            arr[row] = value

        return set_row
    set_batch = make_batch_setter(space, store)
    return lambda row, value: set_batch(row, value, slice(None))


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of ``values`` (kept as they are: dicts, None, big ints)."""
    out = np.empty(len(values), object)
    out[:] = list(values)
    return out


class VectorRecorder:
    """Columnar buffers for the episodes of ``num_envs`` sub-envs stepped together.

    Args:
        observation_space: one sub-env's stored observation space.
        action_space: one sub-env's stored action space.
        num_envs: sub-envs in the vector env.
        record_infos: keep infos (a presence mask per key and sub-env).
        ids_on_finish: number episodes 0, 1, ... in the order they finish (the ids given to
            ``begin`` then only need to be non-negative); the default keeps the given ids.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        num_envs: int,
        record_infos: bool = False,
        rows: int = _MIN_ROWS,
        *,
        ids_on_finish: bool = False,
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.num_envs = n = int(num_envs)
        self.record_infos = record_infos
        self._data = _Store(n, rows)
        self._obs_names = {c.name: "obs/" + c.name for c in columns(observation_space)}
        self._act_names = {c.name: "act/" + c.name for c in columns(action_space)}
        for c in columns(observation_space):
            self._data.add("obs/" + c.name, c.dtype, c.shape)
        for c in columns(action_space):
            self._data.add("act/" + c.name, c.dtype, c.shape)
        self._data.add("rew", np.dtype(np.float64), ())
        self._data.add("term", np.dtype(bool), ())
        self._data.add("trunc", np.dtype(bool), ())
        self._data.add("valid", np.dtype(bool), ())  # the sub-env has a row at this step
        self._check_obs = make_checker(observation_space, "observation", n)
        self._check_act = make_checker(action_space, "action", n)
        self._check_rew = make_leaf_checker(np.dtype(np.float64), (n,), "reward")
        self._check_term = make_leaf_checker(np.dtype(bool), (n,), "terminated")
        self._check_trunc = make_leaf_checker(np.dtype(bool), (n,), "truncated")
        self._infos = _Store(n, rows) if record_infos else None
        self._dropped: set[str] = set()
        self._bind()
        self._row_bytes = sum(a[0].nbytes for a in self._data.arrays.values())
        # one sub-env's observation row and step row, as a shard stores them (no "valid")
        item = {name: a[0, 0].nbytes for name, a in self._data.arrays.items()}
        self._obs_item = sum(item[v] for v in self._obs_names.values())
        self._step_item = sum(item[v] for v in (*self._act_names.values(), "rew", "term", "trunc"))
        self._r = 0  # next row
        self._id = np.full(n, -1, np.int64)  # open episode per sub-env (-1: none)
        self._start = np.zeros(n, np.int64)  # its reset row
        self._seed = np.full(n, None, object)
        self._options = np.full(n, None, object)
        self._seeded = False  # some episode got a seed or options (else all are None)
        self._all = np.ones(n, bool)
        self._none = np.zeros(n, bool)
        # finished episodes, first ``_finished`` entries: env, first row, last row, id (the
        # columns of ``_done``), seed and options; appended in place, no array per step
        self._done = np.zeros((4, _MIN_ROWS), np.int64)
        self._done_seed: list[Any] = []
        self._done_options: list[Any] = []
        self._finished = 0
        self._finished_rows = 0  # rows (of one sub-env) from first to last of each
        self._next_id: int | None = 0 if ids_on_finish else None

    def _bind(self) -> None:
        d = self._data.arrays
        self._set_obs = _row_setter(
            self.observation_space, {k: d[v] for k, v in self._obs_names.items()}
        )
        self._set_act = _row_setter(
            self.action_space, {k: d[v] for k, v in self._act_names.items()}
        )
        self._rew, self._term, self._trunc = d["rew"], d["term"], d["trunc"]
        self._valid = d["valid"]

    # -- state -------------------------------------------------------------------------------

    @property
    def recording(self) -> np.ndarray:
        """Boolean mask of sub-envs with an open recorded episode."""
        return self._id >= 0

    @property
    def open_ids(self) -> np.ndarray:
        """Episode id per sub-env (-1 where none is open)."""
        return self._id.copy()

    @property
    def num_finished(self) -> int:
        """Finished episodes not yet taken."""
        return self._finished

    @property
    def row_bytes(self) -> int:
        """Bytes one vector step adds: a row of every sub-env (infos not counted)."""
        return self._row_bytes

    def _info_row_bytes(self) -> int:
        infos = self._infos
        return 0 if infos is None else sum(a[:1].nbytes for a in infos.arrays.values())

    @property
    def nbytes(self) -> int:
        """Approximate bytes of recorded data held, infos too."""
        return self._r * (self._row_bytes + self._info_row_bytes())

    @property
    def finished_nbytes(self) -> int:
        """Bytes of the finished episodes not yet taken, decoded: the shard ``take`` makes.

        Less than ``nbytes`` by the rows of the open episodes, which every sub-env keeps
        from its episode's start on: a window cut when ``nbytes`` reached a size gave a
        shard of 70-90% of it (CartPole, 256 sub-envs).
        """
        obs_rows = self._finished_rows  # T + 1 of each episode
        obs_item = self._obs_item + self._info_row_bytes() // self.num_envs
        return obs_rows * obs_item + (obs_rows - self._finished) * self._step_item

    # -- recording ---------------------------------------------------------------------------

    def record(
        self,
        obs: Any,
        infos: Mapping[str, Any] | None = None,
        actions: Any = None,
        rewards: Any = None,
        terminated: Any = None,
        truncated: Any = None,
        *,
        stepped: np.ndarray | None = None,
        begin: np.ndarray | None = None,
        episode_ids: np.ndarray | None = None,
        seeds: Sequence[int | None] | None = None,
        options: Sequence[Any] | None = None,
    ) -> None:
        """Record one vector step as one row of every sub-env.

        ``stepped`` (a boolean mask; default: every sub-env when ``actions`` is given, else
        none) took a transition to ``obs``; recorded episodes among them that terminated or
        truncated are finished. ``begin`` (sub-env indices) start episodes ``episode_ids``
        from their ``obs`` (a reset observation); a negative id leaves that sub-env
        unrecorded until its next begin. ``seeds`` and ``options`` are per entry of ``begin``.
        """
        # the hot path of vector collection: a few whole-row numpy calls, nothing per sub-env
        if actions is None:
            stepped = self._none
        elif stepped is None:
            stepped = self._all
        r = self._r
        if r >= self._data.rows:
            self._grow()
        try:  # before any write: numpy would broadcast a shape and wrap a value
            self._check_obs(obs)
            if actions is not None:
                self._check_act(actions)
                self._check_rew(rewards)
                self._check_term(terminated)
                self._check_trunc(truncated)
            if self._infos is not None:
                self._check_infos(infos or {})
        except ValueMismatch as e:
            raise CollectionError(self._refuse(e, begin, episode_ids)) from None
        open_ = self._id >= 0
        self._valid[r] = stepped
        if begin is not None and len(begin):
            begin = np.asarray(begin, np.int64)
            if np.count_nonzero(open_[begin]):  # not .any(): ~0.2 against ~1-1.7 us
                raise RuntimeError("an episode begins on a sub-env whose episode is still open")
            self._valid[r, begin] = True
        else:
            begin = None
        self._set_obs(r, obs)
        if self._infos is not None:
            self._add_infos(r, infos or {})
        if actions is not None:
            self._set_act(r, actions)
            self._rew[r] = rewards
            self._term[r] = terminated
            self._trunc[r] = truncated
            ended = np.logical_or(self._term[r], self._trunc[r])
            ended &= open_
            if stepped is not self._all:
                ended &= stepped
            ended = ended.nonzero()[0]
            if len(ended):
                self._r = r + 1  # the finished rows are this one included
                self._finish(ended)
        if begin is not None:
            self._id[begin] = episode_ids
            self._start[begin] = r
            if seeds is not None or options is not None or self._seeded:
                if not self._seeded:  # the episodes finished so far had none
                    self._seeded = True
                    self._done_seed += [None] * self._finished
                    self._done_options += [None] * self._finished
                self._seed[begin] = None if seeds is None else _objects(seeds)
                self._options[begin] = None if options is None else _objects(options)
        self._r = r + 1

    def _refuse(self, err: ValueMismatch, begin: Any, episode_ids: Any) -> str:
        """The refusal line for ``err``; drops the open episodes (this row cannot be recorded).

        It names the episode of the sub-env the refused element belongs to (the first index
        of a batched value), else of the first recording sub-env.
        """
        sub_env = err.sub_env
        if sub_env is None and err.index:
            sub_env = err.index[0]
        if sub_env is None:
            open_ = np.flatnonzero(self._id >= 0)
            sub_env = int(open_[0]) if len(open_) else 0
        if begin is not None and sub_env in list(np.asarray(begin).tolist()):
            episode: Any = int(np.asarray(episode_ids)[list(begin).index(sub_env)])
            step = None
        elif self._id[sub_env] >= 0:
            episode = int(self._id[sub_env])
            start = int(self._start[sub_env])
            step = int(np.count_nonzero(self._valid[start : self._r, sub_env])) - 1
        else:
            episode, step = f"(none: sub-env {sub_env} is not recording)", 0
        self.discard()
        return refusal(episode, step, err)

    def _check_infos(self, infos: Mapping[str, Any]) -> None:
        """Refuse an info value its existing column cannot hold exactly."""
        if self._infos is None:
            return
        for name, value, _ in flatten_batched_infos(infos, self.num_envs):
            col = self._infos.arrays.get(name)
            if col is None or value is None:
                continue
            arr = np.asarray(value)
            if arr.dtype == col.dtype or arr.shape[1:] != col.shape[2:]:
                continue
            dtype = np.result_type(col.dtype, arr.dtype)
            try:
                exact_value(col[: self._r], dtype, col[: self._r].shape, f"info {name!r}")
            except ValueMismatch as e:  # its index is a row's, not a sub-env's
                raise ValueMismatch(e.detail + " (an earlier row)") from None
            exact_value(arr, dtype, arr.shape, f"info {name!r}")

    def begin(
        self,
        envs: np.ndarray,
        episode_ids: np.ndarray,
        obs: Any,
        infos: Mapping[str, Any] | None = None,
        seeds: Sequence[int | None] | None = None,
        options: Sequence[Any] | None = None,
    ) -> None:
        """Start episodes ``episode_ids`` on sub-envs ``envs`` from the batched reset ``obs``."""
        self.record(obs, infos, begin=envs, episode_ids=episode_ids, seeds=seeds, options=options)

    def step(
        self,
        actions: Any,
        obs: Any,
        rewards: Any,
        terminated: Any,
        truncated: Any,
        infos: Mapping[str, Any] | None = None,
        envs: np.ndarray | None = None,
    ) -> None:
        """Record one transition of sub-envs ``envs`` (default all)."""
        stepped = None
        if envs is not None:
            stepped = np.zeros(self.num_envs, bool)
            stepped[envs] = True
        self.record(obs, infos, actions, rewards, terminated, truncated, stepped=stepped)

    def _finish(self, envs: np.ndarray, last: np.ndarray | int | None = None) -> None:
        """Close the open episodes of ``envs`` at row ``last`` (default: the latest row)."""
        k, m = self._finished, len(envs)
        if k + m > self._done.shape[1]:
            grown = np.zeros((4, max(2 * self._done.shape[1], k + m)), np.int64)
            grown[:, :k] = self._done[:, :k]
            self._done = grown
        done = self._done[:, k : k + m]
        done[0] = envs
        done[1] = self._start[envs]
        done[2] = self._r - 1 if last is None else last
        self._finished_rows += int((done[2] - done[1]).sum()) + m
        if self._next_id is not None:
            done[3] = self._next_id + np.arange(m, dtype=np.int64)
            self._next_id += m
        else:
            done[3] = self._id[envs]
        if self._seeded:
            self._done_seed.extend(self._seed[envs].tolist())
            self._done_options.extend(self._options[envs].tolist())
        self._finished = k + m
        self._id[envs] = -1

    def end(self, envs: np.ndarray | None = None) -> None:
        """Finish the open episodes of ``envs`` (default all) early, e.g. on a reset.

        The last step is marked truncated unless it terminated (as ``DataCollector`` does);
        an episode with no step yet is dropped.
        """
        envs = np.arange(self.num_envs) if envs is None else np.asarray(envs, np.int64)
        envs = envs[self._id[envs] >= 0]
        for e in envs.tolist():
            rows = np.flatnonzero(self._valid[self._start[e] : self._r, e]) + self._start[e]
            if len(rows) <= 1:
                self._id[e] = -1  # no step: dropped
                continue
            last = int(rows[-1])
            self._trunc[last, e] |= not self._term[last, e]
            self._finish(np.array([e]), last)

    def discard(self, envs: np.ndarray | None = None) -> None:
        """Drop the open episodes of ``envs`` (default all)."""
        envs = np.arange(self.num_envs) if envs is None else np.asarray(envs, np.int64)
        self._id[envs] = -1

    def reserve(self, nbytes: int) -> None:
        """Make room for ``nbytes`` of recorded data (e.g. one commit window) at once.

        Saves the copies of growing row by doubling. Costs no memory up front: numpy's zeroed
        arrays take pages only as rows are written.
        """
        rows = -(-int(nbytes) // max(1, self._row_bytes))
        if rows > self._data.rows:
            self._grow(rows)

    def _grow(self, rows: int | None = None) -> None:
        rows = 2 * self._data.rows if rows is None else rows
        for store in (self._data, self._infos):
            if store is not None:
                store.resize(rows, 0, self._r)
        self._bind()

    def _add_infos(self, r: int, infos: Mapping[str, Any]) -> None:
        store = self._infos
        assert store is not None
        for name, value, mask in flatten_batched_infos(infos, self.num_envs):
            if name in self._dropped or value is None:
                continue
            arr = np.asarray(value)
            if arr.dtype.kind not in "biuf" or arr.ndim == 0 or len(arr) != self.num_envs:
                self._drop(name, f"its {arr.dtype} values are not a numeric per-sub-env array")
                continue
            col = store.arrays.get(name)
            if col is None:
                if any(n.startswith(name + "/") or name.startswith(n + "/") for n in store.arrays):
                    self._drop(name, "it is both a value and a dict")
                    continue
                col = store.add(name, arr.dtype, arr.shape[1:])
                store.add(name + "\0mask", np.dtype(bool), ())
            elif arr.shape[1:] != col.shape[2:]:
                raise CollectionError(
                    f"info key {name!r} changed shape from {col.shape[2:]} to {arr.shape[1:]}; "
                    "make the env's info shapes stable or set record_infos=false"
                )
            elif np.result_type(col.dtype, arr.dtype) != col.dtype:
                col = store.arrays[name] = col.astype(np.result_type(col.dtype, arr.dtype))
            col[r] = arr
            store.arrays[name + "\0mask"][r] = mask

    def _drop(self, name: str, why: str) -> None:
        self._dropped.add(name)
        warnings.warn(
            f"info key {name!r} is not recorded: {why}; convert it to a numeric array in a "
            "wrapper to keep it",
            HarvestWarning,
            stacklevel=5,
        )

    # -- hand-over ---------------------------------------------------------------------------

    def take(self) -> EpisodeBatch | None:
        """The finished episodes in id order (None if there are none); open ones stay."""
        k = self._finished
        if not k:
            return None
        order = np.argsort(self._done[3, :k], kind="stable")
        env, first, last, ids = self._done[:, :k][:, order]
        seeds = options = np.full(k, None, object)
        if self._seeded:
            seeds, options = _objects(self._done_seed)[order], _objects(self._done_options)[order]
        n, used = self.num_envs, self._r
        if self._valid[:used].all():  # every sub-env has a row at every step (NEXT_STEP)
            obs_len = last - first + 1  # T + 1
            flat_obs = row_ranges(first, obs_len) * n + np.repeat(env, obs_len)
        else:  # an episode is the run of its sub-env's *valid* rows
            valid_env_major = np.ascontiguousarray(self._valid[:used].T).reshape(-1)
            rank = np.cumsum(valid_env_major) - 1  # position among valid entries
            where = np.flatnonzero(valid_env_major)
            lo, hi = rank[env * used + first], rank[env * used + last]
            obs_len = hi - lo + 1
            pos = where[row_ranges(lo, obs_len)]
            flat_obs = (pos % used) * n + pos // used  # time-major flat index
        step_mask = np.ones(len(flat_obs), bool)
        step_mask[np.cumsum(obs_len) - obs_len] = False  # the reset row has no step
        flat_step = flat_obs[step_mask]
        got = self._data.gather(flat_obs, self._obs_names.values())
        obs = {k: got[v] for k, v in self._obs_names.items()}
        got = self._data.gather(flat_step, [*self._act_names.values(), "rew", "term", "trunc"])
        act = {k: got[v] for k, v in self._act_names.items()}
        rew, term, trunc = got["rew"], got["term"], got["trunc"]
        infos = masks = None
        if self._infos is not None:
            got = self._infos.gather(flat_obs)
            infos = {k: v for k, v in got.items() if not k.endswith("\0mask")}
            masks = {k.removesuffix("\0mask"): v for k, v in got.items() if k.endswith("\0mask")}
        lengths = obs_len - 1
        step_start = np.cumsum(lengths) - lengths
        returns = np.add.reduceat(rew, step_start) if len(rew) else np.zeros(len(ids))
        end = step_start + lengths - 1
        table = make_table(ids, seeds.tolist(), lengths, returns, term[end], trunc[end], options)
        self._done_seed, self._done_options, self._finished = [], [], 0
        self._finished_rows = 0
        self._compact()
        return EpisodeBatch(
            observations=obs,
            actions=act,
            rewards=rew,
            terminations=term,
            truncations=trunc,
            table=table,
            infos=infos,
            info_masks=masks or {},
        )

    def _compact(self) -> None:
        """Keep only the rows from the oldest open episode on, moved to the front."""
        open_ = self._id >= 0
        keep_from = int(self._start[open_].min()) if open_.any() else self._r
        kept = self._r - keep_from
        # the same capacity (in place) unless the open rows need more: the next window is
        # about as long as this one, and shrinking would only be regrown by copies
        rows = max(self._data.rows, 2 * kept)
        self._data.resize(rows, keep_from, self._r, clear=False)  # rows are written before read
        if self._infos is not None:
            self._infos.resize(rows, keep_from, self._r)  # absent keys leave rows unwritten
        self._start[open_] -= keep_from
        self._r = kept
        self._bind()
