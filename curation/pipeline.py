"""MineRL-style training iterators: ``batch_iter``, ``sarsd_iter``, ``load_data``.

How batches are drawn (the shuffle distribution), for ``batch_iter``:

1. An epoch visits every **block** of the dataset once (a block is a contiguous run of whole
   episodes of one shard, at most ``max_memory / 8`` (at most 32 MiB) of decompressed rows
   unless one episode is larger; see ``curation.snapshot``), in an order drawn from ``seed``.
   Worker **processes** read and decompress blocks ahead of the consumer (h5py does not read
   in parallel in threads [review 9a]) and hand them over in shared memory
   (``curation.readahead``); at most ``2 * num_workers`` blocks and a quarter of
   ``max_memory`` are in flight.
2. The consumer keeps a window of ``preload_buffer_size`` blocks (fewer when they would hold
   more than half of ``max_memory``); they are never concatenated: each batch is gathered
   block by block, its rows grouped by block. While a block is the oldest
   in the window, batches are drawn uniformly *with replacement* from every valid sequence
   start in the window, until as many transitions as that block holds have been drawn; then it
   is evicted and the next block enters. So an epoch yields about ``total_steps`` transitions,
   each transition is drawn about once per epoch in expectation, and each batch mixes
   ``preload_buffer_size`` blocks. Larger windows mix more and cost more memory.
3. A sequence never spans two episodes: it starts at a step ``t`` with ``t + seq_len <= T``
   when the episode is long enough, otherwise at 0 with the tail padded (``batch.mask`` False,
   values zero). With ``seq_len=1`` every transition of the window is equally likely.

Memory is bounded by the dataset's ``max_memory`` (``load_dataset``, default 512 MiB), not by
trajectories nor by the frame size: half for the window, a quarter for read-ahead, the rest
for the block being read (MineRL's buffers held whole trajectories and ran out of memory: its
issues #356, #561). The batches themselves come on top. An episode larger than the budget is
read alone, with a warning. ``frame_stack=k`` gives each step its last ``k`` observations,
gathered from the stored rows (frames are never stored twice).

Each batch is a 5-tuple ``(obs, act, rew, next_obs, done)`` shaped ``[batch, seq_len, ...]``
(MineRL's order) where ``done`` is **termination only**: a time-limit truncation is not a
terminal state, so TD targets should bootstrap through it. ``batch.truncated``,
``batch.terminated``, ``batch.mask`` and (``include_metadata=True``) ``batch.metadata`` carry
the rest. The same ``seed`` gives the same batches, whatever ``num_workers`` (and whatever
``max_memory`` from 256 MiB on, where the blocks stay the same).
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing as mp
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from collector import storage
from collector.errors import InvalidValueError
from collector.spaces import unflatten
from curation.readahead import BlockStream, Held
from curation.snapshot import BlockRef, nested_row, warn_large_block

if TYPE_CHECKING:
    import gymnasium as gym

    from curation.dataset import Dataset, DatasetSpec
    from curation.snapshot import Snapshot

__all__ = ["Batch", "Pipeline"]


class Batch(tuple):
    """``(obs, act, rew, next_obs, done)``, unpacking like MineRL's 5-tuples.

    Attributes ``terminated``, ``truncated``, ``mask`` and ``metadata`` carry the rest.
    """

    terminated: np.ndarray
    truncated: np.ndarray
    mask: np.ndarray
    metadata: dict[str, np.ndarray] | None

    def __new__(
        cls,
        items: tuple[Any, Any, Any, Any, Any],
        *,
        terminated: np.ndarray,
        truncated: np.ndarray,
        mask: np.ndarray,
        metadata: dict[str, np.ndarray] | None = None,
    ) -> Batch:
        """Build a batch from its five items and the extra fields."""
        self = super().__new__(cls, items)
        self.terminated, self.truncated, self.mask, self.metadata = (
            terminated,
            truncated,
            mask,
            metadata,
        )
        return self


#: A ``batch_iter`` window of at most this many decoded bytes is joined into one array per
#: column for its draws (``Pipeline._join_window``); larger ones are gathered block by block.
JOIN_WINDOW_BYTES: Final = 16 << 20
#: The step columns of a batch, in the order ``_draw`` gathers them.
_STEP_ITEMS: Final = ("rewards", "terminations", "truncations")


@dataclass
class _Slot:
    """A block in the consumer's window: its rows and valid starts."""

    held: Held
    starts: tuple[np.ndarray, ...]  # step row, obs row, steps available, first obs row, ...
    nbytes: int


