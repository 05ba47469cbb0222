"""Every recorded value is exactly the value the env or policy returned (issue 16, item 3).

A value its column cannot hold exactly (another shape, which numpy would broadcast; a value
a dtype cast would wrap or round) is refused with one line naming the episode, the step, the
leaf and the mismatch, and the episode is not stored. Exact casts (a float64 0.5 into a
float32 column) and NaN are stored as they are.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from helpers import read_episodes
from misbehaving_envs import ENV_ID, LENGTH, good_obs, info_x

from collector.collect import collect
from collector.data_collector import DataCollector
from collector.errors import CollectionError
from collector.recorder import EpisodeRecorder
from collector.spaces import ValueMismatch, exact_value, make_leaf_checker
from collector.vector_recorder import VectorRecorder

ENV = f"misbehaving_envs:{ENV_ID}"

#: kind -> the mismatch named in the error
REFUSED = {
    "short": "observation has shape (1,) where its space's is (4,)",
    "big": "observation value 300 at (0,) (int64) cannot be stored exactly as uint8",
    "negative": "observation value -1 at (2,) (int64) cannot be stored exactly as uint8",
    "inexact": "observation value 0.1 at (0,) (float64) cannot be stored exactly as float32",
}


def run(dataset_id: str, kind: str, **overrides: Any) -> Any:
    cfg: dict[str, Any] = {
        "env": ENV,
        "env_kwargs": {"kind": kind},
        "episodes": 5,
        "seed": 0,
        "dataset_id": dataset_id,
        "policy": {"_target_": "collector.policies.RandomPolicy"},
        "checkpoint": {"every_episodes": 1},
        **overrides,
    }
    return collect(cfg)


def assert_only_good_episodes(dataset_id: str, ids: list[int], kind: str) -> None:
    episodes = read_episodes(dataset_id)
    assert [ep["id"] for ep in episodes] == ids
    for ep in episodes:
        want = np.stack([good_obs(kind, t) for t in range(LENGTH + 1)])
        np.testing.assert_array_equal(ep["observations"], want)


@pytest.mark.parametrize("kind", list(REFUSED))
def test_collect_refuses_a_value_it_cannot_store_exactly(kind: str) -> None:
    with pytest.raises(CollectionError) as caught:
        run("exact/refused-v0", kind)
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"episode 2 step 3: {REFUSED[kind]}; ")
    assert_only_good_episodes("exact/refused-v0", [0, 1], kind)


def test_a_float_action_for_a_discrete_space_is_refused() -> None:
    with pytest.raises(
        CollectionError,
        match=re.escape(
            "episode 0 step 0: action value 0.5 (float64) cannot be stored exactly as int64"
        ),
    ):
        run("exact/action-v0", "none", policy={"_target_": "misbehaving_envs.half_action"})


def test_nan_and_exact_casts_are_stored_as_returned() -> None:
    run("exact/nan-v0", "nan")
    run("exact/wide-v0", "wide")
    nan = read_episodes("exact/nan-v0")[2]["observations"]
    assert np.isnan(nan[4, 0]) and nan.dtype == np.float32
    np.testing.assert_array_equal(nan[4, 1:], [1, 2, 3])
    wide = read_episodes("exact/wide-v0")[2]["observations"]
    np.testing.assert_array_equal(wide[4], [0.5, 1, 2, 4])


@pytest.mark.parametrize(
    "mode",
    # AsyncVectorEnv logs the worker's error through warnings
    ["sync", pytest.param("async", marks=pytest.mark.filterwarnings("ignore::UserWarning"))],
)
def test_vector_envs_refuse_before_gymnasium_casts(mode: str) -> None:
    # gymnasium's own batching would broadcast or wrap the value before harvest saw it
    with pytest.raises(CollectionError) as caught:
        run(
            "exact/vec-v0",
            "big",
            env_kwargs={"kind": "big", "bad_episode": 1},
            num_envs=2,
            vectorization_mode=mode,
            episodes=6,
        )
    line = str(caught.value)
    assert re.match(r"episode [23] step 3: " + re.escape(REFUSED["big"]), line), line
    episodes = read_episodes("exact/vec-v0")
    assert {ep["id"] for ep in episodes} <= {0, 1}
    for ep in episodes:
        assert ep["observations"].max() <= LENGTH


@pytest.mark.parametrize(
    "mode",
    # AsyncVectorEnv logs the worker's error through warnings
    ["sync", pytest.param("async", marks=pytest.mark.filterwarnings("ignore::UserWarning"))],
)
def test_vector_envs_record_the_infos_the_sub_envs_returned(mode: str) -> None:
    # Gymnasium batches the infos of sub-envs in lockstep into one array typed after the
    # first sub-env's value: 4.5 next to an int 4 would become 4
    run("exact/infos-v0", "info", num_envs=2, vectorization_mode=mode, record_infos=True)
    episodes = read_episodes("exact/infos-v0")
    seeds = [ep["seed"] % 2 for ep in episodes]
    assert any(seeds[i] != seeds[i + 1] for i in range(0, len(seeds) - 1, 2)), "no mix: vacuous"
    for ep in episodes:
        values, mask = ep["infos"]["x"]
        assert mask.all()
        want = [info_x("info", ep["seed"] % 2 == 1, t) for t in range(LENGTH + 1)]
        assert values.tolist() == want, (ep["id"], ep["seed"])


@pytest.mark.parametrize("kind", ["short", "big"])
def test_vector_entry_point_refuses_too(kind: str) -> None:
    with pytest.raises(CollectionError) as caught:
        run(
            "exact/vep-v0",
            kind,
            env_kwargs={"kind": kind},
            num_envs=2,
            vectorization_mode="vector_entry_point",
        )
    want = "observation has shape (2, 1) where its space's is (2, 4)" if kind == "short" else ""
    line = str(caught.value)
    assert line.startswith("episode 0 step 3: "), line
    assert want in line
    assert read_episodes("exact/vep-v0") == []


@pytest.mark.parametrize("kind", ["short", "big"])
def test_data_collector_refuses_and_drops_the_episode(kind: str) -> None:
    env = DataCollector(gym.make(ENV, kind=kind, bad_episode=1))
    for episode in range(2):
        env.reset(seed=episode)
        for step in range(LENGTH):
            if episode == 1 and step == 3:
                with pytest.raises(CollectionError, match=re.escape("episode 1 step 3: ")):
                    env.step(0)
                with pytest.raises(gym.error.ResetNeeded):  # not a new episode from mid-way
                    env.step(0)
                break
            env.step(0)
    env.create_dataset("exact/dc-v0")
    env.close()
    assert_only_good_episodes("exact/dc-v0", [0], kind)


def test_rewards_flags_and_infos_are_checked_too() -> None:
    rec = EpisodeRecorder(spaces.Box(0, 1, (2,), np.float32), spaces.Discrete(2), True)
    rec.begin_episode(7, None, None, np.zeros(2, np.float32), {"n": np.uint64(2**63 + 1)})
    ok = np.zeros(2, np.float32)
    with pytest.raises(CollectionError, match=re.escape("episode 7 step 0: reward value")):
        rec.add_step(0, ok, 2**53 + 1, False, False, {})
    assert not rec.in_episode  # the refused episode is dropped
    rec.begin_episode(8, None, None, ok, {})
    with pytest.raises(CollectionError, match=re.escape("episode 8 step 0: terminated value 2")):
        rec.add_step(0, ok, 1.0, 2, False, {})
    rec.begin_episode(9, None, None, ok, {"n": np.uint64(2**63 + 1)})
    with pytest.raises(
        CollectionError,
        match=re.escape("episode 9 step 0: info 'n' (earlier rows) value 9223372036854775809"),
    ):
        rec.add_step(0, ok, 1.0, False, False, {"n": -1})  # uint64 + int64 -> float64 rounds
    rec.begin_episode(10, None, None, ok, {"n": np.uint64(1)})
    rec.add_step(0, ok, 1.0, True, False, {"n": 2})  # exact: stored
    rec.end_episode()
    assert rec.take().table["id"].tolist() == [10]


def test_vector_recorder_names_the_sub_env_episode() -> None:
    rec = VectorRecorder(spaces.Box(0, 255, (2,), np.uint8), spaces.Discrete(2), 3)
    rec.begin(np.arange(3), np.array([4, 5, 6]), np.zeros((3, 2), np.uint8))
    bad = np.zeros((3, 2), np.int64)
    bad[1, 1] = 256
    with pytest.raises(
        CollectionError,
        match=re.escape(
            "episode 5 step 0: observation value 256 at (1, 1) (int64) cannot be stored"
        ),
    ):
        rec.step(np.zeros(3, np.int64), bad, np.ones(3), np.zeros(3, bool), np.zeros(3, bool))


@pytest.mark.parametrize(
    ("value", "dtype", "stored"),
    [
        (np.int8(-1), np.uint8, None),  # wraps to 255, which casts back to -1
        (np.array([-1]), np.uint64, None),
        (np.uint64(2**63), np.int64, None),
        (np.array([2.0**63]), np.int64, None),
        (np.array([np.nan]), np.int64, None),
        (2**53 + 1, np.float64, None),
        (np.array([2**24 + 1], np.int32), np.float32, None),
        (2, np.bool_, None),
        (np.array([255.0]), np.uint8, [255]),
        (np.array([np.nan, -np.inf], np.float64), np.float32, [np.nan, -np.inf]),
        (np.int16(-7), np.float32, -7.0),
        (True, np.int8, 1),
    ],
)
def test_exact_casts_only(value: Any, dtype: type, stored: Any) -> None:
    check = make_leaf_checker(np.dtype(dtype), np.shape(value), "x")
    if stored is None:
        with pytest.raises(ValueMismatch, match="cannot be stored exactly as"):
            check(value)
    else:
        check(value)
        out = exact_value(value, np.dtype(dtype), np.shape(value), "x")
        np.testing.assert_array_equal(out.astype(dtype), stored)


def test_a_python_int_action_out_of_range_is_refused() -> None:
    rec = EpisodeRecorder(spaces.Box(0, 1, (2,), np.float32), spaces.Discrete(2))
    ok = np.zeros(2, np.float32)
    rec.begin_episode(3, None, None, ok, {})
    rec.add_step(1, ok, 1.0, False, False, {})
    with pytest.raises(
        CollectionError,
        match=re.escape("episode 3 step 1: action value 9223372036854775808 (uint64) cannot"),
    ):
        rec.add_step(2**63, ok, 1.0, False, False, {})


def test_a_ray_worker_refuses_at_once_without_retrying() -> None:
    pytest.importorskip("ray")
    from collector.runners.ray import RolloutWorker

    worker_conf = {
        "env": ENV,
        "env_kwargs": {"kind": "big", "bad_episode": 2},
        "policy": {"_target_": "collector.policies.RandomPolicy"},
        "runner": {"name": "ray", "episode_retries": 2},
    }
    worker = RolloutWorker(worker_conf, 0, "lzf")
    # a retry on a fresh env would count resets from 0 again and record episode 2 as good
    with pytest.raises(CollectionError, match=re.escape(f"episode 2 step 3: {REFUSED['big']}")):
        worker.run([0, 1, 2])


def test_each_kind_of_value_reaches_its_row_exactly() -> None:
    """Every accepted form of a value (the column's own dtype or an exact cast, contiguous or
    strided, Python or numpy scalars) is stored as numpy would cast it; flags of a dropped
    episode do not stay behind for the next one's rows."""
    obs_space = spaces.Box(-10, 10, (3,), np.float32)
    rec = EpisodeRecorder(obs_space, spaces.Box(-1, 1, (2,), np.float32))
    f32 = np.array([0.5, -1.0, 2.0], np.float32)
    observations = [
        f32,
        f32.astype(np.float64),  # an exact cast
        f32.astype(">f4"),  # the other byte order
        np.array([[0.25, 9.0], [1.0, 9.0], [3.0, 9.0]], np.float32)[:, 0],  # strided
        np.asfortranarray(f32),
    ]
    actions = [
        np.array([0.5, -0.5], np.float32),
        np.array([0.25, 1.0], np.float64),
        np.array([[0.5, 7], [0.75, 7]], np.float32)[:, 0],
        np.array([1.0, -1.0], ">f4"),
        np.array([0.0, 0.125], np.float32),
    ]
    rewards = [1.0, np.float32(0.5), 2, np.float64(-3.5), True]
    flags = [(False, False), (np.False_, 0), (0, np.False_), (False, False), (np.True_, 1)]
    rec.begin_episode(0, None, None, f32, {})
    rec.add_step(actions[0], f32, 1.0, True, True, {})  # then dropped: the flags go with it
    rec.discard_episode()
    rec.begin_episode(1, None, None, f32, {})
    steps = zip(observations, actions, rewards, flags, strict=True)
    for obs, action, reward, (term, trunc) in steps:
        rec.add_step(action, obs, reward, term, trunc, {})
    assert rec.end_episode()
    batch = rec.take()
    np.testing.assert_array_equal(batch.observations[""], np.stack([f32, *observations]))
    assert batch.observations[""].dtype == np.float32
    np.testing.assert_array_equal(batch.actions[""], np.stack(actions).astype(np.float32))
    np.testing.assert_array_equal(batch.rewards, np.asarray(rewards, np.float64))
    assert batch.terminations.tolist() == [False, False, False, False, True]
    assert batch.truncations.tolist() == [False, False, False, False, True]


