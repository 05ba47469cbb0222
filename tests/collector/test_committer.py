"""The one committer: shard images built elsewhere (a Ray worker) commit at the same cadence."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import PYTHONPATH

from collector import storage
from collector.collect import collect
from collector.committer import Committer


def config(dataset_id: str, episodes: int) -> dict:
    return {
        "env": "CartPole-v1",
        "episodes": episodes,
        "seed": 0,
        "dataset_id": dataset_id,
        "progress": False,
        "checkpoint": {"every_seconds": None, "every_mb": None, "every_episodes": None},
    }


def test_worker_images_commit_at_the_cadence_and_match_a_local_run(datasets_root: Path) -> None:
    pytest.importorskip("ray")
    from collector.runners.ray import RolloutWorker

    reference = collect(config("ref/x-v0", 6))
    collect(config("img/x-v0", 1))  # the generation: provenance and seed entropy
    worker = RolloutWorker(config("img/x-v0", 6), 0, "lzf")
    with storage.DatasetWriter("img/x-v0") as writer:
        committer = Committer(
            writer, [], every_episodes=2, every_seconds=None, every_mb=None, compression="lzf",
            background=False,
        )  # fmt: skip
        try:
            for ids in ([1], [2], [3, 4], [5]):
                image, table, schema, _, _ = worker.run(ids)
                committer.add_image(image, table, schema)
            committed = storage.read_metadata(writer.path)["total_episodes"]
            committer.flush()
        finally:
            committer.close()
    assert committed == 5  # 1 + commits after ids 1-2 and 3-4; id 5 waits for the flush
    assert committer.commits == 3 and committer.episodes == 5
    meta = storage.read_metadata(storage.dataset_path("img/x-v0"))
    assert meta["total_episodes"] == 6
    assert meta["fingerprint"] == reference.fingerprint


def test_a_runner_failure_drops_unfinished_episodes_after_reword_and_keeps_its_chaining() -> None:
    from collector.committer import commit_finished_on_error
    from collector.errors import CollectionError

    calls: list[str] = []

    def reword(e: BaseException) -> None:
        calls.append(f"reword {e}")  # before the unfinished episodes are dropped
        if isinstance(e, ValueError):
            raise CollectionError("worded") from None

    def discard() -> None:
        calls.append("discard")

    with pytest.raises(CollectionError, match="^worded$") as worded:
        with commit_finished_on_error(None, discard, reword):
            raise ValueError("boom")
    assert worded.value.__cause__ is None and worded.value.__suppress_context__
    with pytest.raises(KeyError) as kept:
        with commit_finished_on_error(None, discard, reword):
            raise KeyError("as is")
    assert calls == ["reword boom", "discard", "reword 'as is'", "discard"]
    assert kept.value.args == ("as is",)


def _record_episode(rec: Any, episode: int, steps: int = 9) -> None:
    obs = np.zeros(3, np.float32)
    rec.begin_episode(episode, episode, None, obs, {})
    for t in range(steps):
        rec.add_step(t % 2, obs, 1.0, False, t == steps - 1, {})
    rec.end_episode()


@contextlib.contextmanager
def small_run(dataset_id: str, **kwargs: Any) -> Iterator[tuple[Any, Any, Committer]]:
    """A recorder of 3-float observations, its started writer and a committer (closed after).

    ``kwargs`` go to ``Committer`` (cadence off and ``compression="none"`` unless given).
    """
    from gymnasium import spaces

    from collector.recorder import EpisodeRecorder

    rec = EpisodeRecorder(spaces.Box(-1, 1, (3,), np.float32), spaces.Discrete(2))
    with storage.DatasetWriter(dataset_id) as writer:
        writer.start(
            storage.new_metadata(rec.observation_space, rec.action_space, None, record_infos=False)
        )
        options = {"every_episodes": None, "every_seconds": None, "every_mb": None}
        committer = Committer(writer, rec, **{**options, "compression": "none", **kwargs})
        try:
            yield rec, writer, committer
        finally:
            committer.close()


def test_a_long_window_is_written_in_shards_of_the_buffer_size_and_committed_once() -> None:
    held = []
    with small_run("buf/x-v0", background=False, buffer_mb=0.002) as (rec, writer, committer):
        for e in range(40):  # 282 bytes an episode: a shard every 8 episodes
            _record_episode(rec, e)
            committer.after_episode()
            held.append(rec.nbytes)
        committed = storage.read_metadata(writer.path)["total_episodes"]
        committer.flush()
    assert max(held) < 0.002 * 1024 * 1024  # memory held the buffer, never the window
    assert committed == 0 and committer.commits == 1  # shards wait for the window's commit
    meta = storage.read_metadata(storage.dataset_path("buf/x-v0"))
    assert meta["total_episodes"] == 40 and len(meta["shards"]) == 5
    assert storage.verify_dataset("buf/x-v0").ok


def test_a_ctrl_c_while_waiting_for_a_background_write_loses_no_episode_and_no_shard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CI found it (a double Ctrl-C left an installed shard no commit listed): the wait for
    # the write in flight dropped it when interrupted, so the flush ran beside it, and the
    # episodes taken before the wait were lost
    go = threading.Event()
    with small_run("intr/x-v0", background=True, buffer_mb=0.0001) as (rec, writer, committer):
        real = writer.install_shard_file

        def held_write(*args: Any, **kwargs: Any) -> Any:
            go.wait(30)
            return real(*args, **kwargs)

        monkeypatch.setattr(writer, "install_shard_file", held_write)
        try:
            _record_episode(rec, 0)
            assert committer.after_episode()  # a shard of episode 0, held in flight
            _record_episode(rec, 1)
            ctrl_c = threading.Timer(
                0.2, signal.pthread_kill, (threading.get_ident(), signal.SIGINT)
            )
            ctrl_c.start()
            with pytest.raises(KeyboardInterrupt):
                committer.after_episode()  # waits for episode 0's write: Ctrl-C
            ctrl_c.join()
            go.set()
            _record_episode(rec, 2)
            committer.flush()
        finally:
            go.set()  # before the committer closes: it waits for the write
        committer.close()  # idempotent: the run's end, as a runner's
        assert writer.remove_uncommitted() == []
    meta = storage.read_metadata(storage.dataset_path("intr/x-v0"))
    assert meta["total_episodes"] == 3
    listed = {e["file"] for e in meta["shards"]} | {e["index"]["file"] for e in meta["shards"]}
    assert {
        p.name for p in (storage.dataset_path("intr/x-v0") / storage.DATA_DIR).iterdir()
    } == listed


_PEAK_RSS = """
import resource, sys
import gymnasium as gym
import numpy as np
from collector.collect import collect

