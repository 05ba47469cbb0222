"""Commits: the checkpoint cadence, the committer every runner feeds, and their errors.

``Cadence`` says when a commit window closes; ``Committer`` turns the recorders' finished
episodes into shards and commits at that cadence (in a background thread); ``disk_full_error``
maps a full disk to one ``DiskFullError`` line; ``interrupt_says_what_is_committed`` turns
Ctrl-C into ``CollectInterrupted`` counted from the commit on disk;
``commit_finished_on_error`` is how every runner fails (unfinished episodes dropped, finished
ones committed, the error worded by the runner). ``progress_bar`` and
``show_rate`` are the progress display the runners share. Runners import this module, never
``collector.collect``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from collector import storage
from collector.encoder import Encoder
from collector.errors import DiskFullError
from collector.recorder import EpisodeRecorder

if TYPE_CHECKING:
    from collector.config import CollectConfig

__all__ = [
    "BUFFER_MB",
    "BUFFER_MIN_ROWS",
    "DISK_FULL",
    "MB",
    "Cadence",
    "CollectInterrupted",
    "Committer",
    "commit_finished_on_error",
    "disk_full_error",
    "disk_full_is_one_error",
    "interrupt_says_what_is_committed",
    "progress_bar",
    "release_freed_memory",
    "show_rate",
]

MB = 1024 * 1024

#: Recorded bytes held in memory at most before the committer writes them as a shard, even
#: when no commit is due (the shard is committed with the next commit): memory stays bounded
#: whatever ``every_mb`` and ``every_seconds`` allow, and is the same from 1k to 100k episodes.
#: ``from_config`` uses at least ``storage.shard_mb / SMALL_SHARD_FRACTION``, the size under
#: which a shard counts as small (4 MiB by default): these shards are never re-encoded by a
#: repack.
BUFFER_MB = 4
#: ...and at least this many steps: a shard of 40 Pong frames (4 MiB decoded, 4 kB on disk)
#: costs a file, an index file and an fsync for almost nothing.
BUFFER_MIN_ROWS = 256


def _load_malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim`` (glibc) via ctypes; None elsewhere (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_malloc_trim = _load_malloc_trim()


def release_freed_memory() -> bool:
    """Give the pages of freed heap memory back to the OS; False where that is not possible.

    A commit window frees arrays of several MiB (the recorder's rows, the joined batch, the
    shard image, the index grown by a commit). glibc raises its mmap threshold to the largest
    block freed (up to 32 MiB), so later such arrays come from the heap, and a freed hole
    below a live block stays resident: 20+ MiB of a 100k-episode ``collect`` run's peak RSS
    that a 1k run never reaches (issue 18). ``malloc_trim`` returns those pages; it runs on
    the committer's thread after each window (a few ms; ctypes lets the GIL go).
    """
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


class CollectInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``collect``; the message says what the dataset's last commit holds.

    A ``KeyboardInterrupt``, so code that stops on one still does. ``new_episodes``: episodes
    this run committed; ``total_episodes``: episodes of the last commit (None: no commit).
    """

    def __init__(
        self, message: str = "", *, new_episodes: int = 0, total_episodes: int | None = None
    ) -> None:
        super().__init__(message)
        self.new_episodes = new_episodes
        self.total_episodes = total_episodes


@contextlib.contextmanager
def interrupt_says_what_is_committed(writer: storage.DatasetWriter) -> Iterator[dict[str, int]]:
    """Turn Ctrl-C into ``CollectInterrupted``, counted from the commit on disk.

    The caller sets ``run["before"]``: the episodes committed when its collection started.
    """
    run: dict[str, int] = {}
    try:
        yield run
    except KeyboardInterrupt as e:
        if isinstance(e, CollectInterrupted):
            raise
        with contextlib.suppress(Exception):  # else the next writer removes it
            writer.remove_uncommitted()  # a shard installed by a commit the interrupt stopped
        try:
            total: int | None = int(storage.read_metadata(writer.path)["total_episodes"])
        except Exception:  # no commit yet, or unreadable: say nothing was committed
            total = None
        new = max(0, (total or 0) - run.get("before", total or 0))
        where = f"dataset {writer.dataset_id!r} at {writer.path}"
        held = "has no commit" if total is None else f"holds {total} episodes (last commit)"
        raise CollectInterrupted(
            f"interrupted: this run committed {new} episodes; {where} {held}; re-run the "
            "same command to resume",
            new_episodes=new,
            total_episodes=total,
        ) from e