@pytest.mark.parametrize(
    ("space", "action", "stored"),
    [
        (spaces.Discrete(3), np.int64(2), 2),
        (spaces.Discrete(3), True, 1),
        (spaces.Discrete(3), np.int8(1), 1),
        (spaces.Discrete(3), np.array(2), 2),
        (spaces.Box(0, 255, (), np.uint8), 200, 200),
        (spaces.Box(-1, 1, (), np.float32), np.float32(0.5), 0.5),
        (spaces.Box(-1, 1, (), np.float32), 1, 1.0),
    ],
)
def test_a_scalar_action_is_stored_exactly(space: spaces.Space, action: Any, stored: Any) -> None:
    obs = np.zeros(2, np.float32)
    rec = EpisodeRecorder(spaces.Box(0, 1, (2,), np.float32), space)
    rec.begin_episode(0, None, None, obs, {})
    rec.add_step(action, obs, 0.0, True, False, {})
    rec.end_episode()
    taken = rec.take().actions[""]
    assert taken.dtype == space.dtype and taken.tolist() == [stored]


@pytest.mark.parametrize("value", [np.zeros(2, np.float32), np.zeros(4), np.zeros((1, 3))])
def test_an_observation_of_another_shape_is_refused(value: np.ndarray) -> None:
    rec = EpisodeRecorder(spaces.Box(0, 1, (3,), np.float32), spaces.Discrete(2))
    rec.begin_episode(4, None, None, np.zeros(3, np.float32), {})
    with pytest.raises(CollectionError, match=re.escape("episode 4 step 0: observation has shape")):
        rec.add_step(0, value, 0.0, False, False, {})
    assert not rec.in_episode


