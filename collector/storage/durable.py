"""Durable file operations (the commit protocol, DESIGN.md section 4) and the writer lock.

``write_new_file``, ``atomic_write``, ``place_file`` and ``fsync_path`` are the only ways the
format puts bytes on disk; ``storage_errors`` maps a full disk or a read-only folder to one
``StorageError`` line. ``DatasetLock`` is the per-dataset writer lock, kept outside the folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from collector.errors import HarvestError, LockHeldError, StorageError
from collector.storage.ids import (
    LOCKS_DIR,
    METADATA_FILE,
    dataset_path,
    datasets_root,
    id_ancestors,
    nesting_error,
    parse_dataset_id,
)

__all__ = [
    "DatasetLock",
    "ReaderLease",
    "STORAGE_ERRNOS",
    "atomic_write",
    "free_bytes",
    "no_readers",
    "fsync_path",
    "place_file",
    "sha256_file",
    "storage_error",
    "storage_errors",
    "user_error",
    "write_new_file",
]


#: errno values of a local write the user can fix: what each means, and the fix.
STORAGE_ERRNOS: Final = {
    errno.ENOSPC: ("the disk is full", "free space there"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space within the quota"),
    errno.EROFS: (
        "the filesystem is read-only",
        "remount it read-write or use another datasets root ($HARVEST_DATASETS)",
    ),
    errno.EACCES: (
        "permission denied",
        "make it writable for this user or use another datasets root ($HARVEST_DATASETS)",
    ),
    errno.EPERM: (
        "operation not permitted",
        "make it writable for this user or use another datasets root ($HARVEST_DATASETS)",
    ),
}


def storage_error(
    err: OSError, path: str | os.PathLike[str] | None, doing: str = "write"
) -> StorageError | None:
    """The one-line ``StorageError`` for a failed local write, or None for other errors.

    ``path`` names where when the error does not (``shutil``'s copies raise ENOSPC without a
    file name); ``doing`` is the verb of the message ("write", "create", ...).

    >>> str(storage_error(OSError(errno.EROFS, "Read-only file system"), "/data/x"))[:46]
    'cannot write /data/x: the filesystem is read-o'
    """
    if isinstance(err, HarvestError):
        return err if isinstance(err, StorageError) else None
    known = STORAGE_ERRNOS.get(err.errno) if err.errno is not None else None
    if known is None:
        return None
    meaning, fix = known
    where = err.filename2 or err.filename or path  # a copy's (src, dest): the dest filled up
    strerror = err.strerror or os.strerror(err.errno)
    return StorageError(
        f"cannot {doing} {where if where is not None else '(unknown path)'}: {meaning} "
        f"({strerror}); {fix}, then run the same command again",
        path=None if where is None else os.fspath(where),
        errno=err.errno,
    )


def user_error(err: BaseException) -> HarvestError | None:
    """The error a command line reports for ``err`` in one line, or None to let it raise.

    A ``HarvestError`` is its own report; an ``OSError`` of a full, read-only or denied local
    write met below the durable I/O functions becomes its ``StorageError``; anything else
    is a bug and keeps its traceback.
    """
    if isinstance(err, HarvestError):
        return err
    return storage_error(err, None) if isinstance(err, OSError) else None


@contextlib.contextmanager
def storage_errors(path: str | os.PathLike[str] | None, doing: str = "write") -> Iterator[None]:
    """Raise a full disk, exhausted quota, read-only root or denied write as ``StorageError``.

    Other errors pass unchanged. The durable I/O functions below and the writers use it, so
    every operation that writes a dataset ends in one line instead of an ``OSError``.
    """
    try:
        yield
    except OSError as e:
        mapped = storage_error(e, path, doing)
        if mapped is None or mapped is e:
            raise
        raise mapped from e


def fsync_path(path: Path) -> None:
    """Fsync a file or directory by path (h5py's close does not fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Create ``path`` holding ``data`` (fsynced with ``sync``); a failed write removes it.

    Every byte a writer puts in a dataset's folder goes through here (shards, as one HDF5
    image; ``metadata.json``), so a full disk is one ``StorageError`` (see
    ``storage_errors``) and leaves no partial file.
    """
    with storage_errors(path):
        try:
            with open(path, "wb") as fh:
                fh.write(data)
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            raise


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via ``<path>.tmp``: write, fsync, replace, fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    with storage_errors(path):
        try:
            write_new_file(tmp, data, sync=True)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_path(path.parent)


def _readers_file(dataset_path: Path) -> Path:
    """``<real parent>/.locks/<real name>.readers``: beside the writer lock."""
    real = Path(os.path.realpath(dataset_path))
    return real.parent / LOCKS_DIR / f"{real.name}.readers"


class ReaderLease:
    """A shared lock a reader holds while it may open the shards of the commit it read.

    Taken before the reader reads ``metadata.json`` and held for the life of its snapshot
    (``release``, or when the object is collected). A writer removes the shards a repack
    merged away only when ``no_readers`` can take the lock exclusively; while a reader holds
    a lease they stay, for the next writer to remove (DESIGN.md section 4). A reader that
    cannot create the lock file (a read-only root) reads without a lease: it may then be
    told to ``refresh()``, never given wrong data.
    """

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._finalizer = weakref.finalize(self, _close_fd, fd) if fd is not None else None

    @classmethod
    def acquire(cls, dataset_path: Path) -> ReaderLease:
        """Take a shared lease on the dataset at ``dataset_path`` (waits out a removal)."""
        path = _readers_file(dataset_path)
        try:
            path.parent.mkdir(exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o664)
        except OSError:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                return cls(None)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            os.close(fd)
            return cls(None)
        return cls(fd)

    @property
    def held(self) -> bool:
        """True while the lease holds its lock."""
        return self._finalizer is not None and self._finalizer.alive

    def release(self) -> None:
        """Give the lease up (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


@contextlib.contextmanager
def no_readers(dataset_path: Path) -> Iterator[bool]:
    """Yield True, holding readers off, when no ``ReaderLease`` of the dataset is held.

    Yields False when a reader holds one (or the lock file cannot be made): then leave what
    a reader's snapshot may still open.
    """
    path = _readers_file(dataset_path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o664)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)  # releases the lock


