"""Kill storms (issue 08, item 1): SIGKILL ``collect`` again and again, resuming each time.

The local runner is killed 20 times at seeded random moments (before the first commit,
between commits, and while a commit's temp files are on disk), the Ray runner 5 times (its
driver and single worker actors). After every kill ``metadata.json`` is a consistent commit
that keeps every episode committed before; the last resume gives exactly N episodes and the
fingerprint of an uninterrupted run, with no temp file left behind and, on Ray, no process
of a killed driver's job still alive. Run with ``-s`` for one summary line per runner.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from helpers import PYTHONPATH, REPO, cli_env, committed_episodes, wait_for_commit
from kill_support import Zygote, committed_digests, temp_files, unreferenced_shards
from ray_support import (
    CHECKED_CLI,
    LOCAL,
    SLOW,
    conf,
    module_ray,
    processes,
    rollout_worker_pids,
    wait_for_free_cpus,
    wait_until_gone,
)

from collector import storage

pytestmark = pytest.mark.slow

SEED = 8_2026
LOCAL_EPISODES = 100  # ~6 s uninterrupted; the storm's kills leave most of it to the resume
LOCAL_KILLS = 20
LOCAL_LANDED_AT_LEAST = 18
RAY_EPISODES = 160  # ~5 s on two workers: enough for three driver runs and a worker kill
ORPHAN_SECONDS = 60  # how long Ray may take to reap a killed driver's job


class Reference(NamedTuple):
    """What an uninterrupted run gives."""

    fingerprint: str
    shards: int


#: Figures of the storms, for the closing note (``-s`` prints them).
SUMMARY: dict[str, dict[str, Any]] = {}


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[int], Reference]]:
    """``reference(n)``: fingerprint and shard count of an uninterrupted local run of ``n``.

    Both runs start with the module, in subprocesses, and run while the storms run (the slow
    env mostly sleeps).
    """
    root = tmp_path_factory.mktemp("uninterrupted")
    code = (
        "import json, sys, helpers; from collector import storage; "
        "from collector.collect import collect; r = collect(json.loads(sys.argv[1])); "
        "print(json.dumps([r.fingerprint, len(storage.read_metadata(r.path)['shards'])]))"
    )
    procs = {
        n: subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(conf(n, f"ref/n{n}-v0", LOCAL, env=SLOW))],
            env=cli_env(root),
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (LOCAL_EPISODES, RAY_EPISODES)
    }

    done: dict[int, Reference] = {}

    def get(n: int) -> Reference:
        if n not in done:
            out, err = procs[n].communicate(timeout=180)
            assert procs[n].returncode == 0, err[-3000:]
            done[n] = Reference(*json.loads(out.strip().splitlines()[-1]))
        return done[n]

    try:
        yield get
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """One local Ray for the module; nothing of it may survive its shutdown."""
    yield from module_ray()


# -- checks -------------------------------------------------------------------------------------


def check_commit(dataset_id: str, episodes: int, ever: dict[int, bytes]) -> dict[int, bytes]:
    """The last commit is sound and keeps every episode ever committed; returns id -> digest."""
    if committed_episodes(dataset_id) is None:
        assert not ever, "a commit disappeared"
        return {}
    report = storage.verify_dataset(dataset_id)
    assert report.ok, report.problems
    now = committed_digests(dataset_id)
    assert report.episodes == len(now) <= episodes
    assert set(now) <= set(range(episodes))
    changed = [i for i, d in ever.items() if now.get(i) != d]
    assert not changed, f"episodes lost or changed by a kill: {changed[:10]}"
    ever.update(now)
    return now


def check_final(dataset_id: str, episodes: int, ref: Reference, ever: dict[int, bytes]) -> None:
    """Ids 0..episodes-1, verified, no temp file, fingerprint and shards as ``ref``'s."""
    report = storage.verify_dataset(dataset_id)
    assert report.ok, report.problems
    assert report.episodes == episodes
    final = check_commit(dataset_id, episodes, ever)
    assert sorted(final) == list(range(episodes))
    assert report.fingerprint == ref.fingerprint
    assert not temp_files(dataset_id), temp_files(dataset_id)
    shards = len(storage.read_metadata(storage.dataset_path(dataset_id))["shards"])
    assert shards == ref.shards, f"{shards} shards, an uninterrupted run has {ref.shards}"


