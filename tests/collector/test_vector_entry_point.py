"""``VectorRecorder`` and ``vectorization_mode=vector_entry_point`` (the layout-dependent tier)."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import vec_envs  # noqa: F401  (registers harvest-test/RandomLength-v0)
from helpers import read_episodes

from collector import storage
from collector.collect import collect
from collector.errors import CollectionError, ConfigMismatchError, UsageError
from collector.recorder import EpisodeRecorder
from collector.runners.vector import segment_episodes, split_infos
from collector.spaces import batch_item
from collector.vector_recorder import VectorRecorder

RANDOM_LENGTH = "vec_envs:harvest-test/RandomLength-v0"


# --------------------------------------------------------------------------------------------
# VectorRecorder against one EpisodeRecorder per episode


def digests_by_id(batches: list[storage.EpisodeBatch]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for b in batches:
        for i, d in zip(b.table["id"].tolist(), storage.episode_digests(b), strict=True):
            out[i] = d.tobytes()
    return out


class Reference:
    """Records every sub-env's episodes one by one with ``EpisodeRecorder`` (the known-good)."""

    def __init__(self, vec: Any, record_infos: bool) -> None:
        self.vec, self.record_infos = vec, record_infos
        self.open: dict[int, EpisodeRecorder] = {}
        self.batches: list[storage.EpisodeBatch] = []

    def obs(self, obs: Any, i: int) -> Any:
        return batch_item(self.vec.single_observation_space, obs, i)

    def begin(self, i: int, episode_id: int, obs: Any, infos: dict, seed: int | None) -> None:
        rec = EpisodeRecorder(
            self.vec.single_observation_space, self.vec.single_action_space, self.record_infos
        )
        rec.begin_episode(episode_id, seed, None, self.obs(obs, i), split_infos(infos, i))
        self.open[i] = rec

    def step(self, i: int, action: Any, obs: Any, r: Any, te: Any, tr: Any, infos: dict) -> None:
        rec = self.open[i]
        rec.add_step(action, self.obs(obs, i), r, te, tr, split_infos(infos, i))
        if te or tr:
            rec.end_episode()
            self.batches.append(rec.take())  # type: ignore[arg-type]
            del self.open[i]


@pytest.mark.parametrize("record_infos", [False, True])
def test_next_step_autoreset_matches_per_episode_recording(record_infos: bool) -> None:
    """Sync vector env (NEXT_STEP): length-1 episodes, several ending on one step, takes."""
    n = 5
    vec = gym.make_vec(RANDOM_LENGTH, num_envs=n, vectorization_mode="sync")
    assert vec.metadata["autoreset_mode"] is gym.vector.AutoresetMode.NEXT_STEP
    rec = VectorRecorder(vec.single_observation_space, vec.single_action_space, n, record_infos)
    ref = Reference(vec, record_infos)
    obs, infos = vec.reset(seed=list(range(10, 10 + n)))
    rec.begin(np.arange(n), np.arange(n), obs, infos, seeds=list(range(10, 10 + n)))
    for i in range(n):
        ref.begin(i, i, obs, infos, 10 + i)
    next_id, restart, got, together = n, np.zeros(n, bool), [], 0
    rng = np.random.default_rng(0)
    for t in range(120):
        actions = rng.integers(0, 2, n)
        obs, rew, te, tr, infos = vec.step(actions)
        starting = np.flatnonzero(restart)
        ids = next_id + np.arange(len(starting))
        next_id += len(starting)
        rec.record(
            obs, infos, actions, rew, te, tr, stepped=~restart, begin=starting, episode_ids=ids
        )
        for i in np.flatnonzero(~restart):
            ref.step(i, actions[i], obs, rew[i], te[i], tr[i], infos)
        for i, eid in zip(starting, ids, strict=True):
            ref.begin(int(i), int(eid), obs, infos, None)
        together += int((te | tr).sum() > 1)
        restart = te | tr
        if t % 37 == 0:
            got.append(rec.take())
    got.append(rec.take())
    batches = [b for b in got if b is not None]
    assert together > 0 and any(b.table["length"].min() == 1 for b in batches)
    assert digests_by_id(batches) == digests_by_id(ref.batches)
    table = storage.concat_batches(batches).table
    assert table["has_seed"].sum() == n  # the first episodes had explicit seeds
    assert sorted(table["seed"][table["has_seed"]].tolist()) == list(range(10, 10 + n))
    if record_infos:
        assert "end" in batches[0].infos  # type: ignore[operator]


