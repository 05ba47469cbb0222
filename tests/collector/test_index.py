"""Shard index files (``collector/storage/index.py``, issue 18 items 1-2).

What a commit and an open cost is counted in shard episode tables read (``hdf5.read_table``)
and index files read (``index.read_index_file``), never in wall time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from helpers import folder_bytes, record_cartpole

from collector import storage
from collector.data_collector import DataCollector
from collector.errors import CorruptDatasetError
from collector.storage import hdf5, index, writer
from curation import load_dataset
from curation.snapshot import INDEX_CACHE
from tests.collector.test_format import base_meta, synth


@dataclass
class Reads:
    tables: int = 0
    indexes: int = 0
    merged: int = 0  # shards merged (``merge_shards`` reads each one's table)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    """Counts of shard episode tables and index files read; caches of this process emptied."""
    counts = Reads()
    real_table, real_index = hdf5.read_table, index.read_index_file

    def read_table(*args: Any, **kwargs: Any) -> dict[str, Any]:
        counts.tables += 1
        return real_table(*args, **kwargs)

    def read_index_file(*args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        counts.indexes += 1
        return real_index(*args, **kwargs)

    real_merge = hdf5.merge_shards

    def merge_shards(sources: Any, *args: Any, **kwargs: Any) -> Any:
        counts.merged += len(sources)
        return real_merge(sources, *args, **kwargs)

    monkeypatch.setattr(hdf5, "merge_shards", merge_shards)
    monkeypatch.setattr(hdf5, "read_table", read_table)
    monkeypatch.setattr(writer, "read_table", read_table)
    monkeypatch.setattr(index, "read_index_file", read_index_file)
    storage.forget_committed_indexes()
    INDEX_CACHE.clear()
    yield counts
    storage.forget_committed_indexes()
    INDEX_CACHE.clear()


def write(dsid: str, shards: list[list[int]]) -> dict[str, Any]:
    with storage.DatasetWriter(dsid) as w:
        w.start(base_meta())
        for ids in shards:
            w.write_shard(synth(ids))
        return w.commit()


def rewrite_manifest(dsid: str, change: Any, *, version: int | None = None) -> None:
    """Edit ``metadata.json`` and seal it again (``version=1``: unsealed, as format 1)."""
    path = storage.dataset_path(dsid) / storage.METADATA_FILE
    meta = json.loads(path.read_text())
    change(meta)
    if version == 1:
        meta.pop(storage.MANIFEST_SHA256, None)
        meta["format_version"] = 1
        path.write_text(storage.dumps_metadata(meta))
    else:
        path.write_text(storage.seal_metadata(meta))


def as_previous_format(dsid: str, version: int = 2) -> None:
    """Make a dataset as the previous main wrote it: no index files, no ``index`` fields."""
    data = storage.dataset_path(dsid) / storage.DATA_DIR

    def strip(meta: dict[str, Any]) -> None:
        for entry in meta["shards"]:
            (data / entry.pop("index")["file"]).unlink()

    rewrite_manifest(dsid, strip, version=version)
    assert not [p for p in data.iterdir() if storage.INDEX_FILE_RE.fullmatch(p.name)]


def test_add_to_dataset_reads_no_more_tables_at_the_50th_call_than_at_the_2nd(
    datasets_root: Path, reads: Reads
) -> None:
    """Each call used to re-read every committed shard's table: O(N) per call."""
    collector = DataCollector(gym.make("CartPole-v1"))
    path = storage.dataset_path("cp/appended-v0")
    per_call: list[tuple[int, int]] = []
    for i in range(50):
        collector.reset(seed=i)
        done = False
        while not done:
            *_, terminated, truncated, _ = collector.step(i % 2)
            done = terminated or truncated
        before = (reads.tables - reads.merged, reads.indexes)
        if i == 0:
            collector.create_dataset("cp/appended-v0")
        else:
            collector.add_to_dataset("cp/appended-v0")
        # tables read but those of the shards merged (compaction); the spill adopted is not
        # read back either: the collector wrote it and hands its table over
        per_call.append((reads.tables - reads.merged - before[0], reads.indexes - before[1]))
    assert per_call[1:] == [(0, 0)] * 49  # the writer reuses what it committed last
    meta = storage.read_metadata(path)
    assert meta["total_episodes"] == 50 and len(meta["shards"]) < 50  # small shards merged
    assert storage.verify_dataset("cp/appended-v0").ok


