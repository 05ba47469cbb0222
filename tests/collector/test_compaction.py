"""Merging the small shards of frequent appends (issue 18 item 1; ``storage.compaction``).

``DataCollector.add_to_dataset`` writes one small shard per call, stored under ids from 0 and
placed in the dataset by an ``id_offset``. Merges must handle such shards (and ``id_map``
shards linked from another dataset) without changing the fingerprint, keep the shard count
logarithmic in the number of calls, and re-write O(N log N) in all: counted from the
writer's return values and manifests, never timed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from helpers import assert_same_episode, read_episodes

from collector import storage
from collector.data_collector import DataCollector
from collector.errors import CorruptDatasetError
from collector.storage import compaction, hdf5
from curation.api import load_dataset
from tests.collector.test_format import cartpole_batch, synth

DATASET = "cart/appended-v0"


def record(collector: DataCollector, first: int, count: int) -> None:
    """Record episodes with seeds ``first..first+count-1`` (actions seeded alike)."""
    for seed in range(first, first + count):
        collector.reset(seed=seed)
        collector.action_space.seed(seed)
        done = False
        while not done:
            *_, terminated, truncated, _ = collector.step(collector.action_space.sample())
            done = terminated or truncated


def one_run(dataset_id: str, episodes: int, **kwargs: Any) -> str:
    """The fingerprint of ``episodes`` recorded and committed at once."""
    collector = DataCollector(gym.make("CartPole-v1"), **kwargs)
    record(collector, 0, episodes)
    return collector.create_dataset(dataset_id).fingerprint


def shards(dataset_id: str) -> list[dict[str, Any]]:
    return storage.read_metadata(storage.dataset_path(dataset_id))["shards"]


def tier_bound(meta: dict[str, Any]) -> int:
    """Most shards tiered compaction leaves: ``MERGE_FACTOR - 1`` per tier."""
    return (storage.MERGE_FACTOR - 1) * (storage.shard_tier(meta["dataset_bytes"]) + 1)


def old_append(writer: storage.DatasetWriter, collector: DataCollector, staging: Path) -> None:
    """Append the collector's recorded episodes as ``add_to_dataset`` of the previous main did:
    one shard stored under ids from 0, placed by an ``id_offset``, and nothing merged."""
    part = f"part/p{len(writer.meta['shards'])}-v0"  # type: ignore[index]
    summary = collector.create_dataset(part)
    (src,) = (p for p in (summary.path / storage.DATA_DIR).iterdir() if p.suffix == ".h5")
    spill = staging / src.name
    storage.write_shard_file(storage.read_shard(src), spill, collector.compression)
    ids = writer.committed_ids()
    writer.adopt_shard(spill, id_offset=int(ids.max()) + 1, compression=collector.compression)
    writer.commit()


def old_layout(dataset_id: str, calls: int, per_call: int, staging: Path, **kwargs: Any) -> None:
    """A dataset of ``calls`` appends of ``per_call`` episodes in the previous main's layout."""
    collector = DataCollector(gym.make("CartPole-v1"), **kwargs)
    record(collector, 0, per_call)
    collector.create_dataset(dataset_id)
    staging.mkdir(exist_ok=True)
    with storage.DatasetWriter(dataset_id) as w:
        for call in range(1, calls):
            record(collector, per_call * call, per_call)
            old_append(w, collector, staging)


def test_merging_offset_shards_keeps_ids_data_and_fingerprint(datasets_root: Path) -> None:
    old_layout(DATASET, 6, 3, datasets_root / "staging", record_infos=True)
    path = storage.dataset_path(DATASET)
    before = storage.read_metadata(path)
    assert [e["id_offset"] for e in before["shards"]] == [0, 3, 6, 9, 12, 15]
    episodes = read_episodes(DATASET)

    with storage.DatasetWriter(DATASET) as w:
        assert w.repack(1 << 30, "lzf") == 6

    after = storage.read_metadata(path)
    (merged,) = after["shards"]
    assert merged["id_offset"] == 0 and "id_map" not in merged
    stored = storage.read_shard_table(path / storage.DATA_DIR / merged["file"], ("id",))["id"]
    assert stored.tolist() == list(range(18))  # dataset ids, in order
    reference = one_run("cart/one-v0", 18, record_infos=True)
    assert after["fingerprint"] == before["fingerprint"] == reference
    for x, y in zip(episodes, read_episodes(DATASET), strict=True):
        assert x["id"] == y["id"] and x["seed"] == y["seed"]
        assert_same_episode(x, y)
    assert storage.verify_dataset(DATASET).ok