def test_partial_resets_leave_gaps_that_are_skipped() -> None:
    """DISABLED-style use: resets of some sub-envs and steps of others on separate rows."""
    n = 3
    vec = gym.make_vec(
        RANDOM_LENGTH,
        num_envs=n,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.DISABLED},
    )
    rec = VectorRecorder(vec.single_observation_space, vec.single_action_space, n, True)
    ref = Reference(vec, True)
    obs, infos = vec.reset(seed=0)
    rec.begin(np.arange(n), np.arange(n), obs, infos)
    for i in range(n):
        ref.begin(i, i, obs, infos, None)
    next_id, live = n, np.ones(n, bool)
    rng = np.random.default_rng(1)
    for _ in range(60):
        actions = rng.integers(0, 2, n)
        obs, rew, te, tr, infos = vec.step(actions)
        rec.step(actions, obs, rew, te, tr, infos, envs=np.flatnonzero(live))
        for i in np.flatnonzero(live):
            ref.step(i, actions[i], obs, rew[i], te[i], tr[i], infos)
        done = live & (te | tr)
        live &= ~done
        if done.any():  # reset the finished sub-envs alone: a row where the others have none
            obs, infos = vec.reset(options={"reset_mask": done})
            ids = next_id + np.arange(int(done.sum()))
            next_id += len(ids)
            rec.begin(np.flatnonzero(done), ids, obs, infos)
            for i, eid in zip(np.flatnonzero(done), ids, strict=True):
                ref.begin(int(i), int(eid), obs, infos, None)
            live |= done
    rec.end()  # the open episodes end truncated, as on a DataCollector reset
    for rec_ref in list(ref.open.values()):
        if rec_ref.episode_steps:
            rec_ref.end_episode(force_truncate=True)
            ref.batches.append(rec_ref.take())  # type: ignore[arg-type]
    batch = rec.take()
    assert batch is not None
    assert digests_by_id([batch]) == digests_by_id(ref.batches)


def test_seeds_first_given_after_unseeded_episodes_finished_stay_aligned() -> None:
    """Seeds and options are kept only once some begin has them: earlier ones stay None."""
    rec = VectorRecorder(gym.spaces.Discrete(3), gym.spaces.Discrete(2), 2)
    zeros, ones = np.zeros(2, np.int64), np.ones(2, np.int64)
    rec.begin(np.arange(2), np.array([0, 1]), zeros)
    rec.step(zeros, ones, np.ones(2), np.array([True, False]), np.zeros(2, bool))  # 0 ends
    rec.begin(np.array([0]), np.array([2]), ones, seeds=[2**64 - 1], options=[{"a": 1}])
    rec.step(ones, zeros, np.ones(2), np.ones(2, bool), np.zeros(2, bool))  # 1 and 2 end
    batch = rec.take()
    assert batch is not None
    t = batch.table
    assert t["id"].tolist() == [0, 1, 2]
    assert t["length"].tolist() == [1, 2, 1]
    assert t["has_seed"].tolist() == [False, False, True]
    assert int(t["seed"][2]) == 2**64 - 1
    assert t["options"] == [None, None, '{"a":1}']
    # a later window: unseeded begins after seeded ones are None again
    rec.begin(np.arange(2), np.array([3, 4]), zeros)
    rec.step(zeros, ones, np.ones(2), np.ones(2, bool), np.zeros(2, bool))
    later = rec.take()
    assert later is not None
    assert later.table["has_seed"].tolist() == [False, False]
    assert later.table["options"] == [None, None]


def test_begin_on_an_open_sub_env_is_refused() -> None:
    rec = VectorRecorder(gym.spaces.Discrete(2), gym.spaces.Discrete(2), 2)
    rec.begin(np.arange(2), np.arange(2), np.zeros(2, np.int64))
    with pytest.raises(RuntimeError, match="still open"):
        rec.begin(np.array([1]), np.array([5]), np.zeros(2, np.int64))


# --------------------------------------------------------------------------------------------
# collect with vectorization_mode=vector_entry_point


def run(dataset_id: str, **overrides: Any) -> Any:
    cfg = {
        "env": RANDOM_LENGTH,
        "episodes": 300,
        "seed": 5,
        "dataset_id": dataset_id,
        "num_envs": 4,
        "vectorization_mode": "vector_entry_point",
        "policy": {"_target_": "collector.policies.RandomPolicy"},
        "checkpoint": {"every_episodes": 50},
        **overrides,
    }
    return collect(cfg)