def test_a_writer_opened_afresh_reads_index_files_not_tables(
    datasets_root: Path, reads: Reads
) -> None:
    meta = write("ns/afresh-v0", [[0, 1], [2], [3, 4, 5]])
    storage.forget_committed_indexes()  # as in a new process
    reads.tables = reads.indexes = 0
    with storage.DatasetWriter("ns/afresh-v0") as w:
        assert sorted(w.committed_ids().tolist()) == [0, 1, 2, 3, 4, 5]
        w.write_shard(synth([6]))
        assert w.commit()["fingerprint"] != meta["fingerprint"]
    assert (reads.tables, reads.indexes) == (0, 3)


def test_load_dataset_reads_no_index_until_used_and_reuses_it_for_the_same_commit(
    datasets_root: Path, reads: Reads
) -> None:
    meta = write("ns/lazy-v0", [[0, 1], [2], [3, 4, 5]])
    reads.tables = reads.indexes = 0
    ds = load_dataset("ns/lazy-v0")
    assert (len(ds), ds.total_steps) == (6, meta["total_steps"])
    assert ds.fingerprint == meta["fingerprint"] and ds.spec.total_episodes == 6
    assert ds.observation_space == base_meta_space() and ds.metadata["total_episodes"] == 6
    assert (reads.tables, reads.indexes) == (0, 0)
    assert ds.episode_indices.tolist() == [0, 1, 2, 3, 4, 5]  # first use: one file a shard
    assert (reads.tables, reads.indexes) == (0, 3)
    again = load_dataset("ns/lazy-v0")
    assert again.episode_indices.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(again.episodes()["length"], ds.episodes()["length"])
    assert (reads.tables, reads.indexes) == (0, 3)  # the same commit: nothing read again
    assert ds[5].id == 5  # options and metadata: from the index files, once per commit
    assert again[0].seed == ds[0].seed and load_dataset("ns/lazy-v0")[1].id == 1
    assert (reads.tables, reads.indexes) == (0, 6)
    write("ns/lazy-v0", [[0]])  # a new commit (an overwrite) is read anew
    assert load_dataset("ns/lazy-v0").episode_indices.tolist() == [0]
    assert (reads.tables, reads.indexes) == (0, 7)


def base_meta_space() -> gym.Space:
    from collector.spaces import space_from_json

    return space_from_json(base_meta()["observation_space"])


@pytest.mark.parametrize("version", [2, 1])
def test_a_dataset_of_the_previous_format_opens_verifies_and_extends(
    datasets_root: Path, reads: Reads, version: int
) -> None:
    dsid = f"ns/previous{version}-v0"
    meta = write(dsid, [[0, 1], [2, 3, 4]])
    new_index = load_dataset(dsid).episodes()
    as_previous_format(dsid, version)
    INDEX_CACHE.clear()
    storage.forget_committed_indexes()
    reads.tables = reads.indexes = 0
    ds = load_dataset(dsid)
    assert ds.fingerprint == meta["fingerprint"]
    old_index = ds.episodes()
    assert (reads.tables, reads.indexes) == (2, 0)  # from the HDF5 tables, as before
    for key, column in new_index.items():
        np.testing.assert_array_equal(old_index[key], column)
    assert [ep.seed for ep in ds] == [ep.seed for ep in load_dataset(dsid)]
    report = storage.verify_dataset(dsid)
    assert report.ok and report.fingerprint == meta["fingerprint"]
    with storage.DatasetWriter(dsid) as w:
        assert w.commit()["fingerprint"] == meta["fingerprint"]  # same ids and digests
        w.write_shard(synth([5, 6]))
        extended = w.commit()
    assert [("index" in e) for e in extended["shards"]] == [False, False, True]
    assert extended["format_version"] == storage.FORMAT_VERSION
    assert storage.verify_dataset(dsid).ok
    assert load_dataset(dsid).episode_indices.tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_fingerprints_do_not_depend_on_index_files(datasets_root: Path, reads: Reads) -> None:
    with_index = write("ns/with-v0", [[0, 1], [2, 3, 4]])
    write("ns/without-v0", [[0, 1], [2, 3, 4]])
    as_previous_format("ns/without-v0")
    storage.forget_committed_indexes()
    with storage.DatasetWriter("ns/without-v0") as w:
        assert w.commit()["fingerprint"] == with_index["fingerprint"]
    assert storage.verify_dataset("ns/without-v0").fingerprint == with_index["fingerprint"]