def test_merging_linked_id_map_shards_keeps_the_fingerprint_and_drops_foreign_episodes() -> None:
    one_run("cart/src-v0", 6)
    src_path = storage.dataset_path("cart/src-v0")
    (entry,) = storage.read_metadata(src_path)["shards"]
    collector = DataCollector(gym.make("CartPole-v1"))
    record(collector, 100, 3)
    collector.create_dataset(DATASET)
    with storage.DatasetWriter(DATASET) as w:
        src = src_path / storage.DATA_DIR / entry["file"]
        w.link_shard(src, entry, id_map=[[1, 4, 3]])  # stored 1..3 are ids 3..5
        w.link_shard(src, entry, id_map=[[0, 1, 6], [5, 6, 7]])  # stored 0 and 5: ids 6, 7
        w.commit()
    path = storage.dataset_path(DATASET)
    before = storage.read_metadata(path)
    episodes = read_episodes(DATASET)
    assert [ep["seed"] for ep in episodes] == [100, 101, 102, 1, 2, 3, 0, 5]

    with storage.DatasetWriter(DATASET) as w:
        assert w.repack(1 << 30) == 0  # linked shards stay shared by default
        assert w.repack(1 << 30, linked=True) == 3

    after = storage.read_metadata(path)
    (merged,) = after["shards"]
    assert merged["id_offset"] == 0 and "id_map" not in merged and merged["episodes"] == 8
    stored = storage.read_shard_table(path / storage.DATA_DIR / merged["file"], ("id",))["id"]
    assert stored.tolist() == list(range(8))  # the 3 foreign episodes of the source are gone
    assert after["fingerprint"] == before["fingerprint"]
    for x, y in zip(episodes, read_episodes(DATASET), strict=True):
        assert x["id"] == y["id"] and x["seed"] == y["seed"]
        assert_same_episode(x, y)
    assert storage.verify_dataset(DATASET).ok
    assert storage.verify_dataset("cart/src-v0").ok  # the source's shard is untouched


def rewrite_bound(calls: int, total_bytes: int) -> float:
    """Most bytes tiered compaction re-writes over ``calls`` appends of ``total_bytes`` in all.

    Above tier 0 a byte is re-written once per tier it climbs (O(N log N)); in tier 0 (under
    ``TIER_FLOOR_BYTES * MERGE_FACTOR``) a merge every ``MERGE_FACTOR - 1`` calls re-writes
    at most the tier: a constant per call.
    """
    k, floor = storage.MERGE_FACTOR, storage.TIER_FLOOR_BYTES
    return calls * floor * k / (k - 1) + total_bytes * (storage.shard_tier(total_bytes) + 1)


@pytest.mark.parametrize(("call_bytes", "calls"), [(5_000, 2_000), (50_000, 2_000), (1 << 20, 500)])
def test_the_tier_policy_keeps_shards_logarithmic_and_rewrites_n_log_n(
    call_bytes: int, calls: int
) -> None:
    """``next_merge`` alone, on manifest entries: a merge's entry is its sources' sum."""
    small = storage.APPEND_SHARD_BYTES // storage.SMALL_SHARD_FRACTION
    shards: list[dict[str, Any]] = []
    rewritten = 0
    for call in range(calls):
        shards.append({"bytes": call_bytes, "id_ranges": [[call, call + 1]]})
        while group := storage.next_merge(shards, small):
            shards = [e for e in shards if all(e is not g for g in group)]
            shards.append({"bytes": sum(e["bytes"] for e in group), "id_ranges": [[call, 0]]})
            rewritten += shards[-1]["bytes"]
        total = call_bytes * (call + 1)
        small_left = [e for e in shards if e["bytes"] < small]
        assert len(small_left) <= (storage.MERGE_FACTOR - 1) * (storage.shard_tier(small) + 1)
        assert len(shards) <= len(small_left) + total // small
    assert rewritten <= rewrite_bound(calls, calls * call_bytes)
    # merging every small shard at every call (repack) would re-write O(N^2)
    assert rewritten < calls * (calls - 1) // 2 * call_bytes / 10