class Cadence:
    """When to commit: the checkpoint cadence, shared by every runner.

    A window commits after ``every_episodes`` episodes, ``every_seconds`` seconds or
    ``every_mb`` MiB since the last commit, whichever comes first (None: never by that one).
    """

    def __init__(
        self, every_episodes: int | None, every_seconds: float | None, every_mb: float | None
    ) -> None:
        self.every_episodes = every_episodes
        self.every_seconds = every_seconds
        self.every_bytes = None if every_mb is None else every_mb * MB
        self.restart()

    def restart(self) -> None:
        """Start a new window (after a commit)."""
        self.since = time.monotonic()

    def due(self, episodes: int, nbytes: int) -> bool:
        """True when a window holding ``episodes`` episodes and ``nbytes`` bytes should commit."""
        return (
            (self.every_episodes is not None and episodes >= self.every_episodes)
            or (self.every_bytes is not None and nbytes >= self.every_bytes)
            or (
                self.every_seconds is not None
                and time.monotonic() - self.since >= self.every_seconds
            )
        )


class Committer:
    """Writes the recorders' finished episodes as shards at the checkpoint cadence.

    A commit happens after an episode when ``every_episodes`` episodes, ``every_seconds``
    seconds or ``every_mb`` MiB of data have accumulated since the last one, whichever first.
    ``recorder`` may be a list (one per sub-env of a vector env): a commit then writes one
    shard with all of their finished episodes.

    Commits due during the run are written by one background thread while the next window
    is recorded (h5py releases the GIL while it compresses and writes), at most one at a
    time, and a crash loses at most the window being written and the one being recorded.
    ``background=False`` commits synchronously. A window holding more than ``buffer_mb``
    MiB is written as shards of that size as it goes, committed with the window: memory
    holds at most two of those, whatever the cadence.
    ``flush()`` is always synchronous; an error of a background commit is raised by the next
    ``after_episode`` or ``flush``.

    An episode that runs long (or an env that stops answering) does not hold back the
    episodes finished before it: with ``every_seconds`` set, a watch thread commits them when
    the cadence is due and the recording thread has not finished an episode for a while
    (``EpisodeRecorder.peek``, so the recording thread is never paused).
    """

    def __init__(
        self,
        writer: storage.DatasetWriter,
        recorder: Any,
        *,
        every_episodes: int | None,
        every_seconds: float | None,
        every_mb: float | None,
        compression: str,
        background: bool = True,
        buffer_mb: float | None = None,
        buffer_min_rows: int = 0,
        encoder: str = "inline",
    ) -> None:
        self.writer = writer
        self.recorders = recorder if isinstance(recorder, list) else [recorder]
        self.cadence = Cadence(every_episodes, every_seconds, every_mb)
        self.compression = compression
        self.commits = 0
        #: digests and compression of each window, in a child process when worth it
        self.encoder = Encoder(encoder)
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="harvest-commit") if background else None
        )
        self._pending: Future[None] | None = None
        #: episodes finished so far (a step watch reads it as a sign of progress)
        self.episodes = 0
        #: True while the recording thread is inside the committer (not stepping the env)
        self.busy = False
        self._lock = threading.Lock()
        # per recorder: its first finished episodes already committed by the watch thread
        self._early = [0] * len(self.recorders)
        self._error: BaseException | None = None
        # shard images installed (``add_image``) since the last commit: episodes, bytes
        self._image_episodes = self._image_bytes = 0
        # episodes and bytes written as shards (``buffer_mb``) since the last commit
        rows_bytes = buffer_min_rows * max((r.row_bytes for r in self.recorders), default=0)
        self.buffer_bytes = max((BUFFER_MB if buffer_mb is None else buffer_mb) * MB, rows_bytes)
        self._held_episodes = self._held_bytes = 0
        if rows_bytes >= self.buffer_bytes:
            # frames (the step floor sets the buffer): every window is large, so the
            # encoder's child starts now and imports while the first window is recorded
            self.encoder.prepare(int(self.buffer_bytes))
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        if (
            every_seconds is not None
            and self._pool is not None
            and all(isinstance(r, EpisodeRecorder) for r in self.recorders)
        ):
            self._watch = threading.Thread(
                target=self._commit_while_recording,
                args=(min(1.0, every_seconds / 2),),
                name="harvest-cadence",
                daemon=True,
            )
            self._watch.start()

    @classmethod
    def from_config(
        cls,
        writer: storage.DatasetWriter,
        recorder: Any,
        config: CollectConfig,
        *,
        background: bool = True,
    ) -> Committer:
        """A committer at ``config.checkpoint``'s cadence and ``config.storage``'s compression."""
        ckpt = config.checkpoint
        return cls(
            writer,
            recorder,
            every_episodes=ckpt.every_episodes,
            every_seconds=ckpt.every_seconds,
            every_mb=ckpt.every_mb,
            compression=config.storage.compression,
            background=background,
            buffer_mb=max(BUFFER_MB, config.storage.shard_mb / storage.SMALL_SHARD_FRACTION),
            buffer_min_rows=BUFFER_MIN_ROWS,
            encoder=config.storage.encoder,
        )

    def add_image(self, image: bytes, table: dict[str, Any], schema: Any) -> None:
        """Install a shard another process built (a Ray worker) and commit if the cadence says so.

        ``image`` is ``storage.build_shard_bytes`` output and ``table`` its episode table with
        digests (``storage.fill_digests``). Installed and committed in the calling thread: a Ray
        driver does nothing else meanwhile, and the workers keep recording.
        """
        with self._lock:
            self._raise_error()
            self._wait()
            with self._storage_errors():
                self.writer.write_image(image, table, schema, self.compression)
            n = len(table["id"])
            self.episodes += n
            self._image_episodes += n
            self._image_bytes += len(image)
            if self.cadence.due(self._image_episodes, self._image_bytes):
                self._commit_images()

    def _commit_images(self) -> None:
        """Commit the installed shard images (the caller holds the lock)."""
        with self._storage_errors():
            self.writer.commit()
        self._image_episodes = self._image_bytes = 0
        self._held_episodes = self._held_bytes = 0  # committed with them
        self.cadence.restart()
        self.commits += 1

    @contextlib.contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """A full disk as one ``DiskFullError`` line; other errors as they are."""
        try:
            yield
        except OSError as e:
            full = disk_full_error(e, self.writer)
            if full is None:
                raise
            raise full from e

    def after_episode(self, window: tuple[int, int] | None = None, last: bool = False) -> bool:
        """Commit (in the background) if the cadence says so; True if a commit started.

        ``window``: the recorders' finished episodes and bytes (``window()``) when the caller
        keeps count of them (a vector run sums them once per step, not once per episode);
        after a commit started, the caller counts again. ``last``: the run's last episode,
        which the caller's ``flush`` writes next, with both cores (``Encoder.encode``).
        """
        self.episodes += 1
        if last:
            return False
        if self._error is not None or self._pending is not None and self._pending.done():
            with self._lock:
                self._raise_error()
                self._wait()
        episodes, nbytes = self.window() if window is None else window
        # with shards of this window written, the bytes cadence waits for the buffer to fill:
        # its commit then takes a full buffer, not a remainder that would be a small shard
        # (merged, so decoded and encoded again, at the end of the run)
        counted = self._held_bytes + nbytes
        if self._held_episodes and nbytes < self.buffer_bytes:
            counted = 0
        if self.cadence.due(self._held_episodes + episodes, counted):
            self._commit(wait=False)
            return True
        if nbytes >= self.buffer_bytes:
            self._commit(wait=False, publish=False)
            return True
        return False

    def window(self) -> tuple[int, int]:
        """The recorders' finished episodes (not yet taken) and their bytes: the next shard.

        Their bytes, not all the recorders hold: a vector recorder keeps every sub-env's open
        episode besides, and a window cut by all it held was written as a small shard.
        """
        recs = self.recorders
        if len(recs) == 1:  # after every episode of a one-env run: no generators
            return recs[0].num_finished, recs[0].finished_nbytes
        return sum(r.num_finished for r in recs), sum(r.finished_nbytes for r in recs)

    def flush(self) -> None:
        """Write and commit whatever is finished; returns when it is durable."""
        self._commit(wait=True)

    def close(self) -> None:
        """Wait for a background commit and stop the threads (idempotent)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.join()
            self._watch = None
        try:
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            self.encoder.close()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _commit_while_recording(self, tick: float) -> None:
        """Watch thread: commit finished episodes when an episode holds the cadence back."""
        seen = -1
        while not self._stop.wait(tick):
            if self.episodes != seen:  # the recording thread finishes episodes: it commits
                seen = self.episodes
                continue
            with self._lock:
                if self._error is not None or self._pool is None:
                    return
                if self._pending is not None and not self._pending.done():
                    continue  # never hold the lock waiting: the recording thread may need it
                recs = self.recorders
                finished = sum(r.num_finished for r in recs) - sum(self._early)
                if finished <= 0 or not self.cadence.due(finished + self._held_episodes, 0):
                    continue
                batches = []
                for k, rec in enumerate(recs):
                    batch = rec.peek(self._early[k])
                    if batch is not None:
                        batches.append(batch)
                        self._early[k] += batch.num_episodes
                self.cadence.restart()
                self._held_episodes = self._held_bytes = 0
                try:
                    self._wait()
                    self._pending = self._pool.submit(self._write, batches)
                except BaseException as e:  # the recording thread raises it
                    self._error = e
                    return

    def _wait(self) -> None:
        """Wait for the write in flight; raise its error. Kept while unfinished (Ctrl-C)."""
        pending = self._pending
        if pending is None:
            return
        try:
            pending.result()
        finally:
            if pending.done():  # an interrupted wait leaves it for the next one (close)
                self._pending = None

    def _commit(self, wait: bool, publish: bool = True) -> None:
        """Write the finished episodes as a shard; ``publish``: and commit (all held ones too)."""
        self.busy = True
        try:
            with self._lock:
                self._raise_error()
                # one commit at a time, in order; raises a failed one's error. Before taking
                # the episodes: an interrupted wait (Ctrl-C) leaves them with the recorders
                self._wait()
                batches = [b for b in map(self._take, range(len(self.recorders))) if b is not None]
                held = self._held_episodes > 0
                if publish:
                    self.cadence.restart()
                    self._held_episodes = self._held_bytes = 0
                else:
                    self._held_episodes += sum(b.num_episodes for b in batches)
                    self._held_bytes += sum(b.nbytes for b in batches)
                if publish and self._image_episodes:  # shard images a Ray worker built
                    self._commit_images()
                if not batches and not (publish and held):
                    return
                if wait or self._pool is None:  # nothing records meanwhile: two cores encode
                    self._write(batches, publish, overlap=True)
                else:
                    self._pending = self._pool.submit(self._write, batches, publish)
        finally:
            self.busy = False

    def _take(self, k: int) -> storage.EpisodeBatch | None:
        """Recorder ``k``'s finished episodes, less those the watch thread committed."""
        batch, early = self.recorders[k].take(), self._early[k]
        if batch is None or not early:
            return batch
        self._early[k] = 0
        n = batch.num_episodes
        if early >= n:
            return None
        return storage.select_episodes(batch, np.arange(early, n), batch.table["id"][early:])

    def _write(
        self, batches: list[storage.EpisodeBatch], publish: bool = True, overlap: bool = False
    ) -> None:
        with self._storage_errors():
            if batches:
                # the encoder (its process, where there is one) writes the shard file itself
                tmp = self.writer.shard_temp_path()
                try:
                    sha, table, schema = self.encoder.encode_to(
                        storage.concat_batches(batches), self.compression, tmp, overlap
                    )
                    self.writer.install_shard_file(tmp, table, schema, self.compression, sha)
                except BaseException:  # e.g. a second Ctrl-C between the two: no temp file
                    self.writer.discard_shard_temp(tmp)
                    raise
                if len(batches) == 1 and len(self.recorders) == 1:
                    recycle = getattr(self.recorders[0], "recycle", None)
                    if recycle is not None:  # the file holds a copy: the arrays are free
                        recycle(batches[0])
            if publish:
                self.writer.commit()
        if publish:
            self.commits += 1
        release_freed_memory()