def test_same_seed_and_num_envs_same_fingerprint_and_seeds_are_null() -> None:
    a, b = run("ve/a-v0"), run("ve/b-v0")
    assert a.fingerprint == b.fingerprint and a.total_episodes == 300
    other = run("ve/c-v0", num_envs=8)
    assert other.fingerprint != a.fingerprint  # layout-dependent tier: num_envs shapes data
    episodes = read_episodes("ve/a-v0")
    assert [e["id"] for e in episodes] == list(range(300))
    assert all(e["seed"] is None for e in episodes)
    assert {e["length"] for e in episodes} == {1, 2, 3, 4}
    report = storage.verify_dataset("ve/a-v0")
    assert report.ok and report.fingerprint == a.fingerprint
    meta = storage.read_metadata(storage.dataset_path("ve/a-v0"))
    stored = meta["provenance"]["data_config"]
    assert stored["vectorization_mode"] == "vector_entry_point" and stored["num_envs"] == 4
    assert stored["segment_episodes"] == segment_episodes(4)


def test_extend_and_resume_give_the_uninterrupted_run() -> None:
    """Segments make a partial run replayable: 300 = 100 then 300 = crash then resume."""
    whole = run("ve/whole-v0", episodes=segment_episodes(4) + 44)
    part = run("ve/ext-v0", episodes=100)
    assert part.total_episodes == 100
    extended = run("ve/ext-v0", episodes=segment_episodes(4) + 44)
    assert extended.fingerprint == whole.fingerprint and extended.new_episodes == 200

    os.environ["HARVEST_TEST_FAIL_AFTER"] = "60"  # the policy raises on its 60th batch
    try:
        with pytest.raises(CollectionError, match="vector env failed while running episodes"):
            run("ve/crash-v0", episodes=segment_episodes(4) + 44, policy=FAILING)
    finally:
        del os.environ["HARVEST_TEST_FAIL_AFTER"]
    kept = storage.read_metadata(storage.dataset_path("ve/crash-v0"))["total_episodes"]
    assert 0 < kept < segment_episodes(4) + 44
    resumed = run("ve/crash-v0", episodes=segment_episodes(4) + 44, policy=FAILING)
    assert resumed.new_episodes == segment_episodes(4) + 44 - kept
    assert (
        resumed.fingerprint
        == run("ve/crash-ref-v0", episodes=segment_episodes(4) + 44, policy=FAILING).fingerprint
    )


class FailingPolicy:
    """Random actions; raises on batch ``$HARVEST_TEST_FAIL_AFTER`` when that is set."""

    def __init__(self, action_space: gym.Space) -> None:
        self.rng = np.random.default_rng(0)
        self.calls = 0

    def reset(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: Any) -> int:
        return int(self.rng.integers(2))

    def act_batch(self, obs: Any, n: int) -> np.ndarray:
        self.calls += 1
        if str(self.calls) == os.environ.get("HARVEST_TEST_FAIL_AFTER"):
            raise RuntimeError("policy crashed")
        return self.rng.integers(0, 2, n)


FAILING = {"_target_": f"{__name__}.FailingPolicy"}


def test_cartpole_vector_entry_point_and_a_policy_without_act_batch() -> None:
    res = run(
        "ve/cart-v0",
        env="CartPole-v1",
        episodes=40,
        num_envs=16,
        policy={"_target_": "collector.policies.CartPoleHeuristic"},
    )
    slow = run(
        "ve/cart-slow-v0",
        env="CartPole-v1",
        episodes=40,
        num_envs=16,
        policy={"_target_": "helpers.always_left"},
    )
    episodes = read_episodes("ve/cart-v0")
    assert res.total_episodes == 40 and np.mean([e["return"] for e in episodes]) > 400
    assert all(e["actions"].tolist() == [0] * e["length"] for e in read_episodes("ve/cart-slow-v0"))
    assert slow.total_episodes == 40


def test_a_changed_num_envs_is_refused_on_resume() -> None:
    run("ve/mm-v0", episodes=20)
    with pytest.raises(ConfigMismatchError, match="num_envs: 4 -> 2"):
        run("ve/mm-v0", episodes=40, num_envs=2)
    with pytest.raises(ConfigMismatchError, match="vectorization_mode"):
        run("ve/mm-v0", episodes=40, vectorization_mode="sync")


