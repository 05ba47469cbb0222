"""``policy=mixture`` and ``policy.epsilon`` (issue 20 item 1): seeded, layout-independent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from helpers import CLI, cli_env, read_episodes

from collector import storage
from collector.collect import collect
from collector.errors import UsageError
from collector.policies import CartPoleHeuristic, EpsilonPolicy, RandomPolicy, build_policy
from collector.policy_mixture import MixturePolicy, mixture_choices
from collector.seeding import policy_seed

RANDOM = {"_target_": "collector.policies.RandomPolicy"}
HEURISTIC = {"_target_": "collector.policies.CartPoleHeuristic"}
CONSTANT_0 = {"_target_": "helpers.constant_action", "value": 0}
MIXTURE = {
    "_target_": "collector.policy_mixture.MixturePolicy",
    "policies": [RANDOM, HEURISTIC],
    "weights": [0.4, 0.6],
}
CARTPOLE = (spaces.Discrete(2), spaces.Box(-np.inf, np.inf, (4,), np.float32))
ENV = type("Spaces", (), {"action_space": CARTPOLE[0], "observation_space": CARTPOLE[1]})()


def run(dataset_id: str, policy: dict[str, Any], episodes: int = 30, **overrides: Any) -> str:
    cfg = {
        "env": "CartPole-v1",
        "episodes": episodes,
        "seed": 5,
        "dataset_id": dataset_id,
        "policy": policy,
        "checkpoint": {"every_episodes": 7},
        "progress": False,
        **overrides,
    }
    return collect(cfg).fingerprint


def mixture(weights: list[float] | None, policies: list[dict] | None = None) -> MixturePolicy:
    return MixturePolicy(policies or [RANDOM, HEURISTIC], *CARTPOLE, weights=weights)


# -- the mixture ------------------------------------------------------------------------------


def test_each_episode_is_played_by_the_sub_policy_its_seed_chooses() -> None:
    """The heuristic's episodes last 500 steps, random ones ~20: the choice shows in the data,
    and the dataset's provenance alone tells which sub-policy played each episode."""
    run("mix/a-v0", MIXTURE)
    provenance = storage.read_metadata(storage.dataset_path("mix/a-v0"))["provenance"]
    weights = provenance["config"]["policy"]["weights"]
    episodes = read_episodes("mix/a-v0")
    chosen = mixture_choices(weights, provenance["seed_entropy"], [ep["id"] for ep in episodes])
    assert 5 < chosen.sum() < 25  # both sub-policies played
    assert [ep["length"] >= 200 for ep in episodes] == (chosen == 1).tolist()
    chooser = mixture(weights)
    assert [chooser.choose(policy_seed(5, ep["id"])) for ep in episodes] == chosen.tolist()


def test_the_mixture_gives_one_fingerprint_twice_and_on_vector_envs() -> None:
    reference = run("mix/one-v0", MIXTURE)
    assert run("mix/again-v0", MIXTURE) == reference
    assert run("mix/vec-v0", MIXTURE, num_envs=4, vectorization_mode="sync") == reference
    other = run("mix/w-v0", {**MIXTURE, "weights": [0.6, 0.4]})
    assert other != reference  # negative control: the weights matter


def test_a_mixture_with_noise_runs_on_the_envs_own_vector_version() -> None:
    """``vector_entry_point`` (layout-dependent tier): one ``reset`` per segment, ``act_batch``."""
    policy = {**MIXTURE, "epsilon": 0.2}
    first = run(
        "vep/a-v0", policy, episodes=12, num_envs=4, vectorization_mode="vector_entry_point"
    )
    again = run(
        "vep/b-v0", policy, episodes=12, num_envs=4, vectorization_mode="vector_entry_point"
    )
    assert first == again
    assert storage.verify_dataset("vep/a-v0").episodes == 12


def test_nested_epsilon_and_mixtures_stay_layout_independent() -> None:
    policy = {
        **MIXTURE,
        "epsilon": 0.1,
        "policies": [{**HEURISTIC, "epsilon": 0.2}, {**MIXTURE, "weights": None}],
    }
    reference = run("nest/one-v0", policy, episodes=20)
    assert run("nest/vec-v0", policy, episodes=20, num_envs=3) == reference


def test_weights_are_respected_in_distribution() -> None:
    chooser = mixture([1.0, 0.0, 3.0], [RANDOM, RANDOM, HEURISTIC])
    n = 4000
    counts = np.bincount([chooser.choose(policy_seed(0, i)) for i in range(n)], minlength=3)
    assert counts[1] == 0  # a weight of 0 is never chosen
    assert abs(counts[2] / n - 0.75) < 0.035  # ~5 standard deviations (0.0068)
    equal = mixture(None)
    share = np.mean([equal.choose(policy_seed(1, i)) for i in range(n)])
    assert abs(share - 0.5) < 0.04