@contextlib.contextmanager
def commit_finished_on_error(
    committer: Committer | None,
    discard: Callable[[], None] | None = None,
    reword: Callable[[BaseException], None] | None = None,
) -> Iterator[None]:
    """On an error in the block: drop the unfinished episodes, commit the finished ones, raise.

    The one failure path of every runner. ``reword(error)`` runs first, while the unfinished
    episodes are still open (so it can name them and their steps), and raises the error to
    report instead (the runner's one-line ``CollectionError``), or returns to re-raise
    ``error`` as it is. Then ``discard()`` drops the unfinished episodes and the committer
    commits the finished ones (``committer=None``: a Ray worker's run, whose caller takes them).
    """
    try:
        yield
    except BaseException as error:
        report: BaseException = error
        try:
            if reword is not None:
                reword(error)
        except BaseException as reworded:  # the runner's words for it, chained as it chose
            report = reworded
        if discard is not None:
            discard()
        if committer is not None:
            committer.flush()
        if report is error:
            raise
        raise report  # noqa: B904 - reword chained it (from error, or from None)


#: errno values of a full disk or an exhausted quota.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(err: OSError, writer: storage.DatasetWriter) -> DiskFullError | None:
    """The one-line ``DiskFullError`` for a write that failed with ENOSPC/EDQUOT, else None."""
    if isinstance(err, DiskFullError):
        return err
    if err.errno not in DISK_FULL:
        return None
    try:
        kept = f"{storage.read_metadata(writer.path)['total_episodes']} episodes"
    except Exception:  # the message must not fail; the commit is intact whatever it says
        kept = "nothing yet"
    what = "disk full" if err.errno == errno.ENOSPC else "disk quota exceeded"
    strerror = err.strerror or os.strerror(err.errno)  # a StorageError carries errno only
    return DiskFullError(
        f"{what} writing dataset {writer.dataset_id!r} at {writer.path} ({strerror}); the "
        f"last commit ({kept}) is intact: free space there and re-run the same command to resume"
    )


@contextlib.contextmanager
def disk_full_is_one_error(writer: storage.DatasetWriter) -> Iterator[None]:
    """Raise a full disk met outside a commit window (start, repack) as ``DiskFullError``."""
    try:
        yield
    except OSError as e:
        full = disk_full_error(e, writer)
        if full is None or full is e:
            raise
        raise full from e


def progress_bar(total: int, progress: Callable[[int, int], None] | bool | None) -> tqdm:
    """The runners' progress bar over ``total`` episodes (disabled unless ``progress``)."""
    return tqdm(total=total, unit="ep", disable=None if progress else True, file=sys.stderr)


def show_rate(
    bar: tqdm, steps: int, started: float, extra: str = "", *, total: bool = False
) -> None:
    """Show the step rate since ``started`` (``time.perf_counter``) beside ``bar``.

    ``total`` also shows the steps so far; ``extra`` is appended (e.g. ``"4 envs"``).
    """
    if bar.disable:
        return
    rate = steps / max(time.perf_counter() - started, 1e-9)
    text = f"{rate:,.0f} steps/s" + (f", {extra}" if extra else "")
    bar.set_postfix_str(f"{steps:,} steps, {text}" if total else text, refresh=False)