def test_envs_without_a_vector_entry_point_and_ray_are_refused() -> None:
    with pytest.raises(UsageError, match="has no vector_entry_point"):
        run("ve/bad-v0", env="Pendulum-v1")
    with pytest.raises(UsageError, match="vector_entry_point with runner=ray"):
        run("ve/bad-v0", runner={"name": "ray"})
    assert not storage.dataset_path("ve/bad-v0").exists()


# --------------------------------------------------------------------------------------------
# VectorDataCollector: users' own loops over a vector env


def drive(collector: Any, steps: int, seed: Any = None) -> list[np.ndarray]:
    """Random actions for ``steps`` vector steps; returns the rewards seen per step."""
    rng = np.random.default_rng(3)
    collector.reset(seed=seed)
    seen = []
    for _ in range(steps):
        _, rewards, te, tr, _ = collector.step(rng.integers(0, 2, collector.num_envs))
        seen.append(rewards)
        if collector.env.metadata["autoreset_mode"] is gym.vector.AutoresetMode.DISABLED:
            done = te | tr
            if done.any():
                collector.reset(options={"reset_mask": done})
    return seen


@pytest.mark.parametrize("mode", ["next_step", "disabled", "vector_entry_point"])
def test_vector_data_collector_records_whole_episodes(mode: str) -> None:
    from collector import VectorDataCollector

    if mode == "vector_entry_point":
        vec = gym.make_vec(RANDOM_LENGTH, num_envs=3, vectorization_mode="vector_entry_point")
    else:
        autoreset = gym.vector.AutoresetMode[mode.upper()]
        vec = gym.make_vec(
            RANDOM_LENGTH,
            num_envs=3,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": autoreset},
        )
    collector = VectorDataCollector(vec, record_infos=True, spill_bytes=2_000)
    drive(collector, 200, seed=[7, 8, 9] if mode != "vector_entry_point" else 7)
    summary = collector.create_dataset(f"vdc/{mode.replace('_', '-')}-v0", author="me")
    episodes = read_episodes(summary.dataset_id)
    assert [e["id"] for e in episodes] == list(range(len(episodes))) and len(episodes) > 60
    assert summary.total_steps == sum(e["length"] for e in episodes)
    for e in episodes:  # no autoreset rows (their reward is 0; real steps earn >= 0.5)
        assert e["rewards"].min() >= 0.5
        if mode != "vector_entry_point":  # that env has no infos
            assert e["infos"]["t"][0].tolist() == list(range(e["length"] + 1))
        assert e["terminated"] or e["truncated"]
    seeds = [e["seed"] for e in episodes if e["seed"] is not None]
    if mode == "vector_entry_point":
        assert seeds == []  # one shared RNG: no per-episode seeds
    else:
        assert sorted(seeds) == [7, 8, 9]
    meta = storage.read_metadata(storage.dataset_path(summary.dataset_id))
    assert meta["env_spec"]["id"] == "harvest-test/RandomLength-v0"
    assert "num_envs" not in meta["env_spec"]["kwargs"]
    assert storage.verify_dataset(summary.dataset_id).ok
    # the last (open) episodes were truncated by create_dataset, as DataCollector does
    assert any(e["truncated"] and not e["terminated"] for e in episodes)


def test_vector_data_collector_add_to_dataset_and_mid_episode_reset() -> None:
    from collector import VectorDataCollector

    vec = gym.make_vec(RANDOM_LENGTH, num_envs=2, vectorization_mode="sync")
    collector = VectorDataCollector(vec)
    drive(collector, 20, seed=1)
    first = collector.create_dataset("vdc/add-v0")
    collector.reset(seed=[4, 5], options={"level": 2})
    collector.step(np.array([1, 1]))
    collector.reset(seed=[6, 7])  # mid-episode: the open episodes end truncated
    collector.step(np.array([0, 0]))
    second = collector.add_to_dataset("vdc/add-v0")
    episodes = read_episodes("vdc/add-v0")
    assert second.total_episodes == len(episodes) > first.total_episodes
    added = episodes[first.total_episodes :]
    assert [e["id"] for e in added] == list(range(first.total_episodes, len(episodes)))
    with_options = [e for e in added if e["options"] == {"level": 2}]
    assert sorted(e["seed"] for e in with_options) == [4, 5]
    assert all(e["truncated"] or e["terminated"] for e in with_options)


def test_vector_data_collector_refuses_same_step_autoreset() -> None:
    from collector import VectorDataCollector

    vec = gym.make_vec(
        RANDOM_LENGTH,
        num_envs=2,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )
    with pytest.raises(UsageError, match="autoreset_mode=NEXT_STEP"):
        VectorDataCollector(vec)
