"""Policy loaders (SB3 zips, torch modules), batched inference, and importing ``_target_``s.

A tiny PPO is trained on CartPole (the session fixture ``ppo_zip``, tests/conftest.py) and a
tiny torch MLP is built here; both are saved to files and collected from like a user's checkpoint.
"""

from __future__ import annotations

import sys
import textwrap
import warnings
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


def test_sb3_same_fingerprint_local_four_sync_envs_and_ray_and_beats_random(
    ppo_zip: Path, ray_address: str
) -> None:
    from ray_support import on_ray

    policy = {"_target_": "collector.policy_loaders.SB3Policy", "path": str(ppo_zip)}
    local = collect_with(policy, "sb3/one-v0")
    vector = collect_with(policy, "sb3/four-v0", num_envs=4, vectorization_mode="sync")
    ray = collect_with(policy, "sb3/ray-v0", runner=on_ray(workers=1))
    assert vector.fingerprint == local.fingerprint == ray.fingerprint
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


def test_torchscript_and_export_files_act_as_the_module_does(user_folder: Path) -> None:
    import torch

    write_module(user_folder, "harvest_user_net2", NET_SOURCE)
    heuristic_net(user_folder / "net.pt")
    from collector.policies import locate

    net = locate("harvest_user_net2.Net")(CARTPOLE.observation_space, CARTPOLE.action_space)
    net.load_state_dict(torch.load(user_folder / "net.pt", weights_only=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in 2.10+
        torch.jit.script(net).save(str(user_folder / "net.ts"))
    example = (torch.zeros(2, 4),)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(net, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, str(user_folder / "net.pt2"))
    spaces = vars_of(CARTPOLE)
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32) * 0.2
    expected = obs @ np.array([0.01, 0.1, 1.0, 0.5], np.float32) > 0
    by_method = {**TORCH, "module": {"_target_": "harvest_user_net2.Net"}, "state_dict": "net.pt"}
    body: Any = build_policy({**by_method, "method": "body"}, CARTPOLE)  # CleanRL's "actor"
    assert body.act_batch(obs, 32).tolist() == expected.astype(int).tolist()
    for path, source in [("net.ts", "torchscript"), ("net.pt2", "torch.export")]:
        policy = build_policy({**TORCH, "path": path}, SimpleNamespace(**spaces))
        assert policy.provenance()["source"] == source  # type: ignore[attr-defined]
        assert policy.act_batch(obs, 32).tolist() == expected.astype(int).tolist()  # type: ignore[attr-defined]
        assert [int(policy.act(o)) for o in obs] == expected.astype(int).tolist()


TORCH = {"_target_": "collector.policy_loaders.TorchPolicy", "device": "cpu"}


class Gaussian:
    """A Box policy module: (mean, log_std) of a Pendulum action, mean far out of bounds."""

    @staticmethod
    def build(folder: Path) -> dict[str, Any]:
        import torch

        write_module(
            folder,
            "harvest_user_gauss",
            """
            import torch

            class Gauss(torch.nn.Module):
                def __init__(self, observation_space, action_space):
                    super().__init__()
                    self.mean = torch.nn.Linear(observation_space.shape[0], action_space.shape[0])
                    self.log_std = torch.nn.Parameter(torch.zeros(action_space.shape[0]))

                def forward(self, x):
                    return self.mean(x), self.log_std.expand(x.shape[0], -1)
            """,
        )
        state = {
            "mean.weight": torch.tensor([[4.0, 0.0, 0.0]]),
            "mean.bias": torch.tensor([0.0]),
            "log_std": torch.tensor([-1.0]),
        }
        torch.save(state, folder / "gauss.pt")
        return {
            **TORCH,
            "module": {"_target_": "harvest_user_gauss.Gauss"},
            "state_dict": "gauss.pt",
        }


def test_box_actions_are_clipped_and_sampled_from_each_rows_own_stream(user_folder: Path) -> None:
    pendulum = gym.make("Pendulum-v1")
    cfg = Gaussian.build(user_folder)
    greedy: Any = build_policy(cfg, pendulum)
    obs = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.1, 0.0, 0.0]], np.float32)
    assert greedy.act_batch(obs, 3)[:, 0].tolist() == pytest.approx([2.0, -2.0, 0.4])
    assert greedy.act(obs[2]).dtype == pendulum.action_space.dtype
    sampler: Any = build_policy({**cfg, "deterministic": False}, pendulum)
    one_by_one = []
    for seed in (11, 12, 13):  # each episode alone, as the local runner runs it
        sampler.reset(seed)
        one_by_one.append([sampler.act(obs[2])[0] for _ in range(4)])
    for row, seed in enumerate((11, 12, 13)):
        sampler.reset_row(row, seed)
    together = np.stack([sampler.act_rows(np.stack([obs[2]] * 3), 3)[:, 0] for _ in range(4)])
    np.testing.assert_allclose(together.T, one_by_one, rtol=1e-6)
    assert len({tuple(r) for r in one_by_one}) == 3  # the streams differ
    assert all(-2.0 <= a <= 2.0 for r in one_by_one for a in r)


