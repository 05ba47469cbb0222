"""Policy loaders (SB3 zips, torch modules), batched inference, and importing ``_target_``s.

A tiny PPO is trained here on CartPole (a module fixture, seconds) and a tiny torch MLP is
built here; both are saved to files and collected from like a user's checkpoint.
"""

from __future__ import annotations

import sys
import textwrap
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
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory that is not on ``sys.path`` (as for the ``collect`` script)."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(folder))])
    monkeypatch.setattr(sys, "modules", dict(sys.modules))  # the test's modules go with it
    return folder


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
