"""Corruption (issue 08, item 3): damaged files are reported by ``verify`` and fail reads loudly.

A byte flipped anywhere in a shard, a truncated or deleted shard, and a ``metadata.json``
edited into invalid JSON: ``verify`` names what is wrong, and a read either raises
``CorruptDatasetError`` or returns exactly the original data, never wrong data silently.
Step columns carry HDF5's fletcher32 checksum per chunk and each episode-table column a
sha256 attribute, so reads catch damage without reading the whole file.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from helpers import collect_cartpole

from collector import storage
from collector.errors import CorruptDatasetError
from curation import cli
from curation.api import load_dataset

EPISODES = 40
COMPRESSIONS = ("lzf", "gzip", "none", "auto")
#: per compression, on top of the targeted ones; HARVEST_FLIPS=2000 for a longer run
RANDOM_FLIPS = int(os.environ.get("HARVEST_FLIPS", "150"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One single-shard CartPole dataset (infos recorded) per compression, collected once."""
    root = tmp_path_factory.mktemp("pristine")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARVEST_DATASETS", str(root))
        for comp in COMPRESSIONS:
            collect_cartpole(
                f"rel/{comp}-v0", EPISODES, record_infos=True, storage={"compression": comp}
            )
    return root


def install(pristine: Path, datasets_root: Path, comp: str) -> tuple[str, Path]:
    """Copy the pristine dataset into this test's root; returns (id, its only shard)."""
    dataset_id = f"rel/{comp}-v0"
    shutil.copytree(pristine / dataset_id, datasets_root / dataset_id)
    (shard,) = (datasets_root / dataset_id / storage.DATA_DIR).glob("shard-*.h5")
    shard.chmod(0o644)
    return dataset_id, shard