def wait_for_temp_file(
    zygote: Zygote, dataset_id: str, known: set[str], prefix: str = "", timeout: float = 30.0
) -> None:
    """Spin until a temp file (named ``prefix...``) not in ``known`` appears, or the run ends."""
    deadline = time.monotonic() + timeout
    while zygote.running() and time.monotonic() < deadline:
        if any(name.startswith(prefix) for name in set(temp_files(dataset_id)) - known):
            return


def wait_for_commits(zygote: Zygote, dataset_id: str, count: int, timeout: float = 60.0) -> None:
    """Wait until the running child has committed ``count`` times (or has ended)."""
    deadline = time.monotonic() + timeout
    last = committed_episodes(dataset_id) or 0
    while count and zygote.running() and time.monotonic() < deadline:
        total = committed_episodes(dataset_id) or 0
        if total != last:
            count, last = count - 1, total
        time.sleep(0.002)


# -- the local runner ----------------------------------------------------------------------------


def test_kill_9_storm_on_the_local_runner_then_resume(
    reference: Callable[[int], Reference], datasets_root: Path, tmp_path: Path
) -> None:
    n, dataset_id = LOCAL_EPISODES, "storm/local-v0"
    rng = random.Random(SEED)
    ever: dict[int, bytes] = {}
    moments: Counter[str] = Counter()
    landed = resumes = 0
    cycle_seconds: list[float] = []
    with Zygote(cli_env(datasets_root), tmp_path, tmp_path / "zygote.log") as zygote:
        assert zygote.origin.startswith(str(REPO)), zygote.origin
        for k in range(LOCAL_KILLS):
            resumes += committed_episodes(dataset_id) is not None
            before = committed_digests(dataset_id)
            left_before = set(unreferenced_shards(dataset_id))
            temp_before = set(temp_files(dataset_id))
            every = rng.choice([2, 3, 5, 8])
            cfg = conf(n, dataset_id, LOCAL, env=SLOW, every=every)
            cfg["storage"] = {"compression": rng.choice(["lzf", "gzip", "none"])}
            aim = "start" if k < 2 else rng.choices(["any", "after", "commit"], [1, 3, 1])[0]
            if k == LOCAL_KILLS - 1:
                aim = "repack"  # the run collects what is left, then repacks: kill it there
            started = time.monotonic()
            zygote.start(cfg)
            if aim == "start":  # importing, opening the dataset, the first episodes
                time.sleep(rng.uniform(0.0, 0.15))
            elif aim == "any":
                time.sleep(rng.uniform(0.0, 1.0))
            elif aim == "after":  # one or two commits of this run, then part of a window
                wait_for_commits(zygote, dataset_id, rng.randint(1, 2))
                time.sleep(rng.uniform(0.0, every * 0.05))
            elif aim == "commit":
                wait_for_temp_file(zygote, dataset_id, temp_before)
            else:
                wait_for_temp_file(zygote, dataset_id, temp_before, prefix=".merge-")
            zygote.kill()
            sig, code = zygote.wait(timeout=60)
            assert sig == signal.SIGKILL or code == 0, zygote.log_tail()
            landed += sig == signal.SIGKILL
            cycle_seconds.append(time.monotonic() - started)

            now = check_commit(dataset_id, n, ever)
            left = set(unreferenced_shards(dataset_id))
            if any(name.startswith(".merge-") for name in left - left_before):
                moments["during the final repack"] += 1
            elif left - left_before:
                moments["during a commit"] += 1
            elif not now:
                moments["before the first commit"] += 1
            elif len(now) == len(before):
                moments["before this run's first commit"] += 1
            else:
                moments["between commits"] += 1
            if len(now) > len(before):  # this run opened the dataset: it removed old temp files
                stale = temp_before & set(temp_files(dataset_id)) - {storage.METADATA_TMP}
                assert not stale, f"temp files survived a resume: {stale}"

    temp_left = temp_files(dataset_id)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", CHECKED_CLI, str(REPO), f"env={SLOW}", f"episodes={n}",
         f"dataset_id={dataset_id}", "checkpoint.every_episodes=5",
         f"hydra.run.dir={tmp_path / 'runs'}"],
        env=cli_env(datasets_root), cwd=tmp_path, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    resume_seconds = time.monotonic() - started
    resumes += 1
    final = committed_digests(dataset_id)
    lost = [i for i, digest in ever.items() if final.get(i) != digest]
    started = time.monotonic()
    ref = reference(n)
    reference_wait = time.monotonic() - started
    check_final(dataset_id, n, ref, ever)

    SUMMARY["local"] = {
        "kills": LOCAL_KILLS,
        "landed": landed,
        "moments": dict(moments),
        "resumes": resumes,
        "temp files before the last resume": len(temp_left),
        "episodes lost": len(lost),
        "seconds (cycles, slowest cycle, last resume, reference wait)": (
            round(sum(cycle_seconds), 1),
            round(max(cycle_seconds), 1),
            round(resume_seconds, 1),
            round(reference_wait, 1),
        ),
    }
    print(f"\nkill storm, local runner: {SUMMARY['local']}")
    assert landed >= LOCAL_LANDED_AT_LEAST, SUMMARY["local"]
    assert moments["between commits"] and moments["during a commit"], moments
    assert moments["before the first commit"] or moments["before this run's first commit"]
    assert moments["during the final repack"] == 1, moments


