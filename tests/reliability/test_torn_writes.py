"""Torn writes (issue 08, item 2): a crash at each step of the commit protocol.

A child process extends a committed dataset and dies (``os._exit``, no cleanup, as a kill -9
would) at an exact point: while a shard is being written, after a shard is installed but before
``metadata.json`` names it, half-way through writing ``metadata.json.tmp``, and half-way
through a repack. Each time the dataset opens at the previous commit, ``verify`` is clean, and
the next run removes what the crash left and completes with the uninterrupted fingerprint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env, collect_cartpole

from collector import storage
from curation.api import load_dataset

FIRST, TOTAL = 10, 30
DATASET = "torn/cartpole-v0"
#: a commit (and a small shard) per 5 episodes; the run ends by repacking them into one
CHECKPOINT = {"every_episodes": 5}

#: Child-side crash points: each patches one step of the commit protocol to die half-way.
CRASHES = {
    "shard-half-written": """
real = storage.durable.write_new_file
def crash(path, data, *args, **kwargs):
    real(path, data, *args, **kwargs)
    if path.name.startswith(".shard-"):  # a commit window's shard (the encoder's image)
        with open(path, "r+b") as fh:
            fh.truncate(path.stat().st_size // 2)
        os._exit(137)
storage.durable.write_new_file = crash
""",
    "shard-installed-not-committed": """
real = storage.atomic_write
def crash(path, data):
    if path.name == storage.METADATA_FILE:
        named = {e["file"] for e in json.loads(path.read_text())["shards"]}
        if any(p.name not in named for p in (path.parent / storage.DATA_DIR).iterdir()):
            os._exit(137)
    real(path, data)
storage.durable.atomic_write = crash
""",
    "metadata-tmp-half-written": """
real = storage.atomic_write
def crash(path, data):
    if path.name == storage.METADATA_FILE and json.loads(path.read_text())["total_episodes"] > 10:
        path.with_name(path.name + ".tmp").write_bytes(data[: len(data) // 2])
        os._exit(137)
    real(path, data)
storage.durable.atomic_write = crash
""",
    "repack-half-written": """
real = storage.merge_shards
def crash(sources, dest, compression="gzip", entries=None):
    real(sources, dest, compression, entries)
    with open(dest, "r+b") as fh:
        fh.truncate(dest.stat().st_size // 3)
    os._exit(137)
storage.hdf5.merge_shards = crash
""",
}


def run_child(root: Path, crash: str) -> int:
    """Extend ``DATASET`` to ``TOTAL`` episodes in a child that dies at ``crash``."""
    code = "\n".join(
        [
            "import json, os",
            "from collector import storage",
            "from helpers import collect_cartpole",
            f"CHECKPOINT = {CHECKPOINT!r}",
            CRASHES[crash],
            f"collect_cartpole({DATASET!r}, {TOTAL}, checkpoint=CHECKPOINT)",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(root), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 137, done.stderr[-2000:]
    return done.returncode


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARVEST_DATASETS", str(tmp_path_factory.mktemp("reference")))
        collect_cartpole(DATASET, TOTAL, checkpoint=CHECKPOINT)
        return storage.read_metadata(storage.dataset_path(DATASET))["fingerprint"]


@pytest.mark.slow
@pytest.mark.parametrize("crash", sorted(CRASHES))
def test_a_crash_inside_a_commit_leaves_the_previous_commit_and_the_next_run_cleans_up(
    datasets_root: Path, uninterrupted: str, crash: str
) -> None:
    collect_cartpole(DATASET, FIRST, checkpoint=CHECKPOINT)
    path = storage.dataset_path(DATASET)
    data = path / storage.DATA_DIR
    run_child(datasets_root, crash)

    meta = storage.read_metadata(path)  # a whole commit, never a torn one
    named = {e["file"] for e in meta["shards"]}
    leftovers = sorted(p.name for p in data.iterdir() if p.name not in named)
    leftovers += [storage.METADATA_TMP] if (path / storage.METADATA_TMP).exists() else []
    assert leftovers, f"{crash}: the crash left nothing behind; it did not hit its moment"
    if crash == "metadata-tmp-half-written":
        with pytest.raises(json.JSONDecodeError):
            json.loads((path / storage.METADATA_TMP).read_text())
    report = storage.verify_dataset(DATASET)
    assert report.ok, report.problems
    # a repack runs after the last window is committed; every other crash is mid-run
    upper = TOTAL if crash.startswith("repack") else TOTAL - 1
    assert FIRST <= report.episodes <= upper
    ds = load_dataset(DATASET)
    assert len(ds) == report.episodes and ds.total_steps == report.steps

    collect_cartpole(DATASET, TOTAL, checkpoint=CHECKPOINT)  # the same command again: resume
    meta = storage.read_metadata(path)
    # what the crash left is gone: no temp files, and a file the final commit does not name
    # is a whole shard this run's own repack replaced (kept until the next writer opens the
    # dataset, for readers of older snapshots; names repeat, as the data does)
    assert not [p.name for p in data.iterdir() if p.name.startswith(".")]
    assert not (path / storage.METADATA_TMP).exists()
    for p in data.iterdir():
        if p.name not in {e["file"] for e in meta["shards"]} and storage.SHARD_RE.match(p.name):
            batch = storage.read_shard(p)
            assert (storage.episode_digests(batch) == batch.table["digest"]).all(), p.name
    report = storage.verify_dataset(DATASET)
    assert report.ok and report.episodes == TOTAL, report.problems
    assert meta["fingerprint"] == report.fingerprint == uninterrupted
