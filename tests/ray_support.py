"""Shared by the Ray runner tests: configs, the module's Ray, waits, and Ray's processes.

Ray workers get ``helpers.PYTHONPATH`` (``tests/``, then this checkout), as subprocesses do, so
they import the code under test even where another checkout is installed in editable mode.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
from helpers import CLI, PYTHONPATH

RANDOM = {"_target_": "collector.policies.RandomPolicy"}
SLOW = "helpers:harvest-test/Slow-v0"  # ~50 ms episodes of 50 steps
LOCAL = {"name": "local"}
#: The ``collect`` command, refusing to run unless ``collector`` comes from ``argv[1]``.
CHECKED_CLI = (
    "import sys, collector; checkout = sys.argv.pop(1); "
    "assert collector.__file__.startswith(checkout), collector.__file__; " + CLI
)
#: Ray's own processes: servers by executable path, workers and agents by title.
RAY_PROCESS_MARKS = ("/ray/", "ray::")


def conf(
    episodes: int,
    dataset_id: str,
    runner: dict[str, Any],
    *,
    env: str = "CartPole-v1",
    env_kwargs: dict[str, Any] | None = None,
    every: int = 20,
    root: Path | None = None,
) -> dict[str, Any]:
    """A ``collect`` config as a plain dict (data-affecting keys as the CLI's defaults)."""
    return {
        "env": env,
        "env_kwargs": env_kwargs or {},
        "max_episode_steps": None,
        "record_infos": False,
        "episodes": episodes,
        "seed": 0,
        "dataset_id": dataset_id,
        "datasets_root": None if root is None else str(root),
        "policy": dict(RANDOM),
        "runner": runner,
        "checkpoint": {"every_episodes": every},
    }


def on_ray(**overrides: Any) -> dict[str, Any]:
    """The ``runner=ray`` section, with quick batches."""
    return {
        "name": "ray",
        "workers": 2,
        "batch_timeout": 300,
        "max_restarts": 3,
        "episode_retries": 2,
        "batch_seconds": 0.05,
        **overrides,
    }


# -- processes (Linux /proc) -------------------------------------------------------------------


def read_proc(pid: int) -> tuple[int, str, str, bytes] | None:
    """(ppid, state, cmdline with spaces, environ) of a live process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (OSError, UnicodeDecodeError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, not reaped yet
        return None
    return int(fields[1]), fields[0], cmdline.replace(b"\0", b" ").decode(errors="replace"), environ


def processes() -> dict[int, tuple[int, str, bytes]]:
    """pid -> (ppid, cmdline, environ) of every live process this user may read."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := read_proc(int(entry))) is not None:
            out[int(entry)] = (info[0], info[2], info[3])
    return out


def descendants(pid: int, procs: dict[int, tuple[int, str, bytes]]) -> set[int]:
    """The pids below ``pid`` in ``procs``."""
    children: dict[int, list[int]] = {}
    for p, (ppid, *_) in procs.items():
        children.setdefault(ppid, []).append(p)
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def ray_processes_of_this_process() -> dict[int, str]:
    """pid -> cmdline of the Ray processes (servers, agents, workers) this process started."""
    procs = processes()
    mine = descendants(os.getpid(), procs)
    roots = {p for p in mine if any(m in procs[p][1] for m in RAY_PROCESS_MARKS)}
    ray_pids = roots.union(*(descendants(p, procs) for p in roots))
    return {p: procs[p][1] for p in ray_pids}


def wait_until_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait up to ``timeout`` s for ``pids`` to exit; returns those still alive."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive:
        alive = {p for p in alive if read_proc(p) is not None}
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return alive


# -- the module's Ray --------------------------------------------------------------------------


def module_ray(shutdown_timeout: float = 30.0) -> Iterator[str]:
    """One local Ray (2 CPUs) for a test module; yields its address.

    ``collect`` joins it instead of starting its own. At the end, ``ray.shutdown()`` must
    leave none of the processes it started (GCS, raylet, agents, workers) running.
    """
    assert not ray.is_initialized(), "another test left Ray running"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": PYTHONPATH}},
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        started = ray_processes_of_this_process()
        ray.shutdown()
    names = " ".join(started.values())
    assert "raylet" in names and "gcs_server" in names, f"Ray's servers not found: {started}"
    left = wait_until_gone(set(started), shutdown_timeout)
    assert not left, f"Ray processes outlived ray.shutdown(): {[started[p] for p in left]}"


def wait_for_free_cpus(cpus: float = 2.0, timeout: float = 30.0) -> None:
    """Wait until no actor holds a CPU of the module's Ray (e.g. after its driver died)."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0.0) < cpus:
        assert time.monotonic() < deadline, f"Ray CPUs still held: {ray.available_resources()}"
        time.sleep(0.2)


def rollout_worker_pids(marker: bytes | None = None) -> dict[int, str]:
    """pid -> process title of the ``RolloutWorker`` actors of this process's Ray.

    ``marker``: only actors with this ``NAME=value`` in their environment (a job's runtime_env).
    """
    raylet = ray._private.worker.global_worker.node.all_processes["raylet"][0].process.pid
    out = {}
    for pid, (ppid, cmdline, environ) in processes().items():
        title = cmdline.split(" ", 1)[0]
        if ppid != raylet or not title.startswith("ray::RolloutWorker"):
            continue
        if marker is None or marker in environ.split(b"\0"):
            out[pid] = title
    return out