# -- the Ray runner ------------------------------------------------------------------------------


class Driver:
    """A ``collect runner=ray`` subprocess joining the module's Ray, its job marked in env."""

    def __init__(self, address: str, dataset_id: str, marker: str, root: Path, log: Path) -> None:
        self.marker = marker
        self.log = log
        runtime_env = f"{{env_vars:{{PYTHONPATH:'{PYTHONPATH}',HARVEST_STORM:'{marker}'}}}}"
        args = [
            f"env={SLOW}",
            f"episodes={RAY_EPISODES}",
            f"dataset_id={dataset_id}",
            "checkpoint.every_episodes=10",
            "runner=ray",
            f"runner.address={address}",
            "runner.batch_seconds=0.05",
            f"+runner.init.runtime_env={runtime_env}",
            f"hydra.run.dir={log.parent / 'runs'}",
        ]
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHECKED_CLI, str(REPO), *args],
                env=cli_env(root),
                cwd=log.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> bool:
        """SIGKILL the driver; True when it was still running (the kill landed)."""
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=30) == -signal.SIGKILL

    def kill_a_busy_worker(self, timeout: float = 20.0) -> bool:
        """SIGKILL one of this job's actors while it runs a batch; True when it landed."""
        marker = f"HARVEST_STORM={self.marker}".encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [p for p, t in rollout_worker_pids(marker).items() if t.endswith(".run")]
            if busy:
                environ = Path(f"/proc/{busy[0]}/environ").read_bytes().split(b"\0")
                assert f"PYTHONPATH={PYTHONPATH}".encode() in environ  # this checkout's code
                try:
                    os.kill(busy[0], signal.SIGKILL)
                except ProcessLookupError:
                    continue
                return True
            time.sleep(0.01)
        return False

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.output()[-3000:]}"
            time.sleep(0.05)


def job_processes(token: str) -> dict[int, str]:
    """pid -> cmdline of live processes whose environment carries a storm marker."""
    prefix = f"HARVEST_STORM={token}".encode()
    return {
        pid: cmdline
        for pid, (_, cmdline, environ) in processes().items()
        if any(var.startswith(prefix) for var in environ.split(b"\0"))
    }