class BigObs(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (1024,), np.float32)  # 4 KiB a step
    action_space = gym.spaces.Discrete(2)
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1024, np.float32), {}
    def step(self, action):
        self.t += 1
        return np.full(1024, self.t / 1e4, np.float32), 1.0, False, self.t >= 100, {}

gym.register("harvest-test/BigObs-v0", entry_point=BigObs)
collect({"env": "harvest-test/BigObs-v0", "episodes": int(sys.argv[1]), "dataset_id": "big/x-v0",
         "progress": False, "storage": {"compression": "none"},
         "checkpoint": {"every_seconds": None, "every_mb": None, "every_episodes": None}})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_collect_memory_stays_flat_when_the_window_grows(datasets_root: Path) -> None:
    def peak_mib(episodes: int) -> float:
        out = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, str(episodes)],
            env={**os.environ, "PYTHONPATH": PYTHONPATH},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return int(out.stdout.split()[-1]) / 1024

    # 4 and 60 MiB of observations, all in one commit window (no cadence but the end)
    small, large = peak_mib(10), peak_mib(150)
    assert large - small < 25, (small, large)  # before: the whole window in memory, 2-3 times


_KILLED_IN_A_WINDOW = """
import os, signal
import collector.committer
from collector import storage

collector.committer.BUFFER_MB = 0.004  # a shard every ~5 CartPole episodes
from collector.collect import collect

written = []
real = storage.DatasetWriter.install_shard_file  # how the committer installs a window

def install_shard_file(self, *args, **kwargs):
    out = real(self, *args, **kwargs)
    written.append(out)
    if len(written) == 3:  # three shards installed, none committed: kill -9
        os.kill(os.getpid(), signal.SIGKILL)
    return out

storage.DatasetWriter.install_shard_file = install_shard_file
collect({"env": "CartPole-v1", "episodes": 60, "seed": 0, "dataset_id": "kill/x-v0",
         "progress": False, "storage": {"shard_mb": 0.256},  # a shard every ~5 episodes
         "checkpoint": {"every_seconds": None, "every_mb": None, "every_episodes": None}})
"""