def read_all(dataset_id: str) -> list[tuple[Any, ...]]:
    """Every field of every episode, opened from scratch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            (
                e.id,
                e.seed,
                e.observations.copy(),
                e.actions.copy(),
                e.rewards.copy(),
                e.terminations.copy(),
                e.truncations.copy(),
                {k: np.array(v) for k, v in sorted((e.infos or {}).items())},
            )
            for e in load_dataset(dataset_id)
        ]


def same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    def eq(x: Any, y: Any) -> bool:
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(eq(x[k], y[k]) for k in x)
        if isinstance(x, np.ndarray):
            return x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
        return x == y

    return len(a) == len(b) and all(
        eq(u, v) for x, y in zip(a, b, strict=True) for u, v in zip(x, y, strict=True)
    )


def targeted_offsets(shard: Path) -> dict[int, str]:
    """File offsets inside every chunk of every column and every episode-table column."""
    found: dict[int, str] = {}

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        if obj.chunks is not None:
            for i in range(obj.id.get_num_chunks()):
                info = obj.id.get_chunk_info(i)
                for at, label in (
                    (0, "first"),
                    (info.size // 2, "middle"),
                    (info.size - 1, "last"),
                ):
                    found[info.byte_offset + at] = f"{name} chunk {i} ({label} byte)"
        elif obj.id.get_offset() is not None:
            found[obj.id.get_offset()] = f"{name} (contiguous)"

    with h5py.File(shard, "r") as f:
        f.visititems(visit)
    return found


@pytest.mark.parametrize("comp", COMPRESSIONS)
def test_a_flipped_bit_is_reported_by_verify_and_never_read_silently(
    pristine: Path, datasets_root: Path, comp: str
) -> None:
    dataset_id, shard = install(pristine, datasets_root, comp)
    reference = read_all(dataset_id)
    data = shard.read_bytes()
    targets = targeted_offsets(shard)
    assert any("observations chunk" in t for t in targets.values())
    assert any("episodes/length" in t for t in targets.values())
    rng = random.Random(f"flip-{comp}")
    offsets = {**targets, **{rng.randrange(len(data)): "random" for _ in range(RANDOM_FLIPS)}}
    outcomes: Counter[str] = Counter()
    for offset, where in sorted(offsets.items()):
        bad = bytearray(data)
        bad[offset] ^= 1 << rng.randrange(8)
        shard.write_bytes(bad)
        report = storage.verify_dataset(dataset_id)
        assert not report.ok, f"verify missed a flip at {offset} ({where})"
        assert report.problems[0].startswith(shard.name), report.problems
        try:
            got = read_all(dataset_id)
        except CorruptDatasetError as e:
            assert "run verify" in str(e) or "damaged" in str(e), str(e)
            outcomes["raised"] += 1
            continue
        # a read that succeeds must return the original data (a flip in HDF5's slack space)
        assert same(got, reference), f"wrong data returned silently: flip at {offset} ({where})"
        # step data is always read: a flip in one of its chunks must fail the read (table
        # columns a reader does not use, e.g. the digests, may go unnoticed until verify)
        assert where == "random" or where.startswith("episodes/"), f"{where}: not detected"
        outcomes["harmless"] += 1
    shard.write_bytes(data)
    assert storage.verify_dataset(dataset_id).ok
    chunks = sum(" chunk " in where for where in targets.values())
    assert outcomes["raised"] >= chunks >= 15
    print(
        f"flips ({comp}): {len(offsets)} tried ({len(targets)} targeted), verify caught "
        f"{len(offsets)}, reads raised {outcomes['raised']}, returned the original data "
        f"{outcomes['harmless']}, wrong data 0"
    )


@pytest.mark.parametrize("comp", ["lzf", "none"])
def test_a_truncated_shard_is_named_by_verify_and_fails_reads(
    pristine: Path, datasets_root: Path, comp: str
) -> None:
    dataset_id, shard = install(pristine, datasets_root, comp)
    size = shard.stat().st_size
    for keep in (size - 1, size // 2, 100, 0):
        with shard.open("r+b") as f:
            f.truncate(keep)
        (problem,) = storage.verify_dataset(dataset_id).problems
        assert problem == (
            f"{shard.name}: {keep:,} bytes, metadata.json says {size:,} (truncated)"
        ), problem
        with pytest.raises(CorruptDatasetError, match=rf"{shard.name}.*run verify"):
            read_all(dataset_id)


def test_a_deleted_shard_is_named_by_verify_and_fails_reads(
    pristine: Path, datasets_root: Path
) -> None:
    dataset_id, shard = install(pristine, datasets_root, "lzf")
    shard.unlink()
    assert storage.verify_dataset(dataset_id).problems == [f"{shard.name}: missing"]
    with pytest.raises(CorruptDatasetError, match=rf"{shard.name} is missing.*run verify"):
        read_all(dataset_id)


def test_metadata_edited_into_invalid_json_is_reported_and_collect_keeps_the_shards(
    pristine: Path, datasets_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset_id, shard = install(pristine, datasets_root, "lzf")
    meta_file = datasets_root / dataset_id / storage.METADATA_FILE
    text = meta_file.read_text()
    meta_file.write_text(text.replace('"total_steps":', '"total_steps"', 1))  # a hand edit
    expected = "is not valid JSON (Expecting ':' delimiter at line"
    (problem,) = storage.verify_dataset(dataset_id).problems
    assert expected in problem and "restore it from a copy" in problem
    with pytest.raises(CorruptDatasetError, match=re.escape(expected)):
        read_all(dataset_id)
    assert cli.main(["verify", dataset_id]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{dataset_id}: 1 problem(s)" and expected in out
    # a resume refuses with the same line and touches nothing
    before = shard.read_bytes()
    with pytest.raises(CorruptDatasetError, match=re.escape(expected)):
        collect_cartpole(dataset_id, EPISODES + 5, record_infos=True)
    assert shard.read_bytes() == before and meta_file.read_text() != text
    meta_file.write_text(text)
    assert storage.verify_dataset(dataset_id).ok


def test_an_episode_table_edited_in_place_fails_its_checksum(
    pristine: Path, datasets_root: Path
) -> None:
    # a still-valid HDF5 file whose table lies: without the checksum, reads would slice wrong rows
    dataset_id, shard = install(pristine, datasets_root, "gzip")
    with h5py.File(shard, "r+") as f:
        f["episodes/length"][0] += 1
    (problem,) = storage.verify_dataset(dataset_id).problems
    assert problem == f"{shard.name}: sha256 mismatch (file changed or corrupt)"
    # readers take the episode index from the shard's index file (issue 18): the lie is unused
    assert same(read_all(dataset_id), read_all_pristine(pristine, datasets_root))
    # a shard without one (written before index files existed) is read through its table
    path = storage.dataset_path(dataset_id)
    meta = storage.read_metadata(path)
    for entry in meta["shards"]:
        (path / storage.DATA_DIR / entry.pop("index")["file"]).unlink()
    (path / storage.METADATA_FILE).write_text(storage.seal_metadata(meta))
    with pytest.raises(CorruptDatasetError, match="column 'length' does not match its checksum"):
        read_all(dataset_id)


def read_all_pristine(pristine: Path, datasets_root: Path) -> list[tuple[Any, ...]]:
    """``read_all`` of the pristine gzip dataset, under another id of this test's root."""
    shutil.copytree(pristine / "rel/gzip-v0", datasets_root / "rel/copy-v0")
    meta = storage.read_metadata(datasets_root / "rel/copy-v0")
    meta["dataset_id"] = "rel/copy-v0"
    (datasets_root / "rel/copy-v0" / storage.METADATA_FILE).write_text(storage.seal_metadata(meta))
    return read_all("rel/copy-v0")
