"""A crash inside ``add_to_dataset``'s merge (issue 18 item 1): between installing the merged
shard and committing the manifest that names it.

A child process appends with ``DataCollector.add_to_dataset`` and dies (``os._exit``, as a
kill -9 would) while writing the manifest of a merge commit. The append before it is
committed; the dataset opens at that commit with every episode, ``verify`` is clean, and the
next append removes the orphaned merged shard, merges again and ends with the fingerprint of
the same episodes recorded in one run.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
from helpers import cli_env

from collector import storage
from collector.data_collector import DataCollector
from curation.api import load_dataset

DATASET = "torn/appended-v0"
PER_CALL = 3


def record(collector: DataCollector, first: int, count: int) -> None:
    """Record episodes with seeds ``first..first+count-1`` (actions seeded alike)."""
    for seed in range(first, first + count):
        collector.reset(seed=seed)
        collector.action_space.seed(seed)
        done = False
        while not done:
            *_, terminated, truncated, _ = collector.step(collector.action_space.sample())
            done = terminated or truncated


def child(crash: str) -> str:
    """A child's code: three appends after ``crash`` is patched in (it ``os._exit``s).

    The third append leaves four tier-0 shards, whose merge the crash hook interrupts.
    """
    return f"""
import json, os
import gymnasium as gym
from collector import storage
from collector.data_collector import DataCollector
{inspect.getsource(record)}
{crash}
collector = DataCollector(gym.make("CartPole-v1"))
for call in (1, 2, 3):
    record(collector, {PER_CALL} * call, {PER_CALL})
    collector.add_to_dataset({DATASET!r})
"""


def crashed_appends(code: str, datasets_root: Path) -> DataCollector:
    """Create the dataset here, run the crashing ``child`` code; this side's collector."""
    collector = DataCollector(gym.make("CartPole-v1"))
    record(collector, 0, PER_CALL)
    collector.create_dataset(DATASET)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=cli_env(datasets_root),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 137, done.stderr[-2000:]
    return collector


#: The merge's commit dies: a manifest with fewer shards than the commit on disk.
CHILD = child("""
real = storage.atomic_write
def crash(path, data):
    if path.name == storage.METADATA_FILE and path.exists():
        if len(json.loads(data)["shards"]) < len(json.loads(path.read_text())["shards"]):
            os._exit(137)  # a merge commit: fewer shards than the commit on disk
    real(path, data)
storage.durable.atomic_write = crash
""")


@pytest.mark.slow
def test_a_crash_between_merge_install_and_commit_keeps_the_appended_commit(
    datasets_root: Path,
) -> None:
    collector = crashed_appends(CHILD, datasets_root)

    path = storage.dataset_path(DATASET)
    data = path / storage.DATA_DIR
    meta = storage.read_metadata(path)  # the append's commit, whole
    assert len(meta["shards"]) == 4 and meta["total_episodes"] == 4 * PER_CALL
    named = {e["file"] for e in meta["shards"]}
    (orphan,) = [  # the merged shard (and its index file, written before it)
        p for p in data.iterdir() if p.name not in named and storage.SHARD_RE.match(p.name)
    ]
    assert storage.read_shard_table(orphan, ("id",))["id"].tolist() == list(range(4 * PER_CALL))
    report = storage.verify_dataset(DATASET)
    assert report.ok and report.episodes == 4 * PER_CALL, report.problems
    assert len(load_dataset(DATASET)) == 4 * PER_CALL

    record(collector, 4 * PER_CALL, PER_CALL)
    summary = collector.add_to_dataset(DATASET)
    assert not orphan.exists()  # the next writer removed it, then merged again
    meta = storage.read_metadata(path)
    (merged,) = meta["shards"]
    # besides the merged shard: the five it replaced (kept for readers of older snapshots)
    kept = {p.name for p in data.iterdir() if storage.SHARD_RE.match(p.name)} - {merged["file"]}
    assert named < kept and len(kept) == len(named) + 1
    one = DataCollector(gym.make("CartPole-v1"))
    record(one, 0, 5 * PER_CALL)
    assert summary.fingerprint == one.create_dataset("torn/one-v0").fingerprint
    assert storage.verify_dataset(DATASET).ok


#: The merge dies half-way through writing the merged shard, which a merge of shards this
#: process wrote builds in memory and writes as one image (issue 18).
TORN_CHILD = child("""
real = storage.durable.write_new_file
def crash(path, data, *args, **kwargs):
    if path.name.startswith(".merge-"):
        path.write_bytes(data[: len(data) // 3])
        os._exit(137)
    real(path, data, *args, **kwargs)
storage.durable.write_new_file = crash
""")


@pytest.mark.slow
def test_a_crash_while_writing_a_merged_shard_keeps_the_appended_commit(
    datasets_root: Path,
) -> None:
    collector = crashed_appends(TORN_CHILD, datasets_root)

    path = storage.dataset_path(DATASET)
    data = path / storage.DATA_DIR
    meta = storage.read_metadata(path)  # the third append's commit, whole
    assert len(meta["shards"]) == 4 and meta["total_episodes"] == 4 * PER_CALL
    (torn,) = data.glob(".merge-*")
    report = storage.verify_dataset(DATASET)
    assert report.ok and report.episodes == 4 * PER_CALL, report.problems

    record(collector, 4 * PER_CALL, PER_CALL)
    summary = collector.add_to_dataset(DATASET)
    assert not torn.exists()  # the next writer removed it, then merged again
    (merged,) = storage.read_metadata(path)["shards"]
    assert merged["episodes"] == 5 * PER_CALL
    one = DataCollector(gym.make("CartPole-v1"))
    record(one, 0, 5 * PER_CALL)
    assert summary.fingerprint == one.create_dataset("torn/one-v0").fingerprint
    assert storage.verify_dataset(DATASET).ok
