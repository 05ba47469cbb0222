"""Ctrl-C says what is committed and leaves nothing behind (issue 16, item 19).

A double Ctrl-C used to print "finished episodes are committed" when none were, and could
leave a ``.shard-*.h5.tmp`` (the second interrupt landing in the flush's shard write). The
message now counts the commit on disk, a shard write that is interrupted removes its temp
file, a shard installed by a commit the interrupt stopped is removed, and the next writer to
open the dataset removes whatever a crash left.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from helpers import CLI, committed_episodes, read_episodes, spawn
from kill_support import temp_files
from misbehaving_envs import ENV_ID, FRAMES_ID, InterruptingPolicy

from collector import storage
from collector.collect import CollectInterrupted, collect
from collector.recorder import EpisodeRecorder


def interrupted_run(dataset_id: str, after: int, every: int = 1) -> CollectInterrupted:
    cfg: dict[str, Any] = {
        "env": f"misbehaving_envs:{ENV_ID}",
        "episodes": 100,
        "seed": 0,
        "dataset_id": dataset_id,
        "policy": {"_target_": "misbehaving_envs.InterruptingPolicy"},
        "checkpoint": {"every_episodes": every},
    }
    InterruptingPolicy.after = after
    try:
        with pytest.raises(CollectInterrupted) as caught:
            collect(cfg)
    finally:
        InterruptingPolicy.after = 0
    assert isinstance(caught.value, KeyboardInterrupt)
    return caught.value


def test_an_interrupt_counts_the_episodes_this_run_committed() -> None:
    # 8-step episodes: the 30th action is in episode 3, the 20th of the resume in its 3rd
    first = interrupted_run("int/count-v0", after=30)
    assert (first.new_episodes, first.total_episodes) == (3, 3)
    assert str(first).startswith(
        "interrupted: this run committed 3 episodes; dataset 'int/count-v0' at "
    )
    assert str(first).endswith(" holds 3 episodes (last commit); re-run the same command to resume")
    again = interrupted_run("int/count-v0", after=20)
    assert (again.new_episodes, again.total_episodes) == (2, 5)
    assert [ep["id"] for ep in read_episodes("int/count-v0")] == [0, 1, 2, 3, 4]


def test_an_interrupted_shard_write_removes_its_temp_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interrupted_run("int/tmp-v0", after=12)  # episode 0 committed
    space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    rec = EpisodeRecorder(space, gym.spaces.Discrete(2))
    rec.begin_episode(1, 0, None, np.zeros(4, np.float32), {})
    rec.add_step(0, np.zeros(4, np.float32), 1.0, True, False, {})
    rec.end_episode()
    batch = rec.take()
    assert batch is not None

    def second_ctrl_c(path: Path) -> str:  # lands while the temp shard is on disk
        assert path.name.startswith(".shard-") and path.exists()
        raise KeyboardInterrupt

    with storage.DatasetWriter("int/tmp-v0") as writer:
        monkeypatch.setattr(storage.durable, "sha256_file", second_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            writer.write_shard(batch, "lzf")
        assert temp_files("int/tmp-v0") == []


def test_an_interrupted_commit_removes_the_shard_it_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the second Ctrl-C lands after the window's shard is installed, before its commit
    real = storage.atomic_write
    calls = []

    def interrupted_commit(path: Path, data: bytes) -> None:
        calls.append(path.name)
        if len(calls) == 2:  # the empty dataset's, then the flush's after the first Ctrl-C
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(storage.durable, "atomic_write", interrupted_commit)
    caught = interrupted_run("int/installed-v0", after=20, every=100)  # in episode 2
    assert (caught.new_episodes, caught.total_episodes) == (0, 0)
    assert storage.read_metadata(storage.dataset_path("int/installed-v0"))["shards"] == []
    assert list((storage.dataset_path("int/installed-v0") / storage.DATA_DIR).iterdir()) == []


def test_the_next_writer_removes_a_temp_shard_a_crash_left() -> None:
    interrupted_run("int/left-v0", after=12)
    left = storage.dataset_path("int/left-v0") / storage.DATA_DIR / ".shard-0123456789ab.h5.tmp"
    left.write_bytes(b"half a shard")
    with storage.DatasetWriter("int/left-v0"):
        pass
    assert not left.exists()
    assert [ep["id"] for ep in read_episodes("int/left-v0")] == [0]


@pytest.mark.slow
def test_a_double_ctrl_c_says_what_is_committed_and_leaves_nothing(datasets_root: Path) -> None:
    dataset_id = "int/frames-v0"
    proc = spawn(
        CLI,
        f"env=misbehaving_envs:{FRAMES_ID}",
        "episodes=1000",
        f"dataset_id={dataset_id}",
        "checkpoint.every_seconds=600",
        "checkpoint.every_mb=100000",
        "storage.compression=none",
        root=datasets_root,
    )
    try:
        deadline = time.monotonic() + 60
        while committed_episodes(dataset_id, datasets_root) is None:  # the empty first commit
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.01)
        time.sleep(1.0)  # a window of episodes is recorded, none committed
        proc.send_signal(signal.SIGINT)
        # the flush writes the window: interrupt it again while its temp shard is on disk
        deadline = time.monotonic() + 20
        while not temp_files(dataset_id, datasets_root) and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.001)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    total = committed_episodes(dataset_id, datasets_root)
    assert err.strip().splitlines() == [
        f"collect: interrupted: this run committed {total} episodes; dataset {dataset_id!r} at "
        f"{storage.dataset_path(dataset_id, datasets_root)} holds {total} episodes (last commit); "
        "re-run the same command to resume"
    ], err
    assert temp_files(dataset_id, datasets_root) == []
    path = storage.dataset_path(dataset_id, datasets_root)
    shards = storage.read_metadata(path)["shards"]
    listed = {e["file"] for e in shards} | {e["index"]["file"] for e in shards if "index" in e}
    assert {p.name for p in (path / storage.DATA_DIR).iterdir()} == listed
