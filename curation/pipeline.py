"""MineRL-style training iterators: ``batch_iter``, ``sarsd_iter``, ``load_data``.

How batches are drawn (the shuffle distribution), for ``batch_iter``:

1. An epoch visits every **block** of the dataset once (a block is a contiguous run of whole
   episodes of one shard: the episodes starting in one ``block_rows`` window, so at most
   ``block_rows`` plus one episode; see ``curation.dataset``), in an order
   drawn from ``seed``. Worker **processes** read and decompress blocks ahead of the consumer
   (h5py does not read in parallel in threads [review 9a]); at most ``2 * num_workers`` blocks
   are in flight.
2. The consumer keeps a window of ``preload_buffer_size`` blocks. While a block is the oldest
   in the window, batches are drawn uniformly *with replacement* from every valid sequence
   start in the window, until as many transitions as that block holds have been drawn; then it
   is evicted and the next block enters. So an epoch yields about ``total_steps`` transitions,
   each transition is drawn about once per epoch in expectation, and each batch mixes
   ``preload_buffer_size`` blocks. Larger windows mix more and cost more memory.
3. A sequence never spans two episodes: it starts at a step ``t`` with ``t + seq_len <= T``
   when the episode is long enough, otherwise at 0 with the tail padded (``batch.mask`` False,
   values zero). With ``seq_len=1`` every transition of the window is equally likely.

Memory is bounded by blocks, not trajectories: about ``(2 * preload_buffer_size +
2 * num_workers)`` blocks at the peak, whatever the dataset size (MineRL's buffers held whole
trajectories and ran out of memory: its issues #356, #561).

Each batch is a 5-tuple ``(obs, act, rew, next_obs, done)`` shaped ``[batch, seq_len, ...]``
(MineRL's order) where ``done`` is **termination only**: a time-limit truncation is not a
terminal state, so TD targets should bootstrap through it. ``batch.truncated``,
``batch.terminated``, ``batch.mask`` and (``include_metadata=True``) ``batch.metadata`` carry
the rest. The same ``seed`` gives the same batches, whatever ``num_workers``.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import queue
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from collector import storage
from collector.errors import InvalidValueError, ReaderError
from collector.spaces import unflatten
from curation.snapshot import BlockRef, nested_row

if TYPE_CHECKING:
    import gymnasium as gym

    from curation.dataset import Dataset, DatasetSpec

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


def _worker(tasks: Any, results: Any) -> None:
    """Worker process: read blocks named by ``(seq, ref)`` tasks until a None arrives."""
    reader = storage.ShardReader()
    try:
        while True:
            task = tasks.get()
            if task is None:
                return
            seq, ref = task
            try:
                rows = reader.read_rows(Path(ref.file), slice(*ref.obs), slice(*ref.steps))
                results.put((seq, rows, None))
            except Exception as e:  # shipped to the consumer, which raises it
                results.put((seq, None, e))
    except (KeyboardInterrupt, EOFError, OSError):
        return
    finally:
        # exit without waiting to flush a block the consumer will never read (early stop)
        results.cancel_join_thread()
        reader.close()


class _BlockStream:
    """Yield ``(block, rows)`` for ``order`` in that order, read ahead by worker processes."""

    def __init__(
        self, pipeline: Pipeline, order: Iterator[int], in_flight: int | None = None
    ) -> None:
        self.p = pipeline
        self.order = order
        self.in_flight = max(1, in_flight or 2 * pipeline.num_workers)
        self.procs: list[Any] = []
        self._checked = 0.0

    def __iter__(self) -> Iterator[tuple[int, storage.ShardRows]]:
        p = self.p
        if p.num_workers == 0:
            for block in self.order:
                yield block, p.dataset.read_block(block)
            return
        ctx = mp.get_context(p.mp_context)
        tasks, results = ctx.Queue(), ctx.Queue()
        self.procs = [
            ctx.Process(
                target=_worker, args=(tasks, results), daemon=True, name=f"harvest-reader-{i}"
            )
            for i in range(p.num_workers)
        ]
        for proc in self.procs:
            proc.start()
        pending: dict[int, int] = {}  # seq -> block
        ready: dict[int, storage.ShardRows] = {}
        next_seq = submitted = 0
        in_flight = self.in_flight
        order = iter(self.order)
        exhausted = False
        try:
            while True:
                while not exhausted and submitted - next_seq < in_flight:
                    block = next(order, None)
                    if block is None:
                        exhausted = True
                        break
                    pending[submitted] = block
                    tasks.put((submitted, p.refs[block]))
                    submitted += 1
                if next_seq == submitted and exhausted:
                    return
                while next_seq not in ready:
                    # checked on every wait, not only on a timeout: the other workers may keep
                    # the queue busy while one of them is dead
                    self._check_workers()
                    try:
                        seq, rows, error = results.get(timeout=1.0)
                    except queue.Empty:
                        continue
                    if error is not None:
                        raise error
                    ready[seq] = rows
                yield pending.pop(next_seq), ready.pop(next_seq)
                next_seq += 1
        finally:
            self.close(tasks, results)

    def _check_workers(self) -> None:
        now = time.monotonic()
        if now - self._checked < 0.25:  # cheap enough per wait, but no need for more
            return
        self._checked = now
        dead = [w for w in self.procs if not w.is_alive()]
        if dead:
            raise ReaderError(
                f"batch reader process {dead[0].pid} died (exit code {dead[0].exitcode}); "
                "restart the iterator"
            )

    def close(self, tasks: Any, results: Any) -> None:
        """Stop and reap every worker; never blocks on a full queue."""
        for _ in self.procs:
            try:
                tasks.put_nowait(None)
            except (queue.Full, ValueError, OSError):
                pass
        # never read ``results`` here: a worker that exited without flushing (see _worker) can
        # leave half a message in the pipe, and a read would then block for ever
        for proc in self.procs:
            proc.join(timeout=1.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5.0)
        for q in (tasks, results):
            q.cancel_join_thread()
            q.close()
        self.procs = []


@dataclass
class _Window:
    """The consumer's merged window: columns of K blocks plus every valid sequence start."""

    obs: dict[str, np.ndarray]
    act: dict[str, np.ndarray]
    rew: np.ndarray
    term: np.ndarray
    trunc: np.ndarray
    start_step: np.ndarray  # step row of each valid start
    start_obs: np.ndarray  # its observation row
    avail: np.ndarray  # steps available from it (<= seq_len)
    episode: np.ndarray | None  # episode id of each start (include_metadata only)
    t: np.ndarray | None  # step index within its episode (include_metadata only)


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
    ) -> Iterator[Batch]:
        """Random batches of sequences shaped ``[batch_size, seq_len, ...]`` (module docstring).

        ``num_epochs=-1`` never ends; ``preload_buffer_size`` is the number of blocks mixed.
        ``shard=(index, count)`` keeps every ``count``-th block of the seeded block order from
        ``index`` on, with its own draws: ``count`` consumers with the same ``seed`` (e.g. torch
        DataLoader workers) then share one stream, each block served once per epoch overall.
        """
        if batch_size <= 0 or seq_len <= 0 or preload_buffer_size <= 0:
            raise InvalidValueError("batch_size, seq_len and preload_buffer_size must be positive")
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
        stream = _BlockStream(self, order)
        window: deque[tuple[int, storage.ShardRows, tuple[np.ndarray, ...]]] = deque()
        for block, rows in stream:
            # valid starts are computed once per block, when it arrives
            window.append((block, rows, self._valid_starts(block, seq_len, include_metadata)))
            if len(window) < preload_buffer_size:
                continue
            merged = self._merge(window)
            yield from self._draw(merged, window[0][0], batch_size, seq_len, rng, include_metadata)
            window.popleft()
        while window:  # drain at the end of the last epoch
            merged = self._merge(window)
            yield from self._draw(merged, window[0][0], batch_size, seq_len, rng, include_metadata)
            window.popleft()

    def _episodes_of(self, block: int) -> np.ndarray:
        """Index rows of this view's episodes in ``block``, in id order."""
        i = self._block_slot[int(block)]
        return self._by_block[self._eps_start[i] : self._eps_stop[i]]

    def _valid_starts(
        self, block: int, seq_len: int, with_metadata: bool
    ) -> tuple[np.ndarray, ...]:
        """(step row, obs row, steps available, [episode id, step]) of every valid start."""
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
        if not with_metadata:
            return step0, obs0, avail
        return step0, obs0, avail, s.ids[eps][ep_of], t

    def _merge(
        self, window: deque[tuple[int, storage.ShardRows, tuple[np.ndarray, ...]]]
    ) -> _Window:
        """Concatenate the window's blocks.

        One copy per block change, so that each batch then needs one fancy index per column.
        """
        obs_shift = step_shift = 0
        starts: list[list[np.ndarray]] = [[] for _ in window[0][2]]
        for _, rows, valid in window:
            shifts = (step_shift, obs_shift, 0, 0, 0)
            for acc, arr, shift in zip(starts, valid, shifts, strict=False):
                acc.append(arr + shift if shift else arr)
            step_shift += len(rows.rewards)
            obs_shift += len(next(iter(rows.observations.values())))
        rows_list = [rows for _, rows, _ in window]

        def cat(get: Any) -> Any:
            first = get(rows_list[0])
            if len(rows_list) == 1:
                return first
            if isinstance(first, dict):
                return {k: np.concatenate([get(r)[k] for r in rows_list]) for k in first}
            return np.concatenate([get(r) for r in rows_list])

        joined = [np.concatenate(a) if len(a) > 1 else a[0] for a in starts]
        return _Window(
            obs=cat(lambda r: r.observations),
            act=cat(lambda r: r.actions),
            rew=cat(lambda r: r.rewards),
            term=cat(lambda r: r.terminations),
            trunc=cat(lambda r: r.truncations),
            start_step=joined[0],
            start_obs=joined[1],
            avail=joined[2],
            episode=joined[3] if len(joined) > 3 else None,
            t=joined[4] if len(joined) > 4 else None,
        )

    def _draw(
        self,
        w: _Window,
        oldest: int,
        batch_size: int,
        seq_len: int,
        rng: np.random.Generator,
        include_metadata: bool,
    ) -> Iterator[Batch]:
        n = len(w.start_step)
        if n == 0:
            return
        # transitions to draw while this block is the oldest: its steps in this view
        quota = max(1, int(self.dataset.snapshot.length[self._episodes_of(oldest)].sum()))
        offs = np.arange(seq_len)
        # no start in the window needs padding (always so for seq_len=1): skip the mask work
        full = bool(np.all(w.avail == seq_len))
        all_valid = np.ones((batch_size, seq_len), bool)
        all_valid.flags.writeable = False
        obs_space, act_space = self.observation_space, self.action_space
        for _ in range(-(-quota // (batch_size * seq_len))):
            pick = rng.integers(n, size=batch_size)
            if full:
                sidx = w.start_step[pick][:, None] + offs
                oidx = w.start_obs[pick][:, None] + offs
                mask = all_valid
            else:
                avail = w.avail[pick][:, None]
                mask = offs < avail
                clipped = np.minimum(offs, avail - 1)
                sidx = w.start_step[pick][:, None] + clipped
                oidx = w.start_obs[pick][:, None] + clipped
            nidx = oidx + 1
            obs = {k: v[oidx] for k, v in w.obs.items()}
            nxt = {k: v[nidx] for k, v in w.obs.items()}
            act = {k: v[sidx] for k, v in w.act.items()}
            rew, term, trunc = w.rew[sidx], w.term[sidx], w.trunc[sidx]
            if not full:
                pad = ~mask
                for arr in (*obs.values(), *nxt.values(), *act.values(), rew, term, trunc):
                    arr[pad] = 0
            meta = None
            if include_metadata:
                assert w.episode is not None and w.t is not None
                meta = {"episode_id": w.episode[pick], "step": w.t[pick]}
            yield Batch(
                (
                    _unflatten_batch(obs_space, obs),
                    _unflatten_batch(act_space, act),
                    rew,
                    _unflatten_batch(obs_space, nxt),
                    term,
                ),
                terminated=term,
                truncated=trunc,
                mask=mask,
                metadata=meta,
            )

    # -- ordered sequences -------------------------------------------------------------------

    def sarsd_iter(
        self,
        num_epochs: int = -1,
        max_sequence_len: int = 32,
        queue_size: int | None = None,
        seed: int | None = None,
        include_metadata: bool = False,
    ) -> Iterator[tuple[Any, ...]]:
        """Yield each episode as consecutive ``(obs, act, rew, next_obs, done)`` segments.

        Each segment holds up to ``max_sequence_len`` steps in order (shapes ``[len, ...]``).
        Episodes come block by block in a seeded random block order, and in a seeded random
        order inside each block; ``queue_size`` caps blocks read ahead (default
        ``2 * num_workers``). ``done`` is termination only; with ``include_metadata`` a dict
        (``id``, ``seed``, ``start``, ``terminated``, ``truncated``) is appended.
        """
        if max_sequence_len <= 0:
            raise InvalidValueError(f"max_sequence_len={max_sequence_len} must be positive")
        order_rng, rng = _streams(seed)
        for block, rows in _BlockStream(self, self._epochs(num_epochs, order_rng), queue_size):
            for pos in rng.permutation(self._episodes_of(block)).tolist():
                yield from self._segments(pos, block, rows, max_sequence_len, include_metadata)

    def _segments(
        self, pos: int, block: int, rows: storage.ShardRows, max_len: int, include_metadata: bool
    ) -> Iterator[tuple[Any, ...]]:
        s = self.dataset.snapshot
        length = int(s.length[pos])
        o0, t0 = (int(r) for r in s.rows_in_block(pos))
        for a in range(0, length, max_len):
            b = min(a + max_len, length)
            obs = unflatten(
                self.observation_space,
                {k: v[o0 + a : o0 + b] for k, v in rows.observations.items()},
            )
            nxt = unflatten(
                self.observation_space,
                {k: v[o0 + a + 1 : o0 + b + 1] for k, v in rows.observations.items()},
            )
            act = unflatten(
                self.action_space, {k: v[t0 + a : t0 + b] for k, v in rows.actions.items()}
            )
            done = rows.terminations[t0 + a : t0 + b]
            item: tuple[Any, ...] = (obs, act, rows.rewards[t0 + a : t0 + b], nxt, done)
            if include_metadata:
                item = (*item, {
                    "id": int(s.ids[pos]),
                    "seed": int(s.seed[pos]) if s.has_seed[pos] else None,
                    "start": a,
                    "terminated": done.copy(),
                    "truncated": rows.truncations[t0 + a : t0 + b].copy(),
                })  # fmt: skip
            yield item


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


def _unflatten_batch(space: Any, cols: dict[str, np.ndarray]) -> Any:
    """``unflatten`` for ``[batch, seq, ...]`` columns (Text becomes nested lists of str)."""
    if len(cols) == 1 and "" in cols:
        return cols[""]
    first = next(iter(cols.values()))
    b, L = first.shape[:2]
    flat = {k: v.reshape(b * L, *v.shape[2:]) for k, v in cols.items()}
    return _reshape(unflatten(space, flat), b, L)


def _reshape(value: Any, b: int, L: int) -> Any:
    if isinstance(value, dict):
        return {k: _reshape(v, b, L) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_reshape(v, b, L) for v in value)
    if isinstance(value, list):
        return [value[i * L : (i + 1) * L] for i in range(b)]
    return value.reshape(b, L, *value.shape[1:])
