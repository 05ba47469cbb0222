"""The ``collect`` API and command: determinism, resume, cadence, errors, Hydra integration."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import CLI, REPO, cli_env, read_episodes, wait_for_commit
from hydra import compose, initialize_config_module

from collector import storage
from collector.collect import collect
from collector.errors import (
    ConfigMismatchError,
    DatasetIdError,
    LockHeldError,
    UnsupportedSpaceError,
    UsageError,
)


def cfg(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose("collect", overrides=["progress=false", *overrides])


def run_cli(*args: str, root: Path, timeout: float = 120, cwd: Path | None = None):
    """Run the real ``collect`` entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-c", CLI, *args, f"hydra.run.dir={root.parent / 'runs'}"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(root),
        cwd=cwd or root.parent,
        stdin=subprocess.DEVNULL,
    )


# -- the happy path --------------------------------------------------------------------------


def test_collect_writes_a_verified_dataset_with_provenance(datasets_root: Path) -> None:
    result = collect(cfg("episodes=12", "metadata.author=ada"), overrides=["episodes=12"])
    assert result.dataset_id == "cartpole-v1/random-v0"
    assert (result.total_episodes, result.new_episodes) == (12, 12)
    report = storage.verify_dataset(result.dataset_id)
    assert report.ok, report.problems
    assert report.fingerprint == result.fingerprint
    meta = storage.read_metadata(result.path)
    assert meta["author"] == "ada"
    assert meta["env_spec"]["id"] == "CartPole-v1"
    prov = meta["provenance"]
    assert prov["overrides"] == ["episodes=12"]
    assert prov["seed_entropy"] == 0
    assert prov["config"]["episodes"] == 12
    assert prov["data_config"]["env_package"].startswith("gymnasium==")
    assert {"gymnasium", "numpy", "h5py", "python"} <= set(prov["versions"])
    eps = read_episodes(result.dataset_id)
    assert [e["id"] for e in eps] == list(range(12))
    assert all(e["seed"] is not None for e in eps)
    assert sum(e["length"] for e in eps) == result.total_steps


def test_heuristic_policy_and_experiment_config() -> None:
    result = collect(cfg("+experiment=cartpole_heuristic", "episodes=3"))
    assert result.dataset_id == "cartpole/heuristic-v0"
    assert [e["return"] for e in read_episodes(result.dataset_id)] == [500.0, 500.0, 500.0]
    meta = storage.read_metadata(result.path)
    assert meta["algorithm_name"] == "CartPoleHeuristic"


def test_function_policy_via_target() -> None:
    result = collect(
        cfg("episodes=2", "policy._target_=helpers.always_left", "dataset_id=t/left-v0")
    )
    for ep in read_episodes(result.dataset_id):
        assert not ep["actions"].any()


def test_pendulum_box_actions_in_bounds() -> None:
    result = collect(cfg("env=Pendulum-v1", "episodes=2"))
    assert result.dataset_id == "pendulum-v1/random-v0"
    for ep in read_episodes(result.dataset_id):
        assert ep["actions"].dtype == np.float32 and ep["actions"].shape == (200, 1)
        assert np.all(np.abs(ep["actions"]) <= 2.0)
        assert ep["truncated"] and not ep["terminated"]


# -- determinism (DESIGN.md section 5) -------------------------------------------------------


def test_same_command_twice_gives_the_same_fingerprint_recomputed_from_disk() -> None:
    a = collect(cfg("episodes=30", "seed=7", "dataset_id=d/a-v0"))
    b = collect(cfg("episodes=30", "seed=7", "dataset_id=d/b-v0"))
    fa, fb = storage.verify_dataset("d/a-v0"), storage.verify_dataset("d/b-v0")
    assert fa.ok and fb.ok
    assert fa.fingerprint == fb.fingerprint == a.fingerprint == b.fingerprint
    c = collect(cfg("episodes=30", "seed=8", "dataset_id=d/c-v0"))
    assert c.fingerprint != a.fingerprint


def test_fingerprint_ignores_checkpoint_cadence_and_compression() -> None:
    one = collect(
        cfg(
            "episodes=60",
            "checkpoint.every_episodes=1",
            "storage.compression=none",
            "dataset_id=c/one-v0",
        )
    )
    fifty = collect(cfg("episodes=60", "checkpoint.every_episodes=50", "dataset_id=c/fifty-v0"))
    assert one.fingerprint == fifty.fingerprint
    assert (
        storage.verify_dataset("c/one-v0").fingerprint
        == storage.verify_dataset("c/fifty-v0").fingerprint
    )
    # 60 one-episode commits were repacked into one shard at the end
    assert len(storage.read_metadata(one.path)["shards"]) == 1


def test_negative_control_unseeded_env_changes_the_fingerprint() -> None:
    """Proves the determinism tests can fail: the env ignores the seed for its start state."""
    env = "env=harvest-test/Unseeded-v0"
    a = collect(cfg(env, "episodes=5", "dataset_id=n/a-v0"))
    b = collect(cfg(env, "episodes=5", "dataset_id=n/b-v0"))
    assert a.fingerprint != b.fingerprint


