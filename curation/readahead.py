"""Blocks read ahead of the training iterators, handed over in shared memory.

``BlockStream`` yields the blocks of a seeded order, in that order, each as a ``Held`` the
consumer releases once it is done with it. With ``num_workers=0`` blocks are read in the
consumer's process. Otherwise worker **processes** read and decompress them (h5py does not
read in parallel in threads [review 9a]) straight into a **slab**: a POSIX shared memory
segment the consumer made and keeps for the stream's life, reused block after block. Only the
slab's name and the columns' layout go through the pipes; the consumer maps each slab once.
A fresh segment per block cost more than decoding on this 2-core VM: the worker faulted in
new pages twice (h5py's array, then the segment) and the consumer freed them, about 100 ms
of kernel time per 32 MiB block against ~15 ms to decode it (issue 19: ``num_workers=2`` was
slower than 0). A block larger than the read-ahead budget, or one that does not fit its slab,
still goes through a segment of its own, unlinked as soon as the consumer maps it. While
every worker is busy, the consumer decodes the oldest block none has started itself instead
of waiting (on two busy cores the workers alone were often no faster than the consumer).

A slab is reused only when no array of the block it held is alive (its mapping's reference
count says so): a view kept past ``release`` keeps its slab, which is then retired (unlinked,
unmapped when the last view goes), never overwritten.

Read-ahead is bounded twice: at most ``max_in_flight`` blocks and ``max_bytes`` bytes are
requested but not yet handed over (at least one block always is), a block counted at the
resident size of the slab it goes to; idle slabs are kept only within the same ``max_bytes``.
On every exit path (end, early ``close``, an exception, a worker killed mid-run) the workers
are stopped and every segment is unlinked: none is left in ``/dev/shm``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import secrets
import sys
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
#: Room a slab keeps beyond the largest block's bytes (column alignment, estimates).
_SLAB_SLACK = 1 << 20
#: Slabs a worker keeps mapped at most (each is mapped once, not once per block).
_MAPPED_SLABS = 16


class _Mapping:
    """A shared memory segment mapped in this process, and whether arrays of it are alive.

    Arrays made on ``seg.buf`` hold a reference to its mmap; a view of them holds the array.
    So the mmap's reference count above its count when idle says whether any array of the
    segment is alive. ``SharedMemory.close`` cannot tell: it unmaps under a live array.
    """

    def __init__(self, seg: shared_memory.SharedMemory) -> None:
        self.seg = seg
        self._mm: Any = seg.buf.obj
        self._idle = sys.getrefcount(self._mm)

    def in_use(self) -> bool:
        """Whether an array made on this segment is still alive."""
        return sys.getrefcount(self._mm) > self._idle

    def close(self) -> bool:
        """Unmap the segment unless an array of it is alive; returns whether it did."""
        if self._mm is None:
            return True
        if self.in_use():
            return False
        self._mm = None
        self.seg.close()
        return True


# mappings that could not be closed yet (an array of them still alive); retried later
_LINGERING: list[_Mapping] = []


def _close(mapping: _Mapping) -> None:
    """Unmap ``mapping`` now, or later if an array of it is still alive (then it lingers)."""
    _LINGERING[:] = [m for m in _LINGERING if not m.close()]
    if not mapping.close():
        _LINGERING.append(mapping)


class Held:
    """One block handed to the consumer: ``block``, its ``rows``; call ``release`` when done."""

    def __init__(
        self, block: int, rows: storage.ShardRows, on_release: Callable[[], None] | None = None
    ) -> None:
        self.block = block
        self.rows: storage.ShardRows | None = rows
        self._on_release = on_release

    def release(self) -> None:
        """Drop the rows; their shared memory goes back to the stream, or is unmapped."""
        self.rows = None
        done, self._on_release = self._on_release, None
        if done is not None:
            done()


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
    return name, layout, rows.infos is not None, size


def _rows_from(
    layout: list[tuple[Any, ...]], has_infos: bool, buf: memoryview
) -> storage.ShardRows:
    """The rows ``layout`` describes, as arrays on ``buf`` (no copy)."""
    groups: dict[str, dict[str, np.ndarray]] = {
        "observations": {}, "actions": {}, "infos": {}, "info_masks": {}, "": {}
    }  # fmt: skip
    for item in layout:
        if len(item) == 3:
            field, key, arr = item
        else:
            field, key, dtype, shape, offset = item
            arr = np.ndarray(shape, dtype, buffer=buf, offset=offset)
        if field in _STEP_FIELDS:
            groups[""][field] = arr
        else:
            groups[field][key] = arr
    return storage.ShardRows(
        observations=groups["observations"],
        actions=groups["actions"],
        rewards=groups[""]["rewards"],
        terminations=groups[""]["terminations"],
        truncations=groups[""]["truncations"],
        infos=groups["infos"] if has_infos else None,
        info_masks=groups["info_masks"],
    )


def from_shared(message: tuple[Any, ...]) -> tuple[storage.ShardRows, _Mapping]:
    """Map a segment made by ``to_shared`` (no copy) and unlink its name at once."""
    name, layout, has_infos, _ = message
    seg = shared_memory.SharedMemory(name=name)
    seg.unlink()  # the mapping stays valid; the memory is freed when it is closed
    rows = _rows_from(layout, has_infos, seg.buf)
    return rows, _Mapping(seg)


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


class _SlabFull(Exception):
    """A block does not fit the slab it was sent to (its size was estimated too small)."""


def _decode_into(
    reader: storage.ShardReader, ref: BlockRef, seg: shared_memory.SharedMemory
) -> tuple[Any, ...]:
    """Decode block ``ref`` straight into slab ``seg``; returns its layout message."""
    used = 0
    base = np.ndarray((1,), np.uint8, buffer=seg.buf).ctypes.data

    def alloc(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nonlocal used
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if used + n > seg.size:
            raise _SlabFull
        arr: np.ndarray = np.ndarray(shape, dtype, buffer=seg.buf, offset=used)
        used += -(-n // _ALIGN) * _ALIGN
        return arr

    rows = reader.read_rows(Path(ref.file), slice(*ref.obs), slice(*ref.steps), alloc)
    layout: list[tuple[Any, ...]] = []
    for field, key, arr in _columns_of(rows):
        if arr.dtype.hasobject:  # read by h5py, not into the slab: sent as it is
            layout.append((field, key, arr))
        else:
            layout.append((field, key, arr.dtype.str, arr.shape, arr.ctypes.data - base))
    return seg.name, layout, rows.infos is not None, used


def _worker(tasks: Any, results: Any) -> None:
    """Worker process: decode blocks named by ``(seq, ref, slab, live, name)`` until None.

    ``slab`` names the segment to decode into (None: a new segment ``name``), ``live`` the
    consumer's slabs: a slab no longer among them is unmapped here too.
    """
    reader = storage.ShardReader()
    mapped: dict[str, shared_memory.SharedMemory] = {}
    try:
        while True:
            task = tasks.get()
            if task is None:
                return
            seq, ref, slab, live, name = task
            for gone in [k for k in mapped if k not in live]:
                _unmap(mapped.pop(gone))
            try:
                message = None
                if slab is not None:
                    if slab not in mapped:
                        while len(mapped) >= _MAPPED_SLABS:
                            _unmap(mapped.pop(next(iter(mapped))))
                        mapped[slab] = shared_memory.SharedMemory(name=slab)
                    try:
                        message = _decode_into(reader, ref, mapped[slab])
                    except _SlabFull:
                        pass
                if message is None:
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
        for seg in mapped.values():
            _unmap(seg)


def _unmap(seg: shared_memory.SharedMemory) -> None:
    """Close a worker's mapping of a slab (the consumer owns the slab and its name)."""
    try:
        seg.close()
    except BufferError:  # an exception's traceback may still hold a view: leave it mapped
        pass


