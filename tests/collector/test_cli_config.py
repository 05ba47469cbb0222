"""The ``collect`` command's config handling: typos, open maps, ``--help``, invalid actions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CLI, cli_env, folder_bytes
from hydra import compose, initialize_config_module

from collector import storage
from collector.collect import collect
from collector.errors import CollectionError


def run_cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args, f"hydra.run.dir={root.parent / 'runs'}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(root),
        cwd=root.parent,
        stdin=subprocess.DEVNULL,
    )


def written(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize("typo", ["epsiodes=2", "+epsiodes=2", "++epsiodes=2"])
def test_a_misspelt_key_is_one_line_with_a_suggestion_plain_or_added(
    typo: str, datasets_root: Path
) -> None:
    """Issue 16 item 21: Hydra's 6-line block, and its ``+`` hint collected 100 episodes."""
    proc = run_cli(typo, root=datasets_root)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "collect: error: unknown config key 'epsiodes'; did you mean 'episodes'? "
        "(collect --help lists the keys)"
    ]
    assert written(datasets_root) == []


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("+checkpoint.every_second=3", "checkpoint.every_seconds"),
        ("metadata.autor=me", "metadata.author"),
    ],
)
def test_a_misspelt_nested_key_is_refused_too(
    typo: str, suggestion: str, datasets_root: Path
) -> None:
    proc = run_cli(typo, root=datasets_root)
    assert proc.returncode == 2
    assert f"did you mean {suggestion!r}?" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and written(datasets_root) == []


def test_open_maps_take_new_keys_without_a_plus(datasets_root: Path) -> None:
    proc = run_cli(
        "env_kwargs.sutton_barto_reward=true", "metadata.ref_min_score=1.5", "episodes=2",
        "policy._target_=helpers.constant_action", "policy.value=1", root=datasets_root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    meta = storage.read_metadata(storage.dataset_path("cartpole-v1/random-v0", datasets_root))
    assert meta["env_spec"]["kwargs"]["sutton_barto_reward"] is True
    assert meta["ref_min_score"] == 1.5
    assert meta["provenance"]["config"]["policy"]["value"] == 1


def test_help_explains_the_main_keys_and_hides_the_curate_recipes(datasets_root: Path) -> None:
    proc = run_cli("--help", root=datasets_root)
    assert proc.returncode == 0
    assert "recipe" not in proc.stdout
    for key in ("env=", "episodes=", "seed=", "dataset_id=", "env_kwargs.", "policy=", "runner="):
        assert key in proc.stdout, key


def cfg(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose("collect", overrides=["progress=false", *overrides])


@pytest.mark.parametrize(("env", "action"), [("CartPole-v1", 5), ("Pendulum-v1", 5)])
def test_an_invalid_action_names_the_action_space_episode_and_step(env: str, action: int) -> None:
    config = cfg(
        f"env={env}", "episodes=2", "policy._target_=helpers.constant_action",
        f"+policy.value={action}",
    )  # fmt: skip
    space = "Discrete(2)" if env == "CartPole-v1" else "Box(-2.0, 2.0, (1,), float32)"
    with pytest.raises(CollectionError) as info:
        collect(config)
    message = str(info.value)
    assert message.startswith(
        f"episode 0 step 0: the policy's action {action!r} is not in the action space {space}"
    ), message
    assert "\n" not in message


def test_the_summary_tells_the_data_size_from_the_folder_size(datasets_root: Path) -> None:
    """Issue 16 item 22: the printed size was half of ``du`` while superseded shards remained.

    Issue 19 item 4: a finished run removes the shards its repack merged, so the folder is
    the dataset; shards merged outside a run stay until the next writer, and the summary
    says so.
    """
    import dataclasses

    from collector.cli import summary

    result = collect(cfg("episodes=60", "checkpoint.every_episodes=10"))
    shards = [p for p in (result.path / "data").iterdir() if storage.SHARD_RE.match(p.name)]
    assert len(shards) == 1  # merged, the six removed (and their index files)
    assert len(list((result.path / "data").iterdir())) == 2
    assert f"{storage.human_size(folder_bytes(result.path))} on disk at" in summary(result)
    assert folder_bytes(result.path) <= 1.1 * result.dataset_bytes + 64 * 1024
    kept = collect(
        cfg("episodes=60", "checkpoint.every_episodes=10", "storage.shard_mb=0.001",
            "dataset_id=kept/shards-v0")
    )  # fmt: skip
    with storage.DatasetWriter("kept/shards-v0") as writer:
        n = len(writer.meta["shards"])
        assert n > 1 and writer.repack(256 << 20) == n  # outside a run: left for readers
        meta = writer.meta
    merged = dataclasses.replace(kept, dataset_bytes=meta["dataset_bytes"])
    text = summary(merged)
    assert (
        f"{storage.human_size(merged.dataset_bytes)} of data; the folder holds "
        f"{storage.human_size(folder_bytes(kept.path))} until the next writer removes {n} "
        "superseded shard(s)"
    ) in text, text
    again = collect(cfg("episodes=60", "dataset_id=kept/shards-v0", "storage.shard_mb=0.001"))
    assert f"{storage.human_size(folder_bytes(again.path))} on disk at" in summary(again)


def test_the_size_on_disk_is_the_folders_index_files_and_manifest_included(
    datasets_root: Path,
) -> None:
    # issue 19 item 4: "the size printed is what du would say". 2,000 CartPole episodes keep
    # a 198 kB index file beside an 809 kB shard: the summary said 809.0 kB, du ~1 MB
    from collector.cli import summary

    result = collect(cfg("episodes=2000", "dataset_id=size/du-v0"))
    on_disk = folder_bytes(result.path)
    assert on_disk > 1.1 * result.dataset_bytes  # the index files and metadata.json count
    assert f"{storage.human_size(on_disk)} on disk at" in summary(result)