def test_a_reset_observation_is_checked_like_a_step_one() -> None:
    rec = EpisodeRecorder(spaces.Box(-4, 4, (3,), np.float32), spaces.Discrete(2))
    wide = np.array([0.5, -1.0, 3.0])  # float64, exactly representable
    rec.begin_episode(0, None, None, wide, {})
    rec.add_step(0, wide.astype(np.float32), 0.0, True, False, {})
    rec.end_episode()
    first = rec.take().observations[""][0]
    assert first.dtype == np.float32 and first.tolist() == [0.5, -1.0, 3.0]
    with pytest.raises(CollectionError, match=re.escape("observation has shape (2,) where")):
        rec.begin_episode(1, None, None, np.zeros(2, np.float32), {})
    with pytest.raises(CollectionError, match=re.escape("value 0.1 at (0,) (float64) cannot")):
        rec.begin_episode(2, None, None, np.array([0.1, 0, 0]), {})
    assert not rec.in_episode


class _FormsEnv(gym.Env):
    """Each step's observation, reward and flags in a form picked by the step number: the
    column's own dtype, exact casts, the other byte order, strided arrays, numpy scalars."""

    observation_space = spaces.Box(-100, 100, (3,), np.float32)
    action_space = spaces.Discrete(3)

    def __init__(self, action_space: spaces.Space) -> None:
        self.action_space = action_space
        self.t = self.length = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self.t, self.length = 0, 3 + (seed or 0) % 7
        return self._obs(), {}

    def _obs(self) -> Any:
        row = np.array([self.t, -self.t, 0.5], np.float32)
        forms = (row, row.astype(np.float64), row.astype(">f4"), np.repeat(row, 2)[::2])
        return forms[self.t % 4]

    def step(self, action: Any):  # type: ignore[override]
        self.t += 1
        reward = (1.5, np.float64(-2.0), np.float32(0.25), 3, True)[self.t % 5]
        end = self.t == self.length
        terminated = (end, np.bool_(end), int(end))[self.t % 3] if self.length % 2 else False
        truncated = (end and not self.length % 2, np.False_)[self.t % 2 if not end else 0]
        return self._obs(), reward, terminated, truncated, {}


