"""SB3 Box policies act the same whatever the batch width (issue 20 item 2).

SB3 computes in float32, where a batched matrix product may round a row differently than a
batch of one; ``SB3Policy`` evaluates the actor in float64 (the observations preprocessed as
SB3 does), so the float32 actions do not depend on ``num_envs``. Tiny agents are trained here
on Pendulum-v1 (seconds each; the width does not need a good agent, only a trained one).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from sb3_models import train

from collector.errors import UsageError
from collector.policy_loaders import SB3Policy

pytest.importorskip("stable_baselines3")

PENDULUM = gym.make("Pendulum-v1")


def kwargs(algo: str) -> dict:
    net = {"policy_kwargs": {"net_arch": [32, 32]}}  # a fresh dict: SAC writes into it
    return {
        "PPO": {**net, "n_steps": 256, "batch_size": 64},
        "A2C": net,
        "SAC": {**net, "learning_starts": 100},
        "TD3": {**net, "learning_starts": 100},
    }[algo]


STEPS = {"PPO": 2048, "A2C": 1000, "SAC": 600, "TD3": 600}


@pytest.fixture(scope="module")
def box_zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sb3-box")
    return {a: train(a, "Pendulum-v1", STEPS[a], folder / f"{a}.zip", **kwargs(a)) for a in STEPS}


def observations(n: int = 256) -> np.ndarray:
    space = PENDULUM.observation_space
    return np.random.default_rng(0).uniform(space.low, space.high, (n, 3)).astype(np.float32)


@pytest.mark.parametrize("algo", sorted(STEPS))
def test_box_actions_do_not_depend_on_the_batch_width_and_match_sb3(
    box_zips: dict[str, Path], algo: str
) -> None:
    policy = SB3Policy(PENDULUM.action_space, PENDULUM.observation_space, str(box_zips[algo]))
    obs = observations()
    single = np.stack([policy.act(o) for o in obs])
    assert single.dtype == np.float32
    for width in (2, 4, 64, 256):
        rows = np.concatenate(
            [policy.act_rows(obs[i : i + width], width) for i in range(0, 256, width)]
        )
        assert np.array_equal(rows, single), (algo, width)
    # SB3's own predict, up to float32 rounding
    theirs, _ = policy.model.predict(obs, deterministic=True)
    np.testing.assert_allclose(single, theirs, rtol=1e-5, atol=1e-6)
    assert policy.provenance()["dtype"] == "float64"


def test_a_box_ppo_keeps_its_fingerprint_for_one_and_four_envs(box_zips: dict[str, Path]) -> None:
    from collector.collect import collect

    def run(dataset_id: str, deterministic: bool, num_envs: int) -> str:
        policy = {
            "_target_": "collector.policy_loaders.SB3Policy",
            "path": str(box_zips["PPO"]),
            "deterministic": deterministic,
        }
        cfg = {"env": "Pendulum-v1", "episodes": 4, "max_episode_steps": 50, "seed": 2}
        cfg |= {"policy": policy, "dataset_id": dataset_id, "progress": False}
        return collect({**cfg, "num_envs": num_envs}).fingerprint

    assert run("pend/one-v0", True, 1) == run("pend/four-v0", True, 4)
    assert run("pend/s1-v0", False, 1) == run("pend/s4-v0", False, 4)


def test_a_policy_it_does_not_know_stays_in_float32_and_says_so(tmp_path: Path) -> None:
    """gSDE: SB3's own float32 predict, and ``dtype`` in provenance tells which."""
    path = train("PPO", "Pendulum-v1", 64, tmp_path / "sde.zip", use_sde=True, n_steps=64)
    policy = SB3Policy(PENDULUM.action_space, PENDULUM.observation_space, str(path))
    assert policy.provenance()["dtype"] == "float32"
    obs = observations(8)
    theirs, _ = policy.model.predict(obs, deterministic=True)
    assert np.array_equal(policy.act_rows(obs, 8), theirs)
    with pytest.raises(UsageError, match="policy.dtype=float64: this PPO policy") as info:
        SB3Policy(PENDULUM.action_space, PENDULUM.observation_space, str(path), dtype="float64")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="policy.dtype='half' must be auto, float32 or float64"):
        SB3Policy(PENDULUM.action_space, PENDULUM.observation_space, str(path), dtype="half")


def test_dtype_float32_is_sb3s_own_predict_and_depends_on_the_width(
    box_zips: dict[str, Path],
) -> None:
    """The negative control: what ``dtype=auto`` avoids."""
    path = str(box_zips["PPO"])
    policy = SB3Policy(PENDULUM.action_space, PENDULUM.observation_space, path, dtype="float32")
    assert policy.provenance()["dtype"] == "float32"
    obs = observations()
    theirs, _ = policy.model.predict(obs, deterministic=True)
    assert np.array_equal(policy.act_rows(obs, 256), theirs)
    single = np.stack([policy.act(o) for o in obs])
    if np.array_equal(single, theirs):  # seen with MKL and OpenBLAS on x86-64, not promised
        pytest.skip("this BLAS rounds float32 the same at every batch width")
