"""``policy=hub``: a checkpoint from a model repo on the in-test Hub (issue 20).

The real huggingface_hub client against ``tests/remotes/hub_server.py``; the loader is the
JSON-weights ``checkpoint_policies.LinearPolicy``, so the test needs neither torch nor SB3.
"""

from __future__ import annotations

import hashlib
import re
import sys
import uuid
from typing import Any

import pytest
from checkpoint_policies import BAD, GOOD
from hydra import compose, initialize_config_module

from collector import storage
from collector.collect import collect
from collector.errors import ConfigMismatchError, RemoteError, UsageError
from collector.policy_hub import HubPolicy, fetch_checkpoint
from remotes.conftest import push
from remotes.hub_server import HubServer

huggingface_hub = pytest.importorskip("huggingface_hub")

# huggingface_hub 2.4.0 uploads with httpx2's deprecated `data=<file>`.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Use 'content=<...>' to upload raw bytes/text content:DeprecationWarning"
)

LINEAR = "checkpoint_policies.LinearPolicy"


def weights(w: dict[str, Any]) -> bytes:
    import json

    return json.dumps(w, sort_keys=True).encode()


@pytest.fixture
def repo(hub: HubServer) -> str:
    """A model repo holding ``ppo/weights.json`` (the GOOD weights)."""
    name = f"org/policy-{uuid.uuid4().hex[:8]}"
    push(hub, name, {"ppo/weights.json": weights(GOOD), "README.md": b"# a policy\n"})
    return name


def hub_cfg(repo: str, *overrides: str, episodes: int = 3, dataset: str = "hub/linear-v0"):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(
            "collect",
            overrides=[
                "progress=false",
                "policy=hub",
                f"policy.repo={repo}",
                "policy.filename=ppo/weights.json",
                f"policy.loader={LINEAR}",
                "max_episode_steps=40",
                f"episodes={episodes}",
                f"dataset_id={dataset}",
                *overrides,
            ],
        )


def file_requests(hub: HubServer, start: int) -> list[tuple[str, str]]:
    return [(m, t) for m, t in hub.requests[start:] if "/resolve/" in t]


def test_hub_policy_downloads_the_file_and_acts_from_it(hub: HubServer, repo: str) -> None:
    policy = HubPolicy(repo, "ppo/weights.json", loader=LINEAR)
    head = hub.commits(repo, "model")[-1]
    assert policy.checkpoint.commit == head
    assert policy.checkpoint.local_path.read_bytes() == weights(GOOD)
    policy.reset(0)
    assert policy.act([0.0, 0.0, 0.1, 0.0]) == 1
    assert policy.act([0.0, 0.0, -0.1, 0.0]) == 0
    assert policy.provenance()["hub"] == {
        "repo": repo,
        "filename": "ppo/weights.json",
        "revision": "main",
        "commit": head,
    }
    assert policy.provenance()["loader"] == "linear-json"


def test_collect_records_the_pinned_revision_and_file_hash(hub: HubServer, repo: str) -> None:
    head = hub.commits(repo, "model")[-1]
    result = collect(hub_cfg(repo))
    assert result.total_episodes == 3
    prov = storage.read_metadata(result.path)["provenance"]
    sha = hashlib.sha256(weights(GOOD)).hexdigest()
    entry = prov["checkpoints"]["files"]["policy.filename"]
    assert entry == {
        "repo": repo,
        "filename": "ppo/weights.json",
        "revision": "main",
        "commit": head,
        "sha256": sha,
        "size": len(weights(GOOD)),
    }
    assert "huggingface_hub" in prov["checkpoints"]["versions"]
    assert prov["data_config"]["checkpoints"] == {"policy.filename": sha}
    assert prov["data_config"]["policy"]["revision"] == "main"  # the config as given
    assert prov["policy"]["hub"]["commit"] == head  # what the policy actually loaded
    # the episodes balance the pole: the GOOD weights were used
    assert result.total_steps == 3 * 40


def test_a_second_run_uses_the_cache(hub: HubServer, repo: str) -> None:
    first = collect(hub_cfg(repo))
    gets = [r for r in file_requests(hub, 0) if r[0] == "GET"]
    assert len(gets) == 1  # the file was downloaded once, though built twice (driver, pinned)
    head = hub.commits(repo, "model")[-1]
    # pinned to the commit: nothing is asked of the Hub at all
    seen = len(hub.requests)
    pinned = collect(hub_cfg(repo, f"policy.revision={head}", dataset="hub/pinned-v0"))
    assert hub.requests[seen:] == []
    assert pinned.fingerprint == first.fingerprint
    # on a branch: one HEAD resolves it, and the file still comes from the cache
    seen = len(hub.requests)
    again = collect(hub_cfg(repo, episodes=5))
    assert again.new_episodes == 2
    assert hub.requests[seen:] == [("HEAD", f"/{repo}/resolve/main/ppo/weights.json")]