class _FormsPolicy:
    """Actions in a form picked by the step number."""

    def __init__(self, space: spaces.Space) -> None:
        self.space, self.t = space, 0

    def reset(self, seed: int | None) -> None:
        self.t = 0

    def act(self, obs: Any) -> Any:
        self.t += 1
        if isinstance(self.space, spaces.Discrete):
            return (2, np.int64(1), np.int8(0), True, np.array(2))[self.t % 5]
        row = np.array([0.5, -0.25], np.float32)
        return (row, row.astype(np.float64), row.astype(">f4"), np.repeat(row, 2)[::2])[self.t % 4]


def _record(action_space: spaces.Space, rollout: bool) -> Any:
    """12 episodes into a recorder of 4 rows (it grows mid-episode), taken after episodes 4
    and 9 and at the end: by ``run_episode``, or step by step through ``add_step``."""
    from collector.rollout import run_episode
    from collector.seeding import env_seed
    from collector.storage import concat_batches

    env, policy = _FormsEnv(action_space), _FormsPolicy(action_space)
    rec = EpisodeRecorder(env.observation_space, action_space, rows=4)
    batches = []
    for episode in range(12):
        if rollout:
            run_episode(env, policy, rec, episode, entropy=3)
        else:
            seed = env_seed(3, episode)
            policy.reset(None)
            obs, info = env.reset(seed=seed)
            rec.begin_episode(episode, seed, None, obs, info)
            while True:
                action = policy.act(obs)
                obs, reward, terminated, truncated, info = env.step(action)
                rec.add_step(action, obs, reward, terminated, truncated, info)
                if terminated or truncated:
                    break
            rec.end_episode()
        if episode in (4, 9, 11):
            batches.append(rec.take())
    return concat_batches(batches)


@pytest.mark.parametrize(
    "action_space", [spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)], ids=str
)
def test_a_rollout_records_what_add_step_would(action_space: spaces.Space) -> None:
    """``run_episode`` records each form of a value as ``add_step`` does, across growth."""
    got, want = _record(action_space, rollout=True), _record(action_space, rollout=False)
    for group in ("observations", "actions"):
        assert getattr(got, group).keys() == getattr(want, group).keys()
        for name, column in getattr(want, group).items():
            assert getattr(got, group)[name].dtype == column.dtype
            np.testing.assert_array_equal(getattr(got, group)[name], column)
    for name in ("rewards", "terminations", "truncations"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    for name in ("id", "seed", "length", "return", "terminated", "truncated"):
        np.testing.assert_array_equal(got.table[name], want.table[name])
    assert got.terminations.any() and got.truncations.any()
