"""``runner.step_timeout``: a deadline on each step of the local runners, off the step path.

A thread samples the recording's progress (steps of the open episodes, episodes finished);
when it has not moved for ``step_timeout`` seconds outside the committer, it interrupts the
recording thread with ``StepTimeout``. The runner then commits the finished episodes and fails
with one line naming the episode and the step. Nothing is added to the per-step loop.

The interrupt is ``SIGALRM`` sent to the main thread (it breaks a blocking call such as a
sleep or a socket read); a runner in another thread gets the exception at its next Python
instruction instead.
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["StepTimeout", "StepWatch"]


class StepTimeout(BaseException):  # noqa: N818 - not an error of the env: it must not catch it
    """Raised in the recording thread when a step exceeds ``runner.step_timeout``."""


class StepWatch:
    """Interrupts the recording thread when ``progress()`` stays the same for ``seconds``.

    Args:
        seconds: the step deadline.
        progress: returns a value that changes with every step and every finished episode.
        busy: True while the recording thread is committing (that time is not a step's).
    """

    def __init__(
        self, seconds: float, progress: Callable[[], Any], busy: Callable[[], bool]
    ) -> None:
        self.seconds = float(seconds)
        self.progress = progress
        self.busy = busy
        self.fired = False
        self._target = threading.get_ident()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._old_handler: Any = None
        self._in_main = threading.current_thread() is threading.main_thread()

    def start(self) -> StepWatch:
        """Start watching the calling thread."""
        if self._in_main:
            self._old_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        self._thread = threading.Thread(target=self._run, name="harvest-step-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (idempotent); call it from the watched thread."""
        with self._lock:
            self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._in_main and self._old_handler is not None:
            signal.signal(signal.SIGALRM, self._old_handler)
            self._old_handler = None

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self.fired:
            raise StepTimeout
        if callable(self._old_handler):  # not ours: whoever set an alarm before gets it
            self._old_handler(signum, frame)

    def _run(self) -> None:
        tick = min(0.1, self.seconds / 4)
        last, since = self.progress(), time.monotonic()
        while not self._stop.wait(tick):
            now, value = time.monotonic(), self.progress()
            if value != last or self.busy():
                last, since = value, now
                continue
            if now - since < self.seconds:
                continue
            with self._lock:
                if self._stop.is_set():
                    return
                self.fired = True
                if self._in_main:
                    signal.pthread_kill(self._target, signal.SIGALRM)
                else:
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(self._target), ctypes.py_object(StepTimeout)
                    )
            return