def test_appends_keep_a_logarithmic_shard_count_and_rewrite_n_log_n(datasets_root: Path) -> None:
    """The add_to_dataset commit path (adopt an offset shard, commit, compact), 60 times."""
    calls, per_call = 60, 5
    reference = one_run("cart/src-v0", calls * per_call)
    src = storage.dataset_path("cart/src-v0")
    (entry,) = storage.read_metadata(src)["shards"]
    source = storage.read_shard(src / storage.DATA_DIR / entry["file"])
    staging = datasets_root / "staging"
    staging.mkdir()
    counts, rewritten_bytes, merges = [], 0, 0
    with storage.DatasetWriter(DATASET) as w:
        w.start(storage.read_metadata(src), commit=False)
        for call in range(calls):
            first = call * per_call
            part = storage.select_episodes(
                source, np.arange(first, first + per_call), np.arange(per_call)
            )
            spill = staging / f"spill-{call}.h5"
            storage.write_shard_file(part, spill, "lzf")
            w.adopt_shard(spill, id_offset=first, compression="lzf")
            w.commit()
            made = w.compact(storage.APPEND_SHARD_BYTES, "lzf")
            merges += len(made)
            rewritten_bytes += sum(e["bytes"] for e in made)
            assert w.meta is not None
            counts.append(len(w.meta["shards"]))
            assert counts[-1] <= tier_bound(w.meta), call
    meta = storage.read_metadata(storage.dataset_path(DATASET))
    assert meta["fingerprint"] == reference and meta["total_episodes"] == calls * per_call
    assert max(counts) <= 8 and counts[-1] <= 6, counts  # without merging: 60 shards
    assert 0 < merges <= calls // 2
    assert rewritten_bytes <= rewrite_bound(calls, meta["dataset_bytes"]), rewritten_bytes
    assert storage.verify_dataset(DATASET).ok


def test_add_to_dataset_merges_its_small_shards_and_reads_like_one_run() -> None:
    collector = DataCollector(gym.make("CartPole-v1"), record_infos=True)
    record(collector, 0, 4)
    collector.create_dataset(DATASET)
    counts = []
    for call in range(1, 25):
        record(collector, 4 * call, 4)
        summary = collector.add_to_dataset(DATASET)
        meta = storage.read_metadata(storage.dataset_path(DATASET))
        counts.append(len(meta["shards"]))
        assert counts[-1] <= tier_bound(meta)
        assert summary.fingerprint == meta["fingerprint"]
    assert max(counts) <= storage.MERGE_FACTOR and counts[-1] < 4, counts  # not 25
    assert meta["fingerprint"] == one_run("cart/one-v0", 100, record_infos=True)
    assert [ep["id"] for ep in read_episodes(DATASET)] == list(range(100))
    assert all(e["id_offset"] == 0 for e in meta["shards"][:-1])  # merged: dataset ids
    assert storage.verify_dataset(DATASET).ok


def test_a_reader_of_an_older_snapshot_reads_on_after_a_merge() -> None:
    collector = DataCollector(gym.make("CartPole-v1"))
    record(collector, 0, 3)
    collector.create_dataset(DATASET)
    for call in (1, 2):  # three shards of tier 0: the next append merges four
        record(collector, 3 * call, 3)
        collector.add_to_dataset(DATASET)
    old = load_dataset(DATASET)
    before = storage.read_metadata(storage.dataset_path(DATASET))["shards"]
    assert len(before) == 3
    record(collector, 9, 3)
    collector.add_to_dataset(DATASET)
    (merged,) = storage.read_metadata(storage.dataset_path(DATASET))["shards"]
    assert merged["episodes"] == 12
    # the merged-away shards stay until the next writer opens the dataset
    data = storage.dataset_path(DATASET) / storage.DATA_DIR
    assert all((data / e["file"]).exists() for e in before)
    assert len(old) == 9
    seen = [(ep.id, len(ep.rewards)) for ep in old.iterate_episodes()]
    new = load_dataset(DATASET)
    assert seen == [(ep.id, len(ep.rewards)) for ep in new.iterate_episodes()][:9]