def test_an_index_file_is_the_table_it_copies(tmp_path: Path) -> None:
    batch = storage.fill_digests(synth([3, 1, 2]))
    batch.table["options"] = [None, '{"x":1}', ""]
    batch.table["metadata"] = ['{"é":2}', None, None]
    data = storage.build_index_bytes(batch.table)
    assert storage.build_index_bytes(batch.table) == data  # deterministic (verify rebuilds it)
    (tmp_path / "s.idx").write_bytes(data)
    got = storage.read_index_file(tmp_path / "s.idx", storage.index_entry("s.h5", data, 3))
    for key in storage.TABLE_FIELDS:
        if key in ("options", "metadata"):
            want = [b"" if v is None else v.encode() for v in batch.table[key]]
            assert got[key].tolist() == want, key
        else:
            np.testing.assert_array_equal(got[key], batch.table[key], err_msg=key)


def _other_rows(rows: int, declared: int) -> Any:
    """An index file of ``rows`` rows for shard 1 (3 rows), sealed, declaring ``declared``."""

    def damage(meta: dict[str, Any], data: Path) -> None:
        entry = meta["shards"][1]
        body = storage.build_index_bytes(storage.fill_digests(synth(list(range(rows)))).table)
        path = data / entry["index"]["file"]
        path.chmod(0o644)
        path.write_bytes(body)
        entry["index"].update(storage.index_entry(entry["file"], body, declared))

    return damage


def _other_ids(meta: dict[str, Any], data: Path) -> None:
    """A sealed index file whose ids are not the ones the manifest lists for the shard."""
    entry = meta["shards"][1]
    body = storage.build_index_bytes(storage.fill_digests(synth([7, 8, 9])).table)
    path = data / entry["index"]["file"]
    path.chmod(0o644)
    path.write_bytes(body)
    entry["index"].update(storage.index_entry(entry["file"], body, 3))


def _damage_file(how: str) -> Any:
    def damage(meta: dict[str, Any], data: Path) -> None:
        path = data / meta["shards"][1]["index"]["file"]
        body = path.read_bytes()
        path.chmod(0o644)
        if how == "truncated":
            path.write_bytes(body[:-5])
        elif how == "flipped":
            path.write_bytes(body[:40] + bytes([body[40] ^ 1]) + body[41:])
        elif how == "missing":
            path.unlink()
        elif how == "junk header":  # sealed as right: the layout check must catch it
            path.write_bytes(b"x" * len(body))
            meta["shards"][1]["index"]["sha256"] = storage.sha256_file(path)

    return damage


