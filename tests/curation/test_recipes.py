"""Tests for ``curation.recipes``: planning on views, checks before writes, lineage."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import collect_cartpole
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from collector import storage
from collector.errors import DatasetExistsError, DatasetNotFoundError, UsageError
from curation.api import load_dataset
from curation.expr import ExpressionError
from curation.ops import split_dataset
from curation.recipes import run_recipe
from curation.remotes import list_remote_datasets


def cartpole(dataset_id: str, episodes: int, policy: str = "RandomPolicy", **kw: Any) -> str:
    return collect_cartpole(dataset_id, episodes, policy=policy, shard_every=10, **kw)


@pytest.fixture
def sources() -> tuple[str, str]:
    random = cartpole("cartpole/random-v0", 40)
    heuristic = cartpole("cartpole/heuristic-v0", 6, "CartPoleHeuristic", max_episode_steps=60)
    return random, heuristic


def mix_recipe(**changes: Any) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "description": "mixed",
        "sources": {"random": "cartpole/random-v0", "heuristic": "cartpole/heuristic-v0"},
        "steps": [
            {"combine": {"inputs": ["random", "heuristic"], "into": "mix"}},
            {"filter": "return >= 15"},
            {"split": {"sizes": [0.8, 0.2], "names": ["train", "val"], "seed": 3}},
        ],
        "outputs": {"train": "cartpole/mix-train-v0", "val": "cartpole/mix-val-v0"},
    }
    recipe.update(changes)
    return recipe


def outputs_exist() -> list[bool]:
    return [
        (storage.dataset_path(i) / storage.METADATA_FILE).exists()
        for i in ("cartpole/mix-train-v0", "cartpole/mix-val-v0")
    ]


def test_dry_run_plans_the_counts_the_real_run_writes(sources: tuple[str, str]) -> None:
    dry = run_recipe(mix_recipe(), name="mix", dry_run=True)
    assert outputs_exist() == [False, False]
    assert dry.outputs == {}
    real = run_recipe(mix_recipe(), name="mix")
    assert real.plan == dry.plan
    assert real.outputs == {"train": "cartpole/mix-train-v0", "val": "cartpole/mix-val-v0"}
    random, heuristic = (load_dataset(s) for s in sources)
    keep = [d.filter_episodes("return >= 15") for d in (random, heuristic)]
    total = sum(k.total_episodes for k in keep)
    train, val = load_dataset("cartpole/mix-train-v0"), load_dataset("cartpole/mix-val-v0")
    assert train.total_episodes + val.total_episodes == total
    assert train.total_episodes == round(0.8 * total)
    assert (
        f"output train -> cartpole/mix-train-v0 ({train.total_episodes:,} episodes, "
        in "\n".join(dry.plan)
    )
    assert dry.plan[
        2
    ] == f"combine random + heuristic -> mix: {random.total_episodes + 6} episodes, " + (
        f"{random.total_steps + heuristic.total_steps:,} steps"
    )
    assert storage.verify_dataset("cartpole/mix-train-v0").ok
    assert min(train.episodes()["return"]) >= 15
    assert dry.render().endswith("dry run: nothing written")
    assert real.render().endswith("wrote 2 dataset(s)")


def test_outputs_record_lineage_metadata_and_env_spec(sources: tuple[str, str]) -> None:
    recipe = mix_recipe()
    recipe["outputs"]["val"] = {"id": "cartpole/mix-val-v0", "metadata": {"author": "bo"}}
    run_recipe(recipe, name="mix", provenance={"recipe": recipe})
    val = load_dataset("cartpole/mix-val-v0")
    lineage = val.metadata["lineage"]
    assert lineage["operation"] == {"name": "recipe", "recipe": "mix", "output": "val"}
    names = [s["dataset_id"] for s in lineage["sources"]]
    assert set(names) <= set(sources)
    steps = lineage["sources"][0]["steps"]
    assert [s["name"] for s in steps] == ["filter", "split"]
    assert steps[0]["where"] == "return >= 15"
    assert steps[1]["names"] == ["train", "val"] and steps[1]["part"] == 1
    assert val.metadata["author"] == "bo"
    assert val.metadata["description"] == "mixed"
    assert val.metadata["provenance"]["recipe"]["outputs"]["train"] == "cartpole/mix-train-v0"
    assert val.env_spec is not None and val.env_spec.max_episode_steps == 500  # the max
    for ep, (src, src_id) in zip(
        val.iterate_episodes(), zip(*val.episode_sources().values(), strict=True), strict=True
    ):
        np.testing.assert_array_equal(ep.observations, load_dataset(src)[int(src_id)].observations)


def test_a_single_source_split_matches_split_dataset(sources: tuple[str, str]) -> None:
    recipe = {
        "sources": {"r": sources[0]},
        "steps": [{"split": {"sizes": [0.5, 0.5], "names": ["a", "b"], "seed": 7}}],
        "outputs": {"a": "cartpole/a-v0"},
    }
    run_recipe(recipe)
    a, _ = split_dataset(load_dataset(sources[0]), [0.5, 0.5], seed=7)
    got = load_dataset("cartpole/a-v0").episode_sources()["source_id"]
    assert got.tolist() == a.episode_indices.tolist()


def test_subsample_and_rename_steps(sources: tuple[str, str]) -> None:
    recipe = {
        "sources": {"r": sources[0]},
        "steps": [
            {"subsample": {"n": 10, "seed": 1}},
            {"rename": {"r": "small"}},
            {"subsample": {"fraction": 0.5, "seed": 1, "in": "small"}},
        ],
        "outputs": {"small": {"id": "cartpole/small-v0"}},
    }
    result = run_recipe(recipe)
    assert result.plan[1:4] == [
        "subsample r to 10: 10 episodes, " + f"{int(result_steps(sources[0], recipe, 1)):,} steps",
        "rename r -> small",
        result.plan[3],
    ]
    assert load_dataset("cartpole/small-v0").total_episodes == 5


def result_steps(dataset_id: str, recipe: dict[str, Any], seed: int) -> int:
    ds = load_dataset(dataset_id)
    order = np.random.default_rng(seed).permutation(ds.total_episodes)[:10]
    return int(ds.episodes()["length"][np.sort(order)].sum())


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"sources": {"random": "cartpole/nope-v0"}},
            DatasetNotFoundError,
            "cartpole/nope-v0",
        ),
        (
            {"steps": [{"filtr": "return > 3"}]},
            UsageError,
            "recipe mix: step 1: unknown step 'filtr'; did you mean 'filter'? "
            "(known: combine, filter, split, subsample, rename)",
        ),
        (
            {"steps": [{"filter": "return >> 3"}]},
            ExpressionError,
            "bad expression 'return >> 3'",
        ),
        (
            {"steps": [{"filter": {"where": "return > 3", "on": "x"}}]},
            UsageError,
            "recipe mix: step 1 (filter): unknown parameter 'on'",
        ),
        (
            {"steps": [{"split": {"sizes": [0.5, 0.5]}}]},
            UsageError,
            "several selections exist (random, heuristic); say which one",
        ),
        (
            {"steps": [{"filter": "return > 1e9"}], "outputs": {"random": "cartpole/x-v0"}},
            UsageError,
            "output 'random': has no episodes",
        ),
        ({"outputs": {"tarin": "cartpole/x-v0"}}, UsageError, "did you mean 'train'?"),
        ({"push": True}, UsageError, "no remote given: pass --remote URI"),
        ({"push": "s3://bucket"}, UsageError, "unknown scheme 's3'"),
        ({"push": {"remot": "file:///x"}}, UsageError, "unknown key 'remot'; did you mean"),
        (
            {"push": {"remote": "file:///x", "outputs": ["tarin"]}},
            UsageError,
            "recipe mix: push: unknown output 'tarin'; did you mean 'train'?",
        ),
        ({"sauces": {}}, UsageError, "unknown key 'sauces'; did you mean 'sources'?"),
        ({"outputs": {"train": "../escape-v0"}}, UsageError, "is a path, not an id"),
    ],
)
def test_bad_recipes_fail_before_any_write(
    sources: tuple[str, str], change: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        run_recipe(mix_recipe(**change), name="mix")
    assert outputs_exist() == [False, False]
    assert sorted(load_dataset(s).total_episodes for s in sources) == [6, 40]


def test_push_publishes_the_chosen_outputs(sources: tuple[str, str], tmp_path: Path) -> None:
    remote = tmp_path / "shared"
    remote.mkdir()
    recipe = mix_recipe(push={"remote": "file:///nowhere", "outputs": ["train"]})
    plan = run_recipe(recipe, name="mix", dry_run=True, remote=f"file://{remote}")
    assert plan.plan[-1] == f"push train -> file://{remote}"  # the command line wins
    assert list_remote_datasets(f"file://{remote}") == {}

    result = run_recipe(recipe, name="mix", remote=f"file://{remote}")
    assert list(list_remote_datasets(f"file://{remote}")) == ["cartpole/mix-train-v0"]
    assert len(result.pushed) == 1
    assert result.pushed[0].startswith(f"cartpole/mix-train-v0 pushed to file://{remote}: ")
    pushed = storage.read_metadata(remote / "cartpole" / "mix-train-v0")
    assert pushed["fingerprint"] == load_dataset("cartpole/mix-train-v0").fingerprint


def test_incompatible_sources_and_existing_outputs_fail_before_any_write(
    sources: tuple[str, str],
) -> None:
    cartpole("cartpole/other-v0", 3, env_kwargs={"sutton_barto_reward": True})
    recipe = mix_recipe(sources={"random": sources[0], "heuristic": "cartpole/other-v0"})
    with pytest.raises(
        UsageError, match=re.escape("random, heuristic cannot be combined: env_spec")
    ):
        run_recipe(recipe, name="mix")
    assert outputs_exist() == [False, False]
    cartpole("cartpole/mix-val-v0", 2)  # the second output exists: the first is not written
    with pytest.raises(DatasetExistsError, match=re.escape("pass overwrite=true")):
        run_recipe(mix_recipe(), name="mix")
    assert outputs_exist() == [False, True]
    run_recipe(mix_recipe(), name="mix", overwrite=True)
    assert load_dataset("cartpole/mix-val-v0").metadata["lineage"]["operation"]["name"] == "recipe"


def test_shipped_recipe_composes_and_runs(datasets_root: Path) -> None:
    cartpole("cartpole/random-v0", 30)
    cartpole("cartpole/heuristic-v0", 4, "CartPoleHeuristic", max_episode_steps=40)
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("curate", overrides=["recipe=cartpole_mix", "recipe.seed=5"])
    recipe = OmegaConf.to_container(cfg.recipe, resolve=True)
    assert recipe["steps"][2]["split"]["seed"] == 5
    result = run_recipe(recipe, name="cartpole_mix")
    assert set(result.outputs.values()) == {
        "cartpole/mix-s5-train-v0",
        "cartpole/mix-s5-val-v0",
        "cartpole/mix-s5-test-v0",
    }
    total = sum(load_dataset(i).total_episodes for i in result.outputs.values())
    kept = sum(
        load_dataset(s).filter_episodes("return >= 20").total_episodes
        for s in ("cartpole/random-v0", "cartpole/heuristic-v0")
    )
    assert total == kept