def test_seed_unset_persists_entropy_so_a_resume_regenerates_the_same_episodes() -> None:
    first = collect(cfg("seed=null", "episodes=10", "dataset_id=u/x-v0"))
    entropy = storage.read_metadata(first.path)["provenance"]["seed_entropy"]
    assert isinstance(entropy, int) and entropy > 0
    extended = collect(cfg("seed=null", "episodes=20", "dataset_id=u/x-v0"))
    assert extended.new_episodes == 10
    reference = collect(cfg(f"seed={entropy}", "episodes=20", "dataset_id=u/ref-v0"))
    assert extended.fingerprint == reference.fingerprint


# -- resume, extend, overwrite (DESIGN.md section 6) ----------------------------------------


def test_rerun_is_a_noop_and_extend_collects_only_new_ids() -> None:
    first = collect(cfg("episodes=10"))
    again = collect(cfg("episodes=10"))
    assert again.noop and again.fingerprint == first.fingerprint
    more = collect(cfg("episodes=15", "storage.compression=lzf", "checkpoint.every_episodes=2"))
    assert (more.new_episodes, more.total_episodes) == (5, 15)
    reference = collect(cfg("episodes=15", "dataset_id=r/ref-v0"))
    assert more.fingerprint == reference.fingerprint
    assert storage.verify_dataset(more.dataset_id).ok


def test_data_affecting_change_is_refused_naming_the_keys() -> None:
    first = collect(cfg("episodes=5"))
    with pytest.raises(
        ConfigMismatchError, match=r"record_infos: False -> True, seed: 0 -> 3"
    ) as e:
        collect(cfg("episodes=5", "seed=3", "record_infos=true"))
    assert e.value.keys == ("record_infos", "seed")
    assert storage.read_metadata(first.path)["fingerprint"] == first.fingerprint


def test_overwrite_writes_a_new_generation() -> None:
    first = collect(cfg("episodes=5"))
    old_files = {e["file"] for e in storage.read_metadata(first.path)["shards"]}
    second = collect(cfg("episodes=5", "seed=3", "overwrite=true"))
    assert second.fingerprint != first.fingerprint and second.total_episodes == 5
    meta = storage.read_metadata(second.path)
    assert meta["provenance"]["data_config"]["seed"] == 3
    assert not old_files & {e["file"] for e in meta["shards"]}
    storage.DatasetWriter(second.dataset_id).close()  # the next writer removes the old generation
    on_disk = {p.name for p in (second.path / "data").iterdir()}
    assert not old_files & on_disk
    assert storage.verify_dataset(second.dataset_id).ok


