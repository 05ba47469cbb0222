"""Record episodes into growing columnar numpy buffers.

``EpisodeRecorder`` is the hot path shared by ``DataCollector`` and the runners: one
``add_step`` writes a handful of numpy rows (no per-step ``space.contains``, no per-step
dicts), and ``take()`` hands the finished episodes over as an ``EpisodeBatch`` for a shard.

Infos whose keys change between steps (e.g. ``RecordEpisodeStatistics`` adding ``episode`` at
the end) get a dense column per leaf plus a presence mask (DESIGN.md section 4): a key that
appears late is back-filled with zeros and mask False. Values that are not numeric arrays
(strings, ragged lists) are dropped with one warning per key.

Every value is recorded exactly as the env or policy returned it (DESIGN.md section 6): a value
its column cannot hold exactly (another shape, which numpy would broadcast; a value a dtype
cast would wrap or round) fails with one ``CollectionError`` line naming the episode, step,
leaf and mismatch (``refusal``), and the open episode is dropped. Arrays of the column's own
dtype and shape pass for free: a row of one dimension is copied through a memoryview, which
refuses another format or shape (those values take the checked path).
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from collector import shared
from collector.errors import CollectionError, HarvestWarning
from collector.spaces import (
    ValueMismatch,
    columns,
    escape_key,
    exact_value,
    join_name,
    make_checker,
    make_leaf_checker,
    make_setter,
)
from collector.storage import EpisodeBatch, make_table

__all__ = ["EpisodeRecorder", "refusal"]

_ndarray = np.ndarray
_add_reduce = np.add.reduce
_float64 = np.float64
_check_reward = make_leaf_checker(np.dtype(np.float64), (), "reward")
_check_terminated = make_leaf_checker(np.dtype(bool), (), "terminated")
_check_truncated = make_leaf_checker(np.dtype(bool), (), "truncated")


def refusal(episode_id: Any, step: int | None, err: ValueMismatch) -> str:
    """The one line refusing a value that cannot be recorded exactly (``step`` None: reset)."""
    where = "reset" if step is None else f"step {step}"
    return (
        f"episode {episode_id} {where}: {err.detail}; nothing of this episode is stored: make "
        "the env and policy return values their spaces hold exactly (the same shape; a dtype "
        "that casts without changing a value)"
    )


_MIN_ROWS = 1024

#: Arrays of at least this many bytes are populated by a helper thread once recorded into.
_POPULATE_BYTES = 8 << 20
_POPULATE_CHUNK = 32 << 20  # each return waits for the GIL (up to 5 ms); a call holds the mm lock
_MADV_POPULATE_WRITE = 23  # Linux 5.14+; older kernels refuse it (EINVAL) and nothing is done


def _load_madvise() -> Callable[..., int] | None:
    """The C library's ``madvise`` via ctypes, which releases the GIL while it runs (or None)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


_madvise = _load_madvise()


