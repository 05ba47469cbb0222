"""Checkpoint identity in provenance, and resume refusing a checkpoint that changed (issue 20)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from checkpoint_policies import BAD, GOOD, write_weights

from collector import storage
from collector.checkpoints import checkpoint_hashes, checkpoint_identity, pin_policy
from collector.collect import collect
from collector.errors import ConfigMismatchError, UsageError

LINEAR = "checkpoint_policies.LinearPolicy"


def run(episodes: int, policy: dict[str, Any], dataset_id: str = "cp/linear-v0", **kw: Any):
    return collect(
        {
            "env": "CartPole-v1",
            "max_episode_steps": 40,
            "episodes": episodes,
            "seed": 5,
            "policy": policy,
            "dataset_id": dataset_id,
            "progress": False,
            **kw,
        }
    )


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """``weights.json`` in the working directory (a relative path resolves against it)."""
    monkeypatch.chdir(tmp_path)
    return write_weights(tmp_path / "weights.json", GOOD)


def test_identity_hashes_every_file_key_of_nested_policies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.zip").write_bytes(b"a" * 3_000_000)  # several read chunks
    (tmp_path / "net.pt").write_bytes(b"state")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "w.bin").write_bytes(b"w")
    cfg = {
        "_target_": "collector.policy_mixture.MixturePolicy",
        "weights": [0.5, 0.5],
        "policies": [
            {"_target_": "collector.policies.RandomPolicy"},
            {"_target_": "x.Torch", "path": None, "state_dict": "net.pt", "module": {"k": 1}},
            {"_target_": "x.Mix", "policies": [{"_target_": "x.Sb3", "path": "a.zip"}]},
            {"_target_": "x.Dir", "path": str(tmp_path / "saved")},
        ],
    }
    identity = checkpoint_identity(cfg)
    files = identity["files"]
    assert set(files) == {
        "policy.policies.1.state_dict",
        "policy.policies.2.policies.0.path",
        "policy.policies.3.path",
    }
    assert files["policy.policies.2.policies.0.path"] == {
        "sha256": hashlib.sha256(b"a" * 3_000_000).hexdigest(),
        "size": 3_000_000,
    }
    assert files["policy.policies.1.state_dict"]["size"] == 5
    assert files["policy.policies.3.path"]["size"] == 1  # a folder: its files' total
    assert "torch" in identity["versions"]  # installed in the test environment
    assert checkpoint_hashes(identity)["policy.policies.1.state_dict"] == (
        hashlib.sha256(b"state").hexdigest()
    )
    pinned = pin_policy(cfg, identity)
    assert pinned["policies"][1]["state_dict"] == str(tmp_path / "net.pt")  # the driver's cwd
    assert pinned["policies"][2]["policies"][0]["path"] == str(tmp_path / "a.zip")
    assert cfg["policies"][1]["state_dict"] == "net.pt"  # the config itself is left as it is


def test_a_policy_without_file_keys_has_no_identity() -> None:
    assert checkpoint_identity({"_target_": "collector.policies.RandomPolicy"}) == {}
    assert checkpoint_identity({"_target_": "x.T", "path": None, "state_dict": None}) == {}


def test_a_missing_checkpoint_is_one_line_naming_the_key_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=re.escape("policy.path='nope.json': no such file ")):
        run(2, {"_target_": LINEAR, "path": "nope.json"})
    with pytest.raises(UsageError, match=re.escape(str(tmp_path))):
        checkpoint_identity({"_target_": LINEAR, "path": "nope.json"})
    with pytest.raises(UsageError, match="policy.state_dict=3 is not a file path"):
        checkpoint_identity({"_target_": LINEAR, "state_dict": 3})
    os.mkfifo(tmp_path / "fifo")  # would block the hash forever
    with pytest.raises(UsageError, match="policy.path='fifo' is not a regular file"):
        checkpoint_identity({"_target_": LINEAR, "path": "fifo"})


def test_identity_is_recorded_in_provenance(weights: bytes) -> None:
    result = run(3, {"_target_": LINEAR, "path": "weights.json"})
    prov = storage.read_metadata(result.path)["provenance"]
    sha = hashlib.sha256(weights).hexdigest()
    assert prov["checkpoints"]["files"] == {"policy.path": {"sha256": sha, "size": len(weights)}}
    assert {"torch", "stable-baselines3"} <= set(prov["checkpoints"]["versions"])
    assert prov["data_config"]["checkpoints"] == {"policy.path": sha}
    assert prov["data_config"]["policy"]["path"] == "weights.json"  # as the user gave it
    assert prov["policy"] == {"loader": "linear-json", "noise": 0.0}  # the loader's own facts


def test_a_replaced_checkpoint_is_refused_on_resume_naming_the_key(
    weights: bytes, tmp_path: Path
) -> None:
    policy = {"_target_": LINEAR, "path": "weights.json"}
    first = run(3, policy)
    new = write_weights(tmp_path / "weights.json", BAD)  # the same path, other bytes
    with pytest.raises(ConfigMismatchError, match=re.escape("policy.path sha256: ")) as info:
        run(6, policy)
    assert info.value.keys == ("policy.path sha256",)
    assert hashlib.sha256(new).hexdigest() in str(info.value)
    assert "\n" not in str(info.value)
    meta = storage.read_metadata(first.path)
    assert meta["total_episodes"] == 3  # nothing was added
    assert meta["fingerprint"] == first.fingerprint


def test_the_same_checkpoint_resumes_to_the_uninterrupted_fingerprint(weights: bytes) -> None:
    policy = {"_target_": LINEAR, "path": "weights.json", "noise": 0.3}
    run(3, policy)
    resumed = run(7, policy)
    assert (resumed.new_episodes, resumed.total_episodes) == (4, 7)
    whole = run(7, policy, dataset_id="cp/whole-v0")
    assert resumed.fingerprint == whole.fingerprint
    # negative control: other weights make other data
    other = {**policy, "noise": 0.31}
    assert run(7, other, dataset_id="cp/other-v0").fingerprint != whole.fingerprint


def test_an_absolute_path_from_another_folder_resumes(
    weights: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = {"_target_": LINEAR, "path": str(tmp_path / "weights.json")}
    run(2, policy)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run(4, policy).new_episodes == 2


def test_random_policy_datasets_store_no_checkpoint_entry_and_resume() -> None:
    result = run(2, {"_target_": "collector.policies.RandomPolicy"})
    prov = storage.read_metadata(result.path)["provenance"]
    assert "checkpoints" not in prov
    assert "checkpoints" not in prov["data_config"]
    assert "policy" not in prov
    assert run(4, {"_target_": "collector.policies.RandomPolicy"}).new_episodes == 2


def test_a_dataset_from_before_checkpoint_hashes_resumes_with_a_warning(
    weights: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    policy = {"_target_": LINEAR, "path": "weights.json", "noise": 0.3}
    with monkeypatch.context() as m:  # a harvest that recorded no checkpoint identity
        m.setattr(sys.modules["collector.collect"], "checkpoint_identity", lambda cfg: {})
        run(3, policy)
    with caplog.at_level(logging.WARNING, logger="collector.collect"):
        resumed = run(6, policy)
    assert resumed.new_episodes == 3
    assert "cannot be checked" in caplog.text
    assert resumed.fingerprint == run(6, policy, dataset_id="cp/whole-v0").fingerprint


def test_vector_sub_envs_build_from_the_pinned_config(weights: bytes) -> None:
    policy = {"_target_": LINEAR, "path": "weights.json", "noise": 0.3}
    vector = run(5, policy, dataset_id="cp/vector-v0", num_envs=3)
    assert vector.fingerprint == run(5, policy).fingerprint


@pytest.mark.slow
def test_ray_workers_load_the_file_the_driver_hashed(
    weights: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path resolves against the driver's cwd, not the workers' (they started
    before this test changed folder)."""
    pytest.importorskip("ray")
    from ray_support import module_ray, on_ray

    monkeypatch.chdir(tmp_path.parent)  # Ray's workers start here
    ray_run = module_ray()
    address = next(ray_run)
    try:
        monkeypatch.chdir(tmp_path)
        policy = {"_target_": LINEAR, "path": "weights.json", "noise": 0.3}
        on = run(6, policy, dataset_id="cp/ray-v0", runner=on_ray(address=address))
        assert on.fingerprint == run(6, policy).fingerprint
    finally:
        next(ray_run, None)


def test_versions_are_the_installed_distributions() -> None:
    from importlib import metadata

    from collector.provenance import versions

    got = versions()
    for dist in ("harvest", "gymnasium", "numpy", "h5py", "hydra-core", "omegaconf"):
        assert got[dist] == metadata.version(dist)
    assert got["python"] == ".".join(map(str, sys.version_info[:3]))