class _Slab:
    """A segment the consumer made and keeps mapped; workers decode blocks into it."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.mapping = _Mapping(shared_memory.SharedMemory(name=name, create=True, size=size))
        self.size = size
        self.resident = 0  # bytes of the largest block written into it: the pages it holds
        self._linked = True

    def unlink(self) -> None:
        """Remove its name (once): the memory goes when no process maps it any more."""
        if self._linked:
            self._linked = False
            try:
                self.mapping.seg.unlink()
            except FileNotFoundError:
                pass


class _Slabs:
    """The consumer's slabs: handed out per block, taken back when the block is released."""

    def __init__(self, prefix: str, size: int, max_idle_bytes: int) -> None:
        self.prefix = prefix
        self.size = size
        self.max_idle_bytes = max_idle_bytes
        self.live: dict[str, _Slab] = {}
        self.idle: list[_Slab] = []
        self.closed = False
        self._made = 0

    def take(self, need: int) -> _Slab | None:
        """An idle slab for a block of ``need`` bytes, or a new one; None if it is too large."""
        if need + _ALIGN * 64 > self.size:
            return None
        # an idle one whose pages fit best (no new pages, fewest held in excess), unless it
        # holds far more pages than the block needs: the window counts blocks at their own
        # size (so that batches do not depend on num_workers), and a slab holds at most
        # about twice that
        fit = [s for s in self.idle if s.resident <= 2 * need + _SLAB_SLACK]
        if fit:
            slab = min(fit, key=lambda s: (s.resident < need, abs(s.resident - need)))
            self.idle.remove(slab)
            return slab
        slab = _Slab(f"{self.prefix}s{self._made}", self.size)
        self._made += 1
        self.live[slab.name] = slab
        return slab

    def give_back(self, slab: _Slab, ahead: int) -> None:
        """``slab``'s block was released: keep it idle, or drop it past the bounds."""
        if slab.mapping.in_use() or self.closed:
            self._drop(slab)
            return
        idle = sum(s.resident for s in self.idle)
        if self.idle and idle + slab.resident + ahead > self.max_idle_bytes:
            self._drop(slab)
            return
        self.idle.append(slab)

    def _drop(self, slab: _Slab) -> None:
        self.live.pop(slab.name, None)
        slab.unlink()
        _close(slab.mapping)

    def close(self) -> None:
        """Unlink every slab; idle ones are unmapped now, held ones when released."""
        self.closed = True
        for slab in self.idle:
            self._drop(slab)
        self.idle = []
        for slab in self.live.values():
            slab.unlink()


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
        self._ahead = 0  # bytes requested from workers and not yet handed over
        self._reader: storage.ShardReader | None = None  # for blocks decoded here (_steal)
        #: blocks this process decoded itself while every worker was busy
        self.decoded_here = 0
        fits = nbytes[nbytes <= max_bytes]
        largest = int(fits.max()) if len(fits) else 0
        self.slabs = _Slabs(self.prefix, largest + _SLAB_SLACK, max_bytes)

    def __iter__(self) -> Iterator[Held]:
        if self.num_workers == 0:
            for block in self.order:
                yield Held(block, self.read(block))
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
        self._pending: dict[int, int] = {}  # seq -> block, requested and not yet handed over
        self._ready: dict[int, Held] = {}
        self._cost: dict[int, int] = {}  # seq -> its bytes in ``_ahead``
        self._slab_of: dict[int, _Slab] = {}  # seq -> the slab it is decoded into
        next_seq = submitted = 0
        exhausted = False
        try:
            while True:
                while not exhausted and submitted - next_seq < self.max_in_flight:
                    if submitted > next_seq and self._ahead >= self.max_bytes:
                        break
                    block = next(self.order, None)
                    if block is None:
                        exhausted = True
                        break
                    self._submit(tasks, submitted, block)
                    submitted += 1
                if next_seq == submitted and exhausted:
                    return
                while next_seq not in self._ready:
                    self._receive(tasks, results)
                self._pending.pop(next_seq)
                self._ahead -= self._cost.pop(next_seq, 0)
                held = self._ready.pop(next_seq)
                next_seq += 1
                self._check_workers()  # also when blocks come from the cache
                yield held
        finally:
            for held in self._ready.values():
                held.release()
            self._close(tasks, results)
            for seq in self._pending:  # a worker may have made it before it stopped or died
                unlink_quietly(self.prefix + str(seq))
            self.slabs.close()
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _submit(self, tasks: Any, seq: int, block: int) -> None:
        """Request ``block`` as number ``seq``, into a slab when it fits one."""
        self._pending[seq] = block
        held = self._cached(block)
        if held is not None:
            self._ready[seq] = held
            return
        need = int(self.nbytes[block])
        slab = self.slabs.take(need)
        self._cost[seq] = need if slab is None else max(need, slab.resident)
        self._ahead += self._cost[seq]
        if slab is not None:
            self._slab_of[seq] = slab
        live = tuple(self.slabs.live)
        name = None if slab is None else slab.name
        tasks.put((seq, self.refs[block], name, live, self.prefix + str(seq)))

    def _receive(self, tasks: Any, results: Any) -> None:
        """Take one block from the workers, or decode one here while they are all busy.

        Raises what a worker raised.
        """
        # checked on every wait, not only on a timeout: the other workers may keep the queue
        # busy while one of them is dead
        self._check_workers()
        try:
            seq, message, error = results.get_nowait()
        except queue.Empty:
            if self._steal(tasks):
                return
            try:
                seq, message, error = results.get(timeout=0.05)
            except queue.Empty:
                return
        slab = self._slab_of.pop(seq, None)
        if error is not None:
            if slab is not None:
                self.slabs.give_back(slab, self._ahead)
            raise error
        self._ready[seq] = self._received(self._pending[seq], message, slab)

    def _steal(self, tasks: Any) -> bool:
        """Decode the oldest block no worker has started, here; False when there is none.

        The consumer would otherwise sit idle waiting for it. An idle worker waits inside
        ``tasks.get`` holding the queue's read lock, so this takes a block only while every
        worker is busy: with ``num_workers=2`` on two busy cores the consumer reads as it
        would with 0, and the workers add what they can.
        """
        try:
            task = tasks.get_nowait()
        except (queue.Empty, OSError, ValueError):
            return False
        seq, ref, _, _, _ = task
        block = self._pending[seq]
        self.decoded_here += 1
        slab = self._slab_of.pop(seq, None)
        if self._reader is None:
            self._reader = storage.ShardReader()
        if slab is not None:
            try:
                message = _decode_into(self._reader, ref, slab.mapping.seg)
            except _SlabFull:
                message = None
            if message is not None:
                self._ready[seq] = self._received(block, message, slab)
                return True
            self.slabs.give_back(slab, self._ahead)
        rows = self._reader.read_rows(Path(ref.file), slice(*ref.obs), slice(*ref.steps))
        if self.cache is not None:
            self.cache[1](block, rows)
        self._ready[seq] = Held(block, rows)
        return True

    def _cached(self, block: int) -> Held | None:
        rows = None if self.cache is None else self.cache[0](block)
        return None if rows is None else Held(block, rows)

    def _received(self, block: int, message: tuple[Any, ...], slab: _Slab | None) -> Held:
        """The block a worker sent; copied out of shared memory into the cache if there is one."""
        name, layout, has_infos, used = message
        if slab is not None and name == slab.name:
            slab.resident = max(slab.resident, int(used))
            rows = _rows_from(layout, has_infos, slab.mapping.seg.buf)

            def done() -> None:
                self.slabs.give_back(slab, self._ahead)

            held = Held(block, rows, done)
        else:  # in a segment of its own (too large for a slab)
            if slab is not None:
                self.slabs.give_back(slab, self._ahead)
            rows, mapping = from_shared(message)
            held = Held(block, rows, lambda: _close(mapping))
        del rows
        if self.cache is None:
            return held
        assert held.rows is not None
        own = _copy_rows(held.rows)
        held.release()
        self.cache[1](block, own)
        return Held(block, own)

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