class Pipeline:
    """Training iterators over a ``Dataset`` or view (see the module docstring).

    Args:
        dataset: what to read.
        num_workers: reader processes (0 reads in this process).
        mp_context: multiprocessing start method (default ``fork`` where available).
    """

    def __init__(
        self, dataset: Dataset, num_workers: int = 4, mp_context: str | None = None
    ) -> None:
        if num_workers < 0:
            raise InvalidValueError(f"num_workers={num_workers} must be >= 0")
        self.dataset = dataset
        # another format read in place (a Minari dataset) is decoded in this process
        snap = dataset.snapshot
        self.num_workers = int(num_workers) if snap.native else 0
        self.mp_context = mp_context or (
            "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        )
        self.refs: list[BlockRef] = [snap.block_ref(b) for b in range(snap.num_blocks)]
        # this view's episode rows grouped by block, found once (not a scan per block)
        pos = np.sort(dataset.positions)
        by_block = pos[np.argsort(snap.block[pos], kind="stable")]
        blocks = snap.block[by_block]
        self._blocks = np.unique(blocks)  # blocks holding episodes of this view
        self._eps_start = np.searchsorted(blocks, self._blocks, side="left")
        self._eps_stop = np.searchsorted(blocks, self._blocks, side="right")
        self._by_block = by_block
        self._block_slot = {int(b): i for i, b in enumerate(self._blocks.tolist())}
        # the memory budget: half for the window of blocks, a quarter for read-ahead
        self._window_bytes = dataset.max_memory // 2
        self._nbytes = int(snap.block_nbytes[self._blocks].sum())

    # -- MineRL's descriptive API ------------------------------------------------------------

    @property
    def observation_space(self) -> gym.Space:
        """The stored observation space."""
        return self.dataset.observation_space

    @property
    def action_space(self) -> gym.Space:
        """The stored action space."""
        return self.dataset.action_space

    @property
    def spec(self) -> DatasetSpec:
        """The dataset's spec."""
        return self.dataset.spec

    def get_trajectory_names(self) -> list[str]:
        """Episode ids of the dataset or view, as strings (MineRL named trajectories)."""
        return [str(i) for i in self.dataset.episode_indices.tolist()]

    # -- one episode -------------------------------------------------------------------------

    def load_data(
        self, episode_id: int | str, skip_interval: int = 0, include_metadata: bool = False
    ) -> Iterator[tuple[Any, ...]]:
        """Yield ``(obs, act, rew, next_obs, done)`` for each step of one episode, in order.

        ``skip_interval=k`` yields every (k+1)-th step; ``done`` is the termination flag;
        ``include_metadata`` appends ``{"id", "seed", "step", "terminated", "truncated"}``.
        """
        ep = next(self.dataset.iterate_episodes([int(episode_id)]))
        for t in range(0, len(ep), skip_interval + 1):
            item: tuple[Any, ...] = (
                nested_row(ep.observations, t),
                nested_row(ep.actions, t),
                ep.rewards[t],
                nested_row(ep.observations, t + 1),
                bool(ep.terminations[t]),
            )
            if include_metadata:
                meta = {
                    "id": ep.id,
                    "seed": ep.seed,
                    "step": t,
                    "terminated": bool(ep.terminations[t]),
                    "truncated": bool(ep.truncations[t]),
                }
                item = (*item, meta)
            yield item

    # -- batches -----------------------------------------------------------------------------

    def _epochs(self, num_epochs: int, rng: np.random.Generator) -> Iterator[int]:
        epoch = 0
        while num_epochs < 0 or epoch < num_epochs:
            yield from rng.permutation(self._blocks).tolist()
            epoch += 1

    def batch_iter(
        self,
        batch_size: int,
        seq_len: int,
        num_epochs: int = -1,
        preload_buffer_size: int = 2,
        seed: int | None = None,
        include_metadata: bool = False,
        shard: tuple[int, int] | None = None,
        frame_stack: int = 1,
    ) -> Iterator[Batch]:
        """Random batches of sequences shaped ``[batch_size, seq_len, ...]`` (module docstring).

        ``num_epochs=-1`` never ends; ``preload_buffer_size`` is the number of blocks mixed
        (fewer when they would take more than half of the dataset's ``max_memory``).
        ``shard=(index, count)`` keeps every ``count``-th block of the seeded block order from
        ``index`` on, with its own draws: ``count`` consumers with the same ``seed`` (e.g. torch
        DataLoader workers) then share one stream, each block served once per epoch overall.
        ``frame_stack=k`` gives each step its last ``k`` observations (``obs`` and
        ``next_obs`` shaped ``[batch_size, seq_len, k, ...]``, oldest first), the episode's
        first observation repeated before its start (Gymnasium's ``FrameStackObservation``
        with ``padding_type="reset"``); frames are gathered from the stored rows, never
        stored twice.
        """
        if batch_size <= 0 or seq_len <= 0 or preload_buffer_size <= 0 or frame_stack <= 0:
            raise InvalidValueError(
                "batch_size, seq_len, preload_buffer_size and frame_stack must be positive"
            )
        if shard is not None:
            index, count = shard
            if not 0 <= index < count:
                raise InvalidValueError(
                    f"shard={shard} must be (index, count) with 0 <= index < count"
                )
            if seed is None and count > 1:
                raise InvalidValueError(
                    "shard needs a seed: every shard must draw the same block order"
                )
        if len(self._blocks) == 0:
            return
        order_rng, rng = _streams(seed, shard)
        order = self._epochs(num_epochs, order_rng)
        if shard is not None and shard[1] > 1:
            order = itertools.islice(order, shard[0], None, shard[1])
        draw = functools.partial(
            self._draw,
            batch_size=batch_size,
            seq_len=seq_len,
            frame_stack=frame_stack,
            rng=rng,
            include_metadata=include_metadata,
        )
        stream = iter(self._stream(order))
        window: deque[_Slot] = deque()
        held_bytes = 0
        try:
            for held in stream:
                # valid starts are computed once per block, when it arrives
                starts = self._valid_starts(held.block, seq_len, include_metadata)
                size = int(self.dataset.snapshot.block_nbytes[held.block])
                window.append(_Slot(held, starts, size))
                held_bytes += size
                if len(window) < preload_buffer_size and held_bytes < self._window_bytes:
                    continue
                yield from draw(window)
                held_bytes -= window[0].nbytes
                window.popleft().held.release()
            while window:  # drain at the end of the last epoch
                yield from draw(window)
                window.popleft().held.release()
        finally:
            while window:
                window.popleft().held.release()
            stream.close()  # type: ignore[attr-defined]

    def _stream(self, order: Iterator[int], max_in_flight: int | None = None) -> BlockStream:
        """The blocks of ``order``, read ahead within the memory budget (``BlockStream``)."""
        snap = self.dataset.snapshot
        big = self._blocks[snap.block_nbytes[self._blocks] > self.dataset.max_memory]
        if len(big):
            warn_large_block(snap, int(big[0]), self.dataset.max_memory)
        read: Any = self.dataset.read_block
        cache = self.dataset.block_cache
        fits = self._nbytes <= cache.budget
        if not fits and self.num_workers == 0:
            # larger than the cache: each block is read once an epoch, caching cannot help
            read = functools.partial(_read_uncached, snap, storage.ShardReader())
        return BlockStream(
            order,
            refs=self.refs,
            nbytes=snap.block_nbytes,
            read=read,
            num_workers=self.num_workers,
            mp_context=self.mp_context,
            max_in_flight=max_in_flight or 2 * self.num_workers,
            max_bytes=self.dataset.max_memory // 4,
            # a view that fits in the cache is read by the workers once, then served from it
            cache=(
                functools.partial(cache.peek, snap),
                functools.partial(cache.put, snap),
            )
            if fits
            else None,
        )

    def _episodes_of(self, block: int) -> np.ndarray:
        """Index rows of this view's episodes in ``block``, in id order."""
        i = self._block_slot[int(block)]
        return self._by_block[self._eps_start[i] : self._eps_stop[i]]

    def _valid_starts(
        self, block: int, seq_len: int, with_metadata: bool
    ) -> tuple[np.ndarray, ...]:
        """(step row, obs row, steps available, episode's first obs row, [episode id, step])."""
        s = self.dataset.snapshot
        eps = self._episodes_of(block)
        lengths = s.length[eps]
        n_starts = np.maximum(lengths - seq_len + 1, 1)
        ep_of = np.repeat(np.arange(len(eps)), n_starts)
        t = np.arange(n_starts.sum()) - np.repeat(np.cumsum(n_starts) - n_starts, n_starts)
        obs_in_block, step_in_block = s.rows_in_block(eps)
        step0 = step_in_block[ep_of] + t
        obs0 = obs_in_block[ep_of] + t
        avail = np.minimum(lengths[ep_of] - t, seq_len)
        first = obs_in_block[ep_of]
        if not with_metadata:
            return step0, obs0, avail, first
        return step0, obs0, avail, first, s.ids[eps][ep_of], t

    def _draw(
        self,
        window: deque[_Slot],
        *,
        batch_size: int,
        seq_len: int,
        frame_stack: int,
        rng: np.random.Generator,
        include_metadata: bool,
    ) -> Iterator[Batch]:
        """Batches drawn from every valid start of the window while its oldest block is in.

        Each batch's rows are grouped by block (in draw order within a block). A window of
        large blocks (frames) is not concatenated: each batch's observations are gathered
        block by block, and its step columns (small) from their blocks joined once a draw.
        A small one (``_join_window``) is joined once, so each column of a batch is one
        index, as when one block is in: the same batches either way.
        """
        joined = [np.concatenate(parts) for parts in zip(*(w.starts for w in window), strict=True)]
        slot_of = np.repeat(np.arange(len(window)), [len(w.starts[0]) for w in window])
        n = len(slot_of)
        if n == 0:
            return
        avail_all = joined[2]
        # transitions to draw while this block is the oldest: its steps in this view
        oldest = window[0].held.block
        quota = max(1, int(self.dataset.snapshot.length[self._episodes_of(oldest)].sum()))
        # no start in the window needs padding (always so for seq_len=1): skip the mask work
        full = bool(np.all(avail_all == seq_len))
        rows = [w.held.rows for w in window]
        obs_cols = {k: [r.observations[k] for r in rows] for k in rows[0].observations}
        act_cols = {k: [r.actions[k] for r in rows] for k in rows[0].actions}
        step_cols = [[getattr(r, c) for r in rows] for c in _STEP_ITEMS]
        one = self._join_window(window)
        whole = [(0, 0, batch_size)]  # the groups of a batch drawn from one array
        step_at = None
        if one:  # every column one array, the starts' rows shifted to it
            joined[:4] = _shift_starts(joined[:4], slot_of, rows)
            obs_cols = {k: [np.concatenate(v)] for k, v in obs_cols.items()}
        elif len(window) > 1:  # large blocks (frames): only the small step columns joined
            step_at = _joined_offsets(rows, slot_of)[0]
        if one or step_at is not None:
            act_cols = {k: [np.concatenate(v)] for k, v in act_cols.items()}
            step_cols = [[np.concatenate(v)] for v in step_cols]
        for _ in range(-(-quota // (batch_size * seq_len))):
            pick = rng.integers(n, size=batch_size)
            order = np.argsort(slot_of[pick], kind="stable")
            pick = pick[order]
            groups = whole if one else _groups(slot_of[pick], len(window))
            sidx, oidx, nidx, mask = _rows(joined[:4], pick, seq_len, frame_stack, full)
            obs = {k: _gather(v, groups, oidx) for k, v in obs_cols.items()}
            nxt = {k: _gather(v, groups, nidx) for k, v in obs_cols.items()}
            if step_at is not None:  # rows of the joined step columns: one index each
                sidx, step_groups = sidx + step_at[pick][:, None], whole
            else:
                step_groups = groups
            act = {k: _gather(v, step_groups, sidx) for k, v in act_cols.items()}
            rew, term, trunc = (_gather(v, step_groups, sidx) for v in step_cols)
            if not full:
                pad = ~mask
                for arr in (*obs.values(), *nxt.values(), *act.values(), rew, term, trunc):
                    arr[pad] = 0
            meta = None
            if include_metadata:
                meta = {"episode_id": joined[4][pick], "step": joined[5][pick]}
            dims = (batch_size, seq_len) if frame_stack == 1 else (batch_size, seq_len, frame_stack)
            yield Batch(
                (
                    _unflatten_batch(self.observation_space, obs, dims),
                    _unflatten_batch(self.action_space, act),
                    rew,
                    _unflatten_batch(self.observation_space, nxt, dims),
                    term,
                ),
                terminated=term,
                truncated=trunc,
                mask=mask,
                metadata=meta,
            )

    def _join_window(self, window: deque[_Slot]) -> bool:
        """Whether ``_draw`` joins the window's blocks: several, and small (``JOIN_WINDOW_BYTES``).

        Gathering a batch block by block costs a few numpy calls per block and column: for
        small rows (CartPole: 34 bytes a step) that is most of a batch's cost, and a window
        spanning two blocks (more shards: appends, issue 18) drew ~1.2-1.9x slower.
        """
        size = sum(w.nbytes for w in window)
        return len(window) > 1 and size <= min(JOIN_WINDOW_BYTES, self.dataset.max_memory // 8)

    # -- ordered sequences -------------------------------------------------------------------

    def sarsd_iter(
        self,
        num_epochs: int = -1,
        max_sequence_len: int = 32,
        queue_size: int | None = None,
        seed: int | None = None,
        include_metadata: bool = False,
        frame_stack: int = 1,
    ) -> Iterator[tuple[Any, ...]]:
        """Yield each episode as consecutive ``(obs, act, rew, next_obs, done)`` segments.

        Each segment holds up to ``max_sequence_len`` steps in order (shapes ``[len, ...]``).
        Episodes come block by block in a seeded random block order, and in a seeded random
        order inside each block; ``queue_size`` caps blocks read ahead (default
        ``2 * num_workers``; read-ahead also stays within a quarter of ``max_memory``).
        ``done`` is termination only; with ``include_metadata`` a dict (``id``, ``seed``,
        ``start``, ``terminated``, ``truncated``) is appended. ``frame_stack=k`` shapes
        ``obs`` and ``next_obs`` ``[len, k, ...]`` as in ``batch_iter``. Segments are copies.
        """
        if max_sequence_len <= 0 or frame_stack <= 0:
            raise InvalidValueError(
                f"max_sequence_len={max_sequence_len} and frame_stack={frame_stack} "
                "must be positive"
            )
        order_rng, rng = _streams(seed)
        stream = iter(self._stream(self._epochs(num_epochs, order_rng), queue_size))
        held: Held | None = None
        try:
            for held in stream:
                assert held.rows is not None
                for pos in rng.permutation(self._episodes_of(held.block)).tolist():
                    yield from self._segments(
                        pos, held.rows, max_sequence_len, include_metadata, frame_stack
                    )
                held.release()
        finally:
            if held is not None:
                held.release()
            stream.close()  # type: ignore[attr-defined]

    def _segments(
        self,
        pos: int,
        rows: storage.ShardRows,
        max_len: int,
        include_metadata: bool,
        frame_stack: int,
    ) -> Iterator[tuple[Any, ...]]:
        s = self.dataset.snapshot
        length = int(s.length[pos])
        o0, t0 = (int(r) for r in s.rows_in_block(pos))
        back = np.arange(frame_stack - 1, -1, -1)
        obs_space = self.observation_space
        for a in range(0, length, max_len):
            b = min(a + max_len, length)
            if frame_stack == 1:
                obs = unflatten(
                    obs_space, {k: v[o0 + a : o0 + b].copy() for k, v in rows.observations.items()}
                )
                nxt = unflatten(
                    obs_space,
                    {k: v[o0 + a + 1 : o0 + b + 1].copy() for k, v in rows.observations.items()},
                )
            else:  # fmt: skip
                rows_at = np.arange(o0 + a, o0 + b)[:, None] - back
                oidx, nidx = np.maximum(rows_at, o0), np.maximum(rows_at + 1, o0)
                dims = (b - a, frame_stack)
                obs = _unflatten_batch(
                    obs_space, {k: v[oidx] for k, v in rows.observations.items()}, dims
                )
                nxt = _unflatten_batch(
                    obs_space,
                    {k: v[nidx] for k, v in rows.observations.items()},
                    dims,
                )
            act = unflatten(
                self.action_space,
                {k: v[t0 + a : t0 + b].copy() for k, v in rows.actions.items()},
            )
            done = rows.terminations[t0 + a : t0 + b].copy()
            rew = rows.rewards[t0 + a : t0 + b].copy()
            item: tuple[Any, ...] = (obs, act, rew, nxt, done)
            if include_metadata:
                item = (*item, {
                    "id": int(s.ids[pos]),
                    "seed": int(s.seed[pos]) if s.has_seed[pos] else None,
                    "start": a,
                    "terminated": done.copy(),
                    "truncated": rows.truncations[t0 + a : t0 + b].copy(),
                })  # fmt: skip
            yield item


def _rows(
    starts: list[np.ndarray], pick: np.ndarray, seq_len: int, frame_stack: int, full: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step rows, obs rows, next-obs rows and mask of the sequences starting at ``pick``.

    ``starts`` are (step row, obs row, steps available, episode's first obs row) of each
    valid start. Padded steps repeat the last valid row (the caller zeroes them); with
    ``frame_stack=k`` obs rows get a last axis of ``k`` rows, clipped at the episode's start.
    """
    step0, obs0, avail_all, first = starts
    offs = np.arange(seq_len)
    if full:
        mask = np.ones((len(pick), seq_len), bool)
        sidx = step0[pick][:, None] + offs
        oidx = obs0[pick][:, None] + offs
    else:
        avail = avail_all[pick][:, None]
        mask = offs < avail
        clipped = np.minimum(offs, avail - 1)
        sidx = step0[pick][:, None] + clipped
        oidx = obs0[pick][:, None] + clipped
    nidx = oidx + 1
    if frame_stack > 1:
        back = np.arange(frame_stack - 1, -1, -1)
        lo = first[pick][:, None, None]
        oidx = np.maximum(oidx[..., None] - back, lo)
        nidx = np.maximum(nidx[..., None] - back, lo)
    return sidx, oidx, nidx, mask


def _read_uncached(snap: Snapshot, reader: storage.ShardReader, block: int) -> storage.ShardRows:
    """Read ``block`` with ``reader``, outside the block cache."""
    return snap.read_block(block, reader)


def _groups(slots: np.ndarray, count: int) -> list[tuple[int, int, int]]:
    """``(slot, first, stop)`` of each run of equal values of the sorted ``slots``."""
    bounds = np.searchsorted(slots, np.arange(count + 1))
    return [
        (j, int(bounds[j]), int(bounds[j + 1])) for j in range(count) if bounds[j + 1] > bounds[j]
    ]


def _shift_starts(
    starts: list[np.ndarray], slot_of: np.ndarray, rows: list[storage.ShardRows]
) -> list[np.ndarray]:
    """(step row, obs row, steps available, first obs row) of ``starts`` in ``rows`` joined.

    ``slot_of``: each start's block in ``rows``; rows within a block become rows of the
    blocks' columns concatenated in window order.
    """
    step_at, obs_at = _joined_offsets(rows, slot_of)
    step0, obs0, avail, first = starts
    return [step0 + step_at, obs0 + obs_at, avail, first + obs_at]


def _joined_offsets(
    rows: list[storage.ShardRows], slot_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each start's block's first step row and first obs row in ``rows`` joined in order."""
    steps = np.array([len(r.rewards) for r in rows], np.int64)
    obs = np.array([len(next(iter(r.observations.values()), ())) for r in rows], np.int64)
    return (np.cumsum(steps) - steps)[slot_of], (np.cumsum(obs) - obs)[slot_of]


def _gather(
    cols: list[np.ndarray], groups: list[tuple[int, int, int]], idx: np.ndarray
) -> np.ndarray:
    """Rows ``idx`` (first axis grouped by block as ``groups`` says) of per-block ``cols``."""
    if len(groups) == 1:
        return cols[groups[0][0]][idx]
    col0 = cols[groups[0][0]]
    dtype = np.result_type(*(cols[j] for j, _, _ in groups))
    out = np.empty(idx.shape + col0.shape[1:], dtype)
    for j, a, b in groups:
        np.take(cols[j], idx[a:b], axis=0, out=out[a:b], mode="clip")
    return out


def _streams(
    seed: int | None, shard: tuple[int, int] | None = None
) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the block order and for the consumer's draws.

    The block order is drawn ahead of the consumer (workers read ahead), so sharing one
    generator would make batches depend on how far ahead the workers are. Shards share the
    order and draw from their own child of the draws' seed.
    """
    order, draws = np.random.SeedSequence(seed).spawn(2)
    if shard is not None and shard[1] > 1:
        draws = draws.spawn(shard[1])[shard[0]]
    return np.random.default_rng(order), np.random.default_rng(draws)


def _unflatten_batch(
    space: Any, cols: dict[str, np.ndarray], dims: tuple[int, ...] | None = None
) -> Any:
    """``unflatten`` for ``[*dims, ...]`` columns (default ``[batch, seq]``; Text: lists)."""
    if len(cols) == 1 and "" in cols:
        return cols[""]
    first = next(iter(cols.values()))
    dims = dims or tuple(first.shape[:2])
    n = int(np.prod(dims))
    flat = {k: v.reshape(n, *v.shape[len(dims) :]) for k, v in cols.items()}
    return _reshape(unflatten(space, flat), dims)


def _reshape(value: Any, dims: tuple[int, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _reshape(v, dims) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_reshape(v, dims) for v in value)
    if isinstance(value, list):
        if len(dims) == 1:
            return value
        n = int(np.prod(dims[1:]))
        return [_reshape(value[i * n : (i + 1) * n], dims[1:]) for i in range(dims[0])]
    return value.reshape(*dims, *value.shape[1:])
