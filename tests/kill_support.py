"""Killing ``collect`` with SIGKILL, cheaply and many times over, and judging what it left.

``Zygote`` is a Python process that imports ``collect`` once and forks one child per run: a
child is a separate process, killed with a real SIGKILL, but starts in milliseconds instead
of the ~0.5 s of a fresh interpreter. The zygote reports how each child ended, so a test
knows whether its kill landed (the child died of SIGKILL) or came too late.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from collector import storage


def _serve() -> None:
    """The zygote's loop: one JSON config a line on stdin, one child per config."""
    import traceback

    import helpers  # noqa: F401  (registers the test envs before any fork)

    import collector
    from collector.collect import collect

    def say(**message: Any) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    say(ready=collector.__file__)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:  # the child: never returns into the loop
            code = 1
            try:
                os.dup2(2, 1)  # stdout is the zygote's protocol
                collect(json.loads(line))
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        say(pid=pid)
        _, status = os.waitpid(pid, 0)
        say(
            pid=pid,
            signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        )


class Zygote:
    """Runs ``collect(cfg)`` in forked children of one warm process; see the module docstring.

    ``start(cfg)`` forks a child and returns its pid, ``kill()`` sends it SIGKILL through a
    pidfd (never a recycled pid), ``running()`` polls it, ``wait()`` returns
    ``(signal, exit code)`` of its end.
    """

    def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import kill_support; kill_support._serve()"],
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        self.origin: str = self._next(timeout=60)["ready"]
        self._pidfd: int | None = None

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put("")

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the zygote said nothing for {timeout} s") from None
        if not line:
            raise AssertionError(f"the zygote died: {self.proc.wait()}")
        return json.loads(line)

    def start(self, cfg: dict[str, Any]) -> int:
        """Fork a child running ``collect(cfg)``; returns its pid."""
        assert self.proc.stdin is not None and self._pidfd is None
        self.proc.stdin.write(json.dumps(cfg) + "\n")
        self.proc.stdin.flush()
        pid = int(self._next(timeout=30)["pid"])
        self._pidfd = os.pidfd_open(pid)  # before the zygote can reap it: the child is busy
        return pid

    def running(self) -> bool:
        """True while the child has not ended (its pidfd turns readable when it does)."""
        assert self._pidfd is not None
        return not select.select([self._pidfd], [], [], 0)[0]

    def kill(self) -> None:
        """SIGKILL the running child (a no-op if it has already ended)."""
        assert self._pidfd is not None
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except ProcessLookupError:  # it has ended and been reaped
            pass

    def wait(self, timeout: float) -> tuple[int | None, int | None]:
        """(signal, exit code) of the child, once it has ended."""
        assert self._pidfd is not None
        try:
            end = self._next(timeout)
        finally:
            os.close(self._pidfd)
            self._pidfd = None
        return end["signal"], end["code"]

    def log_tail(self, chars: int = 3000) -> str:
        """The end of what the zygote and its children wrote to stderr."""
        self._log.flush()
        return Path(self._log.name).read_text()[-chars:]

    def close(self) -> None:
        """Stop the zygote (and a child still running)."""
        if self._pidfd is not None:
            self.kill()
            os.close(self._pidfd)
            self._pidfd = None
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- what a killed run left behind --------------------------------------------------------------


def committed_digests(dataset_id: str, root: Path | None = None) -> dict[int, bytes]:
    """Episode id -> digest of the last commit ({} before the first)."""
    path = storage.dataset_path(dataset_id, root)
    if not (path / storage.METADATA_FILE).exists():
        return {}
    out: dict[int, bytes] = {}
    for entry in storage.read_metadata(path, dataset_id)["shards"]:
        table = storage.read_shard_table(path / storage.DATA_DIR / entry["file"], ("id", "digest"))
        pos, ids = storage.map_shard_ids(entry, table["id"])
        out.update(zip(ids.tolist(), map(bytes, table["digest"][pos]), strict=True))
    return out


def temp_files(dataset_id: str, root: Path | None = None) -> list[str]:
    """Temp files of an unfinished commit: hidden files in ``data/``, ``metadata.json.tmp``."""
    path = storage.dataset_path(dataset_id, root)
    out = [storage.METADATA_TMP] if (path / storage.METADATA_TMP).exists() else []
    try:
        out += sorted(p for p in os.listdir(path / storage.DATA_DIR) if p.startswith("."))
    except FileNotFoundError:
        pass
    return out


def unreferenced_shards(dataset_id: str, root: Path | None = None) -> list[str]:
    """Files in ``data/`` that the last commit does not list (hidden ones included).

    A shard's index file goes with its shard: listed with it, or left out when it is.
    """
    path = storage.dataset_path(dataset_id, root)
    if not (path / storage.DATA_DIR).is_dir():
        return []
    keep = set()
    if (path / storage.METADATA_FILE).exists():
        shards = storage.read_metadata(path, dataset_id)["shards"]
        keep = {e["file"] for e in shards} | {e["index"]["file"] for e in shards if "index" in e}
    left = [p for p in os.listdir(path / storage.DATA_DIR) if p not in keep]
    shards = {storage.index_name(p) for p in left if storage.SHARD_FILE_RE.fullmatch(p)}
    return sorted(p for p in left if p not in shards)