def test_kill_9_storm_on_the_ray_runner_driver_and_workers(
    ray_address: str, reference: Callable[[int], Reference], datasets_root: Path, tmp_path: Path
) -> None:
    n, dataset_id = RAY_EPISODES, "storm/ray-v0"
    rng = random.Random(SEED + 1)
    token = f"{uuid.uuid4().hex[:8]}-"
    ever: dict[int, bytes] = {}
    kills = {"driver": [0, 0], "worker": [0, 0]}  # attempted, landed
    resumes = 0

    def driver(run: int) -> Driver:
        nonlocal resumes
        resumes += committed_episodes(dataset_id) is not None
        wait_for_free_cpus()  # the previous job's actors have released their CPUs
        log = tmp_path / f"driver{run}" / "output.log"
        log.parent.mkdir()
        return Driver(ray_address, dataset_id, f"{token}{run}", datasets_root, log)

    def kill(what: str, landed: bool) -> None:
        kills[what][0] += 1
        kills[what][1] += landed

    reaped: list[float] = []  # seconds until a killed driver's job had no process left
    held: list[int] = []  # processes of the job when its driver was killed

    def kill_driver(run: Driver) -> None:
        held.append(len(job_processes(run.marker)))
        kill("driver", run.kill())
        start = time.monotonic()
        alive = wait_until_gone(set(job_processes(run.marker)), ORPHAN_SECONDS)
        assert not alive, f"a killed driver's job outlived it: {job_processes(run.marker)}"
        reaped.append(time.monotonic() - start)
        check_commit(dataset_id, n, ever)

    # 1. the driver, at a random moment of its start (importing, joining Ray, starting actors)
    run = driver(0)
    time.sleep(rng.uniform(1.0, 6.0))
    kill_driver(run)

    # 2. a worker after a commit; the driver goes on, commits, and is killed in turn
    run = driver(1)
    first = wait_for_commit(dataset_id, timeout=90, above=len(ever))
    kill("worker", run.kill_a_busy_worker())
    run.wait_for_output("replacing Ray worker", timeout=30)
    wait_for_commit(dataset_id, timeout=60, above=first)
    time.sleep(rng.uniform(0.0, 0.5))
    kill_driver(run)

    # 3. the driver, at a random moment after a commit
    run = driver(2)
    wait_for_commit(dataset_id, timeout=90, above=len(ever))
    time.sleep(rng.uniform(0.0, 1.0))
    kill_driver(run)
    assert len(ever) < n - 20, f"too little left for the last run: {len(ever)} of {n}"

    # 4. the last resume: a worker is killed mid-run and the run finishes on its own
    run = driver(3)
    wait_for_commit(dataset_id, timeout=90, above=len(ever))
    kill("worker", run.kill_a_busy_worker())
    assert run.proc.wait(timeout=120) == 0, run.output()[-3000:]
    assert "replacing Ray worker" in run.output(), run.output()[-3000:]
    final = committed_digests(dataset_id)
    lost = [i for i, digest in ever.items() if final.get(i) != digest]
    check_final(dataset_id, n, reference(n), ever)

    # and nothing of any of the storm's jobs is left
    alive = wait_until_gone(set(job_processes(token)), ORPHAN_SECONDS)
    assert not alive, f"processes of the storm's jobs still alive: {job_processes(token)}"
    wait_for_free_cpus()

    SUMMARY["ray"] = {
        "driver kills (attempted, landed)": tuple(kills["driver"]),
        "worker kills (attempted, landed)": tuple(kills["worker"]),
        "resumes": resumes,
        "episodes lost": len(lost),
        "killed jobs' processes (at the kill)": held,
        "reaped within s": [round(t, 1) for t in reaped],
    }
    print(f"\nkill storm, Ray runner: {SUMMARY['ray']}")
    assert kills == {"driver": [3, 3], "worker": [2, 2]}, kills
