"""Policy loaders (SB3 zips, torch modules), batched inference, and importing ``_target_``s.

A tiny PPO is trained here on CartPole (a module fixture, seconds) and a tiny torch MLP is
built here; both are saved to files and collected from like a user's checkpoint.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from collector.errors import UsageError
from collector.policies import build_policy

CARTPOLE = gym.make("CartPole-v1")


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory that is not on ``sys.path`` (as for the ``collect`` script)."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(folder))])
    yield folder
    for name in [m for m in sys.modules if m.startswith("harvest_user_")]:
        del sys.modules[name]  # the test's own modules go with its folder


def write_module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


# -- importing _target_s (issue 20 item 3) -----------------------------------------------------


def test_a_policy_in_the_working_directory_is_importable(user_folder: Path) -> None:
    write_module(
        user_folder,
        "harvest_user_pol",
        """
        class Left:
            def reset(self, seed):
                pass

            def act(self, obs):
                return 0
        """,
    )
    policy = build_policy({"_target_": "harvest_user_pol.Left"}, CARTPOLE)
    assert policy.act(np.zeros(4, np.float32)) == 0


def test_an_import_error_names_the_module_and_its_cause(user_folder: Path) -> None:
    write_module(user_folder, "harvest_user_dep", "import harvest_missing_dependency\n")
    with pytest.raises(UsageError) as info:
        build_policy({"_target_": "harvest_user_dep.Pol"}, CARTPOLE)
    text = str(info.value)
    assert "No module named 'harvest_missing_dependency'" in text
    assert "harvest_user_dep.py:1" in text  # where the import failed
    assert "\n" not in text


def test_an_import_error_without_a_message_still_says_what_and_where(user_folder: Path) -> None:
    write_module(user_folder, "harvest_user_bare", "x = 1\nraise ImportError\n")
    with pytest.raises(UsageError) as info:
        build_policy({"_target_": "harvest_user_bare.Pol"}, CARTPOLE)
    text = str(info.value)
    assert "(ImportError)" not in text and "ImportError: )" not in text
    assert "harvest_user_bare.py:2" in text
    assert "module None" not in text


def test_a_module_not_found_error_without_a_name_never_says_module_none(
    user_folder: Path,
) -> None:
    write_module(user_folder, "harvest_user_odd", "raise ModuleNotFoundError('plugin gone')\n")
    with pytest.raises(UsageError) as info:
        build_policy({"_target_": "harvest_user_odd.Pol"}, CARTPOLE)
    text = str(info.value)
    assert "plugin gone" in text and "harvest_user_odd.py:1" in text
    assert "None" not in text


def test_a_missing_top_level_module_says_where_it_was_looked_for(user_folder: Path) -> None:
    with pytest.raises(UsageError) as info:
        build_policy({"_target_": "harvest_nowhere.Pol"}, CARTPOLE)
    text = str(info.value)
    assert "No module named 'harvest_nowhere'" in text
    assert str(user_folder) in text


def test_relative_checkpoint_paths_resolve_against_the_given_cwd(user_folder: Path) -> None:
    write_module(
        user_folder,
        "harvest_user_path",
        """
        class Echo:
            def __init__(self, path, state_dict=None):
                self.path, self.state_dict = path, state_dict

            def reset(self, seed):
                pass

            def act(self, obs):
                return 0
        """,
    )
    cfg = {"_target_": "harvest_user_path.Echo", "path": "ckpt/a.zip", "state_dict": "/abs/b.pt"}
    here: Any = build_policy(cfg, SimpleNamespace(**vars_of(CARTPOLE)))
    assert here.path == str(user_folder / "ckpt/a.zip")
    assert here.state_dict == "/abs/b.pt"
    driver: Any = build_policy(cfg, CARTPOLE, cwd="/driver/dir")  # as on a Ray worker
    assert driver.path == "/driver/dir/ckpt/a.zip"


def vars_of(env: gym.Env) -> dict[str, Any]:
    return {"observation_space": env.observation_space, "action_space": env.action_space}


# -- loaders: fixtures -------------------------------------------------------------------------

#: A 2-layer MLP whose argmax is ``CartPoleHeuristic``'s rule (returns ~500), by hand.
NET_SOURCE = """
import torch


class Net(torch.nn.Module):
    def __init__(self, observation_space, action_space, hidden=8):
        super().__init__()
        n_in, n_out = observation_space.shape[0], int(action_space.n)
        self.body = torch.nn.Sequential(
            torch.nn.Linear(n_in, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, n_out)
        )

    def forward(self, x):
        return self.body(x)
