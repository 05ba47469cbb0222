"""Tests for ``collector.data_collector.DataCollector`` (Minari's collector API, harvest storage).

Most cases drive ``FakeEnv``, a small configurable env in the spirit of Gymnasium's
``GenericTestEnv``: its observations and rewards come from the env RNG seeded by
``reset(seed=...)`` so a stored seed can be replayed, and its episode length, info dicts and
spaces are parameters. Real ``CartPole-v1`` and ``Pendulum-v1`` are used where they help.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.wrappers import RecordEpisodeStatistics
from helpers import assert_same_episode, read_episodes

from collector import storage
from collector.data_collector import DataCollector, StepDataCallback, cleanup_spills
from collector.errors import (
    CollectionError,
    DatasetExistsError,
    DatasetIdError,
    DatasetNotFoundError,
    HarvestWarning,
    UnsupportedSpaceError,
    UsageError,
)

SEED_MAX = 2**64 - 1

# --------------------------------------------------------------------------------------------
# a configurable fake env and a driving loop


class FakeEnv(gym.Env):
    """A tiny env whose data depends only on the reset seed, options and actions.

    Observation ``[t, u1, u2]`` (float32) with ``u`` drawn from the env RNG plus ``options["x"]``;
    reward ``action + u``. It terminates (or truncates, with ``truncate=True``) every
    ``episode_len`` steps; stepping on past the end is allowed and keeps counting.
    ``info_fn(t)`` builds the info dict (``t == 0`` at reset). ``calls`` logs every reset/step.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        episode_len: int = 5,
        *,
        truncate: bool = False,
        info_fn: Callable[[int], dict[str, Any]] | None = None,
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
    ) -> None:
        self.observation_space = observation_space or spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = action_space or spaces.Discrete(3)
        self.episode_len = episode_len
        self.truncate = truncate
        self.info_fn = info_fn or (lambda t: {})
        self.t = 0
        self.x = 0.0
        self.calls: list[tuple[Any, ...]] = []

    def _obs(self) -> np.ndarray:
        u = self.np_random.uniform(-1.0, 1.0, 2) + self.x
        return np.array([self.t, *u], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.calls.append(("reset", seed, options))
        self.t = 0
        self.x = float((options or {}).get("x", 0.0))
        return self._obs(), self.info_fn(0)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.calls.append(("step", action))
        self.t += 1
        reward = float(action) + float(self.np_random.uniform())
        end = self.t % self.episode_len == 0
        obs = self._obs()
        return obs, reward, end and not self.truncate, end and self.truncate, self.info_fn(self.t)


def sample_action(space: spaces.Space, rng: np.random.Generator) -> Any:
    """A policy action drawn from ``rng`` (never the shared ``action_space`` RNG)."""
    if isinstance(space, spaces.Discrete):
        return int(space.start + rng.integers(space.n))
    assert isinstance(space, spaces.Box)
    return rng.uniform(space.low, space.high).astype(space.dtype)


def run_episode(
    env: gym.Env,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    policy_seed: int = 0,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Reset and step until the episode ends (or ``max_steps``); return what the loop saw."""
    rng = np.random.default_rng(policy_seed)
    obs, info = env.reset(seed=seed, options=options)
    seen: dict[str, Any] = {"observations": [obs], "actions": [], "rewards": [], "infos": [info]}
    done = False
    while not done and (max_steps is None or len(seen["actions"]) < max_steps):
        action = sample_action(env.action_space, rng)
        obs, reward, terminated, truncated, info = env.step(action)
        seen["observations"].append(obs)
        seen["actions"].append(action)
        seen["rewards"].append(reward)
        seen["infos"].append(info)
        done = terminated or truncated
    seen["terminated"], seen["truncated"] = bool(terminated), bool(truncated)
    return seen


def replay(env: gym.Env, episode: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Reset ``env`` with a recorded episode's seed/options, apply its actions."""
    obs, _ = env.reset(seed=episode["seed"], options=episode["options"])
    observations, rewards = [obs], []
    for action in episode["actions"]:
        obs, reward, *_ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
    return np.asarray(observations), np.asarray(rewards, dtype=np.float64)


def metadata(dataset_id: str) -> dict[str, Any]:
    return storage.read_metadata(storage.dataset_path(dataset_id), dataset_id)


def spill_dirs(root: Path) -> list[Path]:
    base = root / storage.SPILL_DIR
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


# --------------------------------------------------------------------------------------------
# 1. basic recording


def test_cartpole_round_trip(datasets_root: Path) -> None:
    seeds = [11, 12, 13, 14]
    collector = DataCollector(gym.make("CartPole-v1"))
    seen = [
        run_episode(collector, seed=s, options={"low": -0.04, "high": 0.04}, policy_seed=s)
        for s in seeds
    ]
    summary = collector.create_dataset(
        "cartpole/basic-v0",
        author="Ada",
        author_email="ada@example.org",
        description="four random episodes",
        algorithm_name="random",
    )

    episodes = read_episodes("cartpole/basic-v0")
    assert [ep["id"] for ep in episodes] == [0, 1, 2, 3]
    for ep, s, loop in zip(episodes, seeds, seen, strict=True):
        n = len(loop["actions"])
        assert ep["seed"] == s
        assert ep["options"] == {"low": -0.04, "high": 0.04}
        assert ep["length"] == n
        assert ep["observations"].shape == (n + 1, 4)
        assert ep["actions"].shape == (n,)
        assert ep["rewards"].shape == ep["terminations"].shape == ep["truncations"].shape == (n,)
        assert ep["rewards"].dtype == np.float64
        assert ep["terminations"].dtype == ep["truncations"].dtype == np.bool_
        np.testing.assert_array_equal(ep["observations"][0], loop["observations"][0])
        np.testing.assert_array_equal(ep["observations"], np.asarray(loop["observations"]))
        np.testing.assert_array_equal(ep["actions"], loop["actions"])
        np.testing.assert_array_equal(ep["rewards"], loop["rewards"])
        assert ep["return"] == pytest.approx(float(ep["rewards"].sum()))
        assert ep["terminated"] == loop["terminated"] == bool(ep["terminations"][-1])
        assert ep["truncated"] == loop["truncated"] == bool(ep["truncations"][-1])
        assert not ep["terminations"][:-1].any() and not ep["truncations"][:-1].any()
        assert ep["infos"] is None  # record_infos defaults to False

    report = storage.verify_dataset("cartpole/basic-v0")
    assert report.ok, report.problems
    meta = metadata("cartpole/basic-v0")
    assert meta["author"] == "Ada"
    assert meta["author_email"] == "ada@example.org"
    assert meta["description"] == "four random episodes"
    assert meta["algorithm_name"] == "random"
    assert meta["total_episodes"] == summary.total_episodes == 4
    assert meta["total_steps"] == summary.total_steps == sum(len(x["actions"]) for x in seen)
    assert meta["fingerprint"] == summary.fingerprint == report.fingerprint
    assert meta["env_spec"]["id"] == "CartPole-v1"
    assert summary.path == datasets_root / "cartpole/basic-v0"


def test_step_before_reset_raises() -> None:
    collector = DataCollector(FakeEnv())
    with pytest.raises(gym.error.ResetNeeded, match=re.escape("call reset() before step()")):
        collector.step(0)


# --------------------------------------------------------------------------------------------
# 2. Minari's collector cases


def test_truncation_without_reset() -> None:
    env = FakeEnv(episode_len=3, truncate=True)
    collector = DataCollector(env)
    obs, _ = collector.reset(seed=5)
    last_obs = []
    for _ in range(3):  # three episodes of 3 steps, reset only once
        for _ in range(3):
            obs, _, terminated, truncated, _ = collector.step(1)
        assert truncated and not terminated
        last_obs.append(obs)
    collector.create_dataset("fake/no-reset-v0")

    episodes = read_episodes("fake/no-reset-v0")
    assert [ep["id"] for ep in episodes] == [0, 1, 2]
    assert [ep["seed"] for ep in episodes] == [5, None, None]
    assert [ep["options"] for ep in episodes] == [None, None, None]
    for prev, ep in zip(episodes, episodes[1:], strict=False):
        np.testing.assert_array_equal(ep["observations"][0], prev["observations"][-1])
    for ep, obs in zip(episodes, last_obs, strict=True):
        assert ep["length"] == 3 and ep["truncated"] and not ep["terminated"]
        np.testing.assert_array_equal(ep["observations"][-1], obs)
    assert storage.verify_dataset("fake/no-reset-v0").ok


def test_reset_twice_drops_the_empty_episode() -> None:
    collector = DataCollector(FakeEnv(episode_len=4))
    run_episode(collector, seed=1)
    collector.reset(seed=2)  # no step: dropped
    run_episode(collector, seed=3)
    collector.reset(seed=4)
    collector.reset(seed=5)
    run_episode(collector, seed=6)
    collector.reset(seed=7)  # open and empty at create_dataset: dropped too
    summary = collector.create_dataset("fake/reset-twice-v0")

    episodes = read_episodes("fake/reset-twice-v0")
    assert [ep["seed"] for ep in episodes] == [1, 3, 6]
    assert [ep["id"] for ep in episodes] == [0, 1, 2]
    assert summary.total_episodes == 3
    assert all(ep["length"] == 4 for ep in episodes)
    assert storage.verify_dataset("fake/reset-twice-v0").ok


def test_reset_mid_episode_marks_last_step_truncated() -> None:
    collector = DataCollector(FakeEnv(episode_len=10))
    run_episode(collector, seed=1, max_steps=4)  # interrupted after 4 of 10 steps
    run_episode(collector, seed=2)  # complete, terminates
    run_episode(collector, seed=3, max_steps=2)  # still open at create_dataset
    collector.create_dataset("fake/mid-reset-v0")

    first, second, third = read_episodes("fake/mid-reset-v0")
    assert first["length"] == 4
    assert first["truncated"] and not first["terminated"]
    np.testing.assert_array_equal(first["truncations"], [False, False, False, True])
    assert not first["terminations"].any()
    assert second["length"] == 10 and second["terminated"] and not second["truncated"]
    assert not second["truncations"].any()
    assert third["length"] == 2 and third["truncated"]
    np.testing.assert_array_equal(third["truncations"], [False, True])


def test_single_step_episodes() -> None:
    collector = DataCollector(FakeEnv(episode_len=1))
    seen = [run_episode(collector, seed=s) for s in range(3)]
    collector.create_dataset("fake/one-step-v0")

    episodes = read_episodes("fake/one-step-v0")
    assert len(episodes) == 3
    for ep, loop in zip(episodes, seen, strict=True):
        assert ep["length"] == 1
        assert ep["observations"].shape == (2, 3)
        assert ep["actions"].shape == (1,)
        np.testing.assert_array_equal(ep["terminations"], [True])
        np.testing.assert_array_equal(ep["observations"], np.asarray(loop["observations"]))
    assert storage.verify_dataset("fake/one-step-v0").ok


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("options", [None, {"x": 1}], ids=["no-options", "options"])
def test_stored_seed_and_options_replay_exactly(env_id: str, options: Any) -> None:
    collector = DataCollector(gym.make(env_id))
    seeds = [None, 0, SEED_MAX]
    for i, seed in enumerate(seeds):
        run_episode(collector, seed=seed, options=options, policy_seed=i, max_steps=30)
    collector.create_dataset("replay/seeds-v0")

    episodes = read_episodes("replay/seeds-v0")
    assert len(episodes) == 3
    assert episodes[1]["seed"] == 0
    assert episodes[2]["seed"] == SEED_MAX
    drawn = episodes[0]["seed"]
    assert isinstance(drawn, int) and 0 <= drawn <= SEED_MAX  # seed=None: drawn and stored
    fresh = gym.make(env_id)
    for ep in episodes:
        assert ep["options"] == options
        observations, rewards = replay(fresh, ep)
        np.testing.assert_array_equal(ep["observations"], observations)
        np.testing.assert_array_equal(ep["rewards"], rewards)


def test_seed_none_draws_a_fresh_seed_each_reset() -> None:
    env = FakeEnv(episode_len=2)
    collector = DataCollector(env)
    for _ in range(3):
        run_episode(collector)
    collector.create_dataset("fake/autoseed-v0")

    seeds = [ep["seed"] for ep in read_episodes("fake/autoseed-v0")]
    assert None not in seeds and len(set(seeds)) == 3
    # the env itself was reset with the very seeds that were stored
    assert [c[1] for c in env.calls if c[0] == "reset"] == seeds


# --------------------------------------------------------------------------------------------
# 3. infos


def test_record_episode_statistics_infos_get_a_presence_mask() -> None:
    collector = DataCollector(RecordEpisodeStatistics(gym.make("CartPole-v1")), record_infos=True)
    seen = [run_episode(collector, seed=s, policy_seed=s) for s in (1, 2, 3)]
    collector.create_dataset("cartpole/stats-v0")

    assert metadata("cartpole/stats-v0")["record_infos"] is True
    episodes = read_episodes("cartpole/stats-v0")
    assert len(episodes) == 3
    for ep, loop in zip(episodes, seen, strict=True):
        infos = ep["infos"]
        assert infos is not None
        assert {"episode/r", "episode/l", "episode/t"} <= set(infos)
        rows = ep["length"] + 1
        expected_mask = np.zeros(rows, bool)
        expected_mask[-1] = True
        for name in ("episode/r", "episode/l", "episode/t"):
            values, mask = infos[name]
            assert len(values) == len(mask) == rows
            np.testing.assert_array_equal(mask, expected_mask)
            assert not values[:-1].any()  # back-filled with zeros
        r, _ = infos["episode/r"]
        length, _ = infos["episode/l"]
        assert r[-1] == pytest.approx(ep["return"])
        assert r[-1] == pytest.approx(loop["infos"][-1]["episode"]["r"])
        assert int(length[-1]) == ep["length"]
    assert storage.verify_dataset("cartpole/stats-v0").ok


def test_string_info_is_dropped_with_one_warning() -> None:
    env = FakeEnv(episode_len=4, info_fn=lambda t: {"step": t, "msg": f"at {t}"})
    collector = DataCollector(env, record_infos=True)
    with pytest.warns(HarvestWarning, match=re.escape("info key 'msg' is not recorded")) as rec:
        run_episode(collector, seed=1)
        run_episode(collector, seed=2)
    assert len([w for w in rec if issubclass(w.category, HarvestWarning)]) == 1
    collector.create_dataset("fake/string-info-v0")

    for ep in read_episodes("fake/string-info-v0"):
        assert set(ep["infos"]) == {"step"}
        values, mask = ep["infos"]["step"]
        np.testing.assert_array_equal(values, np.arange(5))
        assert mask.all()
    assert storage.verify_dataset("fake/string-info-v0").ok


def test_nested_info_keys_are_escaped() -> None:
    env = FakeEnv(episode_len=2, info_fn=lambda t: {"a/b": t, "c": {"d": np.full(2, t)}})
    collector = DataCollector(env, record_infos=True)
    run_episode(collector, seed=0)
    collector.create_dataset("fake/info-names-v0")

    (ep,) = read_episodes("fake/info-names-v0")
    assert set(ep["infos"]) == {"a%2Fb", "c/d"}
    np.testing.assert_array_equal(ep["infos"]["a%2Fb"][0], [0, 1, 2])
    np.testing.assert_array_equal(ep["infos"]["c/d"][0], [[0, 0], [1, 1], [2, 2]])


@pytest.mark.parametrize("new_shape", [(3,), (2, 2), ()], ids=str)
def test_info_shape_change_raises_naming_the_key(new_shape: tuple[int, ...]) -> None:
    def info_fn(t: int) -> dict[str, Any]:
        return {"ok": t, "vec": np.zeros(new_shape if t == 2 else (2,))}

    collector = DataCollector(FakeEnv(episode_len=5, info_fn=info_fn), record_infos=True)
    collector.reset(seed=0)
    collector.step(0)
    with pytest.raises(CollectionError, match=re.escape("info key 'vec' changed shape")):
        collector.step(0)


def test_infos_not_recorded_by_default() -> None:
    env = FakeEnv(episode_len=2, info_fn=lambda t: {"msg": "text", "x": t})
    collector = DataCollector(env)  # no warning: infos are ignored
    run_episode(collector, seed=0)
    collector.create_dataset("fake/no-infos-v0")
    (ep,) = read_episodes("fake/no-infos-v0")
    assert ep["infos"] is None
    assert metadata("fake/no-infos-v0")["record_infos"] is False


# --------------------------------------------------------------------------------------------
# 4. callbacks


class FirstTwo(StepDataCallback):
    """Keep only ``obs[:2]`` (Minari style: a class instantiated with no arguments)."""

    def __call__(self, env, obs, info, action=None, rew=None, terminated=None, truncated=None):
        data = super().__call__(env, obs, info, action, rew, terminated, truncated)
        data["observation"] = np.asarray(obs[:2])
        return data


class SliceAndScale(StepDataCallback):
    """An instance with arguments (harvest extension): slice the obs and scale the reward."""

    def __init__(self, stop: int, scale: float) -> None:
        self.stop, self.scale = stop, scale

    def __call__(self, env, obs, info, action=None, rew=None, terminated=None, truncated=None):
        data = super().__call__(env, obs, info, action, rew, terminated, truncated)
        data["observation"] = np.asarray(obs[: self.stop])
        if rew is not None:
            data["reward"] = rew * self.scale
        return data


class RewardStats:
    """Minari-style episode metadata callback."""

    def __call__(self, episode: dict[str, Any]) -> dict[str, Any]:
        return {
            "rewards_sum": float(np.sum(episode["rewards"])),
            "steps": len(episode["rewards"]),
            "ended_truncated": bool(episode["truncations"][-1]),
        }


@pytest.mark.parametrize(
    ("callback", "scale"), [(FirstTwo, 1.0), (SliceAndScale(2, 10.0), 10.0)], ids=["cls", "obj"]
)
def test_step_data_callback_rewrites_observation(callback: Any, scale: float) -> None:
    box2 = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    collector = DataCollector(
        gym.make("CartPole-v1"), step_data_callback=callback, observation_space=box2
    )
    assert collector.observation_space == box2
    for s in (1, 2):
        run_episode(collector, seed=s, policy_seed=s)
    collector.create_dataset("cartpole/first-two-v0")

    assert metadata("cartpole/first-two-v0")["observation_space"]["shape"] == [2]
    fresh = gym.make("CartPole-v1")
    for ep in read_episodes("cartpole/first-two-v0"):
        assert ep["observations"].shape == (ep["length"] + 1, 2)
        observations, rewards = replay(fresh, ep)
        np.testing.assert_array_equal(ep["observations"], observations[:, :2])
        np.testing.assert_array_equal(ep["rewards"], rewards * scale)
    assert storage.verify_dataset("cartpole/first-two-v0").ok


@pytest.mark.parametrize("callback", [RewardStats, RewardStats()], ids=["cls", "obj"])
def test_episode_metadata_callback_is_stored_per_episode(callback: Any) -> None:
    collector = DataCollector(FakeEnv(episode_len=3), episode_metadata_callback=callback)
    run_episode(collector, seed=1)
    run_episode(collector, seed=2, max_steps=2)  # interrupted: forced truncation
    collector.create_dataset("fake/ep-meta-v0")

    first, second = read_episodes("fake/ep-meta-v0")
    assert first["metadata"] == {
        "rewards_sum": pytest.approx(float(first["rewards"].sum())),
        "steps": 3,
        "ended_truncated": False,
    }
    # the callback sees the episode after the forced truncation
    assert second["metadata"] == {
        "rewards_sum": pytest.approx(float(second["rewards"].sum())),
        "steps": 2,
        "ended_truncated": True,
    }


def test_no_metadata_callback_stores_none() -> None:
    collector = DataCollector(FakeEnv(episode_len=2))
    run_episode(collector, seed=1)
    collector.create_dataset("fake/no-meta-v0")
    assert read_episodes("fake/no-meta-v0")[0]["metadata"] is None


# --------------------------------------------------------------------------------------------
# 5. create_dataset / add_to_dataset


def test_create_existing_id_refuses_and_keeps_both_sides(datasets_root: Path) -> None:
    collector = DataCollector(FakeEnv(episode_len=3))
    run_episode(collector, seed=1)
    first = collector.create_dataset("fake/exists-v0")
    manifest = datasets_root / "fake/exists-v0" / storage.METADATA_FILE
    before = manifest.read_bytes()
    files_before = sorted(p.name for p in (datasets_root / "fake/exists-v0/data").iterdir())

    run_episode(collector, seed=2)
    run_episode(collector, seed=3)
    with pytest.raises(DatasetExistsError, match=re.escape("dataset 'fake/exists-v0' already")):
        collector.create_dataset("fake/exists-v0")

    assert manifest.read_bytes() == before
    assert sorted(p.name for p in (datasets_root / "fake/exists-v0/data").iterdir()) == (
        files_before
    )
    assert metadata("fake/exists-v0")["fingerprint"] == first.fingerprint
    assert [ep["seed"] for ep in read_episodes("fake/exists-v0")] == [1]
    assert storage.verify_dataset("fake/exists-v0").ok
    # nothing recorded was lost: the refused episodes can still be committed elsewhere
    collector.create_dataset("fake/exists-other-v0")
    assert [ep["seed"] for ep in read_episodes("fake/exists-other-v0")] == [2, 3]


def test_add_to_dataset_continues_ids_and_keeps_seeds() -> None:
    collector = DataCollector(FakeEnv(episode_len=3), episode_metadata_callback=RewardStats)
    for s in range(5):
        run_episode(collector, seed=100 + s)
    collector.create_dataset("fake/grow-v0", author="Ada", description="grows")
    for s in range(3):
        run_episode(collector, seed=200 + s, options={"x": s})
    summary = collector.add_to_dataset("fake/grow-v0")

    episodes = read_episodes("fake/grow-v0")
    assert [ep["id"] for ep in episodes] == list(range(8))
    assert [ep["seed"] for ep in episodes] == [100, 101, 102, 103, 104, 200, 201, 202]
    assert [ep["options"] for ep in episodes[5:]] == [{"x": 0}, {"x": 1}, {"x": 2}]
    assert all(ep["metadata"]["steps"] == 3 for ep in episodes)
    assert summary.total_episodes == 8 and summary.total_steps == 24
    meta = metadata("fake/grow-v0")
    assert meta["author"] == "Ada" and meta["description"] == "grows"
    assert meta["total_episodes"] == 8
    report = storage.verify_dataset("fake/grow-v0")
    assert report.ok, report.problems
    assert report.fingerprint == summary.fingerprint == meta["fingerprint"]

    # appending again keeps going (8..9)
    run_episode(collector, seed=300)
    run_episode(collector, seed=301)
    collector.add_to_dataset("fake/grow-v0")
    assert [ep["id"] for ep in read_episodes("fake/grow-v0")] == list(range(10))
    assert storage.verify_dataset("fake/grow-v0").ok


def test_add_to_dataset_equals_collecting_in_one_go() -> None:
    a = DataCollector(FakeEnv(episode_len=3))
    for s in range(4):
        run_episode(a, seed=s, policy_seed=s)
    a.create_dataset("fake/one-go-v0")
    b = DataCollector(FakeEnv(episode_len=3))
    for s in range(2):
        run_episode(b, seed=s, policy_seed=s)
    b.create_dataset("fake/two-goes-v0")
    for s in range(2, 4):
        run_episode(b, seed=s, policy_seed=s)
    b.add_to_dataset("fake/two-goes-v0")

    for x, y in zip(
        read_episodes("fake/one-go-v0"), read_episodes("fake/two-goes-v0"), strict=True
    ):
        assert x["id"] == y["id"] and x["seed"] == y["seed"]
        assert_same_episode(x, y)
    assert metadata("fake/one-go-v0")["fingerprint"] == metadata("fake/two-goes-v0")["fingerprint"]


def test_add_to_dataset_with_other_space_raises() -> None:
    collector = DataCollector(FakeEnv(episode_len=2))
    run_episode(collector, seed=1)
    collector.create_dataset("fake/space-v0")
    fingerprint = metadata("fake/space-v0")["fingerprint"]

    other = DataCollector(
        FakeEnv(episode_len=2, observation_space=spaces.Box(-5.0, 5.0, (3,), np.float32))
    )
    run_episode(other, seed=2)
    with pytest.raises(
        UsageError, match=re.escape("cannot add to 'fake/space-v0': its observation_space differs")
    ):
        other.add_to_dataset("fake/space-v0")
    other_act = DataCollector(FakeEnv(episode_len=2, action_space=spaces.Discrete(4)))
    run_episode(other_act, seed=2)
    with pytest.raises(UsageError, match=re.escape("its action_space differs")):
        other_act.add_to_dataset("fake/space-v0")
    assert metadata("fake/space-v0")["fingerprint"] == fingerprint
    assert len(read_episodes("fake/space-v0")) == 1


def test_add_to_missing_dataset_raises() -> None:
    collector = DataCollector(FakeEnv(episode_len=2))
    run_episode(collector, seed=1)
    with pytest.raises(DatasetNotFoundError, match=re.escape("no dataset 'fake/nope-v0'")):
        collector.add_to_dataset("fake/nope-v0")


def test_collector_starts_fresh_after_create_dataset() -> None:
    collector = DataCollector(FakeEnv(episode_len=3))
    run_episode(collector, seed=1)
    run_episode(collector, seed=2)
    collector.create_dataset("fake/first-v0")
    with pytest.raises(gym.error.ResetNeeded):
        collector.step(0)  # the storage was reset: no open episode to continue
    run_episode(collector, seed=3)
    collector.create_dataset("fake/second-v0")

    second = read_episodes("fake/second-v0")
    assert [(ep["id"], ep["seed"]) for ep in second] == [(0, 3)]
    assert len(read_episodes("fake/first-v0")) == 2
    assert (
        storage.verify_dataset("fake/first-v0").ok and storage.verify_dataset("fake/second-v0").ok
    )


def test_create_dataset_with_nothing_recorded() -> None:
    collector = DataCollector(FakeEnv())
    summary = collector.create_dataset("fake/empty-v0")
    assert summary.total_episodes == 0 and summary.total_steps == 0
    assert read_episodes("fake/empty-v0") == []
    assert storage.verify_dataset("fake/empty-v0").ok


def test_bad_dataset_id_is_refused() -> None:
    collector = DataCollector(FakeEnv())
    with pytest.raises(DatasetIdError, match=re.escape("has no version suffix")):
        collector.create_dataset("noversion")


# --------------------------------------------------------------------------------------------
# 6. spilling and crash cleanup


def test_spills_are_moved_into_the_dataset(datasets_root: Path) -> None:
    collector = DataCollector(FakeEnv(episode_len=3), spill_bytes=1)
    for s in range(4):
        run_episode(collector, seed=s)
    (spill_dir,) = spill_dirs(datasets_root)
    assert spill_dir.name.startswith(f"{os.getpid()}-")
    spills = sorted(p.name for p in spill_dir.glob("spill-*.h5"))
    assert len(spills) == 4  # every finished episode went to disk
    run_episode(collector, seed=4, max_steps=1)  # open at create_dataset: flushed as a 5th shard

    summary = collector.create_dataset("fake/spilled-v0")
    assert not spill_dir.exists()
    assert spill_dirs(datasets_root) == []
    meta = metadata("fake/spilled-v0")
    assert len(meta["shards"]) == 5
    assert summary.total_episodes == 5
    files = sorted((datasets_root / "fake/spilled-v0/data").iterdir())
    shard_files = [p for p in files if storage.SHARD_RE.match(p.name)]
    assert [p.name for p in shard_files] == sorted(e["file"] for e in meta["shards"])
    # and each shard's index file (issue 18)
    assert {p.name for p in files} - {p.name for p in shard_files} == {
        e["index"]["file"] for e in meta["shards"]
    }
    assert all(p.stat().st_mode & 0o222 == 0 for p in files)  # immutable
    assert [ep["seed"] for ep in read_episodes("fake/spilled-v0")] == [0, 1, 2, 3, 4]
    report = storage.verify_dataset("fake/spilled-v0")
    assert report.ok, report.problems


def test_close_discards_spills(datasets_root: Path) -> None:
    collector = DataCollector(FakeEnv(episode_len=2), spill_bytes=1)
    run_episode(collector, seed=0)
    assert len(spill_dirs(datasets_root)) == 1
    collector.close()
    assert spill_dirs(datasets_root) == []


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import gymnasium as gym
    from collector.data_collector import DataCollector

    collector = DataCollector(gym.make("CartPole-v1"), spill_bytes=1)
    for seed in range(3):
        collector.reset(seed=seed)
        done = False
        while not done:
            _, _, terminated, truncated, _ = collector.step(seed % 2)
            done = terminated or truncated
    collector.reset(seed=99)
    collector.step(0)  # an open episode too
    sys.stdout.flush()
    if sys.argv[1] == "exit":
        os._exit(1)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(("how", "code"), [("exit", 1), ("kill", -9)])
def test_crashed_collector_spills_are_cleaned(datasets_root: Path, how: str, code: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, how],
        env={**os.environ, "HARVEST_DATASETS": str(datasets_root)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr
    (left,) = spill_dirs(datasets_root)
    assert not left.name.startswith(f"{os.getpid()}-")
    assert len(list(left.glob("spill-*.h5"))) == 3

    DataCollector(FakeEnv())  # construction cleans up after dead collectors
    assert spill_dirs(datasets_root) == []


def test_cleanup_spares_live_collectors(datasets_root: Path) -> None:
    live = DataCollector(FakeEnv(episode_len=2), spill_bytes=1)
    run_episode(live, seed=0)
    (live_dir,) = spill_dirs(datasets_root)
    orphan = datasets_root / storage.SPILL_DIR / "12345-deadbeef0000"  # no owner file: stale
    orphan.mkdir()
    (orphan / "spill-000000.h5").write_bytes(b"junk")

    DataCollector(FakeEnv())
    assert spill_dirs(datasets_root) == [live_dir]
    assert cleanup_spills() == 0
    assert live_dir.exists()

    run_episode(live, seed=1)
    live.create_dataset("fake/live-v0")
    assert [ep["seed"] for ep in read_episodes("fake/live-v0")] == [0, 1]
    assert storage.verify_dataset("fake/live-v0").ok


def test_a_start_cleans_only_abandoned_spills_of_its_own_kind(
    datasets_root: Path, tmp_path: Path
) -> None:
    """Issue 16 item 17: a new collector cleaned all of ``<root>/.tmp``, a live pull's too."""
    base = datasets_root / storage.SPILL_DIR
    # a pull in progress: its staging folder, under the dataset's writer lock
    staging = base / "pull-ns~pulled-v0"
    (staging / storage.DATA_DIR).mkdir(parents=True)
    (staging / storage.DATA_DIR / "shard-000000-0123abcd.h5").write_bytes(b"half downloaded")
    # another tool's folder, and a link named like a spill folder (never followed)
    (base / "other-tool").mkdir()
    (base / "other-tool" / "keep.txt").write_text("not ours")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not ours either")
    (base / "4242-0123456789ab").symlink_to(outside, target_is_directory=True)
    # an abandoned spill folder: its owner file exists and nobody holds it
    abandoned = base / "999999-abcdefabcdef"
    abandoned.mkdir()
    (abandoned / ".owner").touch()
    (abandoned / "spill-000000.h5").write_bytes(b"junk")

    with storage.DatasetLock("ns/pulled-v0"):
        DataCollector(FakeEnv())
        assert (staging / storage.DATA_DIR / "shard-000000-0123abcd.h5").read_bytes() == (
            b"half downloaded"
        )
    assert (base / "other-tool" / "keep.txt").is_file()
    assert (outside / "precious.txt").is_file()
    assert (base / "4242-0123456789ab").is_symlink()
    assert not abandoned.exists()


# --------------------------------------------------------------------------------------------
# 7. unsupported spaces


@pytest.mark.parametrize(
    ("space", "name"),
    [
        (spaces.Sequence(spaces.Discrete(2)), "Sequence"),
        (spaces.Graph(node_space=spaces.Discrete(3), edge_space=None), "Graph"),
    ],
    ids=["sequence", "graph"],
)
def test_unsupported_observation_space_is_refused_before_any_step(
    space: spaces.Space, name: str
) -> None:
    env = FakeEnv(observation_space=space)
    with pytest.raises(
        UnsupportedSpaceError, match=re.escape(f"observation space {name} at the root")
    ):
        DataCollector(env)
    assert env.calls == []


def test_unsupported_nested_and_action_spaces_are_refused() -> None:
    nested = spaces.Dict(a=spaces.Discrete(2), b=spaces.Sequence(spaces.Discrete(2)))
    with pytest.raises(UnsupportedSpaceError, match=re.escape("observation space Sequence at 'b'")):
        DataCollector(FakeEnv(observation_space=nested))
    with pytest.raises(UnsupportedSpaceError, match=re.escape("action space Sequence at the root")):
        DataCollector(FakeEnv(action_space=spaces.Sequence(spaces.Discrete(2))))


def test_supported_observation_space_override_is_accepted() -> None:
    """An env with an unsupported space can still be recorded through a callback."""

    class ToArray(StepDataCallback):
        def __call__(self, env, obs, info, action=None, rew=None, terminated=None, truncated=None):
            data = super().__call__(env, obs, info, action, rew, terminated, truncated)
            data["observation"] = np.asarray([env.unwrapped.t], dtype=np.int64)
            return data

    env = FakeEnv(episode_len=2, observation_space=spaces.Sequence(spaces.Discrete(2)))
    collector = DataCollector(
        env,
        step_data_callback=ToArray,
        observation_space=spaces.Box(0, 100, (1,), np.int64),
    )
    run_episode(collector, seed=0)
    collector.create_dataset("fake/override-v0")
    (ep,) = read_episodes("fake/override-v0")
    np.testing.assert_array_equal(ep["observations"], [[0], [1], [2]])


def test_other_data_format_is_refused() -> None:
    with pytest.raises(UsageError, match=re.escape("data_format='arrow'")):
        DataCollector(FakeEnv(), data_format="arrow")


# --------------------------------------------------------------------------------------------
# 8. determinism


def _record(dataset_id: str, seeds: list[int], **kwargs: Any) -> str:
    collector = DataCollector(gym.make("CartPole-v1"), **kwargs)
    for s in seeds:
        run_episode(collector, seed=s, policy_seed=s)
    return collector.create_dataset(dataset_id).fingerprint


def test_fingerprint_is_deterministic_and_independent_of_spilling() -> None:
    seeds = [3, 1, 4, 1, 5]
    a = _record("det/a-v0", seeds)
    b = _record("det/b-v0", seeds)
    c = _record("det/c-v0", seeds, spill_bytes=1)
    d = _record("det/d-v0", seeds, spill_bytes=1, compression="none")
    assert a == b == c == d
    assert [metadata(f"det/{x}-v0")["fingerprint"] for x in "abcd"] == [a] * 4
    assert len(metadata("det/a-v0")["shards"]) == 1
    assert len(metadata("det/c-v0")["shards"]) == len(seeds)
    for x, y in zip(read_episodes("det/a-v0"), read_episodes("det/c-v0"), strict=True):
        assert_same_episode(x, y)
    # negative control: a different seed changes the fingerprint
    assert _record("det/e-v0", [3, 1, 4, 1, 6]) != a


def test_fingerprint_ignores_dataset_id_but_not_options() -> None:
    collector = DataCollector(FakeEnv(episode_len=3))
    run_episode(collector, seed=1, options={"x": 0})
    first = collector.create_dataset("det/opt-a-v0").fingerprint
    run_episode(collector, seed=1, options={"x": 0})
    second = collector.create_dataset("det/opt-b-v0").fingerprint
    run_episode(collector, seed=1, options={"x": 0, "unused": 1})
    third = collector.create_dataset("det/opt-c-v0").fingerprint
    assert first == second
    assert third != first  # options are part of the episode digest
    stored = json.loads((storage.dataset_path("det/opt-c-v0") / storage.METADATA_FILE).read_text())
    assert stored["fingerprint"] == third


def test_fingerprint_independent_of_spilling_with_changing_info_keys() -> None:
    """An info key seen only in a later episode must not change earlier episodes' digests."""

    def record(dataset_id: str, spill_bytes: int) -> str:
        env = FakeEnv(episode_len=4, info_fn=lambda t: {"late": t} if t == 3 else {})
        collector = DataCollector(env, record_infos=True, spill_bytes=spill_bytes)
        run_episode(collector, seed=1, max_steps=2)  # never reaches t == 3: no "late" key
        run_episode(collector, seed=2)  # "late" appears at its step 3
        return collector.create_dataset(dataset_id).fingerprint

    assert record("det/infos-spilled-v0", 1) == record("det/infos-whole-v0", 10**9)
