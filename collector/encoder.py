"""Shard encoding in a child process, so that the process stepping the env only records.

The committer hands each commit window (an ``EpisodeBatch``) to ``Encoder.encode_to``. A
child process fills the episodes' digests, builds the shard's HDF5 image, compression
included (``storage.fill_digests`` and ``storage.build_shard_bytes``, as a Ray worker does),
and writes it, fsynced, under the hidden temp name the writer gave; it hands back the file's
sha256, the episode table and the info schema. The committer installs and commits the file
in the parent, so the commit protocol, crash safety and the fingerprint are those of an
in-process commit (a file a crash leaves under a temp name is removed by the next writer).

The window's columns travel through anonymous memory files (``memfd``) whose descriptors are
passed over the pipe: no file name, freed by the kernel when both processes close them,
whatever kills them. Columns in a recorder's own shared array (``collector.shared``: frames)
are passed as they lie, without a copy; the others are copied into one window file, which
serves window after window (its pages stay touched), sized by the largest window.
``Encoder.encode`` hands the image back through the pipe instead (compressed, so small).
One window is in flight at a time (the committer's one background commit), so memory stays
bounded by the commit window: the encoder, ~0.1 s a Pong episode, outpaces the env, so the
recorder does not wait mid-run.

If the child dies (killed, out of memory) the window is encoded in this process and so are
later ones, with one warning: nothing is lost and the data is the same. Where ``memfd`` is
not available (not Linux) there is no child: ``Encoder.available()`` says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from pathlib import Path
from typing import Any

import numpy as np

from collector import shared, storage
from collector.storage import durable

__all__ = [
    "CHILD_IMPORTS",
    "PACKAGE_DIR",
    "Encoder",
    "encode_inline",
    "encode_to_file",
    "serve",
    "usable_cpus",
]

log = logging.getLogger(__name__)

#: Windows smaller than this are encoded in the calling process: starting a child costs
#: about half a second, which a small window does not pay back.
MIN_WINDOW_BYTES = 4 * 1024 * 1024


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def encode_to_file(
    batch: storage.EpisodeBatch, compression: str | None, path: Path, overlap: bool = False
) -> tuple[str, dict[str, Any], Any]:
    """Digests and the shard of ``batch`` written to ``path`` (fsynced), in this process.

    Returns (the file's sha256, table, info schema): the image is hashed from memory, so the
    installer need not read the file back (``DatasetWriter.install_shard_file``).
    """
    image, table, schema = encode_inline(batch, compression, overlap)
    durable.write_new_file(path, image, sync=True)  # a failed write leaves no file
    return hashlib.sha256(image).hexdigest(), table, schema


def encode_inline(
    batch: storage.EpisodeBatch, compression: str | None, overlap: bool = False
) -> tuple[bytes, dict[str, Any], Any]:
    """Digests and the shard image of ``batch``, in this process: (image, table, info schema).

    ``overlap``: a window of ``MIN_WINDOW_BYTES`` or more is hashed in a second thread
    while its columns are compressed (both run without the GIL): ~0.05 s instead of ~0.08 s
    a raw Pong episode. For a window that nothing records beside (a run's last, which the
    run waits for): beside a recording thread the second thread would only take its core.
    """
    if not overlap or batch.nbytes < MIN_WINDOW_BYTES:
        storage.fill_digests(batch)
        return storage.build_shard_bytes(batch, compression), batch.table, batch.info_schema()
    with ThreadPoolExecutor(1, thread_name_prefix="harvest-digest") as pool:  # waits for it
        hashed = pool.submit(storage.fill_digests, batch)
        image = storage.build_shard_bytes(batch, compression, before_table=hashed.result)
    return image, batch.table, batch.info_schema()


class Encoder:
    """A child process that turns commit windows into shard images.

    ``mode``: ``"process"`` always uses the child, ``"auto"`` uses it for windows of at least
    ``MIN_WINDOW_BYTES`` when this process may run on two CPUs or more, ``"inline"`` never
    does. The child starts at the first window it is used for. Thread-safe for one caller at
    a time (the committer's background thread); ``close()`` stops the child.
    """

    def __init__(self, mode: str = "auto") -> None:
        self.mode = mode
        self._proc: Any = None
        self._conn: Connection | None = None
        self._dead = False
        self._ready = False  # the child has imported what it needs and said so
        self._lock = threading.Lock()
        self._window: _WindowFile | None = None
        #: windows the child encoded (tests and the closing summary read it)
        self.encoded_in_child = 0

    @staticmethod
    def available() -> bool:
        """True when windows can be passed to a child process (Linux ``memfd``)."""
        return hasattr(os, "memfd_create")

    @property
    def pid(self) -> int | None:
        """The child's process id, once started."""
        return None if self._proc is None else self._proc.pid

    def prepare(self, window_bytes: int) -> None:
        """Start the child now if windows of ``window_bytes`` will go to it.

        Its imports take about half a second: started while the first window is recorded,
        it is ready for it. Until it says it is ready, ``auto`` windows are encoded here.
        """
        with self._lock:
            if self._wants_child(window_bytes):
                self._start()

    def _wants_child(self, nbytes: int) -> bool:
        if self._dead or self.mode == "inline" or not self.available():
            return False
        return self.mode == "process" or (usable_cpus() >= 2 and nbytes >= MIN_WINDOW_BYTES)

    def encode(
        self, batch: storage.EpisodeBatch, compression: str | None, overlap: bool = False
    ) -> tuple[bytes, dict[str, Any], Any]:
        """The shard image of ``batch``: (image, table with digests, info schema).

        ``overlap``: nothing records meanwhile, two cores may work on it (``encode_inline``).
        """
        with self._lock:
            return self._encode(batch, compression, overlap, None)

    def encode_to(
        self,
        batch: storage.EpisodeBatch,
        compression: str | None,
        path: Path,
        overlap: bool = False,
    ) -> tuple[str, dict[str, Any], Any]:
        """Encode ``batch`` and write its shard to ``path`` (fsynced), as ``encode_to_file``.

        The child writes the file itself: the image does not come back through the pipe,
        and this process neither writes nor hashes it (issue 19: ~0.15 s of CPU of a 2M-step
        vector run, beside its recording thread). Returns (sha256 of the file, table, schema).
        """
        with self._lock:
            try:
                return self._encode(batch, compression, overlap, path)
            except BaseException:  # an error or Ctrl-C: no file is left at ``path``
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                raise

    def _encode(
        self,
        batch: storage.EpisodeBatch,
        compression: str | None,
        overlap: bool,
        path: Path | None,
    ) -> Any:
        """``encode`` (``path`` None) or ``encode_to``, in the child if worth it; lock held."""
        if self._wants_child(batch.nbytes):
            try:
                result = self._in_child(batch, compression, overlap, path)
            except (OSError, EOFError) as e:  # the child died: nothing is lost
                self._stop(kill=True)
                self._dead = True
                log.warning(
                    "harvest's encoder process stopped (%s); encoding in this process from now on",
                    e,
                )
            except BaseException:
                # interrupted (Ctrl-C) while the child works on the window: it would still
                # write its file, and a reply the next window would read; stopped first
                self._stop(kill=True)
                self._dead = True
                raise
            else:
                if result is not None:
                    self.encoded_in_child += 1
                    return result
        if path is None:
            return encode_inline(batch, compression, overlap)
        # a child that died (stopped and waited for) may have left part of it: overwritten
        return encode_to_file(batch, compression, path, overlap)

    def _start(self) -> Connection:
        """Start the child (``serve``) over a socket pair.

        Not ``multiprocessing``'s spawn, which runs the caller's ``__main__`` again (a script
        calling ``collect()`` at top level would collect twice), and not fork, which copies a
        process with threads and HDF5 state.
        """
        if self._conn is not None:
            return self._conn
        parent, child = socket.socketpair()
        with child:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(child.fileno()), PACKAGE_DIR],
                pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL,
                env={**os.environ, **_ONE_THREAD},
            )
        self._conn = Connection(parent.detach())
        log.debug("started the encoder process (pid %d)", self._proc.pid)
        return self._conn

    def _in_child(
        self,
        batch: storage.EpisodeBatch,
        compression: str | None,
        overlap: bool,
        path: Path | None,
    ) -> Any:
        """``encode`` (or with ``path``, ``encode_to``) in the child.

        None when the child refused the window or (``auto``) is not ready yet.
        """
        conn = self._start()
        if not self._ready:
            if self.mode != "process" and not conn.poll(0):
                return None  # still importing: this window is encoded here, without waiting
            status, _ = conn.recv()
            self._ready = status == "ready"
        buffers: list[pickle.PickleBuffer] = []
        header = pickle.dumps(batch, protocol=5, buffer_callback=buffers.append)
        views = [b.raw() for b in buffers]
        # each buffer: (file, offset, bytes); file 0 is the window file, others the recorder's
        places, files, copies = [], [], []
        for view in views:
            found = shared.locate(view)  # a recorder array's own file: passed, not copied
            if found is None:
                copies.append(view)
                places.append((0, sum(v.nbytes for v in copies[:-1]), view.nbytes))
            else:
                fd, offset = found
                if fd not in files:
                    files.append(fd)
                places.append((1 + files.index(fd), offset, view.nbytes))
        whole = None
        try:
            window = self._window_file(sum(v.nbytes for v in copies))
            whole = np.frombuffer(window.mm, np.uint8)
            at = 0
            for view in copies:
                # numpy copies without the GIL: the recording thread goes on meanwhile
                whole[at : at + view.nbytes] = np.frombuffer(view, np.uint8)
                at += view.nbytes
            whole = None  # no view of the file outlives the copy: it may be closed
            where = None if path is None else os.fspath(path)
            conn.send((header, places, compression, len(files), overlap, where))
            for fd in (window.fd, *files):
                send_handle(conn, fd, self._proc.pid)
        finally:
            del views, buffers, copies, whole
        status, payload = conn.recv()
        if status == "ok":
            return payload
        log.debug("the encoder process could not encode a window: %s", payload)
        return None

    def _window_file(self, nbytes: int) -> _WindowFile:
        """The memory file windows travel through, holding at least ``nbytes``.

        One file serves window after window (one is in flight at a time): its pages are
        touched once, where a fresh file per window cost a page fault per 4 kB written, in
        this process (issue 19). It grows to the largest window, so memory stays bounded by
        the commit window.
        """
        if self._window is None or self._window.size < nbytes:
            if self._window is not None:
                self._window.close()
                self._window = None
            self._window = _WindowFile(nbytes)
        return self._window

    def _stop(self, kill: bool = False) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if self._window is not None:
            self._window.close()
            self._window = None
        if conn is not None:
            try:
                if not kill:
                    conn.send(None)
            except OSError:
                pass
            conn.close()
        if proc is not None:
            if kill:
                proc.kill()
            # a blocking waitpid: Popen.wait(timeout) polls with sleeps, which cost a run
            # ~0.1 s at its end. The child is idle here (every window's reply was read) and
            # exits on the None or the closed socket at once.
            proc.wait()

    def close(self) -> None:
        """Stop the child (idempotent)."""
        with self._lock:
            self._stop()

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _WindowFile:
    """An anonymous memory file (``memfd``) of ``size`` bytes, mapped here, pages populated.

    ``MAP_POPULATE`` allocates its pages in one system call, which releases the GIL,
    instead of one page fault at a time while the recording thread waits for the GIL.
    """

    def __init__(self, size: int) -> None:
        self.size = max(size, mmap.PAGESIZE)
        self.fd = os.memfd_create("harvest-window", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.size)
            self.mm = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED | _POPULATE)
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)