"""


def heuristic_net(path: Path) -> None:
    """Save a ``Net`` state_dict whose logits are +-tanh(heuristic score)."""
    import torch

    torch.manual_seed(0)
    ns: dict[str, Any] = {}
    exec(NET_SOURCE, ns)
    net = ns["Net"](CARTPOLE.observation_space, CARTPOLE.action_space)
    with torch.no_grad():
        first, last = net.body[0], net.body[2]
        first.weight.zero_()
        first.bias.zero_()
        first.weight[0] = torch.tensor([0.01, 0.1, 1.0, 0.5])  # x, x_dot, theta, theta_dot
        last.weight.zero_()
        last.bias.zero_()
        last.weight[1, 0], last.weight[0, 0] = 3.0, -3.0
    torch.save(net.state_dict(), path)


@pytest.fixture(scope="module")
def ppo_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PPO trained on CartPole-v1 here (~10 s on one CPU), saved as a model.zip."""
    pytest.importorskip("stable_baselines3")
    import torch
    from stable_baselines3 import PPO

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = PPO(
            "MlpPolicy",
            gym.make("CartPole-v1"),
            n_steps=256,
            batch_size=64,
            policy_kwargs={"net_arch": [32, 32]},
            seed=0,
            device="cpu",
        )
        model.learn(10_000)
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("sb3") / "ppo.zip"
    model.save(path)
    return path


def collect_with(policy: dict[str, Any], dataset_id: str, **overrides: Any) -> Any:
    from collector.collect import collect

    cfg = {
        "env": "CartPole-v1",
        "episodes": 8,
        "seed": 5,
        "dataset_id": dataset_id,
        "policy": policy,
        **overrides,
    }
    return collect(cfg)


def mean_return(dataset_id: str) -> float:
    from helpers import read_episodes

    return float(np.mean([ep["return"] for ep in read_episodes(dataset_id)]))


# -- loaders ----------------------------------------------------------------------------------


def test_the_algorithm_is_read_from_the_zip_without_unpickling(ppo_zip: Path) -> None:
    from collector.policy_loaders import sb3_algo

    assert sb3_algo(str(ppo_zip)) == "PPO"


def test_sb3_same_fingerprint_local_and_four_sync_envs_and_beats_random(ppo_zip: Path) -> None:
    policy = {"_target_": "collector.policy_loaders.SB3Policy", "path": str(ppo_zip)}
    local = collect_with(policy, "sb3/one-v0")
    vector = collect_with(policy, "sb3/four-v0", num_envs=4, vectorization_mode="sync")
    assert vector.fingerprint == local.fingerprint
    collect_with({"_target_": "collector.policies.RandomPolicy"}, "sb3/random-v0")
    assert mean_return("sb3/one-v0") > 3 * mean_return("sb3/random-v0")


def test_sb3_sampling_uses_the_episode_streams(ppo_zip: Path) -> None:
    """deterministic=false: the same episodes whatever the width, not torch's global RNG."""
    import torch

    policy = {
        "_target_": "collector.policy_loaders.SB3Policy",
        "path": str(ppo_zip),
        "deterministic": False,
    }
    torch.manual_seed(1)
    local = collect_with(policy, "sb3s/one-v0")
    torch.manual_seed(2)
    vector = collect_with(policy, "sb3s/four-v0", num_envs=4)
    assert vector.fingerprint == local.fingerprint
    greedy = {**policy, "deterministic": True}
    assert collect_with(greedy, "sb3s/greedy-v0").fingerprint != local.fingerprint


def test_torch_state_dict_same_fingerprint_local_four_envs_and_ray(
    user_folder: Path, ray_address: str
) -> None:
    """The CleanRL shape: a module class in the user's folder and a relative checkpoint."""
    from ray_support import on_ray

    write_module(user_folder, "harvest_user_net", NET_SOURCE)
    heuristic_net(user_folder / "net.pt")
    policy = {
        "_target_": "collector.policy_loaders.TorchPolicy",
        "module": {"_target_": "harvest_user_net.Net"},
        "state_dict": "net.pt",
        "device": "auto",
    }
    local = collect_with(policy, "torch/one-v0")
    vector = collect_with(policy, "torch/four-v0", num_envs=4)
    ray = collect_with(policy, "torch/ray-v0", runner=on_ray(workers=1), num_envs=2)
    assert vector.fingerprint == local.fingerprint == ray.fingerprint
    heuristic = collect_with({"_target_": "collector.policies.CartPoleHeuristic"}, "torch/h-v0")
    assert heuristic.fingerprint == local.fingerprint  # the net is the heuristic
    collect_with({"_target_": "collector.policies.RandomPolicy"}, "torch/random-v0")
    assert mean_return("torch/one-v0") > 3 * mean_return("torch/random-v0")


@pytest.fixture(scope="module")
def ray_address() -> Any:
    from ray_support import module_ray

    yield from module_ray()