def test_a_missing_extra_is_one_line_naming_it(
    ppo_zip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # import fails as if absent
    cfg = {"_target_": "collector.policy_loaders.SB3Policy", "path": str(ppo_zip)}
    with pytest.raises(UsageError) as info:
        build_policy(cfg, CARTPOLE)
    assert str(info.value) == ("policy=sb3 needs stable-baselines3: pip install 'harvest[sb3]'")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(
        UsageError, match=r"^policy=torch needs torch: pip install 'harvest\[torch\]'$"
    ):
        build_policy({**TORCH, "path": "x.ts"}, CARTPOLE)


def test_a_pickled_checkpoint_is_refused_without_running_its_code(user_folder: Path) -> None:
    import pickle

    import torch

    write_module(user_folder, "harvest_user_net3", NET_SOURCE)
    marker = user_folder / "ran"

    class Payload:
        def __reduce__(self) -> Any:
            return (Path.touch, (marker,))

    torch.save({"body.0.weight": Payload()}, user_folder / "evil.pt", pickle_module=pickle)
    cfg = {**TORCH, "module": {"_target_": "harvest_user_net3.Net"}, "state_dict": "evil.pt"}
    with pytest.raises(UsageError, match="is not a tensors-only checkpoint"):
        build_policy(cfg, CARTPOLE)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"device": "cuda"}, "policy.device='cuda' but torch sees no CUDA GPU"),
        ({}, "policy=torch needs policy.path (a TorchScript or torch.export file) or"),
        ({"path": "nope.ts"}, "policy.path='"),
        (
            {"module": {"_target_": "harvest_user_net4.Net"}},
            "policy.module needs policy.state_dict",
        ),
        (
            {"module": {"_target_": "harvest_user_net4.Net", "hidden": 3}, "state_dict": "net.pt"},
            "does not fit policy.module (RuntimeError",
        ),
        ({"path": "net.pt"}, "is neither a TorchScript nor a torch.export file"),
        (
            {
                "module": {"_target_": "harvest_user_net4.Net"},
                "state_dict": "net.pt",
                "method": "x",
            },
            "policy.method='x': the module has no such method",
        ),
        ({"path": "net.pt", "dtype": "float16"}, "policy.dtype='float16' must be auto"),
        (
            {"module": {"_target_": "harvest_user_nomod.Net"}, "state_dict": "net.pt"},
            "policy.module._target_='harvest_user_nomod.Net' cannot be imported",
        ),
    ],
)
def test_bad_torch_configs_are_one_line(
    user_folder: Path, cfg: dict[str, Any], message: str
) -> None:
    pytest.importorskip("torch")
    if "cuda" in str(cfg) and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    write_module(user_folder, "harvest_user_net4", NET_SOURCE)
    heuristic_net(user_folder / "net.pt")
    with pytest.raises(UsageError) as info:
        build_policy({**TORCH, **cfg}, CARTPOLE)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_model_for_other_spaces_is_refused(ppo_zip: Path) -> None:
    cfg = {"_target_": "collector.policy_loaders.SB3Policy", "path": str(ppo_zip)}
    with pytest.raises(UsageError, match="the model was trained with observation space Box"):
        build_policy(cfg, gym.make("Acrobot-v1"))


MLP_SOURCE = """
import torch


class Mlp(torch.nn.Module):
    def __init__(self, observation_space, action_space):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(observation_space.shape[0], 64), torch.nn.Tanh(),
            torch.nn.Linear(64, 64), torch.nn.Tanh(),
            torch.nn.Linear(64, action_space.shape[0]),
        )

    def forward(self, x):
        return self.body(x)
"""


def test_a_box_policy_keeps_its_fingerprint_whatever_num_envs(user_folder: Path) -> None:
    """float64 compute (dtype=auto) makes a batched forward pass's rounding vanish."""
    import torch

    write_module(user_folder, "harvest_user_mlp", MLP_SOURCE)
    pendulum = gym.make("Pendulum-v1")
    torch.manual_seed(0)
    from collector.policies import locate

    mlp = locate("harvest_user_mlp.Mlp")(pendulum.observation_space, pendulum.action_space)
    torch.save(mlp.state_dict(), user_folder / "mlp.pt")
    policy = {**TORCH, "module": {"_target_": "harvest_user_mlp.Mlp"}, "state_dict": "mlp.pt"}
    runs = {
        (dtype, n): collect_with(
            {**policy, "dtype": dtype}, f"box/{dtype}-{n}-v0", env="Pendulum-v1", num_envs=n
        ).fingerprint
        for dtype in ("auto", "float32")
        for n in (1, 4)
    }
    assert runs["auto", 1] == runs["auto", 4]
    # the negative control: in float32 the batch of 4 rounds differently than one row
    assert runs["float32", 1] != runs["float32", 4]


@pytest.mark.parametrize(
    ("module", "extra", "algo"),
    [
        ("stable_baselines3.common.policies", {"clip_range": 0.2}, "PPO"),
        ("stable_baselines3.common.policies", {}, "A2C"),
        ("stable_baselines3.dqn.policies", {}, "DQN"),
        ("stable_baselines3.sac.policies", {}, "SAC"),
        ("stable_baselines3.td3.policies", {}, "TD3"),
        ("sb3_contrib.tqc.policies", {}, None),
    ],
)
def test_the_algorithm_is_told_by_the_policy_class_module(
    tmp_path: Path, module: str, extra: dict[str, Any], algo: str | None
) -> None:
    import json
    import zipfile

    from collector.policy_loaders import sb3_algo

    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data", json.dumps({"policy_class": {"__module__": module}, **extra}))
    if algo is not None:
        assert sb3_algo(str(path)) == algo
    else:
        with pytest.raises(UsageError, match="cannot tell the algorithm .* set policy.algo"):
            sb3_algo(str(path))
    path.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="is not a Stable-Baselines3 zip"):
        sb3_algo(str(path))