def test_a_run_killed_with_buffer_shards_uncommitted_resumes_to_the_same_data(
    datasets_root: Path,
) -> None:
    from kill_support import unreferenced_shards

    run = subprocess.run(
        [sys.executable, "-c", _KILLED_IN_A_WINDOW],
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == -9, run.stderr
    assert len(unreferenced_shards("kill/x-v0")) == 3  # installed, never committed
    assert storage.read_metadata(storage.dataset_path("kill/x-v0"))["total_episodes"] == 0
    resumed = collect(config("kill/x-v0", 60))
    reference = collect(config("kill/ref-v0", 60))
    assert resumed.total_episodes == 60 and resumed.fingerprint == reference.fingerprint
    assert unreferenced_shards("kill/x-v0") == []
    assert storage.verify_dataset("kill/x-v0").ok


class _CheckedWindow(Committer):
    """A committer that checks each window a runner counted against its own sum."""

    def after_episode(self, window: tuple[int, int] | None = None) -> bool:
        if window is not None:
            self.counted += 1
            assert window == self.window()
        return super().after_episode(window)


@pytest.mark.parametrize("cadence", [{"every_mb": 0.004}, {"buffer_mb": 0.003}])
def test_a_vector_run_counts_the_window_as_the_committer_would_sum_it(cadence: dict) -> None:
    # run_vector sums the recorders once per step and counts on (issue 20): the cadence must
    # see the same episodes and bytes at every episode end, so commits fall where they did
    import gymnasium as gym

    from collector.policies import RandomPolicy
    from collector.recorder import EpisodeRecorder
    from collector.runners.vector import run_vector

    env = gym.make("CartPole-v1")
    recs = [EpisodeRecorder(env.observation_space, env.action_space) for _ in range(8)]
    with storage.DatasetWriter("win/x-v0") as writer:
        writer.start(
            storage.new_metadata(env.observation_space, env.action_space, None, record_infos=False)
        )
        every_mb = cadence.get("every_mb")
        committer = _CheckedWindow(
            writer, recs, every_episodes=None, every_seconds=None, every_mb=every_mb,
            compression="none", background=False, buffer_mb=cadence.get("buffer_mb"),
        )  # fmt: skip
        committer.counted = 0
        try:
            run_vector(
                lambda: gym.make("CartPole-v1"),
                lambda s: RandomPolicy(s.action_space),
                recs,
                committer,
                range(60),
                0,
                "sync",
                progress=False,
            )
        finally:
            committer.close()
    meta = storage.read_metadata(storage.dataset_path("win/x-v0"))
    assert committer.counted > 20  # most episode ends were counted on, not summed
    assert meta["total_episodes"] == 60 and len(meta["shards"]) > 3
    assert committer.commits > 3 if every_mb else committer.commits == 1


RELEASE_SCRIPT = """
import numpy as np
from collector.committer import release_freed_memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

big = np.ones(16 << 20, np.uint8)
del big  # glibc's mmap threshold rises to 16 MiB: 1 MiB arrays now come from the heap
arrays, keep = [], []
for _ in range(24):
    arrays.append(np.ones(1 << 20, np.uint8))
    keep.append(np.ones(4096, np.uint8))  # a live block after each: the heap top stays in use
del arrays
before = rss()
assert release_freed_memory()
print((before - rss()) >> 20)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's malloc_trim",
)
def test_memory_freed_between_live_blocks_goes_back_to_the_os() -> None:
    """What a commit window frees stays resident under glibc until trimmed: 20+ MiB of a
    100k-episode ``collect`` run's peak RSS (issue 18)."""
    out = subprocess.run(
        [sys.executable, "-c", RELEASE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )
    assert int(out.stdout) >= 16, out.stdout


def test_the_last_episode_is_left_to_the_flush_which_encodes_it_with_both_cores() -> None:
    with small_run("last/x-v0", every_episodes=1, background=True) as (rec, _, committer):
        _record_episode(rec, 0)
        assert committer.after_episode()  # due: written in the background
        _record_episode(rec, 1)
        assert not committer.after_episode(last=True)  # due, but the flush comes next
        assert rec.num_finished == 1 and committer.episodes == 2
        committer.flush()
    meta = storage.read_metadata(storage.dataset_path("last/x-v0"))
    assert meta["total_episodes"] == 2 and committer.commits == 2
