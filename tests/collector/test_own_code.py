"""Issue 16 item 20: the user's own env and policy, in the folder ``collect`` runs in.

The command line runs as the console script does: ``python -P`` keeps the current folder off
``sys.path`` (``python -c`` would put it there, which the installed ``collect`` never does).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import CLI, cli_env

from collector.errors import UsageError

MY_ENV = """
import gymnasium as gym
import numpy as np


class MyEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self._t += 1
        return np.full(2, 0.5, np.float32), 1.0, self._t >= 3, False, {}


gym.register("MyStrEnv-v0", entry_point="my_env:MyEnv")
gym.register("MyClassEnv-v0", entry_point=MyEnv)
"""

MY_POLICY = """
class MyPolicy:
    def __init__(self, action_space):
        self.action_space = action_space

    def reset(self, seed):
        pass

    def act(self, obs):
        return 1
"""


MY_WRAPPER = """
import gymnasium as gym


class Scale(gym.ObservationWrapper):  # records no constructor arguments of its own
    def __init__(self, env, scale):
        super().__init__(env)
        self.scale = scale
        self.observation_space = gym.spaces.Box(
            env.observation_space.low * scale, env.observation_space.high * scale
        )

    def observation(self, obs):
        return obs * self.scale
"""


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "my_env.py").write_text(MY_ENV)
    (folder / "my_policy.py").write_text(MY_POLICY)
    (folder / "my_broken.py").write_text("import harvest_not_installed_dep\n")
    (folder / "my_wrap.py").write_text(MY_WRAPPER)
    return folder


def collect(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-c", CLI, *args, "hydra.output_subdir=null"],
        env=cli_env(cwd.parent / "datasets"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def stored(cwd: Path, dataset_id: str) -> dict:
    return json.loads((cwd.parent / "datasets" / dataset_id / "metadata.json").read_text())


def test_an_env_and_policy_in_the_current_folder_are_importable(cwd: Path) -> None:
    proc = collect(
        cwd,
        "env=my_env:MyStrEnv-v0",
        "policy._target_=my_policy.MyPolicy",
        "episodes=2",
        "dataset_id=mine/str-v0",
    )
    assert proc.returncode == 0, proc.stderr
    meta = stored(cwd, "mine/str-v0")
    assert meta["total_episodes"] == 2 and meta["total_steps"] == 6


def test_an_env_registered_with_a_class_entry_point(cwd: Path) -> None:
    proc = collect(cwd, "env=my_env:MyClassEnv-v0", "episodes=1", "dataset_id=mine/cls-v0")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "not JSON" not in proc.stderr
    spec = stored(cwd, "mine/cls-v0")["env_spec"]
    assert spec["id"] == "MyClassEnv-v0" and spec["entry_point"] == "my_env:MyEnv"


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        (["env=nope_mod:X-v0"], ["env='nope_mod:X-v0'", "No module named 'nope_mod'"]),
        (
            ["policy._target_=nope_mod.X"],
            ["policy._target_='nope_mod.X'", "No module named 'nope_mod'"],
        ),
        (
            ["policy._target_=my_broken.Policy"],
            ["policy._target_='my_broken.Policy'", "No module named 'harvest_not_installed_dep'"],
        ),
        (
            ["policy._target_=my_policy.Missing"],
            ["policy._target_='my_policy.Missing'", "has no attribute 'Missing'"],
        ),
        (["env=ALE/Pongg-v5"], ["is not a registered", "did you mean ALE/Pong-v5"]),
        (
            ["wrappers=[{_target_:my_broken.Wrap}]"],
            [
                "wrappers[0]._target_='my_broken.Wrap'",
                "No module named 'harvest_not_installed_dep'",
            ],
        ),
    ],
)
def test_import_errors_name_their_cause(cwd: Path, args: list[str], wanted: list[str]) -> None:
    proc = collect(cwd, *args, "episodes=1")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("collect: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    for text in wanted:
        assert text in proc.stderr
    assert "None" not in proc.stderr and "(ImportError)" not in proc.stderr


def test_a_wrapper_in_the_current_folder_is_importable_and_recovered_with_the_opt_in(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from curation import load_dataset

    proc = collect(
        cwd, "wrappers=[{_target_:my_wrap.Scale,scale:2.0}]", "episodes=1", "dataset_id=mine/w-v0"
    )
    assert proc.returncode == 0, proc.stderr
    spec = stored(cwd, "mine/w-v0")["env_spec"]
    # Scale records no arguments itself: the config's are stored, so gym.make can rebuild it
    assert spec["additional_wrappers"] == [
        {"name": "Scale", "entry_point": "my_wrap:Scale", "kwargs": {"scale": 2.0}}
    ]
    ds = load_dataset("mine/w-v0", cwd.parent / "datasets")
    with pytest.raises(UsageError, match=re.escape("wrapper entry_point 'my_wrap:Scale'")):
        ds.recover_environment()
    monkeypatch.syspath_prepend(str(cwd))
    env = ds.recover_environment(trust_remote_code=True)
    try:
        episode = ds[0]
        obs, _ = env.reset(seed=episode.seed)
        np.testing.assert_array_equal(obs, episode.observations[0])
        assert abs(obs).max() > 0
    finally:
        env.close()