#: The child's environment over the parent's: numpy's import starts a BLAS thread pool, one
#: thread a core, that encoding never uses; starting it cost ~0.1 s of CPU a run, on the
#: core the recording thread shares (issue 19).
_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

#: The folder of the ``collector`` package (the child's ``argv[2]``).
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
#: The child's imports: ``collector`` stands in as a bare package over ``PACKAGE_DIR``, so
#: its ``__init__`` (the whole tool: gymnasium, omegaconf, ~0.35 s of CPU) never runs there
#: and the child is ready for the first window sooner; then ``collector.encoder`` itself.
CHILD_IMPORTS = (
    "import os, sys, types; package = types.ModuleType('collector'); "
    "package.__path__ = [sys.argv[2]]; sys.modules['collector'] = package; "
    "from collector.encoder import serve"
)
#: ``os._exit`` once served: the interpreter's teardown (numpy, h5py, hdf5plugin) took ~0.1 s
#: at the end of every run, waited for by ``close``; the child has nothing left to flush.
_CHILD = CHILD_IMPORTS + "; serve(int(sys.argv[1])); os._exit(0)"


def serve(fd: int) -> None:
    """The encoder process: windows in, shard images out, until ``None`` or the parent dies.

    ``fd`` is its end of the socket pair ``Encoder`` made.
    """
    conn = Connection(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        conn.send(("ready", None))  # the imports are done
        _serve_windows(conn)
    except (EOFError, OSError):  # the parent is gone: a short run may end before "ready"
        return


def _serve_windows(conn: Connection) -> None:
    """``serve``'s loop; a closed socket raises ``EOFError`` or ``OSError``."""
    mapped: dict[tuple[int, int], mmap.mmap] = {}  # the parent's window file, mapped once
    while True:
        message = conn.recv()
        if message is None:
            return
        header, places, compression, nfiles, overlap, path = message
        fds = [recv_handle(conn) for _ in range(1 + nfiles)]
        maps: list[mmap.mmap] = []
        try:
            maps.append(_map_window(mapped, fds[0]))
            # the recorder's arrays, this window's rows only (a read of a page never written
            # would allocate it), unmapped after the window
            maps += [
                _map_file(fd, max(at + n for k, at, n in places if k == i))
                for i, fd in enumerate(fds[1:], 1)
            ]
            done = _encode_window(maps, header, places, compression, overlap, path)
            conn.send(("ok", done))
        except Exception as e:  # the parent encodes it itself and reports what it meets
            conn.send(("error", f"{type(e).__name__}: {e}"))
        finally:
            for fd in fds:
                os.close(fd)
            for mm in maps[1:]:
                with contextlib.suppress(BufferError):  # see _encode_window
                    mm.close()


def _map_file(fd: int, length: int) -> mmap.mmap:
    """The first ``length`` bytes of memory file ``fd``, read-only, mapped at once."""
    return mmap.mmap(fd, max(length, 1), flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ)


def _map_window(mapped: dict[tuple[int, int], mmap.mmap], fd: int) -> mmap.mmap:
    """Memory file ``fd`` mapped read-only, the same mapping while the parent reuses it.

    A file the parent replaced (it grew) is unmapped: the child maps one file at a time.
    """
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    mm = mapped.get(key)
    if mm is None or len(mm) != st.st_size:
        for old in mapped.values():
            with contextlib.suppress(BufferError):  # see _encode_window
                old.close()
        mapped.clear()
        mm = mapped[key] = mmap.mmap(
            fd, st.st_size, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ
        )
    return mm


def _encode_window(
    maps: list[mmap.mmap],
    header: bytes,
    places: list[tuple[int, int, int]],
    compression: str | None,
    overlap: bool = False,
    path: str | None = None,
) -> tuple[Any, dict[str, Any], Any]:
    """Encode the window whose buffers lie at ``places`` (file, offset, bytes) in ``maps``.

    Returns (image, table, schema), or with ``path`` (sha256, table, schema) once the shard
    is written there. What is returned holds no view of the files.
    """
    wholes = [memoryview(mm) for mm in maps]
    views = [wholes[k][at : at + n] for k, at, n in places]
    batch = None
    try:
        batch = pickle.loads(header, buffers=views)
        if path is None:
            image, table, schema = encode_inline(batch, compression, overlap)
        else:
            image, table, schema = encode_to_file(batch, compression, Path(path), overlap)
        table = {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in table.items()}
    finally:
        batch = views = None  # every array over the memory files, before they are reused
        for whole in wholes:
            with contextlib.suppress(BufferError):  # an error's traceback may still hold one
                whole.release()
    return image, table, schema
