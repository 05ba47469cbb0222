"""Issue 19 item 6: pixel envs in one config line.

A top-level ``wrappers:`` list of ``_target_`` entries applied in order after ``gym.make``
(in this process, vector sub-envs and Ray workers alike), data-affecting, stored in the env
spec so ``recover_environment()`` rebuilds the same stack; ``env=ALE/Pong-v5`` without an
``ale_py:`` prefix; the ``pong84`` experiment. The ALE and MuJoCo runs are real and small.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import CLI, cli_env, read_episodes
from hydra import compose, initialize_config_module
from ray_support import conf, module_ray, on_ray

from collector import storage
from collector.cli import check_overrides
from collector.collect import collect
from collector.errors import ConfigMismatchError, UsageError
from collector.seeding import env_seed
from curation import load_dataset

TIME_AWARE = {"_target_": "gymnasium.wrappers.TimeAwareObservation"}
CLIP = {"_target_": "gymnasium.wrappers.ClipReward", "min_reward": 0.0, "max_reward": 0.5}
PONG84 = [{"_target_": "gymnasium.wrappers.AtariPreprocessing", "frame_skip": 4}]
OPT_IN = "pass trust_remote_code=True"


def cartpole(dataset_id: str, episodes: int = 3, **overrides: Any) -> dict[str, Any]:
    return {
        "env": "CartPole-v1",
        "episodes": episodes,
        "seed": 0,
        "dataset_id": dataset_id,
        "progress": False,
        **overrides,
    }


def run_cli(*args: str, root: Path, python: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *python, "-c", CLI, *args, "hydra.output_subdir=null"],
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(root),
        cwd=root.parent,
        stdin=subprocess.DEVNULL,
    )


def written(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def assert_recovers_first_obs(dataset_id: str, root: Path | None = None) -> None:
    """``recover_environment()`` (no opt-in) rebuilds the stack: same space, same reset obs."""
    ds = load_dataset(dataset_id, root) if root is not None else load_dataset(dataset_id)
    env = ds.recover_environment()
    try:
        assert env.observation_space == ds.observation_space
        for episode in ds.iterate_episodes():
            obs, _ = env.reset(seed=episode.seed)
            np.testing.assert_array_equal(obs, episode.observations[0])
    finally:
        env.close()


# -- the wrappers list ------------------------------------------------------------------------


def test_wrappers_apply_in_order_and_are_stored_in_spec_and_provenance() -> None:
    collect(cartpole("wrap/cart-v0", wrappers=[TIME_AWARE, CLIP]))
    episodes = read_episodes("wrap/cart-v0")
    obs = episodes[0]["observations"]
    assert obs.shape[1] == 5  # TimeAwareObservation appended the step count
    np.testing.assert_array_equal(obs[:, -1], np.arange(len(obs)))
    assert all((ep["rewards"] == 0.5).all() for ep in episodes)  # ClipReward
    meta = storage.read_metadata(storage.dataset_path("wrap/cart-v0"))
    stored = meta["env_spec"]["additional_wrappers"]
    assert [w["name"] for w in stored] == ["TimeAwareObservation", "ClipReward"]
    assert stored[1]["kwargs"] == {"min_reward": 0.0, "max_reward": 0.5}
    prov = meta["provenance"]
    assert prov["config"]["wrappers"] == [TIME_AWARE, CLIP]
    assert prov["data_config"]["wrappers"] == [TIME_AWARE, CLIP]
    assert_recovers_first_obs("wrap/cart-v0")


def test_no_wrappers_leaves_the_stored_data_config_as_before() -> None:
    """A dataset collected before ``wrappers:`` existed resumes: the key is absent when empty."""
    collect(cartpole("plain/cart-v0", episodes=1))
    meta = storage.read_metadata(storage.dataset_path("plain/cart-v0"))
    assert "wrappers" not in meta["provenance"]["data_config"]
    assert meta["env_spec"]["additional_wrappers"] == []


def test_a_resume_with_other_wrappers_is_refused_naming_the_key() -> None:
    collect(cartpole("wrap/resume-v0", episodes=2, wrappers=[TIME_AWARE]))
    for other in ([], [CLIP], [{**TIME_AWARE, "normalize_time": True}]):
        with pytest.raises(ConfigMismatchError) as info:
            collect(cartpole("wrap/resume-v0", episodes=4, wrappers=other))
        assert info.value.keys == ("wrappers",)
        assert "wrappers" in str(info.value) and "\n" not in str(info.value)
    result = collect(cartpole("wrap/resume-v0", episodes=4, wrappers=[TIME_AWARE]))
    assert result.new_episodes == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_sub_envs_get_the_same_stack(mode: str) -> None:
    one = collect(cartpole("wrap/one-v0", episodes=6, wrappers=[TIME_AWARE, CLIP]))
    many = collect(
        cartpole(
            "wrap/many-v0",
            episodes=6,
            wrappers=[TIME_AWARE, CLIP],
            num_envs=3,
            vectorization_mode=mode,
        )
    )
    assert many.fingerprint == one.fingerprint


def test_wrappers_with_vector_entry_point_are_refused() -> None:
    with pytest.raises(UsageError, match="wrappers.*vector_entry_point"):
        collect(
            cartpole(
                "wrap/vep-v0", wrappers=[CLIP], num_envs=2, vectorization_mode="vector_entry_point"
            )
        )


@pytest.mark.parametrize(
    ("wrappers", "said"),
    [
        (["gymnasium.wrappers.ClipReward"], "wrappers[0]='gymnasium.wrappers.ClipReward' must be"),
        ([{"min_reward": 0}], "wrappers[0] has no _target_"),
        ({"_target_": "gymnasium.wrappers.ClipReward"}, "wrappers must be a list"),
        (
            [CLIP, {"_target_": "harvest_no_such_module.Wrap"}],
            "wrappers[1]._target_='harvest_no_such_module.Wrap' cannot be imported "
            "(ModuleNotFoundError: No module named 'harvest_no_such_module')",
        ),
        ([{"_target_": "gymnasium.wrappers.NoSuchWrapper"}], "cannot be imported (AttributeError"),
        (
            [{"_target_": "gymnasium.wrappers.ClipReward", "bogus": 1}],
            "wrappers[0] gymnasium.wrappers.ClipReward failed to wrap env 'CartPole-v1' "
            "(TypeError: ",
        ),
        (
            [{"_target_": "gymnasium.wrappers.AtariPreprocessing"}],
            "wrappers[0] gymnasium.wrappers.AtariPreprocessing failed to wrap env 'CartPole-v1'",
        ),
        ([{"_target_": "collector.policies.RandomPolicy"}], "is not a Gymnasium wrapper"),
    ],
)
def test_bad_wrappers_are_one_line_and_write_nothing(
    wrappers: Any, said: str, datasets_root: Path
) -> None:
    with pytest.raises(UsageError) as info:
        collect(cartpole("wrap/bad-v0", wrappers=wrappers))
    assert said in str(info.value)
    assert "\n" not in str(info.value)
    assert written(datasets_root) == []


def test_a_bad_wrapper_on_the_command_line_is_one_line(datasets_root: Path) -> None:
    proc = run_cli("wrappers=[gymnasium.wrappers.ClipReward]", "episodes=1", root=datasets_root)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "collect: error: wrappers[0]='gymnasium.wrappers.ClipReward' must be a mapping with a "
        "_target_, e.g. wrappers=[{_target_:gymnasium.wrappers.AtariPreprocessing,frame_skip:4}]"
    ]
    assert written(datasets_root) == []


def test_a_listed_wrappers_arguments_take_new_keys_without_a_plus() -> None:
    argv = ["+experiment=pong84", "wrappers.0.noop_max=0", "wrappers.0.frame_skip=2"]
    assert check_overrides(argv) == [
        "+experiment=pong84",
        "++wrappers.0.noop_max=0",
        "++wrappers.0.frame_skip=2",
    ]
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("collect", overrides=check_overrides(argv))
    assert cfg.wrappers == [{**PONG84[0], "frame_skip": 2, "noop_max": 0}]


# -- what recover_environment runs ------------------------------------------------------------


def set_wrappers(dataset_id: str, wrappers: list[dict[str, Any]]) -> None:
    with storage.DatasetWriter(dataset_id) as writer:
        assert writer.meta is not None
        spec = dict(writer.meta["env_spec"])
        spec["additional_wrappers"] = wrappers
        writer.commit(env_spec=spec)


@pytest.mark.parametrize(
    "entry_point",
    [
        "os:system",
        "gymnasium.wrappers:os",  # not a class of the package
        "gymnasium.wrappers.common:__import__",
        "gymnasium.wrappers.harvest_evil:ClipReward",  # a module the class is not from
        "gymnasium.wrappers.rendering:RecordVideo",  # writes files where the dataset says
        "gymnasium.wrappers.common.x:y:z",
    ],
)
def test_a_stored_wrapper_outside_gymnasium_wrappers_is_refused_and_nothing_runs(
    entry_point: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    collect(cartpole("evil/wrap-v0", episodes=1))
    kwargs = {"command": f"touch {shlex.quote(str(marker))}"}
    set_wrappers("evil/wrap-v0", [{"name": "W", "entry_point": entry_point, "kwargs": kwargs}])
    before = set(sys.modules)
    with pytest.raises(UsageError) as info:
        load_dataset("evil/wrap-v0").recover_environment()
    text = str(info.value)
    assert f"wrapper entry_point {entry_point!r}" in text and OPT_IN in text
    assert "\n" not in text
    assert not marker.exists()
    assert not {m for m in set(sys.modules) - before if "harvest_evil" in m}


def test_a_stored_gymnasium_wrapper_is_rebuilt_without_the_opt_in() -> None:
    collect(cartpole("ok/wrap-v0", episodes=1))
    entry = "gymnasium.wrappers.common:TimeLimit"
    limit = {"name": "TimeLimit", "entry_point": entry, "kwargs": {"max_episode_steps": 3}}
    set_wrappers("ok/wrap-v0", [limit])
    env = load_dataset("ok/wrap-v0").recover_environment()
    try:
        env.reset(seed=0)
        truncated = [env.step(0)[3] for _ in range(3)]
        assert truncated[-1] and not any(truncated[:-1])
    finally:
        env.close()


# -- ALE and MuJoCo -----------------------------------------------------------------------------


@pytest.mark.slow
def test_pong_with_no_prefix_and_env_kwargs_without_a_plus(datasets_root: Path) -> None:
    proc = run_cli(
        "env=ALE/Pong-v5", "episodes=1", "max_episode_steps=150", "env_kwargs.frameskip=2",
        root=datasets_root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    meta = storage.read_metadata(storage.dataset_path("ale/pong-v5/random-v0", datasets_root))
    assert meta["env_spec"]["kwargs"]["frameskip"] == 2
    assert meta["provenance"]["data_config"]["env_package"].startswith("ale_py==")
    (episode,) = read_episodes("ale/pong-v5/random-v0", datasets_root)
    assert episode["observations"].shape == (151, 210, 160, 3)
    assert episode["observations"].dtype == np.uint8


RECOVER = """
import sys, json, numpy as np
from curation import load_dataset
assert "ale_py" not in sys.modules
ds = load_dataset(sys.argv[1])
env = ds.recover_environment()
assert "ale_py" in sys.modules
ep = ds[0]
obs, _ = env.reset(seed=ep.seed)
print(json.dumps([str(env.observation_space), str(ds.observation_space),
                  bool(np.array_equal(obs, ep.observations[0]))]))