class DatasetLock:
    """Exclusive writer lock of one dataset folder, kept outside it [review 8].

    The lock is keyed by the dataset folder's real path (issue 16 item 18): it is
    ``<real parent>/.locks/<real name>.lock``, so one dataset reached through two roots (a
    symlinked root, namespace or dataset folder) has one lock. For an id without namespace in
    a root without links that is ``<root>/.locks/<id>.lock``; for ``ns/name-v0`` it is
    ``<root>/ns/.locks/name-v0.lock``. The holder's pid is written after the lock is taken,
    so a refused writer can name it.

    Lock files are created ``0664`` minus the umask, like every other file a writer makes: a
    root shared by a group (umask 002) gets group-writable locks, a private one stays
    private. A lock file this user cannot write (another user's, under umask 022) is
    opened read-only: ``flock`` works on it, only the holder's pid is not recorded.
    """

    def __init__(self, dataset_id: str, root: str | os.PathLike[str] | None = None) -> None:
        parse_dataset_id(dataset_id)
        self.dataset_id = dataset_id
        self._root = root
        real = Path(os.path.realpath(dataset_path(dataset_id, root)))
        self.path = real.parent / LOCKS_DIR / f"{real.name}.lock"
        self._fd: int | None = None

    def acquire(self) -> DatasetLock:
        """Take the lock or raise ``LockHeldError`` naming the holder's pid.

        Raises:
            LockHeldError: another process holds it.
            UsageError: a new dataset's id is inside another dataset's folder.
            StorageError: the lock cannot be created (a read-only or not writable root).
        """
        self._refuse_new_nested()
        with storage_errors(self.path, "create the writer lock"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o664)
                writable = True
            except PermissionError as e:
                try:
                    fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
                except FileNotFoundError:
                    raise e from None
                writable = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = int(holder) if holder.isdigit() else None
            raise LockHeldError(
                f"dataset {self.dataset_id!r} is being written by another process "
                f"(pid {holder or 'unknown'}); wait for it to finish or stop it",
                pid=pid,
            ) from None
        if writable:  # the pid only names the holder: a full disk must not fail the lock
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def _refuse_new_nested(self) -> None:
        # The lock sits beside the dataset folder, so the lock of a new id inside another
        # dataset would be created in that dataset's folder: refuse it here, before any
        # writer's own nesting check runs. A dataset nested by an older harvest still locks,
        # so that it can be deleted.
        base = datasets_root(self._root)
        if (base / self.dataset_id / METADATA_FILE).exists():
            return
        for prefix in id_ancestors(self.dataset_id):
            if (base / prefix / METADATA_FILE).exists():
                raise nesting_error(self.dataset_id, prefix, f"in {base}")

    def release(self) -> None:
        """Release the lock (the lock file stays; it is reused)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DatasetLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def place_file(src: Path, dest: Path) -> str:
    """Put a copy of the immutable file ``src`` at ``dest``, copy-free where the filesystem allows.

    A hard link first, else ``copy_file_range`` (a server- or extent-level copy on NFS 4.2,
    XFS and btrfs), else a streaming copy; never re-encoded. Returns how: ``"link"`` or
    ``"copy"``. The caller fsyncs.
    """
    try:
        os.link(src, dest)
        return "link"
    except OSError:
        pass
    with storage_errors(dest), open(src, "rb") as fin, open(dest, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        done = 0
        try:
            while done < size:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), size - done)
                if n == 0:
                    break
                done += n
        except (AttributeError, OSError):
            fin.seek(done)
            fout.seek(done)
            fout.truncate(done)
            while chunk := fin.read(1 << 22):
                fout.write(chunk)
    return "copy"


def sha256_file(path: Path) -> str:
    """The sha256 of a file (the standard library's chunked read, without the GIL)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
