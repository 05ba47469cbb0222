"""The layout checksum a writer stores is the one a reader computes (``storage.hdf5``).

The writer hashes the datasets it just created, in the order a reader's walk of the file
takes (by name, depth first), instead of walking the file again (issue 18: ~40% of building
a small shard). Names that sort differently as whole paths than as a walk does (``a-b``
before ``a/…`` as strings, after it in a walk) must still agree.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from collector import storage
from collector.errors import CorruptDatasetError
from collector.storage import hdf5
from tests.collector.test_format import synth

NAMES = ["a/c", "a/b", "a-b", "a.b", "B", "b_1", "é", "z/y/x"]


def odd_batch(infos: bool) -> storage.EpisodeBatch:
    base = synth([0, 1, 2])
    obs, rows = base.observations[""], len(base.observations[""])
    batch = storage.EpisodeBatch(
        observations={n: obs + i for i, n in enumerate(NAMES)},
        actions={"": base.actions[""]},
        rewards=base.rewards,
        terminations=base.terminations,
        truncations=base.truncations,
        table=base.table,
    )
    if infos:
        batch.infos = {n: np.arange(rows, dtype=np.int32) + i for i, n in enumerate(NAMES)}
        batch.info_masks = {n: np.ones(rows, bool) for n in NAMES}
    storage.fill_digests(batch)
    return batch


@pytest.mark.parametrize("infos", [False, True])
@pytest.mark.parametrize("compression", [None, "lzf", "gzip:4", "zstd:3"])
def test_the_stored_layout_checksum_matches_a_walk_of_the_file(
    tmp_path: Path, infos: bool, compression: str | None
) -> None:
    batch = odd_batch(infos)
    path = tmp_path / "shard.h5"
    storage.write_shard_file(batch, path, compression)
    back = storage.read_shard(path)  # walks the file and refuses a checksum that differs
    assert sorted(back.observations) == sorted(NAMES)
    for name in NAMES:
        np.testing.assert_array_equal(back.observations[name], batch.observations[name])
    assert (back.infos is not None) == infos


def test_a_shard_checked_in_this_process_is_not_checked_again_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: reopening a shard (a new reader per load or epoch) skips the walk and the
    layout checksum of every dataset, the fixed cost that made many shards read slower;
    any change to the file gets it checked again."""
    batch = odd_batch(False)
    path = tmp_path / "shard.h5"
    storage.write_shard_file(batch, path, "lzf")
    time.sleep(hdf5.SETTLED_NS / 1e9)  # a file changed within the clock's tick is not trusted
    checked: list[str] = []
    real = hdf5.check_layout
    monkeypatch.setattr(hdf5, "check_layout", lambda f: checked.append(f.filename) or real(f))
    got = []
    for _ in range(3):
        reader = storage.ShardReader()
        got.append(reader.read_rows(path, slice(0, 4), slice(0, 3)))
        reader.close()
    assert len(checked) == 1
    for rows in got:
        for name in NAMES:
            np.testing.assert_array_equal(rows.observations[name], batch.observations[name][:4])
        np.testing.assert_array_equal(rows.rewards, batch.rewards[:3])
    os.chmod(path, 0o644)
    with h5py.File(path, "r+") as f:  # a chunk stored again: its index changes
        dset = f["rewards"]
        mask, raw = dset.id.read_direct_chunk((0,))
        dset.id.write_direct_chunk((0,), raw + bytes(8), filter_mask=mask)
    with pytest.raises(CorruptDatasetError, match="layout does not match"):
        storage.ShardReader().read_rows(path, slice(0, 4), slice(0, 3))
    assert len(checked) == 2