def test_act_batch_plays_the_sub_policy_reset_chose_for_every_row() -> None:
    """``vector_entry_point``: one ``reset`` for the whole batch."""
    policy = mixture([0.5, 0.5], [CONSTANT_0, HEURISTIC])
    obs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    heuristic = CartPoleHeuristic().act_batch(obs, 8)
    for seed in range(6):
        policy.reset(seed)
        expected = heuristic if policy.choose(seed) == 1 else np.zeros(8)
        np.testing.assert_array_equal(policy.act_batch(obs, 8), expected)


ROWS_RANDOM = {"_target_": "rows_policies.RowsRandom"}
ROWS_HEURISTIC = {"_target_": "rows_policies.RowsHeuristic"}


def test_in_rows_each_row_plays_its_own_episode_as_one_at_a_time() -> None:
    """A batched runner (``reset_row``/``act_rows``): rows start episodes at different steps,
    sub-policies and noise; every episode gets the actions it gets alone (``reset``/``act``)."""
    cfg = {
        **MIXTURE,
        "epsilon": 0.3,
        "policies": [{**ROWS_RANDOM, "epsilon": 0.2}, ROWS_HEURISTIC, ROWS_HEURISTIC],
        "weights": [1, 1, 1],
    }
    rows, alone = build_policy(cfg, ENV), build_policy(cfg, ENV)
    n, rng = 5, np.random.default_rng(1)
    episodes: list[tuple[int, list, list]] = []  # (seed, observations, actions)
    running: list[tuple[int, list, list]] = [None] * n  # type: ignore[list-item]
    for step in range(120):
        for row in range(n):
            if step % (3 + 2 * row) == 0:  # rows restart at different steps
                seed = policy_seed(9, len(episodes))
                running[row] = (seed, [], [])
                episodes.append(running[row])
                rows.reset_row(row, seed)
        obs = rng.normal(size=(n, 4)).astype(np.float32)
        actions = rows.act_rows(obs, n)
        for row in range(n):
            running[row][1].append(obs[row])
            running[row][2].append(int(actions[row]))
    assert len({rows.policy.choose(seed) for seed, *_ in episodes}) == 3  # all sub-policies play
    for seed, observations, actions in episodes:
        alone.reset(seed)
        assert [int(alone.act(o)) for o in observations] == actions, seed


def test_a_mixture_acts_in_rows_only_when_every_sub_policy_does() -> None:
    assert callable(getattr(mixture(None, [ROWS_RANDOM, ROWS_HEURISTIC]), "act_rows", None))
    assert not hasattr(mixture(None, [ROWS_RANDOM, RANDOM]), "act_rows")
    assert not hasattr(build_policy({**RANDOM, "epsilon": 0.5}, ENV), "reset_row")


def test_provenance_names_the_weights_and_sub_policies() -> None:
    built = build_policy({**MIXTURE, "weights": [1, 3], "epsilon": 0.5}, ENV)
    assert built.provenance() == {
        "epsilon": 0.5,
        "weights": [0.25, 0.75],
        "policies": [
            {"_target_": "collector.policies.RandomPolicy"},
            {"_target_": "collector.policies.CartPoleHeuristic"},
        ],
    }


# -- epsilon ----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [RANDOM, HEURISTIC, MIXTURE])
def test_epsilon_zero_records_the_bare_policys_data(policy: dict[str, Any]) -> None:
    bare = run("eps/bare-v0", policy, episodes=12)
    assert run("eps/zero-v0", {**policy, "epsilon": 0.0}, episodes=12) == bare
    assert run("eps/some-v0", {**policy, "epsilon": 0.3}, episodes=12) != bare  # control


def test_epsilon_one_acts_uniformly_at_random_from_its_own_stream() -> None:
    """Whatever the wrapped policy says, and independent of the wrapped policy's stream."""
    obs = np.array([0, 0, 0.2, 0], np.float32)  # the heuristic pushes right (1) here
    noisy = build_policy({**HEURISTIC, "epsilon": 1.0}, ENV)
    rows = []
    for episode in range(100):
        noisy.reset(policy_seed(0, episode))
        rows.append([noisy.act(obs) for _ in range(20)])
    assert abs(np.mean(rows) - 0.5) < 0.05  # 2000 fair coins: sd 0.011

    bare, wrapped = RandomPolicy(CARTPOLE[0]), build_policy({**RANDOM, "epsilon": 1.0}, ENV)
    bare.reset(3)
    wrapped.reset(3)
    same = np.mean([bare.act(obs) == wrapped.act(obs) for _ in range(2000)])
    assert 0.44 < same < 0.56  # two independent streams, not the bare policy's


