"""Tests for ``curation.remotes.card``: the Hub dataset card built from real metadata."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml
from helpers import collect_cartpole, folder_bytes, record_cartpole

from collector import storage
from collector.errors import UsageError
from curation.ops import combine_datasets
from curation.remotes.card import dataset_card, size_category

hub = pytest.importorskip("huggingface_hub")


def metadata(dataset_id: str) -> dict[str, Any]:
    return storage.read_metadata(storage.dataset_path(dataset_id), dataset_id)


def collected(dataset_id: str, episodes: int = 4) -> str:
    return collect_cartpole(dataset_id, episodes)


@pytest.fixture
def metas() -> dict[str, dict[str, Any]]:
    """A DataCollector dataset, a collected one and their combination (with lineage)."""
    record_cartpole("cartpole/a-v0", 3, author="ann", description="Alternating actions.")
    collected("cartpole/b-v0")
    combine_datasets(["cartpole/a-v0", "cartpole/b-v0"], "cartpole/ab-v0")
    return {i: metadata(i) for i in ("cartpole/a-v0", "cartpole/b-v0", "cartpole/ab-v0")}


def front_matter(card: str) -> dict[str, Any]:
    match = re.match(r"---\n(.*?)\n---\n", card, re.DOTALL)
    assert match, card[:200]
    return yaml.safe_load(match[1])


@pytest.mark.parametrize(
    ("n", "bucket"),
    [
        (0, "n<1K"),
        (999, "n<1K"),
        (1000, "1K<n<10K"),
        (9_999, "1K<n<10K"),
        (10_000, "10K<n<100K"),
        (999_999, "100K<n<1M"),
        (1_000_000, "1M<n<10M"),
        (10**9 - 1, "100M<n<1B"),
        (10**9, "1B<n<10B"),
        (10**12 - 1, "100B<n<1T"),
        (10**12, "n>1T"),
        (10**15, "n>1T"),
    ],
)
def test_size_category_buckets(n: int, bucket: str) -> None:
    assert size_category(n) == bucket


def test_front_matter_of_one_dataset(metas: dict[str, dict[str, Any]]) -> None:
    card = dataset_card("my-org/cartpole", {"cartpole/a-v0": metas["cartpole/a-v0"]})
    data = hub.DatasetCard(card).data.to_dict()
    assert data == front_matter(card)
    assert data["license"] == "unknown"
    assert data["task_categories"] == ["reinforcement-learning"]
    assert data["tags"] == [
        "harvest",
        "reinforcement-learning",
        "offline-rl",
        "gymnasium",
        "CartPole-v1",
    ]
    assert data["size_categories"] == ["n<1K"]
    assert data["pretty_name"] == "cartpole/a-v0"
    assert "configs" not in data


def test_size_category_counts_steps_over_the_repo(metas: dict[str, dict[str, Any]]) -> None:
    two = {
        "cartpole/a-v0": {**metas["cartpole/a-v0"], "total_steps": 600},
        "cartpole/b-v0": {**metas["cartpole/b-v0"], "total_steps": 400},
    }
    assert front_matter(dataset_card("o/cartpole", two))["size_categories"] == ["1K<n<10K"]
    two["cartpole/b-v0"]["total_steps"] = 399
    assert front_matter(dataset_card("o/cartpole", two))["size_categories"] == ["n<1K"]


@pytest.mark.parametrize(
    ("licenses", "expected"),
    [
        (["MIT", "mit"], "mit"),
        (["cc-by-4.0", "mit"], ["cc-by-4.0", "mit"]),
        (["mit", None], ["mit", "unknown"]),
    ],
)
def test_license_comes_from_the_metadata(
    metas: dict[str, dict[str, Any]], licenses: list[str | None], expected: Any
) -> None:
    datasets = {}
    for dataset_id, license in zip(("cartpole/a-v0", "cartpole/b-v0"), licenses, strict=True):
        datasets[dataset_id] = {**metas[dataset_id], "license": license}
    assert front_matter(dataset_card("o/cartpole", datasets))["license"] == expected


def test_body_describes_a_combined_dataset(metas: dict[str, dict[str, Any]]) -> None:
    meta = metas["cartpole/ab-v0"]
    card = dataset_card("my-org/cartpole", {"cartpole/ab-v0": meta}, remote_uri="hf://my-org/team")
    body = card.split("\n---\n", 1)[1]
    assert "## cartpole/ab-v0" in body
    assert f"| Episodes | {meta['total_episodes']:,} |" in body
    assert f"| Steps | {meta['total_steps']:,} |" in body
    assert f"`{meta['fingerprint']}`" in body
    size = folder_bytes(storage.dataset_path("cartpole/ab-v0") / "data")  # shards and indexes
    assert size > meta["dataset_bytes"]
    assert f"| Size | {storage.human_size(size)} ({size:,} bytes) |" in body
    assert "| Environment | `CartPole-v1` |" in body
    assert "| Max episode steps | 500 |" in body
    assert "| Path in repo | `ab-v0` |" in body
    assert "observations: Box(" in body and "(4,), float32)" in body
    assert "actions: Discrete(2)" in body
    assert "- **author**: ann" in body
    assert "Made by `combine` from 2 source(s)" in body
    for source in ("cartpole/a-v0", "cartpole/b-v0"):
        src_meta = metas[source]
        row = f"| `{source}` | `{src_meta['fingerprint']}` | {src_meta['total_episodes']} |"
        assert row in body
    assert 'pip install "harvest[hf]"' in body
    assert (
        'ds = load_dataset("cartpole/ab-v0", download=True)  # with HARVEST_REMOTE=hf://my-org/team'
        in body
    )
    assert "curate pull cartpole/ab-v0 --remote hf://my-org/team" in body


def test_description_authors_and_collect_provenance(metas: dict[str, dict[str, Any]]) -> None:
    card = dataset_card(
        "my-org/cartpole", {k: metas[k] for k in ("cartpole/a-v0", "cartpole/b-v0")}
    )
    a, b = card.split("## cartpole/a-v0", 1)[1].split("## cartpole/b-v0", 1)
    assert "Alternating actions." in a and "- **author**: ann" in a
    assert "created by: DataCollector" in a and "created: '" in a
    assert "command: collect" in b and "policy: collector.policies.RandomPolicy" in b
    assert "seed: 0" in b and "### Lineage" not in b
    assert "curate pull cartpole/b-v0 --remote hf://my-org" in b


def test_two_datasets_in_one_repo_are_sorted(metas: dict[str, dict[str, Any]]) -> None:
    datasets = {k: metas[k] for k in ("cartpole/b-v0", "cartpole/a-v0")}  # reverse order
    card = dataset_card("my-org/cartpole", datasets, paths={"cartpole/b-v0": "experts/b-v0"})
    assert front_matter(card)["pretty_name"] == "cartpole"
    assert 0 < card.index("## cartpole/a-v0") < card.index("## cartpole/b-v0")
    assert "| `cartpole/a-v0` | `a-v0` |" in card
    assert "| `cartpole/b-v0` | `experts/b-v0` |" in card
    steps = sum(m["total_steps"] for m in datasets.values())
    assert f"2 dataset(s), {steps:,} steps in total" in card


def test_credentials_never_reach_the_card(metas: dict[str, dict[str, Any]]) -> None:
    meta = copy.deepcopy(metas["cartpole/b-v0"])
    prov = meta["provenance"]
    prov["config"]["hf_token"] = "hf_SECRET123"
    prov["config"]["runner"] = {"name": "ray", "Secret_Sauce": "SECRET_RUNNER"}
    prov["GOOGLE_APPLICATION_CREDENTIALS"] = "/home/me/SECRET_gcp.json"
    prov["versions"]["API_KEY"] = "sk-SECRET456"
    prov["versions"]["db"] = {"password": "SECRET_PW"}  # nested under a kept key
    prov["overrides"] = ["env=CartPole-v1", "+hf_token=hf_SECRET789", "++aws.SecretKey=SECRET_AWS"]
    meta["lineage"] = {
        "operation": {"name": "combine", "auth_token": "SECRET_OP"},
        "sources": [{"dataset_id": "cartpole/a-v0", "fingerprint": "f" * 64, "episodes": 3}],
    }
    before = copy.deepcopy(meta)
    card = dataset_card("my-org/cartpole", {"cartpole/b-v0": meta})
    assert meta == before  # the caller's metadata is not scrubbed in place
    assert "secret" not in card.lower()
    for name in ("hf_token", "GOOGLE_APPLICATION_CREDENTIALS", "API_KEY", "password"):
        assert name.lower() not in card.lower()
    assert "overrides: env=CartPole-v1\n" in card  # the harmless override is kept
    assert "Made by `combine` from 1 source(s)" in card


def test_same_inputs_give_the_same_bytes(metas: dict[str, dict[str, Any]]) -> None:
    first = dataset_card("my-org/cartpole", metas)
    second = dataset_card("my-org/cartpole", copy.deepcopy(dict(reversed(metas.items()))))
    assert first.encode() == second.encode()
    assert first.endswith("```\n") and not first.endswith("\n\n")


@pytest.mark.parametrize(
    ("repo_id", "datasets", "paths", "message"),
    [
        ("cartpole", {"cartpole/a-v0": {}}, None, "repo id 'cartpole' is not org/name"),
        ("o/a/b", {"cartpole/a-v0": {}}, None, "repo id 'o/a/b' is not org/name"),
        ("o/cartpole", {}, None, "no datasets to describe in the card of 'o/cartpole'"),
        (
            "o/cartpole",
            {"cartpole/a-v0": {}},
            {"cartpole/z-v0": "z-v0"},
            "paths given for dataset(s) ['cartpole/z-v0'] that are not in the card",
        ),
    ],
)
def test_bad_requests_are_refused(
    repo_id: str, datasets: dict[str, Any], paths: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        dataset_card(repo_id, datasets, paths=paths)
