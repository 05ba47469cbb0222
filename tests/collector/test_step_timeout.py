"""The local runner and an env that stops answering: the step deadline and the commit cadence.

``runner.step_timeout`` fails the run with one line naming the episode and the step, after the
finished episodes are committed; without it, finished episodes are still committed on the
``checkpoint.every_seconds`` cadence while an episode hangs.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from hang_envs import HANG_ID
from helpers import CLI, read_episodes, spawn, wait_for_commit

from collector import storage
from collector.collect import collect
from collector.errors import CollectionError, UsageError

DATASET = "hang/local-v0"
LOCAL = {"name": "local"}


def hang_conf(runner: dict, **kwargs: float) -> dict:
    return {
        "env": HANG_ID,
        "env_kwargs": dict(kwargs),
        "episodes": 3,
        "seed": 0,
        "dataset_id": DATASET,
        "policy": {"_target_": "collector.policies.RandomPolicy"},
        "runner": runner,
        "checkpoint": {"every_seconds": 30, "every_episodes": None, "every_mb": 32},
    }


def test_a_step_past_step_timeout_fails_naming_it_after_committing_what_finished() -> None:
    start = time.monotonic()
    with pytest.raises(CollectionError) as info:
        # the env would answer after 30 s: long past the 1 s deadline
        collect(hang_conf({"name": "local", "step_timeout": 1}, seconds=30))
    took = time.monotonic() - start
    message = str(info.value)
    assert "\n" not in message
    assert "episode 1 " in message and "step 3 " in message, message
    assert "runner.step_timeout=1" in message, message
    assert took < 10, took
    assert [ep["id"] for ep in read_episodes(DATASET)] == [0]


def test_step_timeout_costs_nothing_when_steps_answer() -> None:
    result = collect(hang_conf({"name": "local", "step_timeout": 5}, hang_episode=-1))
    assert (result.new_episodes, result.total_episodes) == (3, 3)


def test_an_episode_that_hangs_does_not_hold_back_the_commit_of_finished_ones(
    datasets_root: Path,
) -> None:
    """No step deadline: episode 0 is committed on the every_seconds cadence, mid episode 1."""
    proc = spawn(
        CLI,
        f"env=hang_envs:{HANG_ID}",
        "episodes=3",
        f"dataset_id={DATASET}",
        "checkpoint.every_seconds=1",
        "progress=false",
        f"hydra.run.dir={datasets_root.parent / 'runs'}",
        root=datasets_root,
    )
    try:
        assert wait_for_commit(DATASET, timeout=30, root=datasets_root) == 1
        assert proc.poll() is None, proc.communicate()  # still hanging in episode 1
    finally:
        proc.kill()
        proc.communicate()
    assert [ep["id"] for ep in read_episodes(DATASET, root=datasets_root)] == [0]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_step_timeout_on_a_vector_env_names_the_running_episodes(mode: str) -> None:
    """Two sub-envs: episodes 0 and 1 finish, episode 2 (each sub-env's second) hangs."""
    cfg = hang_conf({"name": "local", "step_timeout": 1}, seconds=30)
    cfg.update(num_envs=2, vectorization_mode=mode)
    start = time.monotonic()
    with pytest.raises(CollectionError, match=r"episode 2 step 3\).*step_timeout=1 s"):
        collect(cfg)
    assert time.monotonic() - start < 10
    assert [ep["id"] for ep in read_episodes(DATASET)] == [0, 1]


def test_step_timeout_is_refused_where_it_does_not_apply() -> None:
    with pytest.raises(UsageError, match="runner.step_timeout"):
        collect(hang_conf({"name": "local", "step_timeout": -1}))
    with pytest.raises(UsageError, match="runner.batch_timeout"):
        collect(hang_conf({"name": "ray", "step_timeout": 1}))


def test_a_commit_made_during_a_long_episode_is_not_written_twice() -> None:
    """Episode 1 pauses 2 s: episode 0 is committed meanwhile, then 1 and 2 at the end."""
    ref = hang_conf(LOCAL, hang_episode=-1)
    ref.update(record_infos=True, dataset_id="ref/x-v0")
    reference = collect(ref)
    cfg = hang_conf(LOCAL, seconds=2)
    cfg.update(record_infos=True, storage={"shard_mb": 0.001})  # one shard per commit
    cfg["checkpoint"]["every_seconds"] = 0.5
    result = collect(cfg)
    assert result.fingerprint == reference.fingerprint
    report = storage.verify_dataset(DATASET)
    assert report.ok, report.problems
    shards = storage.read_metadata(storage.dataset_path(DATASET))["shards"]
    assert [s["episodes"] for s in shards][:1] == [1], shards  # episode 0 alone, mid episode 1
    assert [ep["id"] for ep in read_episodes(DATASET)] == [0, 1, 2]


def test_step_timeout_when_collect_runs_outside_the_main_thread() -> None:
    """No signal there: the step is interrupted at its next Python instruction."""
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            collect(hang_conf({"name": "local", "step_timeout": 1}, seconds=30, spin=True))
        except BaseException as e:  # checked by the test's thread
            outcome["error"] = e

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive() and time.monotonic() - start < 10
    assert isinstance(outcome.get("error"), CollectionError), outcome
    assert "episode 1 " in str(outcome["error"]) and "step 3 " in str(outcome["error"])
    assert [ep["id"] for ep in read_episodes(DATASET)] == [0]
