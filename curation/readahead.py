"""Blocks read ahead of the training iterators, handed over in shared memory.

``BlockStream`` yields the blocks of a seeded order, in that order, each as a ``Held`` the
consumer releases once it is done with it. With ``num_workers=0`` blocks are read in the
consumer's process. Otherwise worker **processes** read and decompress them (h5py does not
read in parallel in threads [review 9a]) and copy each into a POSIX shared memory segment;
only the segment's name and layout go through the pipe, and the consumer maps the segment
(no copy) and unlinks its name at once, so that the memory goes back to the system as soon as
the consumer lets go of it, whatever happens next.

Read-ahead is bounded twice: at most ``max_in_flight`` blocks and ``max_bytes`` decompressed
bytes are requested but not yet handed over (at least one block always is). On every exit
path (end, early ``close``, an exception, a worker killed mid-run) the workers are stopped
and every segment a worker may have created is unlinked: none is left in ``/dev/shm``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from collector import storage
from collector.errors import ReaderError
from curation.snapshot import BlockRef

__all__ = ["BlockStream", "Held"]

_STEP_FIELDS = ("rewards", "terminations", "truncations")
_ALIGN = 64
# segments whose mapping could not be closed yet (a view of it still alive); retried later
_LINGERING: list[shared_memory.SharedMemory] = []


class Held:
    """One block handed to the consumer: ``block``, its ``rows``; call ``release`` when done."""

    def __init__(
        self, block: int, rows: storage.ShardRows, segment: shared_memory.SharedMemory | None
    ) -> None:
        self.block = block
        self.rows: storage.ShardRows | None = rows
        self._segment = segment

    def release(self) -> None:
        """Drop the rows; a shared memory segment is unmapped (its name is already gone)."""
        self.rows = None
        seg, self._segment = self._segment, None
        if seg is not None:
            _close(seg)


def _close(seg: shared_memory.SharedMemory) -> None:
    """Unmap ``seg`` now, or later if a view of it is still alive (then it lingers)."""
    for old in _LINGERING[:]:
        try:
            old.close()
            _LINGERING.remove(old)
        except BufferError:
            pass
    try:
        seg.close()
    except BufferError:
        _LINGERING.append(seg)


def _copy_rows(rows: storage.ShardRows) -> storage.ShardRows:
    """``rows`` with every array copied (out of shared memory)."""

    def own(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in cols.items()}

    return storage.ShardRows(
        observations=own(rows.observations),
        actions=own(rows.actions),
        rewards=rows.rewards.copy(),
        terminations=rows.terminations.copy(),
        truncations=rows.truncations.copy(),
        infos=None if rows.infos is None else own(rows.infos),
        info_masks=own(rows.info_masks),
    )


def _columns_of(rows: storage.ShardRows) -> list[tuple[str, str, np.ndarray]]:
    """Every array of ``rows`` as ``(field, key, array)``."""
    out = [("observations", k, v) for k, v in rows.observations.items()]
    out += [("actions", k, v) for k, v in rows.actions.items()]
    out += [(f, "", getattr(rows, f)) for f in _STEP_FIELDS]
    out += [("infos", k, v) for k, v in (rows.infos or {}).items()]
    out += [("info_masks", k, v) for k, v in rows.info_masks.items()]
    return out


def to_shared(rows: storage.ShardRows, name: str) -> tuple[Any, ...]:
    """Copy ``rows`` into a new shared memory segment ``name``; returns what maps it back."""
    cols = _columns_of(rows)
    layout: list[tuple[Any, ...]] = []
    size = 0
    for field, key, arr in cols:
        if arr.dtype.hasobject:  # never written by harvest; sent through the pipe as it is
            layout.append((field, key, arr))
            continue
        layout.append((field, key, arr.dtype.str, arr.shape, size))
        size += -(-arr.nbytes // _ALIGN) * _ALIGN
    seg = shared_memory.SharedMemory(name=name, create=True, size=max(size, _ALIGN))
    try:
        for (_, _, arr), item in zip(cols, layout, strict=True):
            if len(item) == 5:
                dst: np.ndarray = np.ndarray(item[3], item[2], buffer=seg.buf, offset=item[4])
                dst[...] = arr
                del dst
    finally:
        seg.close()
    return name, layout, rows.infos is not None


def from_shared(message: tuple[Any, ...]) -> tuple[storage.ShardRows, shared_memory.SharedMemory]:
    """Map a segment made by ``to_shared`` (no copy) and unlink its name at once."""
    name, layout, has_infos = message
    seg = shared_memory.SharedMemory(name=name)
    seg.unlink()  # the mapping stays valid; the memory is freed when it is closed
    groups: dict[str, dict[str, np.ndarray]] = {
        "observations": {}, "actions": {}, "infos": {}, "info_masks": {}, "": {}
    }  # fmt: skip
    for item in layout:
        if len(item) == 3:
            field, key, arr = item
        else:
            field, key, dtype, shape, offset = item
            arr = np.ndarray(shape, dtype, buffer=seg.buf, offset=offset)
        if field in _STEP_FIELDS:
            groups[""][field] = arr
        else:
            groups[field][key] = arr
    rows = storage.ShardRows(
        observations=groups["observations"],
        actions=groups["actions"],
        rewards=groups[""]["rewards"],
        terminations=groups[""]["terminations"],
        truncations=groups[""]["truncations"],
        infos=groups["infos"] if has_infos else None,
        info_masks=groups["info_masks"],
    )
    return rows, seg


def unlink_quietly(name: str) -> None:
    """Remove segment ``name`` if it exists."""
    try:
        seg = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return
    except (OSError, ValueError):  # made but never sized (its maker died): remove the file
        Path("/dev/shm", name).unlink(missing_ok=True)
        return
    seg.close()
    try:
        seg.unlink()
    except FileNotFoundError:
        pass


def _worker(tasks: Any, results: Any) -> None:
    """Worker process: read blocks named by ``(seq, ref, name)`` tasks until a None arrives."""
    reader = storage.ShardReader()
    try:
        while True:
            task = tasks.get()
            if task is None:
                return
            seq, ref, name = task
            try:
                rows = reader.read_rows(Path(ref.file), slice(*ref.obs), slice(*ref.steps))
                message = to_shared(rows, name)
                del rows
                results.put((seq, message, None))
            except Exception as e:  # shipped to the consumer, which raises it
                unlink_quietly(name)
                results.put((seq, None, e))
    except (KeyboardInterrupt, EOFError, OSError):
        return
    finally:
        # exit without waiting to flush a block the consumer will never read (early stop)
        results.cancel_join_thread()
        reader.close()


class BlockStream:
    """Yield a ``Held`` per block of ``order``, in that order, read ahead by worker processes.

    Args:
        order: block numbers to read.
        refs: where each block is (by block number), for worker processes.
        nbytes: decompressed bytes of each block (by block number), for the read-ahead bound.
        read: reads a block in this process (``num_workers=0``).
        num_workers: reader processes (0: read with ``read``).
        mp_context: multiprocessing start method.
        max_in_flight: blocks requested ahead at most.
        max_bytes: bytes requested ahead at most (at least one block is).
        cache: a block cache (``peek``/``put`` by block number) that blocks are served from
            when held, and that blocks read by workers are copied into (``num_workers>0``).
    """

    def __init__(
        self,
        order: Iterable[int],
        *,
        refs: list[BlockRef],
        nbytes: np.ndarray,
        read: Callable[[int], storage.ShardRows],
        num_workers: int,
        mp_context: str,
        max_in_flight: int,
        max_bytes: int,
        cache: tuple[Callable[[int], Any], Callable[[int, Any], None]] | None = None,
    ) -> None:
        self.cache = cache
        self.order = iter(order)
        self.refs = refs
        self.nbytes = nbytes
        self.read = read
        self.num_workers = num_workers
        self.mp_context = mp_context
        self.max_in_flight = max(1, max_in_flight)
        self.max_bytes = max_bytes
        self.procs: list[Any] = []
        self.prefix = f"hv{os.getpid()}_{secrets.token_hex(3)}_"
        self._checked = 0.0

    def __iter__(self) -> Iterator[Held]:
        if self.num_workers == 0:
            for block in self.order:
                yield Held(block, self.read(block), None)
            return
        yield from self._from_workers()

    def _from_workers(self) -> Iterator[Held]:
        ctx = mp.get_context(self.mp_context)
        resource_tracker.ensure_running()  # one tracker for the workers' segments and ours
        tasks, results = ctx.Queue(), ctx.Queue()
        self.procs = [
            ctx.Process(
                target=_worker, args=(tasks, results), daemon=True, name=f"harvest-reader-{i}"
            )
            for i in range(self.num_workers)
        ]
        for proc in self.procs:
            proc.start()
        pending: dict[int, int] = {}  # seq -> block, requested and not yet handed over
        ready: dict[int, Held] = {}
        next_seq = submitted = 0
        ahead = 0  # bytes requested from workers and not yet handed over
        cost: dict[int, int] = {}  # seq -> its bytes in ``ahead``
        exhausted = False
        try:
            while True:
                while not exhausted and submitted - next_seq < self.max_in_flight:
                    if submitted > next_seq and ahead >= self.max_bytes:
                        break
                    block = next(self.order, None)
                    if block is None:
                        exhausted = True
                        break
                    pending[submitted] = block
                    held = self._cached(block)
                    if held is not None:
                        ready[submitted] = held
                    else:
                        cost[submitted] = int(self.nbytes[block])
                        ahead += cost[submitted]
                        tasks.put((submitted, self.refs[block], self.prefix + str(submitted)))
                    submitted += 1
                if next_seq == submitted and exhausted:
                    return
                while next_seq not in ready:
                    # checked on every wait, not only on a timeout: the other workers may keep
                    # the queue busy while one of them is dead
                    self._check_workers()
                    try:
                        seq, message, error = results.get(timeout=1.0)
                    except queue.Empty:
                        continue
                    if error is not None:
                        raise error
                    ready[seq] = self._received(pending[seq], message)
                pending.pop(next_seq)
                ahead -= cost.pop(next_seq, 0)
                held = ready.pop(next_seq)
                next_seq += 1
                self._check_workers()  # also when blocks come from the cache
                yield held
        finally:
            for held in ready.values():
                held.release()
            self._close(tasks, results)
            for seq in pending:  # a worker may have made it before it stopped or died
                unlink_quietly(self.prefix + str(seq))

    def _cached(self, block: int) -> Held | None:
        rows = None if self.cache is None else self.cache[0](block)
        return None if rows is None else Held(block, rows, None)

    def _received(self, block: int, message: tuple[Any, ...]) -> Held:
        """The block a worker sent; copied out of shared memory into the cache if there is one."""
        rows, seg = from_shared(message)
        if self.cache is None:
            return Held(block, rows, seg)
        own = _copy_rows(rows)
        del rows
        _close(seg)
        self.cache[1](block, own)
        return Held(block, own, None)

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

    def _close(self, tasks: Any, results: Any) -> None:
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
