"""What only the Hub backend does: id-to-repo mapping, one commit per push, the dataset card,
tokens from the usual places, and refusing to interleave with another push."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml
from helpers import collect_cartpole, record_cartpole

from collector import storage
from collector.errors import RemoteError, UsageError
from curation.api import load_dataset
from curation.catalog import delete_dataset
from curation.remotes import (
    delete_remote_dataset,
    list_remote_datasets,
    open_remote,
    pull_dataset,
    push_dataset,
)
from curation.remotes.hf import HubRemote
from remotes.hub_server import HubServer


@pytest.fixture
def org(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> str:
    hub_server.reset()
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    return "farama"


def front_matter(card: bytes) -> dict:
    text = card.decode()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_ids_map_to_repos_as_in_minari(hub_server: HubServer, org: str) -> None:
    record_cartpole("cart/sub/a-v0", 3)
    record_cartpole("cart/b-v0", 2)
    push_dataset("cart/sub/a-v0", f"hf://{org}")
    commits_after_first = len(hub_server.commits(f"{org}/cart"))
    push_dataset("cart/b-v0", f"hf://{org}")
    assert len(hub_server.commits(f"{org}/cart")) == commits_after_first + 1  # one per push

    files = hub_server.files(f"{org}/cart")
    meta = storage.read_metadata(storage.dataset_path("cart/sub/a-v0"))
    for rel, _, _ in storage.dataset_files(meta, ""):
        assert f"sub/a-v0/{rel}" in files
    assert (
        files["sub/a-v0/metadata.json"]
        == (storage.dataset_path("cart/sub/a-v0") / storage.METADATA_FILE).read_bytes()
    )
    assert list(list_remote_datasets(f"hf://{org}")) == ["cart/b-v0", "cart/sub/a-v0"]

    card = front_matter(files["README.md"])
    assert card["task_categories"] == ["reinforcement-learning"]
    assert "CartPole-v1" in card["tags"] and card["size_categories"] == ["n<1K"]
    body = files["README.md"].decode()
    assert "cart/b-v0" in body and "cart/sub/a-v0" in body
    assert f"--remote hf://{org}" in body

    delete_remote_dataset("cart/b-v0", f"hf://{org}")
    files = hub_server.files(f"{org}/cart")
    assert not any(p.startswith("b-v0/") for p in files)
    assert "cart/b-v0" not in files["README.md"].decode()
    delete_remote_dataset("cart/sub/a-v0", f"hf://{org}")
    assert "README.md" not in hub_server.files(f"{org}/cart")


def test_a_prefix_names_the_repo_and_ids_need_no_namespace(
    hub_server: HubServer, org: str, elsewhere: Path
) -> None:
    with pytest.raises(UsageError, match="has no namespace"):
        HubRemote(f"hf://{org}").locate("solo-v0")
    record_cartpole("solo-v0", 2)
    push_dataset("solo-v0", f"hf://{org}/rl")
    assert "solo-v0/metadata.json" in hub_server.files(f"{org}/rl")
    assert list(list_remote_datasets(f"hf://{org}/rl")) == ["solo-v0"]
    assert list(list_remote_datasets(f"hf://{org}/other")) == []
    pull_dataset("solo-v0", f"hf://{org}/rl", root=elsewhere)
    assert storage.verify_dataset("solo-v0", elsewhere).ok


def test_token_comes_from_the_environment_and_goes_nowhere_else(
    hub_server: HubServer, org: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    secret = "hf_harvestSECRETtoken123"
    monkeypatch.setenv("HF_TOKEN", secret)
    record_cartpole("cart/a-v0", 2)
    start = len(hub_server.auth_headers)
    push_dataset("cart/a-v0", f"hf://{org}", progress=True)
    sent = list(zip(hub_server.requests[start:], hub_server.auth_headers[start:], strict=True))
    api_calls = [auth for (_, path), auth in sent if not path.startswith("/lfs-upload/")]
    assert api_calls and all(auth == f"Bearer {secret}" for auth in api_calls)
    for data in hub_server.files(f"{org}/cart").values():
        assert secret.encode() not in data
    out, err = capfd.readouterr()
    assert secret not in out + err
    assert secret not in (storage.dataset_path("cart/a-v0") / storage.METADATA_FILE).read_text()


def test_a_push_racing_another_commit_fails_cleanly(
    hub_server: HubServer, org: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_cartpole("cart/a-v0", 2)
    record_cartpole("cart/b-v0", 2)
    push_dataset("cart/a-v0", f"hf://{org}")
    remote = open_remote(f"hf://{org}")
    real_stat = HubRemote._stat

    def stat_then_someone_else_pushes(self: HubRemote, dataset_id: str) -> dict:
        found = real_stat(self, dataset_id)
        from huggingface_hub import CommitOperationAdd, HfApi

        HfApi(endpoint=hub_server.url).create_commit(
            f"{org}/cart",
            [CommitOperationAdd("notes.txt", b"meanwhile")],
            commit_message="someone else",
            repo_type="dataset",
        )
        return found

    with monkeypatch.context() as m:
        m.setattr(HubRemote, "_stat", stat_then_someone_else_pushes)
        with pytest.raises(RemoteError, match="the repo changed while pushing cart/b-v0"):
            remote.push("cart/b-v0")
    assert not remote.exists("cart/b-v0")
    assert remote.push("cart/b-v0").transferred  # the re-run goes through


def test_a_pull_reads_one_revision_while_the_dataset_is_replaced(
    hub_server: HubServer, org: str, monkeypatch: pytest.MonkeyPatch, elsewhere: Path
) -> None:
    record_cartpole("cart/a-v0", 3)
    push_dataset("cart/a-v0", f"hf://{org}")
    first = storage.read_metadata(storage.dataset_path("cart/a-v0"))["fingerprint"]
    delete_dataset("cart/a-v0")
    record_cartpole("cart/a-v0", 5)  # other content, pushed while the pull runs
    real_get = HubRemote._get
    replaced = []
    once = threading.Lock()  # files are fetched in parallel (a shard and its index file)

    def get_while_replacing(
        self: HubRemote, dataset_id: str, rel: str, dest: Path, limit: int
    ) -> None:
        with once:
            if not replaced:
                replaced.append(HubRemote(f"hf://{org}").push(dataset_id, overwrite=True))
        real_get(self, dataset_id, rel, dest, limit)  # in a worker thread: still the pinned commit

    with monkeypatch.context() as m:
        m.setattr(HubRemote, "_get", get_while_replacing)
        pull_dataset("cart/a-v0", f"hf://{org}", root=elsewhere)
    assert replaced and replaced[0].removed  # the old shard is gone from main
    assert load_dataset("cart/a-v0", root=elsewhere).fingerprint == first
    assert storage.verify_dataset("cart/a-v0", elsewhere).ok


def test_a_refusing_hub_is_one_line_naming_the_fix(hub_server: HubServer, org: str) -> None:
    record_cartpole("cart/a-v0", 2)
    before = (storage.dataset_path("cart/a-v0") / storage.METADATA_FILE).read_bytes()
    hub_server.fail("POST", r"/commit/", 403, times=1)
    with pytest.raises(RemoteError, match="permission denied.*HF_TOKEN") as e:
        push_dataset("cart/a-v0", f"hf://{org}")
    assert "\n" not in str(e.value)
    assert not open_remote(f"hf://{org}").exists("cart/a-v0")
    assert (storage.dataset_path("cart/a-v0") / storage.METADATA_FILE).read_bytes() == before
    assert push_dataset("cart/a-v0", f"hf://{org}").transferred  # allowed again: it goes


def test_no_progress_means_no_client_bars_either(
    hub_server: HubServer, org: str, capfd: pytest.CaptureFixture, elsewhere: Path
) -> None:
    record_cartpole("cart/a-v0", 2)
    capfd.readouterr()
    push_dataset("cart/a-v0", f"hf://{org}", progress=False)
    pull_dataset("cart/a-v0", f"hf://{org}", root=elsewhere, progress=False)
    err = capfd.readouterr().err
    assert "LFS" not in err and "it/s" not in err and "B/s" not in err  # no bars of any kind


def test_curate_recipe_push_to_the_hub_is_quiet(
    hub_server: HubServer, org: str, capfd: pytest.CaptureFixture
) -> None:
    from curation.cli import main

    for dataset_id, policy, episodes in (
        ("cartpole/random-v0", "RandomPolicy", 30),
        ("cartpole/heuristic-v0", "CartPoleHeuristic", 4),
    ):
        collect_cartpole(dataset_id, episodes, policy=policy, max_episode_steps=40)
    capfd.readouterr()
    code = main(["recipe=cartpole_mix", f"remote=hf://{org}", "+recipe.push=true"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "push train, val, test -> hf://" in out
    assert out.count(f"pushed to hf://{org}") == 3
    assert "HTTP Request" not in out + err  # Hydra's INFO logging must not echo the client
    assert list(list_remote_datasets(f"hf://{org}")) == [
        "cartpole/mix-s0-test-v0",
        "cartpole/mix-s0-train-v0",
        "cartpole/mix-s0-val-v0",
    ]
