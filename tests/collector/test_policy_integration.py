"""Issue 20's pieces together: a mixture over a trained SB3 agent, a torch checkpoint on resume.

The tiny PPO is the session's ``ppo_zip`` (tests/conftest.py); the Hub half is in
tests/remotes/test_policy_integration.py.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import read_episodes

from collector import storage
from collector.collect import collect
from collector.errors import ConfigMismatchError, UsageError
from collector.policy_mixture import mixture_choices


def run(dataset_id: str, policy: dict[str, Any], episodes: int = 12, **kw: Any) -> Any:
    return collect(
        {
            "env": "CartPole-v1",
            "episodes": episodes,
            "seed": 7,
            "dataset_id": dataset_id,
            "policy": policy,
            "progress": False,
            **kw,
        }
    )


def test_a_noisy_mixture_of_ppo_and_random_is_the_same_for_one_and_four_envs(
    ppo_zip: Path,
) -> None:
    pytest.importorskip("stable_baselines3")
    policy = {
        "_target_": "collector.policy_mixture.MixturePolicy",
        "policies": [
            {"_target_": "collector.policy_loaders.SB3Policy", "path": str(ppo_zip)},
            {"_target_": "collector.policies.RandomPolicy"},
        ],
        "weights": [0.5, 0.5],
        "epsilon": 0.1,
    }
    one = run("mix/one-v0", policy)
    four = run("mix/four-v0", policy, num_envs=4)
    assert four.fingerprint == one.fingerprint
    # both sub-policies played, and the PPO's episodes are the long ones
    prov = storage.read_metadata(one.path)["provenance"]
    episodes = read_episodes("mix/one-v0")
    choices = mixture_choices([0.5, 0.5], prov["seed_entropy"], [ep["id"] for ep in episodes])
    pairs = list(zip(choices, (ep["return"] for ep in episodes), strict=True))
    returns = {c: [r for k, r in pairs if k == c] for c in (0, 1)}
    assert returns[0] and returns[1]
    assert np.mean(returns[0]) > 3 * np.mean(returns[1])
    assert set(prov["checkpoints"]["files"]) == {"policy.policies.0.path"}


def linear_policy(torch: Any, folder: Path) -> tuple[Any, dict[str, Any]]:
    """A CartPole-sized ``torch.nn.Linear`` saved as ``folder/agent.pt``, and its policy config."""
    net = torch.nn.Linear(4, 2)
    torch.save(net.state_dict(), folder / "agent.pt")
    policy = {
        "_target_": "collector.policy_loaders.TorchPolicy",
        "module": {"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 2},
        "state_dict": "agent.pt",
        "device": "cpu",
    }
    return net, policy


def replace_weights(torch: Any, net: Any, folder: Path, change: Any) -> None:
    """Save ``net`` changed in place by ``change(weight)`` at the same path: other weights."""
    with torch.no_grad():
        change(net.weight)
    torch.save(net.state_dict(), folder / "agent.pt")


@contextlib.contextmanager
def refused_naming_the_state_dict() -> Iterator[None]:
    """The block fails with one ``ConfigMismatchError`` line naming the state_dict's hash."""
    with pytest.raises(ConfigMismatchError, match=re.escape("policy.state_dict sha256: ")) as info:
        yield
    assert info.value.keys == ("policy.state_dict sha256",)
    assert "\n" not in str(info.value)


def test_a_replaced_torch_state_dict_is_refused_on_resume_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    net, policy = linear_policy(torch, tmp_path)
    first = run("torch/lin-v0", policy, episodes=3)
    replace_weights(torch, net, tmp_path, lambda weight: weight.add_(1.0))
    with refused_naming_the_state_dict():
        run("torch/lin-v0", policy, episodes=6)
    assert storage.read_metadata(first.path)["total_episodes"] == 3


def test_a_checkpoint_path_left_unset_or_without_zip_says_what_to_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a new user meets them: ``policy=sb3`` alone, and the name ``model.save`` was given."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ppo-cartpole.zip").write_bytes(b"PK")  # SB3's save("ppo-cartpole") adds .zip
    sb3 = {"_target_": "collector.policy_loaders.SB3Policy"}
    with pytest.raises(UsageError, match=re.escape("policy.path is not set; give the checkpoint")):
        run("cp/unset-v0", {**sb3, "path": "???"})
    with pytest.raises(UsageError, match=re.escape("did you mean policy.path='ppo-cartpole.zip'")):
        run("cp/nozip-v0", {**sb3, "path": "ppo-cartpole"})


def test_curate_score_refuses_a_checkpoint_replaced_since_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference score must be the dataset's own policy's, not whatever file is there now."""
    from collector.scores import score_dataset

    torch = pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    net, policy = linear_policy(torch, tmp_path)
    run("torch/scored-v0", policy, episodes=3)
    first = score_dataset("torch/scored-v0", episodes=2, trust_remote_code=True)
    replace_weights(torch, net, tmp_path, lambda weight: weight.mul_(-1.0))
    with refused_naming_the_state_dict():
        score_dataset("torch/scored-v0", episodes=2, trust_remote_code=True)
    meta = storage.read_metadata(storage.dataset_path("torch/scored-v0"))
    assert meta["ref_max_score"] == first.ref_max_score  # the stored scores stay


@pytest.mark.parametrize(
    "recorded",
    [
        "files",
        {"files": [1, 2]},
        {"files": {"policy.path": {"commit": 5}}},
        {"files": {"policy.path": "x", "policy.other": {"commit": "../../etc"}}},
    ],
)
def test_hostile_recorded_checkpoints_pin_nothing_and_the_hash_still_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: Any
) -> None:
    from checkpoint_policies import GOOD, write_weights

    from collector.scores import score_dataset

    monkeypatch.chdir(tmp_path)
    write_weights(tmp_path / "w.json", GOOD)
    run("cp/hostile-v0", {"_target_": "checkpoint_policies.LinearPolicy", "path": "w.json"}, 2)
    with storage.DatasetWriter("cp/hostile-v0") as writer:
        assert writer.meta is not None
        writer.commit(provenance={**writer.meta["provenance"], "checkpoints": recorded})
    scores = score_dataset("cp/hostile-v0", episodes=2, trust_remote_code=True)
    assert scores.ref_max_score == 500
    with storage.DatasetWriter("cp/hostile-v0") as writer:
        assert writer.meta is not None
        prov = writer.meta["provenance"]
        data = {**prov["data_config"], "checkpoints": {"policy.path": "0" * 64}}
        writer.commit(provenance={**prov, "data_config": data})
    with pytest.raises(ConfigMismatchError, match="policy.path sha256: recorded 0000"):
        score_dataset("cp/hostile-v0", episodes=2, trust_remote_code=True)