def _populate(arr: np.ndarray) -> None:
    """Fault in every page of ``arr`` (``MADV_POPULATE_WRITE``), never changing a byte.

    Runs in a helper thread beside the recording thread, so it may overlap writes of rows:
    populating a page keeps its contents. A frame written to never-touched memory costs a
    page fault per 4 kB (~100 us a 210x160x3 frame on a VM, more than some envs' step), on
    the recording thread; populated ahead, the recording thread only copies (issue 19).
    """
    page = mmap.PAGESIZE
    start = -(-arr.ctypes.data // page) * page
    end = (arr.ctypes.data + arr.nbytes) // page * page
    for at in range(start, end, _POPULATE_CHUNK):
        if _madvise(at, min(_POPULATE_CHUNK, end - at), _MADV_POPULATE_WRITE) != 0:  # type: ignore[misc]
            return  # an old kernel: the recording thread faults pages in as before


def _zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Zeros, in shared memory when large: the encoder process reads them without a copy."""
    return shared.zeros(shape, dtype)


def _start_populating(arrays: list[np.ndarray]) -> None:
    """Populate the large ones of ``arrays`` in a helper thread (``_populate``)."""
    large = [a for a in arrays if a.nbytes >= _POPULATE_BYTES]
    if large and _madvise is not None:

        def run() -> None:
            for arr in large:
                _populate(arr)

        threading.Thread(target=run, name="harvest-populate", daemon=True).start()


def _regrow(
    store: dict[str, np.ndarray],
    start: int,
    stop: int | None,
    rows: int,
    spare: Callable[[np.ndarray, int], np.ndarray | None] | None = None,
) -> dict[str, np.ndarray]:
    """Reallocate every array of ``store`` to ``rows`` rows, keeping rows [start, stop).

    The kept rows move to the front of zeroed arrays (``stop=None``: to the end), or of an
    array ``spare(old, rows)`` gives back (whose rows past the kept ones are overwritten
    before they are read); rows [0, start) of the old arrays are returned.

    The rows returned are views, not copies: nothing else refers to the old arrays any more,
    and a copy would double the commit window at its peak.
    """
    out = {}
    for name, arr in store.items():
        kept = arr[start:stop]
        out[name] = arr[:start]
        new = spare(arr, rows) if spare is not None else None
        if new is None:
            new = _zeros((rows, *arr.shape[1:]), arr.dtype)
        new[: len(kept)] = kept
        store[name] = new
    return out


class _Columns:
    """Column arrays of one space that grow by doubling."""

    def __init__(self, space: spaces.Space, rows: int) -> None:
        self.specs = columns(space)
        self.store: dict[str, np.ndarray] = {
            c.name: _zeros((rows, *c.shape), c.dtype) for c in self.specs
        }
        #: arrays not populated yet (``start_populating``)
        self.unpopulated: list[np.ndarray] = list(self.store.values())
        self.set = make_setter(space, self.store)
        #: arrays of taken rows given back once their shard is built (``give_back``)
        self._spare: list[np.ndarray] = []
        self._spare_lock = threading.Lock()

    def give_back(self, taken: Mapping[str, np.ndarray]) -> None:
        """Keep the array behind rows ``cut`` returned, for the next ``cut`` to reuse.

        Only for a single non-Text leaf, whose every row is written before it is read: its
        memory is already touched, where a fresh array costs a page fault per 4 kB on first
        write (about 100 us a 210x160x3 frame on a VM). At most two are kept.
        """
        if self.single is None or "" not in taken:
            return
        arr = taken[""]
        base = arr.base if isinstance(arr.base, np.ndarray) else arr
        row = self.store[""]
        if (
            base.dtype != row.dtype
            or base.shape[1:] != row.shape[1:]
            or not base.flags.c_contiguous
            or not base.flags.writeable
        ):
            return
        with self._spare_lock:
            if len(self._spare) < 2 and all(b is not base for b in self._spare):
                self._spare.append(base)

    def _take_spare(self, old: np.ndarray, rows: int) -> np.ndarray | None:
        with self._spare_lock:
            for i, arr in enumerate(self._spare):
                if len(arr) >= rows and arr is not old:
                    return self._spare.pop(i)
        return None

    @property
    def single(self) -> np.ndarray | None:
        """The one column array when the space is a single non-Text leaf (the fast path)."""
        if len(self.specs) == 1 and self.specs[0].name == "":
            return self.store[""]
        return None

    def grow(self, rows: int) -> None:
        _regrow(self.store, 0, None, rows)
        _start_populating(list(self.store.values()))  # recording goes on into them now

    def cut(self, start: int, stop: int, rows: int) -> dict[str, np.ndarray]:
        before = list(self.store.values())
        taken = _regrow(self.store, start, stop, rows, self._take_spare if self._spare else None)
        # populated once an episode begins in them: the last cut of a run records nothing
        self.unpopulated = [a for a in self.store.values() if all(a is not b for b in before)]
        return taken

    def start_populating(self) -> None:
        """Populate the arrays a cut (or ``__init__``) made, before rows are recorded into them."""
        if self.unpopulated:
            _start_populating(self.unpopulated)
            self.unpopulated = []


class _Infos:
    """Info columns plus presence masks, created when a key is first seen."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.cols: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}
        self.dropped: set[str] = set()
        #: bytes of one row of every column and mask (kept as columns appear and widen)
        self.row_bytes = 0

    def _count_row_bytes(self) -> None:
        self.row_bytes = sum(c[:1].nbytes for c in self.cols.values()) + len(self.masks)

    def grow(self, rows: int) -> None:
        _regrow(self.cols, 0, None, rows)
        _regrow(self.masks, 0, None, rows)
        self.rows = rows

    def cut(self, start: int, stop: int, rows: int) -> tuple[dict, dict]:
        cols = _regrow(self.cols, start, stop, rows)
        masks = _regrow(self.masks, start, stop, rows)
        self.rows = rows
        return cols, masks

    def clear(self, start: int, stop: int) -> None:
        """Forget rows [start, stop) (a dropped or discarded episode) so no mask stays set."""
        for store in (self.cols, self.masks):
            for arr in store.values():
                arr[start:stop] = 0

    def add(self, row: int, info: Mapping[str, Any], where: str) -> None:
        for name, value in _flatten_info(info):
            if value is None or name in self.dropped:
                continue
            col = self.cols.get(name)
            arr = np.asarray(value)
            if col is None:
                col = self._new_column(name, arr)
                if col is None:
                    continue
            elif arr.dtype != col.dtype and arr.shape == col.shape[1:]:
                dtype = np.result_type(col.dtype, arr.dtype)
                if dtype != col.dtype:  # the earlier rows must survive the wider dtype
                    wider = exact_value(col, dtype, col.shape, f"info {name!r} (earlier rows)")
                    col = self.cols[name] = wider.astype(dtype, copy=False)
                    self._count_row_bytes()
                arr = exact_value(arr, col.dtype, arr.shape, f"info {name!r}")
            if arr.shape != col.shape[1:]:  # numpy would broadcast a scalar silently
                raise CollectionError(
                    f"info key {name!r} changed shape from {col.shape[1:]} to {arr.shape} "
                    f"at {where}; make the env's info shapes stable or set record_infos=false"
                )
            col[row] = arr
            self.masks[name][row] = True

    def _new_column(self, name: str, arr: np.ndarray) -> np.ndarray | None:
        conflict = any(n.startswith(name + "/") or name.startswith(n + "/") for n in self.cols)
        if arr.dtype.kind not in "biuf" or conflict:
            self.dropped.add(name)
            why = "it is both a value and a dict" if conflict else f"{arr.dtype} is not numeric"
            warnings.warn(
                f"info key {name!r} is not recorded: {why}; convert it to a numeric array "
                "in a wrapper or step_data_callback to keep it",
                HarvestWarning,
                stacklevel=4,
            )
            return None
        self.cols[name] = np.zeros((self.rows, *arr.shape), arr.dtype)
        self.masks[name] = np.zeros(self.rows, bool)
        self._count_row_bytes()
        return self.cols[name]


def _flatten_info(info: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in info.items():
        name = join_name(prefix, escape_key(str(key)))
        if isinstance(value, Mapping):
            out.extend(_flatten_info(value, name))
        else:
            out.append((name, value))
    return out


def _flat_rows(arr: np.ndarray) -> tuple[memoryview | None, int]:
    """A flat memoryview of ``arr``'s rows and a row's width, for rows of at most one dimension.

    Assigning a buffer to ``view[t * width : t * width + width]`` copies a row at about half
    the cost of numpy's ``arr[t] = value``, and refuses a value of another format or shape.
    (None, 0) for rows of two or more dimensions (frames: the copy costs more than the call).
    """
    if arr.ndim > 2 or not arr.flags.c_contiguous:
        return None, 0
    return memoryview(arr.reshape(-1)), (arr.shape[1] if arr.ndim == 2 else 0)


def _copy_row(view: memoryview, start: int, width: int, value: Any) -> bool:
    """Copy ``value`` to ``view[start : start + width]``; False if its format or shape differs."""
    try:
        view[start : start + width] = value
    except (ValueError, TypeError):
        return False
    return True


def _row_bytes(specs: list[Any]) -> int:
    return sum(int(np.prod(c.shape, dtype=np.int64)) * c.dtype.itemsize for c in specs)


class EpisodeRecorder:
    """Columnar buffers for whole episodes; ``take()`` returns the finished ones.

    Args:
        observation_space: the stored observation space (checked once, here).
        action_space: the stored action space.
        record_infos: keep ``info`` dicts (T+1 rows per episode, the reset info first).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        record_infos: bool = False,
        rows: int = _MIN_ROWS,
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.record_infos = record_infos
        self._obs = _Columns(observation_space, rows)
        self._act = _Columns(action_space, rows)
        self._obs_cap = self._step_cap = rows
        self._check_obs = make_checker(observation_space, "observation")
        self._check_act = make_checker(action_space, "action")
        self._rew = np.zeros(rows, np.float64)
        self._term = np.zeros(rows, bool)
        self._trunc = np.zeros(rows, bool)
        self._infos = _Infos(rows) if record_infos else None
        self._o = 0  # next observation row
        self._t = 0  # next step row
        self._ep_o = self._ep_t = 0  # first rows of the open episode
        self._open: tuple[int, int | None, Any] | None = None  # (id, seed, options)
        self._done: list[tuple[int, int | None, Any, int, float, bool, bool, Any]] = []
        # per-row sizes for nbytes, computed once: it is asked after every episode
        self._obs_row_bytes = _row_bytes(self._obs.specs)
        self._step_row_bytes = _row_bytes(self._act.specs) + 8 + 2  # + reward and two flags
        self._bind_fast_path()

    def _bind_fast_path(self) -> None:
        # Flat spaces (CartPole, MuJoCo) write straight into the arrays: no setter calls.
        self._obs_arr, self._act_arr = self._obs.single, self._act.single
        self._fast = self._obs_arr is not None and self._act_arr is not None
        self._rew_mv = memoryview(self._rew)
        self._obs_mv = self._act_mv = None
        self._obs_w = self._act_w = 0
        if self._fast:  # a value of the column's own dtype and shape needs no check
            self._obs_dtype, self._obs_shape = self._obs_arr.dtype, self._obs_arr.shape[1:]
            self._act_dtype, self._act_shape = self._act_arr.dtype, self._act_arr.shape[1:]
            self._act_scalar = None if self._act_shape else self._act_dtype.type
            # rows of one dimension are written through a flat memoryview, whose assignment
            # refuses another buffer format (dtype, byte order) or shape: the check is free
            self._obs_mv, self._obs_w = _flat_rows(self._obs_arr)
            if not self._obs_w:  # a scalar observation (Discrete) keeps numpy's path
                self._obs_mv = None
            self._act_mv, self._act_w = _flat_rows(self._act_arr)
            # a Python int action (a Discrete policy's) in range: checked inline
            self._act_lo, self._act_hi = 1, 0
            if not self._act_shape and self._act_dtype.kind in "iu":
                info = np.iinfo(self._act_dtype)
                self._act_lo, self._act_hi = int(info.min), int(info.max)

    # -- state -------------------------------------------------------------------------------

    @property
    def in_episode(self) -> bool:
        """True between ``begin_episode`` and ``end_episode``."""
        return self._open is not None

    @property
    def episode_steps(self) -> int:
        """Steps recorded in the open episode."""
        return self._t - self._ep_t

    @property
    def num_finished(self) -> int:
        """Finished episodes not yet taken."""
        return len(self._done)

    def recycle(self, batch: EpisodeBatch) -> None:
        """Give a taken batch's observation and action arrays back once its shard is built.

        The next ``take()`` reuses their memory (already touched) for the rows still to come:
        recording a frame into fresh memory costs more than stepping some envs.
        """
        self._obs.give_back(batch.observations)
        self._act.give_back(batch.actions)

    @property
    def row_bytes(self) -> int:
        """Bytes one step adds: an observation row and a step row (infos not counted)."""
        return self._obs_row_bytes + self._step_row_bytes

    @property
    def nbytes(self) -> int:
        """Approximate bytes of recorded data held (finished and open episodes), infos too."""
        return self._rows_nbytes(self._o, self._t)

    @property
    def finished_nbytes(self) -> int:
        """Approximate bytes of the finished episodes not yet taken (``nbytes`` less the open)."""
        if self._open is None:
            return self._rows_nbytes(self._o, self._t)
        return self._rows_nbytes(self._ep_o, self._ep_t)

    def _rows_nbytes(self, obs_rows: int, step_rows: int) -> int:
        info_row_bytes = 0 if self._infos is None else self._infos.row_bytes
        return obs_rows * (self._obs_row_bytes + info_row_bytes) + step_rows * self._step_row_bytes

    # -- recording ---------------------------------------------------------------------------

    def begin_episode(
        self, episode_id: int, seed: int | None, options: Any, obs: Any, info: Any
    ) -> None:
        """Start an episode with its reset observation (row 0) and reset info."""
        if self._open is not None:
            raise RuntimeError("begin_episode called while an episode is open")
        if self._o >= self._obs_cap:
            self._grow_obs()
        if self._obs.unpopulated or self._act.unpopulated:
            self._obs.start_populating()
            self._act.start_populating()
        self._ep_o, self._ep_t = self._o, self._t
        try:
            o, w, view = self._o, self._obs_w, self._obs_mv
            if view is None or obs.__class__ is not _ndarray or not _copy_row(view, o * w, w, obs):
                self._check_obs(obs)
                self._obs.set(o, obs)
            if self._infos is not None:
                self._infos.add(o, info or {}, f"episode {episode_id} reset")
        except ValueMismatch as e:
            if self._infos is not None:
                self._infos.clear(self._o, self._o + 1)
            raise CollectionError(refusal(episode_id, None, e)) from None
        self._o += 1
        self._open = (episode_id, seed, options)

    def add_step(
        self, action: Any, obs: Any, reward: float, terminated: bool, truncated: bool, info: Any
    ) -> None:
        """Record one transition of the open episode."""
        t, o = self._t, self._o
        if t >= self._step_cap:
            self._grow_steps()
        if o >= self._obs_cap:
            self._grow_obs()
        try:  # check before writing: numpy would broadcast a shape and wrap a value
            if self._fast:
                if obs.__class__ is not _ndarray or self._obs_mv is None:
                    if (
                        obs.__class__ is not _ndarray
                        or obs.dtype is not self._obs_dtype
                        or obs.shape != self._obs_shape
                    ):
                        self._check_obs(obs)
                    self._obs_arr[o] = obs  # type: ignore[index]
                else:
                    w = self._obs_w
                    try:
                        self._obs_mv[o * w : o * w + w] = obs
                    except (ValueError, TypeError):  # another dtype or shape
                        self._check_obs(obs)
                        self._obs_arr[o] = obs  # type: ignore[index]
                cls = action.__class__
                if cls is int and self._act_lo <= action <= self._act_hi:
                    self._act_mv[t] = action  # type: ignore[index]
                elif cls is _ndarray and self._act_w:
                    w = self._act_w
                    try:
                        self._act_mv[t * w : t * w + w] = action  # type: ignore[index]
                    except (ValueError, TypeError):  # another dtype or shape
                        self._check_act(action)
                        self._act_arr[t] = action  # type: ignore[index]
                else:
                    if cls is not self._act_scalar and (
                        cls is not _ndarray
                        or action.dtype is not self._act_dtype
                        or action.shape != self._act_shape
                    ):
                        self._check_act(action)
                    self._act_arr[t] = action  # type: ignore[index]
            else:
                self._check_act(action)
                self._check_obs(obs)
                self._act.set(t, action)
                self._obs.set(o, obs)
            if reward.__class__ is float or reward.__class__ is _float64:
                self._rew_mv[t] = reward
            else:
                _check_reward(reward)
                self._rew[t] = reward
            if terminated.__class__ is not bool:
                _check_terminated(terminated)
            if truncated.__class__ is not bool:
                _check_truncated(truncated)
            if self._infos is not None:
                self._infos.add(o, info, f"episode {self._open[0]} step {t - self._ep_t}")  # type: ignore[index]
        except ValueMismatch as e:
            episode_id = self._open[0] if self._open is not None else None
            if self._infos is not None:
                self._infos.clear(o, o + 1)
            self.discard_episode()
            raise CollectionError(refusal(episode_id, t - self._ep_t, e)) from None
        if terminated:  # rows past the last recorded are False (``discard_episode``)
            self._term[t] = True
        if truncated:
            self._trunc[t] = True
        self._t = t + 1
        self._o = o + 1

    def record_steps(
        self,
        act: Callable[[Any], Any],
        step: Callable[[Any], tuple[Any, Any, Any, Any, Any]],
        obs: Any,
        failed: Callable[[Any, Exception], None],
    ) -> None:
        """Run the open episode to its end: ``step(act(obs))``, each transition recorded.

        The rollout loop of every runner (``collector.rollout``). Each transition is stored as
        ``add_step`` stores it; one whose values are of the columns' own kinds (a flat row of
        the column's format, a Python int action in range or the action dtype's own scalar,
        a float reward, bool flags) is written here with the columns held in locals, anything
        else goes through ``add_step`` (checks, growth, refusals). ``failed(action, error)``
        runs when ``step`` or the recording raises, before the error propagates; an error of
        ``act`` propagates as it is.
        """
        fast = self._fast and self._obs_mv is not None and self._infos is None
        if fast:
            t, o, scap, ocap, ov, w, av, aw, act_arr, rv, term, trunc = self._columns()
            lo, hi, scalar = self._act_lo, self._act_hi, self._act_scalar
        while True:
            action = act(obs)
            try:
                obs, reward, terminated, truncated, info = step(action)
            except Exception as e:
                failed(action, e)
                raise
            cls = action.__class__
            if (
                fast
                and t < scap
                and o < ocap
                and obs.__class__ is _ndarray
                and (reward.__class__ is float or reward.__class__ is _float64)
                and terminated.__class__ is bool
                and truncated.__class__ is bool
                and (cls is int and lo <= action <= hi or cls is scalar or cls is _ndarray)
            ):
                try:  # as add_step: a memoryview refuses another format or shape
                    ov[o * w : o * w + w] = obs
                    if cls is int:
                        av[t] = action
                    elif cls is scalar:
                        act_arr[t] = action
                    elif aw:
                        av[t * aw : t * aw + aw] = action
                    else:
                        raise TypeError
                except (ValueError, TypeError):
                    pass
                else:
                    rv[t] = reward
                    if terminated:  # rows past the last recorded are False
                        term[t] = True
                    if truncated:
                        trunc[t] = True
                    t += 1
                    o += 1
                    self._t, self._o = t, o
                    if terminated or truncated:
                        return
                    continue
            try:
                self.add_step(action, obs, reward, terminated, truncated, info)
            except Exception as e:
                failed(action, e)
                raise
            if terminated or truncated:
                return
            if fast:  # add_step may have grown or replaced the columns
                t, o, scap, ocap, ov, w, av, aw, act_arr, rv, term, trunc = self._columns()

    def _columns(self) -> tuple[Any, ...]:
        """``record_steps``' locals: next rows, capacities, views and widths, step columns."""
        return (
            self._t,
            self._o,
            self._step_cap,
            self._obs_cap,
            self._obs_mv,
            self._obs_w,
            self._act_mv,
            self._act_w,
            self._act_arr,
            self._rew_mv,
            self._term,
            self._trunc,
        )

    def end_episode(
        self, force_truncate: bool = False, metadata_fn: Callable[[dict], Any] | None = None
    ) -> bool:
        """Close the open episode; an episode with no steps is dropped. Returns True if kept.

        ``force_truncate`` marks the last step truncated unless it terminated (a reset in the
        middle of an episode, as Minari does). ``metadata_fn`` receives the episode's
        ``rewards``/``terminations``/``truncations`` and returns per-episode metadata.
        """
        if self._open is None:
            return False
        episode_id, seed, options = self._open
        self._open = None
        length = self._t - self._ep_t
        if length == 0:  # drop the lone reset row
            if self._infos is not None:
                self._infos.clear(self._ep_o, self._o)
            self._o = self._ep_o
            return False
        last = self._t - 1
        if force_truncate and not self._term[last]:
            self._trunc[last] = True
        steps = slice(self._ep_t, self._t)
        ret = float(_add_reduce(self._rew[steps]))  # ndarray.sum's own reduction
        meta = None
        if metadata_fn is not None:
            meta = metadata_fn(
                {
                    "id": episode_id,
                    "rewards": self._rew[steps].copy(),
                    "terminations": self._term[steps].copy(),
                    "truncations": self._trunc[steps].copy(),
                }
            )
        term, trunc = bool(self._term[last]), bool(self._trunc[last])
        self._done.append((episode_id, seed, options, length, ret, term, trunc, meta))
        return True

    def discard_episode(self) -> None:
        """Drop the open episode and its rows (e.g. after the env raised mid-episode)."""
        if self._open is not None:
            self._open = None
            if self._infos is not None:
                self._infos.clear(self._ep_o, self._o)
            self._term[self._ep_t : self._t] = False  # add_step writes only True flags
            self._trunc[self._ep_t : self._t] = False
            self._o, self._t = self._ep_o, self._ep_t

    def _grow_steps(self) -> None:
        rows = 2 * self._step_cap
        self._act.grow(rows)
        for name in ("_rew", "_term", "_trunc"):
            arr = getattr(self, name)
            new = np.zeros(rows, arr.dtype)
            new[: len(arr)] = arr
            setattr(self, name, new)
        self._step_cap = rows
        self._bind_fast_path()

    def _grow_obs(self) -> None:
        rows = 2 * self._obs_cap
        self._obs.grow(rows)
        if self._infos is not None:
            self._infos.grow(rows)
        self._obs_cap = rows
        self._bind_fast_path()

    # -- hand-over ---------------------------------------------------------------------------

    def peek(self, skip: int = 0) -> EpisodeBatch | None:
        """A copy of the finished episodes after the first ``skip``; they stay to be taken.

        Another thread may call this while the recording thread records (``begin_episode``,
        ``add_step``, ``end_episode``, ``discard_episode``): finished episodes fill rows
        from 0 in order, and nothing but ``take`` moves or changes their rows (growing
        copies them to a new array before swapping it in). ``take`` must not run meanwhile.
        """
        done = self._done[:]  # one atomic copy: episodes finished from here on are left out
        if len(done) <= skip:
            return None
        lengths = np.asarray([d[3] for d in done], np.int64)
        o_lo, t_lo = int(lengths[:skip].sum()) + skip, int(lengths[:skip].sum())
        o_hi, t_hi = int(lengths.sum()) + len(done), int(lengths.sum())

        def rows(store: dict[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
            return {name: arr[lo:hi].copy() for name, arr in list(store.items())}

        infos = masks = None
        if self._infos is not None:
            masks = rows(self._infos.masks, o_lo, o_hi)
            cols = rows(self._infos.cols, o_lo, o_hi)  # a key new since: its mask comes next
            infos = {name: col for name, col in cols.items() if name in masks}
        ids, seeds, options, lens, returns, terms, truncs, metas = zip(*done[skip:], strict=True)
        return EpisodeBatch(
            observations=rows(self._obs.store, o_lo, o_hi),
            actions=rows(self._act.store, t_lo, t_hi),
            rewards=self._rew[t_lo:t_hi].copy(),
            terminations=self._term[t_lo:t_hi].copy(),
            truncations=self._trunc[t_lo:t_hi].copy(),
            table=make_table(ids, seeds, lens, returns, terms, truncs, options, metas),
            infos=infos,
            info_masks=masks or {},
        )

    def take(self) -> EpisodeBatch | None:
        """Return the finished episodes as a batch (None if there are none); keep the open one."""
        if not self._done:
            return None
        o_end = self._ep_o if self._open is not None else self._o
        t_end = self._ep_t if self._open is not None else self._t
        rows = max(_MIN_ROWS, self._o - o_end, self._t - t_end)
        obs = self._obs.cut(o_end, self._o, max(rows, self._obs_cap // 4))
        act = self._act.cut(t_end, self._t, max(rows, self._step_cap // 4))
        self._obs_cap = len(next(iter(self._obs.store.values())))
        self._step_cap = len(next(iter(self._act.store.values())))
        steps = {}
        for name in ("_rew", "_term", "_trunc"):
            arr = getattr(self, name)
            steps[name] = arr[:t_end]  # a view: see _Columns.cut
            new = np.zeros(self._step_cap, arr.dtype)
            new[: self._t - t_end] = arr[t_end : self._t]
            setattr(self, name, new)
        infos = masks = None
        if self._infos is not None:
            infos, masks = self._infos.cut(o_end, self._o, self._obs_cap)
        ids, seeds, options, lengths, returns, terms, truncs, metas = zip(*self._done, strict=True)
        self._done = []
        self._o -= o_end
        self._t -= t_end
        self._ep_o -= o_end if self._open is not None else self._ep_o
        self._ep_t -= t_end if self._open is not None else self._ep_t
        self._bind_fast_path()
        return EpisodeBatch(
            observations=obs,
            actions=act,
            rewards=steps["_rew"],
            terminations=steps["_term"],
            truncations=steps["_trunc"],
            table=make_table(ids, seeds, lengths, returns, terms, truncs, options, metas),
            infos=infos,
            info_masks=masks or {},
        )
