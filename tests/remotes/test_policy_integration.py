"""Issue 20 end to end: a real SB3 PPO on the in-test Hub, collected, resumed and scored.

The pieces the issue-20 helpers built alone, used together as a user would: ``policy=hub``
with the ``sb3`` loader (batched over ``num_envs=4``), checkpoint identity in provenance, a
pinned revision resuming without a request, ``score=true`` and ``curate score``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module

from collector import storage
from collector.collect import collect
from remotes.conftest import push
from remotes.hub_server import HubServer

pytest.importorskip("huggingface_hub")
pytest.importorskip("stable_baselines3")

# huggingface_hub 2.4.0 uploads with httpx2's deprecated `data=<file>`.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Use 'content=<...>' to upload raw bytes/text content:DeprecationWarning"
)

FILENAME = "ppo-CartPole-v1.zip"


def hub_run(repo: str, revision: str, *overrides: str) -> Any:
    """``collect policy=hub policy.loader=sb3 ...`` as the command line composes it."""
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(
            "collect",
            overrides=[
                "progress=false",
                "policy=hub",
                f"policy.repo={repo}",
                f"policy.filename={FILENAME}",
                "policy.loader=sb3",
                f"policy.revision={revision}",
                "num_envs=4",
                "seed=3",
                "dataset_id=hub/ppo-v0",
                *overrides,
            ],
        )
    return collect(cfg)


def test_a_trained_ppo_from_the_hub_collects_resumes_and_scores(
    hub: HubServer, ppo_zip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from curation.cli import main as curate

    data = ppo_zip.read_bytes()
    repo = "org/ppo-cartpole"
    commit = push(hub, repo, {FILENAME: data, "README.md": b"# PPO CartPole\n"})

    first = hub_run(repo, commit, "episodes=6", "score=true", "score_episodes=4")
    assert first.new_episodes == 6
    meta = storage.read_metadata(first.path)
    prov = meta["provenance"]
    sha = hashlib.sha256(data).hexdigest()
    entry = prov["checkpoints"]["files"]["policy.filename"]
    assert (entry["sha256"], entry["size"], entry["commit"]) == (sha, len(data), commit)
    assert prov["data_config"]["checkpoints"] == {"policy.filename": sha}
    assert prov["policy"]["hub"]["commit"] == commit
    assert prov["policy"]["loader"] == "sb3" and prov["policy"]["algo"] == "PPO"
    # the trained agent's reference score clearly beats the random policy's
    assert meta["ref_max_score"] > 3 * meta["ref_min_score"]
    assert meta["ref_scores"]["episodes"] == 4

    # pinned to the commit and cached: a re-run is a no-op and a longer run resumes, with no
    # request to the Hub at all
    seen = len(hub.requests)
    again = hub_run(repo, commit, "episodes=6")
    assert (again.new_episodes, again.fingerprint) == (0, first.fingerprint)
    longer = hub_run(repo, commit, "episodes=8")
    assert longer.new_episodes == 2
    assert hub.requests[seen:] == []

    # the same episodes as the zip collected locally one env at a time
    local = collect(
        {
            "env": "CartPole-v1",
            "episodes": 8,
            "seed": 3,
            "dataset_id": "local/ppo-v0",
            "progress": False,
            "policy": {"_target_": "collector.policy_loaders.SB3Policy", "path": str(ppo_zip)},
        }
    )
    assert local.fingerprint == longer.fingerprint

    # curate score rebuilds the hub policy only when trusted, from the cache
    capsys.readouterr()
    assert curate(["score", "hub/ppo-v0", "--episodes", "3"]) == 2
    err = capsys.readouterr().err
    assert "--trust-remote-code" in err and err.count("\n") == 1
    assert curate(["score", "hub/ppo-v0", "--episodes", "3", "--trust-remote-code"]) == 0
    assert "ref_max_score" in capsys.readouterr().out
    scored = storage.read_metadata(first.path)
    assert scored["ref_max_score"] > 3 * scored["ref_min_score"]
    assert scored["ref_scores"]["episodes"] == 3
    assert hub.requests[seen:] == []


def test_curate_score_uses_the_commit_the_data_was_collected_at(
    hub: HubServer, ppo_zip: Path, tmp_path: Path
) -> None:
    """Collected from ``main``; ``main`` then gets another model: the score is the data's."""
    from stable_baselines3 import PPO

    from collector.scores import score_dataset

    repo = "org/ppo-moving"
    push(hub, repo, {FILENAME: ppo_zip.read_bytes()})
    first = hub_run(repo, "main", "episodes=4", "score=true", "score_episodes=3", "num_envs=1")
    before = storage.read_metadata(first.path)
    untrained = tmp_path / "untrained.zip"
    PPO("MlpPolicy", "CartPole-v1", seed=1, device="cpu").save(untrained)
    push(hub, repo, {FILENAME: untrained.read_bytes()})  # main moved on
    scores = score_dataset("hub/ppo-v0", episodes=3, trust_remote_code=True)
    assert scores.ref_max_score == before["ref_max_score"]
    assert scores.ref_min_score == before["ref_min_score"]


def test_a_noisy_mixture_of_hub_agents_is_the_same_for_one_and_four_envs(
    hub: HubServer, ppo_zip: Path, tmp_path: Path
) -> None:
    """A mixture of the PPO zip and a torch state_dict, both from the Hub, with epsilon."""
    import torch

    net = torch.nn.Linear(4, 2)
    torch.save(net.state_dict(), tmp_path / "linear.pt")
    repo = "org/agents"
    push(
        hub,
        repo,
        {FILENAME: ppo_zip.read_bytes(), "linear.pt": (tmp_path / "linear.pt").read_bytes()},
    )
    hub_target = "collector.policy_hub.HubPolicy"
    policy = {
        "_target_": "collector.policy_mixture.MixturePolicy",
        "weights": [0.6, 0.4],
        "policies": [
            {"_target_": hub_target, "repo": repo, "filename": FILENAME, "deterministic": False},
            {
                "_target_": hub_target,
                "repo": repo,
                "filename": "linear.pt",
                "loader": "torch",
                "module": {"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 2},
                "epsilon": 0.2,
            },
        ],
        "epsilon": 0.1,
    }
    cfg = {"env": "CartPole-v1", "episodes": 10, "seed": 4, "policy": policy, "progress": False}
    one = collect({**cfg, "dataset_id": "mix/one-v0"})
    four = collect({**cfg, "dataset_id": "mix/four-v0", "num_envs": 4})
    assert one.fingerprint == four.fingerprint
    files = storage.read_metadata(one.path)["provenance"]["checkpoints"]["files"]
    assert set(files) == {"policy.policies.0.filename", "policy.policies.1.filename"}
    assert (
        files["policy.policies.1.filename"]["sha256"]
        == hashlib.sha256((tmp_path / "linear.pt").read_bytes()).hexdigest()
    )