def test_a_run_killed_before_its_final_repack_is_repacked_by_the_rerun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every episode is committed, in small shards, when a kill stops the repack: the rerun
    has nothing to collect but must still repack (the kill storms found this)."""
    args = ("episodes=12", "checkpoint.every_episodes=2")
    with monkeypatch.context() as m:

        def killed(*args: object, **kwargs: object) -> int:
            raise KeyboardInterrupt  # where a SIGKILL would stop the process

        m.setattr(storage.DatasetWriter, "repack", killed)
        with pytest.raises(KeyboardInterrupt):
            collect(cfg(*args))
    path = storage.dataset_path("cartpole-v1/random-v0")
    assert len(storage.read_metadata(path)["shards"]) == 6
    again = collect(cfg(*args))
    assert again.noop and again.total_episodes == 12
    assert len(storage.read_metadata(path)["shards"]) == 1
    reference = collect(cfg(*args, "dataset_id=r/ref-v0"))
    assert (
        again.fingerprint
        == reference.fingerprint
        == storage.verify_dataset(again.dataset_id).fingerprint
    )


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_dataset(
    datasets_root: Path,
) -> None:
    args = ("env=helpers:harvest-test/Slow-v0", "episodes=40", "checkpoint.every_episodes=3")
    dataset_id = "harvest-test/slow-v0/random-v0"
    path = storage.dataset_path(dataset_id)
    rng = random.Random(1234)
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", CLI, *args, f"hydra.run.dir={datasets_root.parent / 'runs'}"],
            env=cli_env(datasets_root),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_commit(dataset_id, timeout=60)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        meta = storage.read_metadata(path)  # always a consistent commit
        assert meta["total_episodes"] <= 40
    assert kills >= 2, "the run finished before it could be killed; slow the env down"
    done = run_cli(*args, root=datasets_root)
    assert done.returncode == 0, done.stderr
    report = storage.verify_dataset(dataset_id)
    assert report.ok, report.problems
    assert report.episodes == 40
    assert [e["id"] for e in read_episodes(dataset_id)] == list(range(40))
    assert not [p for p in (path / "data").iterdir() if p.name.startswith(".")]
    reference = collect(cfg(*args, "dataset_id=ref/slow-v0"))
    assert report.fingerprint == reference.fingerprint


# -- errors (DESIGN.md section 9) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("env=CartPol-v1", UsageError, "did you mean CartPole-v1"),
        ("dataset_id=../x-v0", DatasetIdError, "is a path, not an id"),
        ("dataset_id=/abs-v0", DatasetIdError, "is a path, not an id"),
        ("dataset_id=noversion", DatasetIdError, "has no version suffix"),
        ("dataset_id=ns//x-v0", DatasetIdError, "has an empty segment"),
        ("episodes=0", UsageError, "episodes=0 must be a positive integer"),
        ("episodes=-3", UsageError, "episodes=-3 must be a positive integer"),
        (
            "policy._target_=nope.Missing",
            UsageError,
            "policy._target_='nope.Missing' cannot be imported",
        ),
        ("env=harvest-test/SequenceObs-v0", UnsupportedSpaceError, "observation space Sequence"),
        ("storage.compression=zstd", UsageError, "storage.compression='zstd' is not valid"),
        ("checkpoint.every_seconds=-1", UsageError, "checkpoint.every_seconds=-1"),
        ("seed=-1", UsageError, "seed=-1 must be a non-negative integer"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(
    override: str, error: type[Exception], message: str, datasets_root: Path
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        collect(cfg("episodes=3", override))
    assert not datasets_root.exists() or not [
        p for p in datasets_root.rglob("*") if p.is_file() and p.suffix != ".lock"
    ]


def test_lock_held_by_another_writer_is_refused_and_the_dataset_is_untouched() -> None:
    first = collect(cfg("episodes=3"))
    with (
        storage.DatasetWriter(first.dataset_id),
        pytest.raises(LockHeldError, match=f"pid {os.getpid()}"),
    ):
        collect(cfg("episodes=6"))
    assert storage.read_metadata(first.path)["total_episodes"] == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["env=CartPol-v1"], 2, "collect: error: env='CartPol-v1' is not a registered"),
        (["dataset_id=../evil-v0"], 2, "collect: error: dataset id '../evil-v0' is a path"),
        (["episodes=0"], 2, "collect: error: episodes=0 must be a positive integer"),
        (["episodes=abc"], 2, "collect: error: episodes='abc' must be an integer"),
        (["runner.workers=4"], 2, "collect: error: runner.workers is a key of runner=ray"),
        (["policy._target_=no.such.Policy"], 2, "collect: error: policy._target_='no.such.Policy'"),
        (
            ["env=helpers:harvest-test/SequenceObs-v0"],
            2,
            "collect: error: observation space Sequence",
        ),
    ],
)
def test_cli_errors_are_one_line_without_traceback(
    args: list[str], code: int, message: str, datasets_root: Path
) -> None:
    proc = run_cli("episodes=3", *args, root=datasets_root)
    assert proc.returncode == code
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr


# -- the command -----------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_summary_rerun_noop_and_multirun(datasets_root: Path) -> None:
    proc = run_cli("episodes=4", root=datasets_root)
    assert proc.returncode == 0, proc.stderr
    assert "cartpole-v1/random-v0: +4 episodes" in proc.stdout
    assert "steps/s" in proc.stdout and "fingerprint" in proc.stdout
    again = run_cli("episodes=4", root=datasets_root)
    assert "already complete, nothing to collect" in again.stdout
    multi = run_cli("-m", "env=CartPole-v1,Pendulum-v1", "episodes=2", root=datasets_root)
    assert multi.returncode == 0, multi.stderr
    assert (
        storage.read_metadata(storage.dataset_path("pendulum-v1/random-v0"))["total_episodes"] == 2
    )


@pytest.mark.slow
def test_installed_non_editable_package_runs_from_any_directory(tmp_path: Path) -> None:
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "HARVEST_DATASETS": str(tmp_path / "ds")}
    code = (
        "import sys, collector\n"
        "assert collector.__file__.startswith(sys.argv[1]), collector.__file__\n"
        "sys.argv = ['collect', 'episodes=2', 'hydra.run.dir=runs/x']\n"
        "from collector.cli import main\n"
        "main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        capture_output=True, text=True, timeout=120, cwd=elsewhere, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "+2 episodes" in proc.stdout
    assert (elsewhere / "runs" / "x" / ".hydra" / "config.yaml").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("runner.workers=0", "runner.workers=0 must be a positive integer"),
        ("runner.batch_timeout=0", "runner.batch_timeout=0 must be a positive number"),
        ("runner.max_restarts=-1", "runner.max_restarts=-1 must be a non-negative integer"),
    ],
)
def test_bad_ray_runner_keys_are_refused_before_anything_is_written(
    override: str, message: str, datasets_root: Path
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        collect(cfg("runner=ray", "episodes=3", override))
    assert not datasets_root.exists() or not [
        p for p in datasets_root.rglob("*") if p.is_file() and p.suffix != ".lock"
    ]