HOSTILE = {
    "truncated": (_damage_file("truncated"), "metadata.json says"),
    "one flipped bit": (_damage_file("flipped"), "does not match its sha256"),
    "missing": (_damage_file("missing"), "is missing"),
    "junk under a right sha256": (_damage_file("junk header"), "not a harvest index of 3 rows"),
    "fewer rows declared than the shard's": (_other_rows(1, 1), "with its sha256, bytes, rows"),
    "more rows than declared": (_other_rows(4, 3), "not a harvest index of 3 rows"),
    "other episode ids": (_other_ids, "does not hold the episodes metadata.json lists"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_index_file_is_one_line_corrupt_dataset_error(
    datasets_root: Path, reads: Reads, case: str
) -> None:
    dsid = "ns/hostile-v0"
    write(dsid, [[0, 1], [2, 3, 4]])
    data = storage.dataset_path(dsid) / storage.DATA_DIR
    damage, message = HOSTILE[case]
    rewrite_manifest(dsid, lambda meta: damage(meta, data))
    storage.forget_committed_indexes()
    errors = []
    with pytest.raises(CorruptDatasetError) as e:
        load_dataset(dsid).episode_indices  # noqa: B018 (the index is read on first use)
    errors.append(e.value)
    with pytest.raises(CorruptDatasetError) as e:
        storage.DatasetWriter(dsid)
    errors.append(e.value)
    for error in errors:
        text = str(error)
        assert "\n" not in text and message in text, text
    report = storage.verify_dataset(dsid)
    assert not report.ok


def test_verify_finds_an_index_file_that_differs_from_its_shard(datasets_root: Path) -> None:
    dsid = "ns/differs-v0"
    write(dsid, [[0, 1]])
    data = storage.dataset_path(dsid) / storage.DATA_DIR

    def other_seed(meta: dict[str, Any]) -> None:
        entry = meta["shards"][0]
        table = storage.read_shard_table(data / entry["file"])
        table["seed"] = table["seed"] + 1  # what readers would show: not what the shard holds
        body = storage.build_index_bytes(table)
        path = data / entry["index"]["file"]
        path.chmod(0o644)
        path.write_bytes(body)
        entry["index"].update(storage.index_entry(entry["file"], body, 2))

    rewrite_manifest(dsid, other_seed)
    report = storage.verify_dataset(dsid)
    assert report.problems == [
        f"{storage.index_name(report_file(dsid))}: differs from the episode table of "
        f"{report_file(dsid)}"
    ]


def report_file(dsid: str) -> str:
    return storage.read_metadata(storage.dataset_path(dsid))["shards"][0]["file"]


@pytest.mark.parametrize(
    "field",
    [
        {"file": "../x.idx", "sha256": "0" * 64, "bytes": 10, "rows": 2},
        {"file": "shard-000000-00000000.idx", "sha256": "0" * 64, "bytes": 10, "rows": 2},
        "shard.idx",
    ],
)
def test_a_malformed_index_field_is_refused_with_the_manifest(
    datasets_root: Path, field: Any
) -> None:
    write("ns/field-v0", [[0, 1]])
    rewrite_manifest("ns/field-v0", lambda meta: meta["shards"][0].update(index=field))
    with pytest.raises(CorruptDatasetError, match="index must name shard-.*idx"):
        storage.read_metadata(storage.dataset_path("ns/field-v0"))


def test_threads_opening_the_index_at_once_all_get_it(datasets_root: Path, reads: Reads) -> None:
    from concurrent.futures import ThreadPoolExecutor

    write("ns/threads-v0", [[0, 1], [2], [3, 4, 5]])
    ds = load_dataset("ns/threads-v0")
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: ds.snapshot.ids.tolist(), range(16)))
    assert got == [[0, 1, 2, 3, 4, 5]] * 16 and reads.indexes == 3


def test_stored_bytes_is_the_data_folder_and_a_listing_never_fails_on_odd_fields(
    datasets_root: Path,
) -> None:
    """The size list/show/cards print: shards and index files, what du says of ``data/``."""
    record_cartpole("cart/sized-v0")
    meta = storage.read_metadata(storage.dataset_path("cart/sized-v0"))
    on_disk = folder_bytes(storage.dataset_path("cart/sized-v0") / "data")
    assert storage.stored_bytes(meta) == on_disk > meta["dataset_bytes"]
    # a hostile or odd manifest (as a remote may list): the counts it has, never an error
    odd = {"dataset_bytes": 10, "shards": [{"index": {"bytes": "9"}}, {"index": 3}, 4, {}]}
    assert storage.stored_bytes(odd) == 10
    assert storage.stored_bytes({"dataset_bytes": -1, "shards": "x"}) == 0
    assert storage.stored_bytes({}) == 0
