"""Large recorder arrays in anonymous shared memory files, read by the encoder without a copy.

A 210x160x3 frame is 100 kB: copying a commit window of frames into the memory file the
encoder process reads (``collector.encoder``) doubled the memory a run touches and cost the
recording process page faults (issue 19). Arrays made here live in a ``memfd`` of their own;
``locate`` finds the file and offset of any contiguous view of one, so the encoder passes
the file's descriptor instead of the bytes. The file is closed when the array and every view
of it are gone (and freed by the kernel once the encoder has unmapped it too).

Where ``memfd`` is missing (not Linux) or an array is small, ``zeros`` is ``np.zeros``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import queue
import threading
import weakref
from typing import Any

import numpy as np

__all__ = ["MIN_BYTES", "locate", "wait_closed", "zeros"]

#: Arrays smaller than this are ordinary numpy arrays: copying them costs less than a file.
MIN_BYTES = 8 << 20

_lock = threading.Lock()
#: start address -> (bytes, descriptor) of every live shared array
_regions: dict[int, tuple[int, int]] = {}


def zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zeroed array of ``shape`` and ``dtype``, in a memory file of its own when large.

    >>> zeros((2, 3), np.uint8).tolist()
    [[0, 0, 0], [0, 0, 0]]
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < MIN_BYTES or not hasattr(os, "memfd_create"):
        return np.zeros(shape, dtype)
    fd = os.memfd_create("harvest-frames", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, nbytes)  # a memory file reads as zeros until written
        mm = mmap.mmap(fd, nbytes)
    except OSError:  # no room for a file: an ordinary array does the same job
        os.close(fd)
        return np.zeros(shape, dtype)
    arr = np.ndarray(shape, dtype, buffer=mm)  # views of it have it as their base
    start = arr.ctypes.data
    with _lock:
        _regions[start] = (nbytes, fd)
    weakref.finalize(arr, _release, start, fd, mm)
    return arr


def _release(start: int, fd: int, mm: mmap.mmap) -> None:
    """The array over ``mm`` is gone: forget its region, close its file in the background."""
    global _closer
    with _lock:
        _regions.pop(start, None)
        if _closer is None or not _closer.is_alive():
            _closer = threading.Thread(target=_close_files, name="harvest-free", daemon=True)
            _closer.start()
    _closing.put((mm, fd))


#: memory files whose array is gone, unmapped and closed by one helper thread: the kernel
#: frees a file's pages then, ~20 ms a 100 MB window of frames on a VM, which the recording
#: thread (a recorder's grown array) or the end of a run had waited for (issue 19)
_closing: queue.SimpleQueue[tuple[mmap.mmap, int] | threading.Event] = queue.SimpleQueue()
_closer: threading.Thread | None = None


def wait_closed(timeout: float | None = 10.0) -> bool:
    """Wait until the files of the arrays gone so far are closed (their memory freed).

    For a caller about to measure memory or count open files; False on timeout.
    """
    with _lock:
        if _closer is None or not _closer.is_alive():
            return True
    done = threading.Event()
    _closing.put(done)
    return done.wait(timeout)


def _close_files() -> None:
    while True:
        item = _closing.get()
        if isinstance(item, threading.Event):
            item.set()
            continue
        mm, fd = item
        try:
            with contextlib.suppress(BufferError):  # a view outlived the array: it unmaps
                mm.close()  # munmap and close release the GIL
        finally:
            os.close(fd)
        del mm


def locate(view: memoryview) -> tuple[int, int] | None:
    """(descriptor, offset) of the shared array memory ``view`` lies in, or None.

    ``view`` must be C-contiguous bytes (``PickleBuffer.raw()``); the caller keeps the array
    alive (so its file open) while it uses the descriptor.
    """
    if view.nbytes == 0 or not _regions:
        return None
    addr = np.frombuffer(view, np.uint8).ctypes.data
    with _lock:
        for start, (size, fd) in _regions.items():
            if start <= addr and addr + view.nbytes <= start + size:
                return fd, addr - start
    return None