def test_epsilon_replaces_the_share_it_says_in_act_batch_too() -> None:
    box = spaces.Box(-1.0, 1.0, (3,), np.float32)
    env = type("Spaces", (), {"action_space": box, "observation_space": CARTPOLE[1]})()
    policy = build_policy(
        {"_target_": "helpers.constant_action", "value": [5.0] * 3, "epsilon": 0.25}, env
    )
    assert isinstance(policy, EpsilonPolicy)
    policy.reset(11)
    obs = np.zeros((64, 4), np.float32)
    actions = np.concatenate([policy.act_batch(obs, 64) for _ in range(50)])
    replaced = (actions != 5.0).all(axis=1)
    assert abs(replaced.mean() - 0.25) < 0.04  # 3200 rows: sd 0.008
    assert actions.dtype == np.float32 and box.contains(actions[replaced][0])
    assert np.all(np.abs(actions[replaced]) <= 1.0)
    assert np.all(actions[~replaced] == 5.0)


# -- refused configs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["policy.weights=[1]"],
            "policy.weights has 1 weight(s) but policy.policies has 2 policies; give one weight "
            "per policy (or policy.weights=null for equal weights)",
        ),
        (["policy.weights=[1,-1]"], "policy.weights[1]=-1 must be a finite number >= 0"),
        (
            ["policy.weights=[0,0]"],
            "policy.weights are all 0; give at least one policy a positive weight",
        ),
        (
            ["policy.policies=[]"],
            "policy.policies is empty; give at least one policy config, e.g. "
            "policy.policies=[{_target_: collector.policies.RandomPolicy}]",
        ),
        (
            ["policy.policies=[1]", "policy.weights=null"],
            "policy.policies[0]=1 is not a policy config; give a mapping with a _target_, e.g. "
            "{_target_: collector.policies.RandomPolicy}",
        ),
        (
            ["policy.epsilon=1.5"],
            "policy.epsilon=1.5 must be a number in [0, 1], e.g. policy.epsilon=0.1",
        ),
        (
            ["policy.policies.1.epsilon=-1"],
            "policy.policies[1].epsilon=-1 must be a number in [0, 1], e.g. "
            "policy.policies[1].epsilon=0.1",
        ),
    ],
)
def test_a_bad_mixture_is_one_line_and_writes_nothing(
    overrides: list[str], line: str, datasets_root: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "policy=mixture", "episodes=2", *overrides,
         f"hydra.run.dir={datasets_root.parent / 'runs'}"],
        capture_output=True, text=True, timeout=120, env=cli_env(datasets_root),
        cwd=datasets_root.parent, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"collect: error: {line}"]
    assert not datasets_root.exists() or not any(p.is_file() for p in datasets_root.rglob("*"))


def test_the_python_api_refuses_the_same_way() -> None:
    with pytest.raises(UsageError, match=r"^policy\.weights\[0\]=nan must be"):
        mixture([float("nan"), 1.0])
    with pytest.raises(UsageError, match=r"^policy\.epsilon=True must be a number in \[0, 1\]"):
        build_policy({**RANDOM, "epsilon": True}, ENV)
    with pytest.raises(UsageError, match=r"^policy\.policies\[1\]: policy\._target_='no_such\.P'"):
        mixture(None, [RANDOM, {"_target_": "no_such.P"}])
    numpy_weights = mixture(np.array([1, 3]))  # numpy numbers are numbers too
    assert numpy_weights.weights.tolist() == [0.25, 0.75]
    assert build_policy({**RANDOM, "epsilon": np.float32(0.5)}, ENV).epsilon == 0.5


# -- Ray --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    pytest.importorskip("ray")
    from ray_support import module_ray

    yield from module_ray()


@pytest.mark.slow
def test_ray_gives_the_mixtures_local_fingerprint(ray_address: str) -> None:
    from ray_support import on_ray

    policy = {**MIXTURE, "epsilon": 0.1}
    reference = run("ray/local-v0", policy, episodes=40)
    assert run("ray/ray-v0", policy, episodes=40, runner=on_ray(batch_seconds=0.01)) == reference
    vector = run("ray/vec-v0", policy, episodes=40, runner=on_ray(), num_envs=4)
    assert vector == reference
    assert storage.verify_dataset("ray/vec-v0").ok