def test_a_new_file_on_the_branch_is_refused_on_resume(hub: HubServer, repo: str) -> None:
    collect(hub_cfg(repo))
    push(hub, repo, {"ppo/weights.json": weights(BAD)})
    with pytest.raises(ConfigMismatchError, match=re.escape("policy.filename sha256: ")) as info:
        collect(hub_cfg(repo, episodes=5))
    assert info.value.keys == ("policy.filename sha256",)
    # the same bytes at a later commit resume: the file is data-affecting, not the commit
    push(hub, repo, {"ppo/weights.json": weights(GOOD), "README.md": b"# documented\n"})
    assert collect(hub_cfg(repo, episodes=5)).new_episodes == 2


def test_offline_a_cached_branch_resolves_without_requests(
    hub: HubServer, repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    online = fetch_checkpoint(repo, "ppo/weights.json")
    push(hub, repo, {"ppo/weights.json": weights(BAD)})  # main moved on the Hub
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    seen = len(hub.requests)
    offline = fetch_checkpoint(repo, "ppo/weights.json")
    assert (offline.commit, offline.local_path) == (online.commit, online.local_path)
    with pytest.raises(RemoteError, match="not in the local Hub cache and HF_HUB_OFFLINE"):
        fetch_checkpoint(repo, "ppo/other.json")
    assert hub.requests[seen:] == []


@pytest.mark.parametrize(
    ("repo_id", "filename", "revision", "key"),
    [
        ("../etc", "w.json", "main", "policy.repo"),
        ("org/name/extra", "w.json", "main", "policy.repo"),
        ("org/..", "w.json", "main", "policy.repo"),
        ("org/ok", "../../etc/passwd", "main", "policy.filename"),
        ("org/ok", "/etc/passwd", "main", "policy.filename"),
        ("org/ok", "a\\b.json", "main", "policy.filename"),
        ("org/ok", "a//b.json", "main", "policy.filename"),
        ("org/ok", "", "main", "policy.filename"),
        ("org/ok", "w.json", "../main", "policy.revision"),
        ("org/ok", "w.json", "main?x=1", "policy.revision"),
        ("org/ok", 3, "main", "policy.filename"),
    ],
)
def test_hostile_references_are_refused_before_any_request(
    hub: HubServer, repo_id: Any, filename: Any, revision: str, key: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(key)) as info:
        HubPolicy(repo_id, filename, revision, loader=LINEAR)
    assert "\n" not in str(info.value)
    assert hub.requests == []


def test_unknown_repo_revision_file_and_loader_are_one_line_each(hub: HubServer, repo: str) -> None:
    cases = [
        (("org/nothing-here", "ppo/weights.json", "main"), "policy.repo='org/nothing-here'"),
        ((repo, "ppo/weights.json", "v9"), "policy.revision='v9'"),
        ((repo, "ppo/missing.json", "main"), "policy.filename='ppo/missing.json'"),
    ]
    for args, message in cases:
        with pytest.raises(UsageError, match=re.escape(message)) as info:
            fetch_checkpoint(*args)
        assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match=re.escape("policy=hub needs policy.filename; set e.g.")):
        HubPolicy(repo, "???", loader=LINEAR)
    with pytest.raises(UsageError, match=re.escape("policy.loader='sb4'")):
        HubPolicy(repo, "ppo/weights.json", loader="sb4")
    with pytest.raises(UsageError, match=re.escape("policy.path is set by policy=hub")):
        HubPolicy(repo, "ppo/weights.json", loader=LINEAR, path="x.json")


def test_a_file_over_the_size_limit_is_not_downloaded(
    hub: HubServer, repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARVEST_HUB_MAX_MB", str(10 / 2**20))  # 10 bytes
    seen = len(hub.requests)
    with pytest.raises(UsageError, match="over the 10 bytes a policy checkpoint may be"):
        fetch_checkpoint(repo, "ppo/weights.json")
    assert [m for m, _ in file_requests(hub, seen)] == ["HEAD"]  # no GET


def test_an_unreachable_hub_is_one_line(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from remotes.conftest import closed_port_url

    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    with pytest.raises(RemoteError, match="cannot download org/x/w.json@main from http") as info:
        fetch_checkpoint("org/x", "w.json")
    assert "\n" not in str(info.value)


def test_without_huggingface_hub_policy_hub_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from collector.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'harvest[hf]'")):
        fetch_checkpoint("org/x", "w.json")