"""


@pytest.mark.slow
def test_the_pong84_experiment_gives_84x84_frames_that_recover_rebuilds(
    datasets_root: Path,
) -> None:
    proc = run_cli("+experiment=pong84", "episodes=1", "max_episode_steps=600", root=datasets_root)
    assert proc.returncode == 0, proc.stderr
    dataset_id = "ale/pong84/random-v0"
    (episode,) = read_episodes(dataset_id, datasets_root)
    # 600 frames, less the reset's no-ops, in steps of 4
    assert episode["observations"].shape[1:] == (84, 84)
    assert 140 < len(episode["observations"]) <= 151
    meta = storage.read_metadata(storage.dataset_path(dataset_id, datasets_root))
    assert meta["provenance"]["data_config"]["wrappers"] == PONG84
    assert meta["env_spec"]["kwargs"]["frameskip"] == 1
    # a fresh process: the ALE registration is imported on demand, the stack rebuilt
    check = subprocess.run(
        [sys.executable, "-c", RECOVER, dataset_id],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(datasets_root),
    )
    assert check.returncode == 0, check.stderr
    space = "Box(0, 255, (84, 84), uint8)"
    assert json.loads(check.stdout.splitlines()[-1]) == [space, space, True]


@pytest.mark.parametrize(
    ("module", "env", "line"),
    [
        ("ale_py", "ALE/Pong-v5", "env='ALE/Pong-v5' needs ale-py: pip install 'harvest[atari]'"),
        (
            "mujoco",
            "HalfCheetah-v5",
            "env='HalfCheetah-v5' needs mujoco: pip install 'harvest[mujoco]'",
        ),
    ],
)
def test_without_the_package_the_env_is_one_line_naming_the_extra(
    module: str, env: str, line: str, datasets_root: Path
) -> None:
    hide = f"import sys; sys.modules[{module!r}] = None; "
    proc = subprocess.run(
        [sys.executable, "-c", hide + CLI, f"env={env}", "episodes=1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(datasets_root),
        cwd=datasets_root.parent,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [f"collect: error: {line}"]
    assert written(datasets_root) == []


def test_halfcheetah_collects_and_recovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its MUJOCO_LOG.TXT warnings here
    result = collect(
        {
            "env": "HalfCheetah-v5",
            "episodes": 3,
            "max_episode_steps": 100,
            "dataset_id": "mujoco/cheetah-v0",
            "progress": False,
        }
    )
    assert (result.total_episodes, result.total_steps) == (3, 300)
    episodes = read_episodes("mujoco/cheetah-v0")
    assert episodes[0]["observations"].shape == (101, 17)
    assert episodes[0]["seed"] == env_seed(0, 0)
    assert_recovers_first_obs("mujoco/cheetah-v0")


# -- Ray workers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address():
    yield from module_ray()


@pytest.mark.slow
def test_ray_workers_register_ale_and_apply_the_wrappers(ray_address: str) -> None:
    """Ray workers are fresh processes: each imports ale_py itself and builds the same stack."""
    extra = {"env_kwargs": {"frameskip": 1}}

    def cfg(dataset_id: str, runner: dict[str, Any]) -> dict[str, Any]:
        out = conf(2, dataset_id, runner, env="ALE/Pong-v5", **extra)
        out.update(max_episode_steps=200, wrappers=PONG84, progress=False)
        return out

    local = collect(cfg("pong84/local-v0", {"name": "local"}))
    on = collect(cfg("pong84/ray-v0", on_ray(workers=1)))
    assert on.fingerprint == local.fingerprint
    assert re.fullmatch(r"[0-9a-f]+", on.fingerprint)


def test_a_spec_with_kwargs_that_are_not_json_keeps_its_wrappers() -> None:
    from gymnasium.envs.registration import EnvSpec, WrapperSpec

    from collector.envs import env_spec_to_json
    from collector.errors import HarvestWarning

    clip = WrapperSpec("ClipReward", "gymnasium.wrappers.transform_reward:ClipReward", {"a": 0})
    spec = EnvSpec("X-v0", "x:X", kwargs={"f": object}, additional_wrappers=(clip,))
    with pytest.warns(HarvestWarning, match="not JSON"):
        out = env_spec_to_json(spec)
    assert out is not None and out["kwargs"] == {"f": repr(object)}
    assert out["additional_wrappers"] == [
        {"name": "ClipReward", "entry_point": clip.entry_point, "kwargs": {"a": 0}}
    ]
