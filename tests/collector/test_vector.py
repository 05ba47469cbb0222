"""Vector envs on the local runner: same episodes as num_envs=1, whatever the width or mode."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import read_episodes

from collector import storage
from collector.collect import collect
from collector.errors import UsageError
from collector.runners.vector import split_infos


def run(dataset_id: str, **overrides: object) -> str:
    cfg = {
        "env": "CartPole-v1",
        "episodes": 60,
        "seed": 3,
        "dataset_id": dataset_id,
        "policy": {"_target_": "collector.policies.RandomPolicy"},
        "checkpoint": {"every_episodes": 7},
        **overrides,
    }
    return collect(cfg).fingerprint


@pytest.mark.parametrize(
    ("num_envs", "mode"), [(2, "sync"), (8, "sync"), (3, "async"), (64, "sync")]
)
def test_fingerprint_matches_the_single_env_run(num_envs: int, mode: str) -> None:
    single = run("v/one-v0")
    vector = run("v/many-v0", num_envs=num_envs, vectorization_mode=mode)
    assert vector == single
    report = storage.verify_dataset("v/many-v0")
    assert report.ok and report.fingerprint == single and report.episodes == 60


def test_infos_match_too() -> None:
    assert run("v/i1-v0", record_infos=True) == run("v/i4-v0", record_infos=True, num_envs=4)


@pytest.mark.parametrize("length", [1, 3])
def test_episodes_of_one_step_and_episodes_ending_together(length: int) -> None:
    env = "vec_envs:harvest-test/FixedLength-v0"
    kwargs = {"env": env, "env_kwargs": {"length": length}, "record_infos": True}
    single = run("v/fix1-v0", **kwargs)
    vector = run("v/fix8-v0", num_envs=8, **kwargs)
    assert vector == single
    episodes = read_episodes("v/fix8-v0")
    assert [e["id"] for e in episodes] == list(range(60))
    for ep in episodes:
        assert ep["length"] == length and ep["terminated"]
        assert len(ep["observations"]) == length + 1  # no spurious reset rows
        values, mask = ep["infos"]["last/a"]
        assert mask.tolist() == [False] * length + [True]


def test_more_envs_than_episodes_and_resume() -> None:
    first = run("v/small-v0", episodes=3, num_envs=8)
    assert first == run("v/small-ref-v0", episodes=3)
    more = run("v/small-v0", episodes=20, num_envs=8, vectorization_mode="async")
    assert more == run("v/small-ref2-v0", episodes=20)


def test_split_infos_follows_the_mask_convention() -> None:
    infos = {
        "a": np.array([1, 2]),
        "_a": np.array([True, False]),
        "ep": {"r": np.array([0.0, 5.0]), "_r": np.array([False, True])},
        "_ep": np.array([False, True]),
    }
    assert split_infos(infos, 0) == {"a": 1}
    assert split_infos(infos, 1) == {"ep": {"r": 5.0}}


def test_bad_vector_settings_are_refused() -> None:
    with pytest.raises(UsageError, match="num_envs=0 must be a positive integer"):
        run("v/bad-v0", num_envs=0)
    with pytest.raises(UsageError, match="vectorization_mode='fast'"):
        run("v/bad-v0", num_envs=2, vectorization_mode="fast")