def test_a_dataset_of_the_previous_main_is_merged_and_extended(datasets_root: Path) -> None:
    """One offset shard per call, never merged: the next add_to_dataset gathers them."""
    old_layout(DATASET, 12, 2, datasets_root / "staging")
    path = storage.dataset_path(DATASET)
    before = storage.read_metadata(path)
    assert len(before["shards"]) == 12 and before["shards"][-1]["id_offset"] == 22
    collector = DataCollector(gym.make("CartPole-v1"))
    record(collector, 24, 2)
    summary = collector.add_to_dataset(DATASET)
    after = storage.read_metadata(path)
    assert len(after["shards"]) < 4 and summary.total_episodes == 26
    assert after["fingerprint"] == summary.fingerprint == one_run("cart/one-v0", 26)
    assert storage.verify_dataset(DATASET).ok


def test_appends_on_a_full_disk_commit_and_leave_the_merge_for_later(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    collector = DataCollector(gym.make("CartPole-v1"))
    record(collector, 0, 2)
    collector.create_dataset(DATASET)
    for call in (1, 2):
        record(collector, 2 * call, 2)
        collector.add_to_dataset(DATASET)
    real = os.statvfs

    def nearly_full(path: Any) -> Any:
        st = real(path)
        return os.statvfs_result((*st[:4], 1, *st[5:]))  # f_bavail: one block left

    monkeypatch.setattr(os, "statvfs", nearly_full)
    record(collector, 6, 2)
    with caplog.at_level(logging.WARNING, "collector.storage.writer"):
        summary = collector.add_to_dataset(DATASET)  # the append itself needs no spare room
    assert summary.total_episodes == 8 and len(shards(DATASET)) == 4
    assert "not repacking 4 small shards" in caplog.text
    monkeypatch.setattr(os, "statvfs", real)
    record(collector, 8, 2)
    collector.add_to_dataset(DATASET)
    assert len(shards(DATASET)) == 1 and storage.verify_dataset(DATASET).ok


def count_step_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the shards whose step data is read from here on (``hdf5.read_shard``)."""
    from collector.storage import hdf5

    seen: list[str] = []
    real = hdf5.read_shard

    def read_shard(path: Any) -> Any:
        seen.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(hdf5, "read_shard", read_shard)
    return seen


def test_appends_merge_the_shards_this_process_wrote_without_reading_them_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Re-reading each small shard whole was about half of a merge's time (issue 18)."""
    collector = DataCollector(gym.make("CartPole-v1"), record_infos=True)
    record(collector, 0, 2)
    collector.create_dataset(DATASET)
    seen = count_step_reads(monkeypatch)
    gone: set[str] = set()  # sha256 of the shards merged away
    for call in range(1, 16):
        record(collector, 2 * call, 2)
        before = {e["sha256"] for e in shards(DATASET)}
        collector.add_to_dataset(DATASET)
        gone |= before - {e["sha256"] for e in shards(DATASET)}
    assert len(gone) >= 8 and len(shards(DATASET)) < 4  # merges happened, above tier 0 too
    assert seen == []
    # what is kept is what the dataset lists: merged-away batches are dropped
    assert all(compaction.RECENT.get(sha) is None for sha in gone)
    assert all(compaction.RECENT.get(e["sha256"]) is not None for e in shards(DATASET))
    meta = storage.read_metadata(storage.dataset_path(DATASET))
    assert meta["fingerprint"] == one_run("cart/one-v0", 32, record_infos=True)
    assert [ep["id"] for ep in read_episodes(DATASET)] == list(range(32))
    assert storage.verify_dataset(DATASET).ok


def test_a_process_that_did_not_write_the_shards_merges_them_from_disk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collector = DataCollector(gym.make("CartPole-v1"), record_infos=True)
    record(collector, 0, 2)
    collector.create_dataset(DATASET)
    for call in (1, 2):
        record(collector, 2 * call, 2)
        collector.add_to_dataset(DATASET)
    storage.forget_recent_batches()  # as a new process would start
    seen = count_step_reads(monkeypatch)
    record(collector, 6, 2)
    collector.add_to_dataset(DATASET)  # four tier-0 shards: merged, three read from disk
    (merged,) = shards(DATASET)
    assert merged["episodes"] == 8 and len(seen) == 3
    assert storage.read_metadata(storage.dataset_path(DATASET))["fingerprint"] == one_run(
        "cart/one-v0", 8, record_infos=True
    )
    assert storage.verify_dataset(DATASET).ok


def test_recent_batches_are_bounded_in_bytes() -> None:
    source = storage.read_shard(next(data_files(one_run_path("cart/src-v0", 6))))
    one = storage.RecentBatches()
    assert one.put("sha", source) and one.nbytes > source.nbytes  # its table counts too
    kept = storage.RecentBatches(max_bytes=3 * one.nbytes)
    for i in range(5):
        assert kept.put(f"sha-{i}", source)
    assert [kept.get(f"sha-{i}") is not None for i in range(5)] == [False] * 2 + [True] * 3
    kept.discard(["sha-3"])
    assert kept.get("sha-3") is None and kept.nbytes == 2 * one.nbytes
    assert not storage.RecentBatches(max_bytes=one.nbytes - 1).put("big", source)


def test_recent_batches_own_their_columns() -> None:
    """A recorder hands out views of buffers it may reuse; what is kept must not change."""
    source = storage.read_shard(next(data_files(one_run_path("cart/src-v0", 6))))
    (name,) = source.observations
    buffer = np.concatenate([source.observations[name], source.observations[name]])
    view = storage.EpisodeBatch(
        observations={name: buffer[: len(source.observations[name])]},
        actions=source.actions,
        rewards=source.rewards,
        terminations=source.terminations,
        truncations=source.truncations,
        table=source.table,
    )
    kept = storage.RecentBatches()
    assert kept.put("sha", view)
    buffer[:] = 0  # the recorder writes later rows over its buffer
    got = kept.get("sha")
    assert got is not None
    np.testing.assert_array_equal(got.observations[name], source.observations[name])
    assert got.rewards is source.rewards  # arrays that own their memory are not copied


def one_run_path(dataset_id: str, episodes: int) -> Path:
    one_run(dataset_id, episodes)
    return storage.dataset_path(dataset_id)


def data_files(path: Path) -> Any:
    return (p for p in sorted((path / storage.DATA_DIR).iterdir()) if p.suffix == ".h5")


def wide_batch(ids: range, length: int = 127, width: int = 1024) -> storage.EpisodeBatch:
    """Episodes of ``length`` steps with ``width``-float observations (512 KiB an episode)."""
    n = len(ids)
    obs = np.arange(n * (length + 1) * width, dtype=np.float32).reshape(-1, width) + ids[0]
    rewards = np.ones(n * length)
    done = np.zeros(n * length, bool)
    done[length - 1 :: length] = True
    table = storage.make_table(
        list(ids), list(ids), [length] * n, [float(length)] * n, [True] * n, [False] * n, [None] * n
    )
    batch = storage.EpisodeBatch(
        observations={"": obs},
        actions={"": np.zeros(n * length, np.int64)},
        rewards=rewards,
        terminations=done,
        truncations=np.zeros(n * length, bool),
        table=table,
    )
    return storage.fill_digests(batch)


def test_merging_two_commit_windows_holds_a_bounded_block_not_a_whole_source(
    tmp_path: Path,
) -> None:
    """The repack ending a ``collect`` run merges commit windows of up to 32 MiB decoded: a
    merge that reads each whole was the run's peak RSS, growing with the run (issue 18)."""
    import tracemalloc

    paths = []
    for k in range(2):
        paths.append(tmp_path / f"s{k}.h5")
        storage.write_shard_file(wide_batch(range(64 * k, 64 * k + 64)), paths[-1], None)
    assert all(p.stat().st_size > 32 << 20 for p in paths)
    tracemalloc.start()
    try:
        table, _ = storage.merge_shards(paths, tmp_path / "merged.h5", None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20, f"merge held {peak / 2**20:.1f} MiB"
    assert table["id"].tolist() == list(range(128))
    merged = storage.read_shard(tmp_path / "merged.h5")
    assert np.array_equal(merged.table["digest"], storage.episode_digests(merged))


def damaged_digest(batch: storage.EpisodeBatch, position: int) -> storage.EpisodeBatch:
    batch.table["digest"] = batch.table["digest"].copy()
    batch.table["digest"][position, 0] ^= 1
    return batch


def test_a_source_whose_last_block_mismatches_its_digests_aborts_the_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hdf5, "MERGE_BLOCK_BYTES", 1 << 10)  # a block of a few episodes
    good, bad = tmp_path / "good.h5", tmp_path / "bad.h5"
    storage.write_shard_file(storage.fill_digests(synth(list(range(40)))), good)
    storage.write_shard_file(
        damaged_digest(storage.fill_digests(synth(list(range(40, 80)))), 39), bad
    )
    with pytest.raises(CorruptDatasetError, match=r"shard bad\.h5 does not match its own digests"):
        storage.merge_shards([good, bad], tmp_path / "merged.h5")


@pytest.mark.parametrize("block_bytes", [1, 1 << 10, 1 << 30])
def test_a_streamed_merge_is_the_concatenation_of_the_mapped_episodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    """Offsets, an ``id_map`` that reorders and drops episodes, and info keys that differ
    between sources: in blocks of one episode, a few, or whole sources."""
    monkeypatch.setattr(hdf5, "MERGE_BLOCK_BYTES", block_bytes)
    a = cartpole_batch(list(range(6)), record_infos=True, info_fn=lambda e, t, i: {"x": t % 3})
    b = cartpole_batch(list(range(6, 12)), record_infos=True)  # no keys
    c = cartpole_batch(list(range(5)), record_infos=True, info_fn=lambda e, t, i: {"y": 0.5 * t})
    paths = [tmp_path / f"{n}.h5" for n in "abc"]
    for batch, path in zip((a, b, c), paths, strict=True):
        storage.write_shard_file(storage.fill_digests(batch), path)
    entries: list[dict[str, Any]] = [
        {"id_offset": 0},
        {"id_map": [[6, 12, 20]]},  # stored 6..11 -> ids 20..25
        {"id_map": [[3, 5, 26], [0, 1, 28], [2, 3, 29]]},  # 3, 4, 0, 2 -> ids 26..29; 1 dropped
    ]
    table, schema = storage.merge_shards(paths, tmp_path / "m.h5", entries=entries)
    expected = storage.concat_batches(
        [
            hdf5.dataset_episodes(storage.read_shard(p), e)
            for p, e in zip(paths, entries, strict=True)
        ]
    )
    merged = storage.read_shard(tmp_path / "m.h5")
    assert table["id"].tolist() == list(range(6)) + list(range(20, 30))
    assert schema == expected.info_schema()
    for got in (table, merged.table):
        for key in ("id", "seed", "length", "digest", "obs_offset", "step_offset"):
            assert np.array_equal(got[key], expected.table[key]), key
    assert np.array_equal(storage.episode_digests(merged), expected.table["digest"])
    for name in ("observations", "actions", "infos", "info_masks"):
        got, want = getattr(merged, name), getattr(expected, name)
        assert got.keys() == want.keys()
        for key in want:
            assert np.array_equal(got[key], want[key]), (name, key)
    assert np.array_equal(merged.rewards, expected.rewards)


def test_a_merge_reorders_equal_length_episodes_an_id_map_permutes(tmp_path: Path) -> None:
    # a block whose episodes are all mapped, to consecutive ids but in another order, with
    # equal lengths (so equal offsets): written as it lay, it stored each episode under
    # another's id (found by a Ray run whose killed worker's batch was re-collected)
    path = tmp_path / "s.h5"
    storage.write_shard_file(storage.fill_digests(synth([0, 1, 2, 3], lengths=[5] * 4)), path)
    entry = {"id_map": [[0, 2, 12], [2, 4, 10]]}  # stored 0, 1 -> ids 12, 13; 2, 3 -> 10, 11
    table, _ = storage.merge_shards([path], tmp_path / "m.h5", entries=[entry])
    merged = storage.read_shard(tmp_path / "m.h5")
    assert table["id"].tolist() == [10, 11, 12, 13]
    assert np.array_equal(storage.episode_digests(merged), merged.table["digest"])
    expected = hdf5.dataset_episodes(storage.read_shard(path), entry)
    assert np.array_equal(merged.observations[""], expected.observations[""])
