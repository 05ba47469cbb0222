"""Tests for ``collector.storage``: ids, shards, digests, commit protocol, locks, verify, repack.

DESIGN.md sections 3-4 and design-review findings 7 (commit order), 8 (unique shard names, lock
outside the dataset tree) and 9 (HDF5 versions, chunking) are the specification.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import pytest
from gymnasium import spaces
from helpers import assert_same_episode, read_episodes, record_cartpole
from hypothesis import example, given, settings
from strategies import ID_GRAMMAR, ID_TEXT

from collector import storage
from collector.errors import (
    CorruptDatasetError,
    DatasetIdError,
    DatasetNotFoundError,
    FormatVersionError,
    LockHeldError,
    UsageError,
)
from collector.recorder import EpisodeRecorder

OBS_SPACE = spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT_SPACE = spaces.Discrete(2)
SHARD_NAME = re.compile(r"shard-\d{6,}-[0-9a-f]{8}\.h5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


# ------------------------------------------------------------------------------------------
# builders


def synth(
    ids: list[int],
    contents: list[int] | None = None,
    lengths: list[int] | None = None,
) -> storage.EpisodeBatch:
    """Episodes whose data (and seed) depend only on ``contents``, not on ``ids``."""
    contents = list(ids) if contents is None else contents
    lengths = [2 + c % 4 for c in contents] if lengths is None else lengths
    obs, act, rew, term, trunc = [], [], [], [], []
    for c, length in zip(contents, lengths, strict=True):
        rng = np.random.default_rng(c)
        obs.append(rng.normal(size=(length + 1, 3)).astype(np.float32))
        act.append(rng.integers(0, 2, length).astype(np.int64))
        rew.append(rng.normal(size=length))
        done = np.zeros(length, bool)
        done[-1] = True
        term.append(done)
        trunc.append(np.zeros(length, bool))
    n = len(ids)
    table = storage.make_table(
        ids,
        contents,
        lengths,
        [float(r.sum()) for r in rew],
        [True] * n,
        [False] * n,
        [None] * n,
    )
    return storage.EpisodeBatch(
        observations={"": np.concatenate(obs)},
        actions={"": np.concatenate(act)},
        rewards=np.concatenate(rew),
        terminations=np.concatenate(term),
        truncations=np.concatenate(trunc),
        table=table,
    )


def cartpole_batch(
    ids: list[int],
    record_infos: bool = False,
    info_fn: Any = None,
    options: Any = None,
    max_steps: int = 40,
) -> storage.EpisodeBatch:
    """Real CartPole-v1 episodes (seed = id, random actions seeded by id)."""
    env = gym.make("CartPole-v1")
    rec = EpisodeRecorder(env.observation_space, env.action_space, record_infos=record_infos)
    for eid in ids:
        obs, info = env.reset(seed=eid)
        info = info_fn(eid, 0, info) if info_fn else info
        rec.begin_episode(eid, eid, options, obs, info)
        rng = np.random.default_rng(eid)
        for t in range(max_steps):
            action = int(rng.integers(2))
            obs, reward, term, trunc, info = env.step(action)
            info = info_fn(eid, t + 1, info) if info_fn else info
            rec.add_step(action, obs, reward, term, trunc, info)
            if term or trunc:
                break
        rec.end_episode(force_truncate=True, metadata_fn=lambda d: {"n": int(len(d["rewards"]))})
    env.close()
    batch = rec.take()
    assert batch is not None
    return batch


def base_meta(record_infos: bool = False) -> dict[str, Any]:
    return storage.new_metadata(OBS_SPACE, ACT_SPACE, None, record_infos=record_infos)


def cartpole_meta(record_infos: bool = False) -> dict[str, Any]:
    env = gym.make("CartPole-v1")
    try:
        return storage.new_metadata(
            env.observation_space,
            env.action_space,
            json.loads(env.spec.to_json()),
            record_infos=record_infos,
            description="test",
        )
    finally:
        env.close()


def write_dataset(
    dataset_id: str,
    batches: list[storage.EpisodeBatch],
    compression: str | None = "gzip",
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    with storage.DatasetWriter(dataset_id) as w:
        w.start(base or base_meta())
        for b in batches:
            w.write_shard(b, compression)
        return w.commit()


def shard_files(dataset_id: str) -> list[Path]:
    meta = storage.read_metadata(storage.dataset_path(dataset_id), dataset_id)
    return [storage.dataset_path(dataset_id) / storage.DATA_DIR / e["file"] for e in meta["shards"]]


def data_listing(dataset_id: str) -> set[str]:
    """Files in ``data/`` but index files, each of which must sit next to its shard."""
    names = {p.name for p in (storage.dataset_path(dataset_id) / storage.DATA_DIR).iterdir()}
    indexes = {n for n in names if storage.INDEX_FILE_RE.fullmatch(n)}
    assert indexes <= {storage.index_name(n) for n in names}, "an index file without its shard"
    return names - indexes


def assert_batches_equal(a: storage.EpisodeBatch, b: storage.EpisodeBatch) -> None:
    for group in ("observations", "actions"):
        x, y = getattr(a, group), getattr(b, group)
        assert sorted(x) == sorted(y), group
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{group}/{k}")
            assert x[k].dtype == y[k].dtype, f"{group}/{k}"
    for col in storage.STEP_COLUMNS:
        np.testing.assert_array_equal(getattr(a, col), getattr(b, col), err_msg=col)
        assert getattr(a, col).dtype == getattr(b, col).dtype, col
    for key in storage.TABLE_FIELDS:
        if key in ("options", "metadata"):
            assert list(a.table[key]) == list(b.table[key]), key
        else:
            np.testing.assert_array_equal(a.table[key], b.table[key], err_msg=key)
    assert (a.infos is None) == (b.infos is None)
    if a.infos is not None:
        assert b.infos is not None
        assert sorted(a.infos) == sorted(b.infos)
        assert sorted(a.info_masks) == sorted(b.info_masks)
        for k in a.infos:
            np.testing.assert_array_equal(a.infos[k], b.infos[k], err_msg=f"infos/{k}")
            np.testing.assert_array_equal(a.info_masks[k], b.info_masks[k], err_msg=f"mask {k}")


# ------------------------------------------------------------------------------------------
# 1. dataset ids

VALID_IDS = [
    ("x-v0", (None, "x", 0)),
    ("ns/x-v12", ("ns", "x", 12)),
    ("a/b/c_d-e-v3", ("a/b", "c_d-e", 3)),
    ("cartpole/random-v0", ("cartpole", "random", 0)),
]
INVALID_IDS = [
    "../x-v0",
    "/abs-v0",
    "x",
    "ns//x-v0",
    "ns/x-v",
    "x-v0/",
    "a\\b-v0",
    "",
    "x-v-1",
    "x y-v0",
    "ns/../x-v0",
]


@pytest.mark.parametrize(("dataset_id", "parts"), VALID_IDS)
def test_valid_ids_parse(dataset_id: str, parts: tuple, datasets_root: Path) -> None:
    assert storage.parse_dataset_id(dataset_id) == parts
    assert storage.dataset_path(dataset_id) == datasets_root / dataset_id


@pytest.mark.parametrize("dataset_id", INVALID_IDS)
def test_invalid_ids_are_refused_before_touching_disk(dataset_id: str, datasets_root: Path) -> None:
    for call in (
        storage.parse_dataset_id,
        storage.dataset_path,
        storage.DatasetLock,
        storage.DatasetWriter,
        storage.verify_dataset,
    ):
        with pytest.raises(DatasetIdError, match=re.escape("use [namespace/]name-vN")) as info:
            call(dataset_id)
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, UsageError)
        assert info.value.exit_code == 2
    assert not datasets_root.exists()


@pytest.mark.parametrize(
    ("dataset_id", "why"),
    [
        ("", "is empty"),
        ("x", "has no version suffix"),
        ("../x-v0", "is a path, not an id"),
        ("/abs-v0", "is a path, not an id"),
        ("a\\b-v0", "is a path, not an id"),
        ("ns//x-v0", "has an empty segment"),
        ("x y-v0", "has a character outside [A-Za-z0-9_-] or a bad version"),
    ],
)
def test_invalid_id_messages_say_why(dataset_id: str, why: str) -> None:
    with pytest.raises(DatasetIdError, match=re.escape(f"dataset id {dataset_id!r} {why}")):
        storage.parse_dataset_id(dataset_id)


@pytest.mark.parametrize("dataset_id", ["x-v0\n", "ns/x-v0\n", "x-v\u0663", "x-v\uff11"])
def test_id_grammar_is_anchored_and_ascii(dataset_id: str) -> None:
    # `$` also matches before a trailing newline and `\d` matches any Unicode digit; the
    # grammar is name-vN with N in [0-9]+, so these must be refused like any other bad id.
    with pytest.raises(DatasetIdError):
        storage.parse_dataset_id(dataset_id)


FAKE_ROOT = Path("/nonexistent-harvest-root/datasets")


@settings(max_examples=100, deadline=None, database=None)
@given(ID_TEXT)
@example("x-v0\n")
@example("../x-v0")
@example("ns/..-v0")
def test_any_text_is_refused_or_stays_inside_root(text: str) -> None:
    try:
        parts = storage.parse_dataset_id(text)
    except DatasetIdError:
        return
    path = storage.dataset_path(text, FAKE_ROOT).resolve()
    assert FAKE_ROOT.resolve() in path.parents
    assert storage.parse_dataset_id(text) == parts
    assert not FAKE_ROOT.exists()


@settings(max_examples=100, deadline=None, database=None)
@given(ID_TEXT)
@example("x-v0\n")
def test_accepted_ids_match_the_grammar_exactly(text: str) -> None:
    try:
        storage.parse_dataset_id(text)
    except DatasetIdError:
        return
    assert ID_GRAMMAR.fullmatch(text), f"accepted {text!r}, outside [namespace/...]name-vN"


# ------------------------------------------------------------------------------------------
# 2. commit protocol order (DESIGN.md section 4, review 7)


class Syscalls:
    """Record os.fsync / os.rename / os.replace with real paths, then run the real call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, ...]] = []
        self.fsync_sizes: dict[str, int] = {}
        real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            self.fsync_sizes[path] = os.fstat(fd).st_size
            self.events.append(("fsync", path))
            real_fsync(fd)

        def rename(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
            self.events.append(("rename", os.path.realpath(src), os.path.realpath(dst)))
            real_rename(src, dst, *a, **kw)

        def replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
            self.events.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
            real_replace(src, dst, *a, **kw)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", rename)
        monkeypatch.setattr(os, "replace", replace)


def test_write_shard_and_commit_follow_the_durable_order(
    monkeypatch: pytest.MonkeyPatch, datasets_root: Path
) -> None:
    dsid = "ns/order-v0"
    with storage.DatasetWriter(dsid) as w:
        w.start(base_meta())
        calls = Syscalls(monkeypatch)
        entry = w.write_shard(synth([0, 1, 2]))
        w.commit()
    ds = (datasets_root / dsid).resolve()
    data = ds / "data"
    shard = data / entry["file"]
    # the shard is written under a hidden temp name in data/ (its final name needs its sha256)
    tmp = Path(calls.events[0][1])
    assert tmp.parent == data and re.fullmatch(r"\.shard-[0-9a-f]+\.h5\.tmp", tmp.name)
    # its index file (issue 18) likewise, before the shard (a failure leaves the source in
    # place) and the one fsync of data/ that covers both
    idx_tmp = Path(calls.events[1][1])
    assert re.fullmatch(r"\.index-[0-9a-f]+\.idx\.tmp", idx_tmp.name)
    assert calls.events == [
        ("fsync", str(tmp)),
        ("fsync", str(idx_tmp)),
        ("rename", str(idx_tmp), str(data / entry["index"]["file"])),
        ("rename", str(tmp), str(shard)),
        ("fsync", str(data)),
        ("fsync", str(ds / "metadata.json.tmp")),
        ("replace", str(ds / "metadata.json.tmp"), str(ds / "metadata.json")),
        ("fsync", str(ds)),
    ]
    # The shard was complete when fsynced, and the manifest names it.
    assert calls.fsync_sizes[str(tmp)] == shard.stat().st_size == entry["bytes"]
    assert [e["file"] for e in storage.read_metadata(ds)["shards"]] == [entry["file"]]


def test_adopt_shard_fsyncs_before_and_after_the_rename(
    monkeypatch: pytest.MonkeyPatch, datasets_root: Path
) -> None:
    dsid = "ns/adopt-order-v0"
    batch = synth([0, 1])
    batch.table["digest"] = storage.episode_digests(batch)
    spill = datasets_root / storage.SPILL_DIR / "spill.h5"
    spill.parent.mkdir(parents=True)
    spill.write_bytes(storage.build_shard_bytes(batch))
    with storage.DatasetWriter(dsid) as w:
        w.start(base_meta())
        calls = Syscalls(monkeypatch)
        entry = w.adopt_shard(spill)
        w.commit()
    ds = (datasets_root / dsid).resolve()
    src = str(spill.resolve())
    idx_tmp = calls.events[1][1]
    assert calls.events[:5] == [
        ("fsync", src),
        ("fsync", idx_tmp),
        ("rename", idx_tmp, str(ds / "data" / entry["index"]["file"])),
        ("rename", src, str(ds / "data" / entry["file"])),
        ("fsync", str(ds / "data")),
    ]
    assert calls.events[5:] == [
        ("fsync", str(ds / "metadata.json.tmp")),
        ("replace", str(ds / "metadata.json.tmp"), str(ds / "metadata.json")),
        ("fsync", str(ds)),
    ]


# ------------------------------------------------------------------------------------------
# 3. shards


def test_shard_names_are_unique_and_files_read_only() -> None:
    dsid = "ns/names-v0"
    with storage.DatasetWriter(dsid) as w:
        w.start(base_meta())
        names = [w.write_shard(synth([i]))["file"] for i in range(4)]
        # the same content twice in one generation still gets two names
        names.append(w.write_shard(synth([10], contents=[0]))["file"])
        w.commit()
    assert all(SHARD_NAME.fullmatch(n) for n in names), names
    assert len(set(names)) == len(names)
    assert [int(n.split("-")[1]) for n in names] == sorted(int(n.split("-")[1]) for n in names)
    for path in shard_files(dsid):
        assert stat.S_IMODE(path.stat().st_mode) == 0o444, path
    assert data_listing(dsid) == set(names)


def test_shard_names_are_never_reused_after_overwrite() -> None:
    # Review 8: a reader holding the old manifest must never find a new file under an old
    # name. Re-collecting the same data after overwrite is the normal deterministic case.
    dsid = "ns/reuse-v0"
    batches = [synth([0, 1]), synth([2, 3])]
    with storage.DatasetWriter(dsid) as w:
        w.start(base_meta())
        first = [w.write_shard(b)["file"] for b in batches]
        w.commit()
        w.start(base_meta())  # overwrite: a new generation (old files stay for open readers)
        assert data_listing(dsid) == set(first)
        second = [w.write_shard(synth([0, 1]))["file"], w.write_shard(synth([2, 3]))["file"]]
        w.commit()
    assert set(first).isdisjoint(second), (first, second)


def test_read_shard_round_trips_every_column(tmp_path: Path) -> None:
    batch = cartpole_batch(
        [3, 4, 5],
        record_infos=True,
        info_fn=lambda eid, t, info: {"t": t, "odd": np.float32(eid % 2)} if t % 2 else {"t": t},
        options={"difficulty": 2},
    )
    batch.table["digest"] = storage.episode_digests(batch)
    path = tmp_path / "shard.h5"
    path.write_bytes(storage.build_shard_bytes(batch, "gzip"))
    back = storage.read_shard(path)
    assert_batches_equal(batch, back)
    assert back.table["options"] == ['{"difficulty":2}'] * 3
    assert [json.loads(m) for m in back.table["metadata"]] == [
        {"n": int(n)} for n in batch.table["length"]
    ]
    assert back.info_masks["odd"].any() and not back.info_masks["odd"].all()
    table = storage.read_shard_table(path)
    for key in storage.TABLE_FIELDS:
        if key in ("options", "metadata"):
            assert table[key] == list(batch.table[key])
        else:
            np.testing.assert_array_equal(table[key], batch.table[key])
    np.testing.assert_array_equal(storage.episode_digests(back), batch.table["digest"])


def test_read_shard_round_trips_dict_spaces_and_missing_seeds(tmp_path: Path) -> None:
    obs_space = spaces.Dict(
        [
            ("pos", spaces.Box(-1.0, 1.0, (2,), np.float32)),
            ("a/b", spaces.Discrete(3)),
            ("inner", spaces.Dict([("c", spaces.MultiBinary(4))])),
        ]
    )
    rec = EpisodeRecorder(obs_space, spaces.Box(-1, 1, (2,), np.float64))
    obs_space.seed(0)
    for eid, seed in ((0, None), (1, 2**63 + 5)):
        rec.begin_episode(eid, seed, None, obs_space.sample(), {})
        for _ in range(3):
            rec.add_step(np.array([0.5, -0.5]), obs_space.sample(), 1.5, False, False, {})
        rec.end_episode(force_truncate=True)
    batch = rec.take()
    assert batch is not None
    batch.table["digest"] = storage.episode_digests(batch)
    path = tmp_path / "shard.h5"
    path.write_bytes(storage.build_shard_bytes(batch, "lzf"))
    back = storage.read_shard(path)
    assert_batches_equal(batch, back)
    assert sorted(back.observations) == ["a%2Fb", "inner/c", "pos"]
    assert back.table["has_seed"].tolist() == [False, True]
    assert int(back.table["seed"][1]) == 2**63 + 5


COMPRESSIONS = [
    ("none", None, None),
    ("lzf", "lzf", None),
    ("gzip", "gzip", 4),
    ("gzip:9", "gzip", 9),
]


@pytest.mark.parametrize(("spec", "filter_name", "level"), COMPRESSIONS)
def test_parse_compression(spec: str, filter_name: str | None, level: int | None) -> None:
    assert storage.parse_compression(spec) == (filter_name, level)


def test_compressions_read_back_with_identical_digests_and_fingerprint() -> None:
    batch = cartpole_batch([0, 1, 2, 3])
    reference = None
    for i, (spec, filter_name, level) in enumerate(COMPRESSIONS):
        dsid = f"comp/c{i}-v0"
        meta = write_dataset(dsid, [batch], compression=spec)
        (path,) = shard_files(dsid)
        back = storage.read_shard(path)
        assert_batches_equal(batch, back)
        digests = storage.episode_digests(back)
        if reference is None:
            reference = (meta["fingerprint"], digests)
        assert meta["fingerprint"] == reference[0], spec
        np.testing.assert_array_equal(digests, reference[1])
        assert meta["shards"][0]["compression"] == spec
        with h5py.File(path, "r") as f:
            for name in ("observations", "actions", "rewards", "terminations"):
                ds = f[name]
                assert ds.compression == filter_name, (spec, name)
                # chunked whatever the compression: every chunk carries a fletcher32 checksum
                assert ds.fletcher32, (spec, name)
                assert ds.chunks is not None, (spec, name)
                assert ds.id.get_create_plist().get_layout() == h5py.h5d.CHUNKED
                if level is not None:
                    assert ds.compression_opts == level
        assert storage.verify_dataset(dsid).ok


@pytest.mark.parametrize(
    "spec",
    ["zstd:99", "zstd:x", "zstd:0", "brotli", "auto:3", "gzip:10", "gzip:x", "lzf:3", "gzip:-1"],
)
def test_bad_compression_is_a_usage_error(spec: str) -> None:
    with pytest.raises(UsageError, match=re.escape(f"storage.compression={spec!r} is not valid")):
        storage.parse_compression(spec)
    with storage.DatasetWriter("ns/badcomp-v0") as w:
        w.start(base_meta())
        with pytest.raises(
            UsageError, match="use auto, none, lzf, gzip, gzip:0-9, zstd or zstd:1-22$"
        ):
            w.write_shard(synth([0]), spec)
        assert data_listing("ns/badcomp-v0") == set()
        assert w.meta is not None and w.meta["shards"] == []


def test_shards_keep_nothing_in_the_global_heap(tmp_path: Path) -> None:
    # A damaged global heap sent HDF5 2.0 into an endless loop (H5HG__cache_heap_deserialize)
    # in the corruption suite: options, metadata and attributes are fixed-width instead.
    batch = cartpole_batch([0, 1, 2], record_infos=True, options={"difficulty": 2})
    batch.table["metadata"] = ['{"note":"' + "x" * 300 + '"}', None, "{}"]
    batch.table["digest"] = storage.episode_digests(batch)
    data = storage.build_shard_bytes(batch, "lzf")
    assert b"GCOL" not in data
    path = tmp_path / "s.h5"
    path.write_bytes(data)
    back = storage.read_shard(path)
    assert back.table["options"] == ['{"difficulty":2}'] * 3
    assert back.table["metadata"] == batch.table["metadata"]
    with h5py.File(path) as f:
        assert f["episodes/options"].dtype == np.dtype("S16")
        assert f["episodes/metadata"].fletcher32 and f["episodes/metadata"].compression == "gzip"


def test_shards_written_before_the_checksums_still_read(tmp_path: Path) -> None:
    # earlier shards: vlen text columns, a vlen info_schema, no sha256 or layout attributes
    batch = cartpole_batch([0, 1], record_infos=True, options={"difficulty": 2})
    batch.table["digest"] = storage.episode_digests(batch)
    path = tmp_path / "old.h5"
    path.write_bytes(storage.build_shard_bytes(batch, "gzip"))
    with h5py.File(path, "r+") as f:
        del f.attrs[storage.LAYOUT_CHECKSUM]
        f.attrs["info_schema"] = json.dumps(batch.info_schema())
        for key in storage.TABLE_FIELDS:
            del f[f"episodes/{key}"].attrs[storage.TABLE_CHECKSUM]
        for key in ("options", "metadata"):
            values = ["" if o is None else o for o in batch.table[key]]
            del f[f"episodes/{key}"]
            f["episodes"].create_dataset(key, data=values, dtype=h5py.string_dtype())
    assert_batches_equal(batch, storage.read_shard(path))
    assert storage.read_shard_table(path, ("options",)) == {"options": ['{"difficulty":2}'] * 2}


def test_a_rewritten_chunk_index_fails_the_layout_checksum(tmp_path: Path) -> None:
    # HDF5 1.10's checksums catch a flipped bit in its metadata; a shard rewritten through
    # HDF5 itself (a chunk stored again, so its index changes) is caught by layout_sha256.
    batch = cartpole_batch([0, 1])
    batch.table["digest"] = storage.episode_digests(batch)
    path = tmp_path / "s.h5"
    path.write_bytes(storage.build_shard_bytes(batch, "lzf"))
    with h5py.File(path, "r+") as f:
        dset = f["rewards"]
        mask, raw = dset.id.read_direct_chunk((0,))
        dset.id.write_direct_chunk((0,), raw + bytes(8), filter_mask=mask)  # 8 bytes longer
    with pytest.raises(CorruptDatasetError, match="HDF5 layout does not match its checksum"):
        storage.read_shard(path)
    reader = storage.ShardReader()
    with pytest.raises(CorruptDatasetError, match="layout does not match.*run verify"):
        reader.read_rows(path, slice(0, 4), slice(0, 3))


def test_shards_use_the_hdf5_1_10_format_with_checksummed_metadata(tmp_path: Path) -> None:
    # Review 9e: never HDF5 2.0's newer structures (libver pinned at v110 both ends, so HDF5
    # >= 1.10 reads them), and HDF5's own metadata checksummed: superblock version 3 and
    # version-2 object headers ("OHDR"), which the 1.0 format ("earliest") has not.
    batch = cartpole_batch([0, 1], record_infos=True)
    batch.table["digest"] = storage.episode_digests(batch)
    assert storage.LIBVER == ("v110", "v110")
    for spec in ("none", "lzf", "gzip"):
        data = storage.build_shard_bytes(batch, spec)
        assert data[:8] == HDF5_SIGNATURE
        assert data[8] == 3, f"superblock version {data[8]} with {spec}"
        assert b"OHDR" in data, spec
        path = tmp_path / f"{spec}.h5"
        path.write_bytes(data)
        with h5py.File(path, "r") as f:
            assert f.attrs["format_version"] == storage.FORMAT_VERSION
    # the check above does discriminate: an "earliest" file has superblock 0 and no OHDR
    with h5py.File(tmp_path / "old.h5", "w", libver="earliest") as f:
        f.create_dataset("a", data=np.arange(10), chunks=(5,), compression="gzip")
    old = (tmp_path / "old.h5").read_bytes()
    assert old[8] == 0 and b"OHDR" not in old


# ------------------------------------------------------------------------------------------
# 4. fingerprint


def test_fingerprint_ignores_shard_boundaries_compression_and_dataset_id() -> None:
    ids = list(range(6))
    one = write_dataset("fp/one-v0", [cartpole_batch(ids)], compression="none")
    three = write_dataset(
        "other/ns/three-v3",
        [cartpole_batch(ids[:2]), cartpole_batch(ids[2:3]), cartpole_batch(ids[3:])],
        compression="gzip:9",
    )
    assert len(three["shards"]) == 3
    assert one["fingerprint"] == three["fingerprint"]
    assert one["total_episodes"] == three["total_episodes"] == 6
    assert one["total_steps"] == three["total_steps"]
    # shard write order does not matter either: the fingerprint sorts by episode id
    swapped = write_dataset("fp/swapped-v0", [cartpole_batch(ids[3:]), cartpole_batch(ids[:3])])
    assert swapped["fingerprint"] == one["fingerprint"]


def test_fingerprint_changes_with_one_reward() -> None:
    batch = synth([0, 1, 2, 3])
    meta = write_dataset("fp/base-v0", [batch])
    changed = synth([0, 1, 2, 3])
    changed.rewards[5] += 1e-9
    meta2 = write_dataset("fp/changed-v0", [changed])
    assert meta["fingerprint"] != meta2["fingerprint"]
    d1, d2 = storage.episode_digests(batch), storage.episode_digests(changed)
    differs = np.any(d1 != d2, axis=1)
    step_episode = np.searchsorted(batch.table["step_offset"], 5, side="right") - 1
    assert differs.tolist() == [i == step_episode for i in range(4)]


def test_fingerprint_excludes_ids_but_follows_id_order() -> None:
    base = write_dataset("fp/a-v0", [synth([0, 1, 2], contents=[7, 8, 9])])
    shifted = write_dataset("fp/b-v0", [synth([100, 205, 300], contents=[7, 8, 9])])
    assert base["fingerprint"] == shifted["fingerprint"]
    np.testing.assert_array_equal(
        storage.episode_digests(synth([0], contents=[7])),
        storage.episode_digests(synth([55], contents=[7])),
    )
    reordered = write_dataset("fp/c-v0", [synth([1, 0, 2], contents=[7, 8, 9])])
    assert reordered["fingerprint"] != base["fingerprint"]
    # the same (id, content) pairs in a different row order are the same dataset
    permuted = write_dataset("fp/d-v0", [synth([2, 0, 1], contents=[9, 7, 8])])
    assert permuted["fingerprint"] == base["fingerprint"]


def test_empty_dataset_fingerprint_is_stable() -> None:
    empty = hashlib.sha256(b"").hexdigest()
    assert storage.fingerprint(np.zeros(0, np.int64), np.zeros((0, 32), np.uint8)) == empty
    a = write_dataset("fp/empty-v0", [])
    b = write_dataset("other/empty-v1", [], base=cartpole_meta())
    assert a["fingerprint"] == b["fingerprint"] == empty
    assert a["total_episodes"] == a["total_steps"] == a["dataset_bytes"] == 0
    report = storage.verify_dataset("fp/empty-v0")
    assert report.ok and report.fingerprint == empty


def info_fn_a(eid: int, t: int, info: dict) -> dict:
    return {"a": float(t)}


def info_fn_b(eid: int, t: int, info: dict) -> dict:
    return {"b": np.int64(10 * eid + t)}


def test_fingerprint_ignores_shard_boundaries_with_changing_info_keys() -> None:
    # Review 12 / DESIGN 4: infos with changing keys are a dense column plus a mask; the
    # fingerprint still must not depend on where the shard boundaries fall.
    def mixed(eid: int, t: int, info: dict) -> dict:
        return info_fn_a(eid, t, info) if eid < 2 else info_fn_b(eid, t, info)

    whole = cartpole_batch([0, 1, 2, 3], record_infos=True, info_fn=mixed)
    first = cartpole_batch([0, 1], record_infos=True, info_fn=mixed)
    second = cartpole_batch([2, 3], record_infos=True, info_fn=mixed)
    assert whole.infos is not None and sorted(whole.infos) == ["a", "b"]
    assert first.infos is not None and sorted(first.infos) == ["a"]
    one = write_dataset("fp/infos-one-v0", [whole], base=cartpole_meta(True))
    two = write_dataset("fp/infos-two-v0", [first, second], base=cartpole_meta(True))
    assert one["fingerprint"] == two["fingerprint"]


def test_fingerprint_sees_every_bit_of_integer_infos() -> None:
    # int64 infos (e.g. nanosecond timestamps) differing in the last bit are different data.
    def stamp(delta: int) -> Any:
        return lambda eid, t, info: {"t_ns": np.int64(2**60 + 2 * t + delta)}

    a = write_dataset("fp/ns-a-v0", [cartpole_batch([0], True, stamp(0))], base=cartpole_meta(True))
    b = write_dataset("fp/ns-b-v0", [cartpole_batch([0], True, stamp(1))], base=cartpole_meta(True))
    assert a["fingerprint"] != b["fingerprint"]


# ------------------------------------------------------------------------------------------
# 5. writer lock


def test_second_writer_in_process_is_refused(datasets_root: Path) -> None:
    dsid = "ns/locked-v0"
    w = storage.DatasetWriter(dsid)
    try:
        w.start(base_meta())
        with pytest.raises(LockHeldError, match=re.escape(f"(pid {os.getpid()})")) as info:
            storage.DatasetWriter(dsid)
        assert info.value.pid == os.getpid()
        assert isinstance(info.value, BlockingIOError)
        assert "is being written by another process" in str(info.value)
        lock = datasets_root / "ns" / ".locks" / "locked-v0.lock"
        assert lock.is_file()
        assert lock.read_text().strip() == str(os.getpid())
        assert not [p for p in (datasets_root / dsid).rglob("*") if "lock" in p.name]
        # deleting the dataset folder cannot let a second writer in (review 8)
        shutil.rmtree(datasets_root / dsid)
        with pytest.raises(LockHeldError):
            storage.DatasetWriter(dsid)
        # other datasets are independent
        storage.DatasetWriter("ns/other-v0").close()
    finally:
        w.close()
    again = storage.DatasetWriter(dsid)
    again.close()


LOCK_HOLDER = """
import sys, time
from collector.storage import DatasetWriter
w = DatasetWriter(sys.argv[1])
print("ready", flush=True)
time.sleep(60)
"""


def test_lock_held_by_another_process_names_its_pid(datasets_root: Path) -> None:
    dsid = "ns/proc-v0"
    with subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, dsid],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            with pytest.raises(LockHeldError, match=re.escape(f"(pid {proc.pid})")) as info:
                storage.DatasetWriter(dsid)
            assert info.value.pid == proc.pid
            assert (datasets_root / "ns" / ".locks" / "proc-v0.lock").is_file()
        finally:
            proc.kill()
            proc.wait(timeout=10)
    # the holder is gone: the lock is free again
    with storage.DatasetWriter(dsid) as w:
        assert not w.exists


@pytest.mark.parametrize("linked", ["namespace", "dataset"])
def test_one_dataset_through_two_roots_has_one_lock(tmp_path: Path, linked: str) -> None:
    """Issue 16 item 18: locks were per root path, so a symlinked root let two writers in."""
    first, second = tmp_path / "first", tmp_path / "second"
    write_dataset_at = "ns/shared-v0"
    with storage.DatasetWriter(write_dataset_at, first) as w:
        w.start(base_meta())
    (second / "ns").mkdir(parents=True)
    if linked == "namespace":
        (second / "ns").rmdir()
        (second / "ns").symlink_to(first / "ns", target_is_directory=True)
    else:
        (second / "ns" / "shared-v0").symlink_to(first / "ns" / "shared-v0")
    with storage.DatasetWriter(write_dataset_at, first):
        with pytest.raises(LockHeldError, match=re.escape(f"(pid {os.getpid()})")):
            storage.DatasetWriter(write_dataset_at, second)
    with storage.DatasetWriter(write_dataset_at, second):
        with pytest.raises(LockHeldError):
            storage.DatasetWriter(write_dataset_at, first)
    # the lock stays outside every dataset folder
    assert not [p for p in (first / "ns" / "shared-v0").rglob("*") if "lock" in p.name]


@pytest.mark.parametrize(("umask", "mode"), [(0o002, 0o664), (0o022, 0o644)])
def test_lock_files_are_group_writable_under_a_group_umask(umask: int, mode: int) -> None:
    """Issue 16 item 18: lock files were created 0644 whatever the umask."""
    old = os.umask(umask)
    try:
        lock = storage.DatasetLock("ns/mode-v0").acquire()
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(lock.path.stat().st_mode) == mode
    finally:
        lock.release()


def as_other_user(uid: int, gid: int, fn: Any) -> int:
    """Run ``fn()`` in a forked child as ``uid:gid`` (no other groups); its exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            fn()
            code = 0
        except BaseException as e:
            print(f"as_other_user: {e!r}", file=sys.stderr, flush=True)
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A setgid folder of group 4242, mode 2775, that another user can reach (not under /root)."""
    shared = Path(tempfile.mkdtemp(prefix="harvest-shared-", dir="/tmp"))
    try:
        os.chown(shared, 0, 4242)
        os.chmod(shared, 0o2775)
        yield shared
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user")
def test_a_second_user_can_take_a_lock_file_it_cannot_write(shared_root: Path) -> None:
    """Issue 16 item 18: another user of a shared root could not open a 0644 lock file."""
    old = os.umask(0o022)  # the first user's umask: its lock file is not group-writable
    try:
        storage.DatasetLock("ns/shared-v0", shared_root).acquire().release()
    finally:
        os.umask(old)
    lock = shared_root / "ns" / ".locks" / "shared-v0.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o644
    take = storage.DatasetLock("ns/shared-v0", shared_root).acquire
    assert as_other_user(65534, 4242, take) == 0
    # while the first user holds it, the second is refused with the usual error
    with storage.DatasetLock("ns/shared-v0", shared_root):

        def refused() -> None:
            with pytest.raises(LockHeldError, match=re.escape(f"(pid {os.getppid()})")):
                storage.DatasetLock("ns/shared-v0", shared_root).acquire()

        assert as_other_user(65534, 4242, refused) == 0


# ------------------------------------------------------------------------------------------
# 6. torn writes and cleanup


def test_uncommitted_shard_is_invisible_then_removed(datasets_root: Path) -> None:
    dsid = "ns/torn-v0"
    committed = synth([0, 1])
    w = storage.DatasetWriter(dsid)
    w.start(base_meta())
    kept = w.write_shard(committed)["file"]
    w.commit()
    orphan = w.write_shard(synth([2, 3]))["file"]
    w.close()  # "crash" before commit
    path = storage.dataset_path(dsid)
    meta = storage.read_metadata(path, dsid)
    assert [e["file"] for e in meta["shards"]] == [kept]
    assert meta["total_episodes"] == 2
    assert data_listing(dsid) == {kept, orphan}
    assert [ep["id"] for ep in read_episodes(dsid)] == [0, 1]
    with storage.DatasetWriter(dsid) as w2:
        assert data_listing(dsid) == {kept}
        assert sorted(w2.committed_ids().tolist()) == [0, 1]
        assert w2.cleanup() == []
    assert storage.verify_dataset(dsid).ok


def test_leftover_temp_files_are_removed_on_open() -> None:
    dsid = "ns/leftovers-v0"
    meta = write_dataset(dsid, [synth([0, 1])])
    path = storage.dataset_path(dsid)
    (path / "metadata.json.tmp").write_text('{"half": ')
    (path / "data" / ".shard-000009-deadbeef.h5.tmp").write_bytes(b"partial")
    with storage.DatasetWriter(dsid):
        assert not (path / "metadata.json.tmp").exists()
        assert data_listing(dsid) == {meta["shards"][0]["file"]}
    assert storage.read_metadata(path)["fingerprint"] == meta["fingerprint"]


def test_a_shard_file_written_elsewhere_is_installed_or_its_temp_discarded() -> None:
    # the encoder process writes a window's shard under shard_temp_path(); the committer
    # installs it with the sha256 the child computed, or discards the temp on an error
    dsid = "ns/elsewhere-v0"
    batch = storage.fill_digests(synth([0, 1]))
    image = storage.build_shard_bytes(batch, "lzf")
    with storage.DatasetWriter(dsid) as w:
        w.start(base_meta())
        tmp = w.shard_temp_path()
        assert tmp.parent == w.data_dir and not tmp.exists()
        tmp.write_bytes(image)
        sha = hashlib.sha256(image).hexdigest()
        entry = w.install_shard_file(tmp, batch.table, batch.info_schema(), "lzf", sha)
        assert not tmp.exists() and (w.data_dir / entry["file"]).read_bytes() == image
        w.commit()
        left = w.shard_temp_path()
        left.write_bytes(b"half a shard")
        w.discard_shard_temp(left)
        w.discard_shard_temp(left)  # gone already: nothing to do
        assert not left.exists()
        with pytest.raises(UsageError, match="is not a temp shard"):
            w.discard_shard_temp(w.data_dir / entry["file"])  # never a committed shard
        assert (w.data_dir / entry["file"]).exists()
    assert storage.verify_dataset(dsid).ok


def test_cleanup_reports_what_it_removed() -> None:
    dsid = "ns/cleanup-v0"
    with storage.DatasetWriter(dsid) as w:
        w.start(base_meta())
        w.write_shard(synth([0]))
        w.commit()
        (w.path / "metadata.json.tmp").write_text("{}")
        (w.data_dir / ".shard-000005-00000000.h5.tmp").write_bytes(b"x")
        assert sorted(w.cleanup()) == [".shard-000005-00000000.h5.tmp", "metadata.json.tmp"]
        assert w.cleanup() == []


def test_overwrite_removes_the_old_generation_when_the_next_writer_opens() -> None:
    dsid = "ns/gen-v0"
    old = write_dataset(dsid, [synth([0, 1]), synth([2])])
    old_files = {e["file"] for e in old["shards"]}
    with storage.DatasetWriter(dsid) as w:
        w.start(base_meta())
        new = w.write_shard(synth([0], contents=[50]))["file"]
        w.commit()
    # the old generation is unreferenced but still on disk: open snapshots stay readable
    assert [e["file"] for e in storage.read_metadata(storage.dataset_path(dsid))["shards"]] == [new]
    assert data_listing(dsid) == old_files | {new}
    with storage.DatasetWriter(dsid):
        assert data_listing(dsid) == {new}
    assert old_files.isdisjoint(data_listing(dsid))


def test_cleanup_removes_only_its_own_names_and_never_a_link(tmp_path: Path) -> None:
    """Issue 16 item 4: cleanup removed every unreferenced entry of ``data/``, links included."""
    dsid = "ns/own-v0"
    meta = write_dataset(dsid, [synth([0, 1])])
    data = storage.dataset_path(dsid) / storage.DATA_DIR
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.h5").write_bytes(b"someone else's")
    (data / "notes.txt").write_text("the user's")
    (data / "shard-000777-0123abcd.h5").symlink_to(outside / "precious.h5")
    (data / "shard-000778-0123abcd.h5").mkdir()  # a folder is no shard either
    (data / ".shard-0123456789ab.h5.tmp").write_bytes(b"ours: a torn write")
    (data / "shard-000779-0123abcd.h5").write_bytes(b"ours: an uncommitted shard")
    # index files (issue 18): an orphan and a temp one are ours, a link or folder never
    (data / "shard-000779-0123abcd.idx").write_bytes(b"ours: an uncommitted index")
    (data / ".index-0123456789ab.idx.tmp").write_bytes(b"ours: a torn index write")
    (outside / "precious.idx").write_bytes(b"someone else's")
    (data / "shard-000777-0123abcd.idx").symlink_to(outside / "precious.idx")
    (data / "shard-000778-0123abcd.idx").mkdir()
    with storage.DatasetWriter(dsid) as w:
        assert w.cleanup() == []
    assert {p.name for p in data.iterdir()} == {
        meta["shards"][0]["file"],
        meta["shards"][0]["index"]["file"],
        "notes.txt",
        "shard-000777-0123abcd.h5",
        "shard-000778-0123abcd.h5",
        "shard-000777-0123abcd.idx",
        "shard-000778-0123abcd.idx",
    }
    assert (outside / "precious.h5").read_bytes() == b"someone else's"
    assert (outside / "precious.idx").read_bytes() == b"someone else's"


def test_a_symlinked_data_folder_is_never_cleaned(tmp_path: Path) -> None:
    """Issue 16 item 4: a no-op reopen deleted a file of the folder ``data/`` pointed to."""
    dsid = "ns/linked-v0"
    meta = write_dataset(dsid, [synth([0, 1])])
    path = storage.dataset_path(dsid)
    shared = tmp_path / "shared"
    shutil.move(path / storage.DATA_DIR, shared)
    (path / storage.DATA_DIR).symlink_to(shared, target_is_directory=True)
    others = {"notes.txt", "shard-000001-89abcdef.h5", ".shard-0123456789ab.h5.tmp"}
    for name in others:
        (shared / name).write_bytes(b"another dataset's")
    with storage.DatasetWriter(dsid) as w:
        assert sorted(w.committed_ids().tolist()) == [0, 1]
        assert w.cleanup() == []
    own = {meta["shards"][0]["file"], meta["shards"][0]["index"]["file"]}
    assert {p.name for p in shared.iterdir()} == others | own
    assert [ep["id"] for ep in read_episodes(dsid)] == [0, 1]


def test_a_no_op_resume_keeps_the_files_of_the_folder_data_links_to(tmp_path: Path) -> None:
    """Issue 16 item 4, as found: re-running a finished ``collect`` deleted an unrelated file."""
    from helpers import collect_cartpole

    from collector.collect import collect

    dsid = collect_cartpole("ns/resumed-v0", 4)
    path = storage.dataset_path(dsid)
    shared = tmp_path / "big-disk"
    shutil.move(path / storage.DATA_DIR, shared)
    (path / storage.DATA_DIR).symlink_to(shared, target_is_directory=True)
    (shared / "thesis.pdf").write_bytes(b"someone's")
    result = collect(
        {
            "env": "CartPole-v1",
            "episodes": 4,
            "seed": 0,
            "dataset_id": dsid,
            "policy": {"_target_": "collector.policies.RandomPolicy"},
        }
    )
    assert result.noop
    assert (shared / "thesis.pdf").read_bytes() == b"someone's"
    assert storage.verify_dataset(dsid).ok


# ------------------------------------------------------------------------------------------
# 7. metadata


def strict_loads(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_metadata_is_strict_json_with_infinite_bounds() -> None:
    dsid = "cartpole/random-v0"
    base = cartpole_meta()
    meta = write_dataset(dsid, [cartpole_batch([0, 1])], base=base)
    text = (storage.dataset_path(dsid) / "metadata.json").read_text()
    parsed = strict_loads(text)
    assert parsed["format_version"] == storage.FORMAT_VERSION
    assert parsed["dataset_id"] == dsid
    assert parsed["fingerprint"] == meta["fingerprint"]
    assert parsed["env_spec"]["id"] == "CartPole-v1"
    assert parsed["total_episodes"] == 2
    assert parsed["description"] == "test"
    # the infinite bounds survive the trip through strict JSON
    episodes = read_episodes(dsid)
    assert len(episodes) == 2
    from collector.spaces import space_from_json

    space = space_from_json(parsed["observation_space"])
    assert np.isinf(space.high).sum() == 2
    with pytest.raises(ValueError):
        storage.dumps_metadata({"x": float("nan")})


def test_read_metadata_accepts_minari_lenient_json(datasets_root: Path) -> None:
    record_cartpole("cart/a-v0", 2)
    file = storage.dataset_path("cart/a-v0") / storage.METADATA_FILE
    meta = json.loads(file.read_text())
    del meta[storage.MANIFEST_SHA256]  # an unsealed version 1 manifest, as earlier mains wrote
    meta["format_version"] = 1
    text = json.dumps(meta).replace('"total_steps"', '"ref_min_score": NaN, "total_steps"')
    text = text.replace('"Infinity"', "Infinity")
    file.chmod(0o644)
    file.write_text(text)
    got = storage.read_metadata(file.parent)
    assert got["observation_space"]["high"][1] == np.inf
    assert np.isnan(got["ref_min_score"])
    # but not a manifest without the fields readers need (issue 16 item 8)
    file.write_text('{"dataset_id": "minari-v0"}')
    with pytest.raises(CorruptDatasetError, match="has no manifest_sha256"):
        storage.read_metadata(file.parent)


@pytest.mark.parametrize("content", ['{"format_version": 1,', "[1, 2]", "null"])
def test_read_metadata_invalid_json_is_corrupt(tmp_path: Path, content: str) -> None:
    file = tmp_path / "metadata.json"
    file.write_text(content)
    with pytest.raises(CorruptDatasetError, match=re.escape(str(file))) as info:
        storage.read_metadata(tmp_path)
    assert "\n" not in str(info.value)
    assert "re-collect the dataset" in str(info.value)


def test_read_metadata_binary_garbage_is_corrupt(tmp_path: Path) -> None:
    # a torn or overwritten metadata.json need not be UTF-8; it is still "not valid JSON"
    file = tmp_path / "metadata.json"
    file.write_bytes(b"\xff\xfe\x00{garbage\x89HDF")
    with pytest.raises(CorruptDatasetError, match=re.escape(str(file))) as info:
        storage.read_metadata(tmp_path)
    assert "\n" not in str(info.value)


def test_read_metadata_refuses_newer_format(tmp_path: Path) -> None:
    newer = storage.FORMAT_VERSION + 1
    (tmp_path / "metadata.json").write_text(f'{{"format_version": {newer}}}')
    with pytest.raises(
        FormatVersionError,
        match=re.escape(
            f"dataset 'ns/new-v0' uses format version {newer}, newer than this harvest reads "
            f"({storage.FORMAT_VERSION}); upgrade harvest"
        ),
    ) as info:
        storage.read_metadata(tmp_path, "ns/new-v0")
    assert "\n" not in str(info.value)


def test_missing_dataset_is_not_found(datasets_root: Path) -> None:
    dsid = "ns/missing-v0"
    with pytest.raises(FileNotFoundError):
        storage.read_metadata(storage.dataset_path(dsid), dsid)
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"no dataset {dsid!r}")) as info:
        storage.verify_dataset(dsid)
    assert info.value.dataset_id == dsid
    assert "$HARVEST_DATASETS" in str(info.value)
    assert not datasets_root.exists()


def test_new_metadata_rejects_unknown_fields() -> None:
    with pytest.raises(UsageError, match=re.escape("unknown metadata field(s) ['autor']")):
        storage.new_metadata(OBS_SPACE, ACT_SPACE, None, record_infos=False, autor="me")
    meta = storage.new_metadata(
        OBS_SPACE, ACT_SPACE, None, record_infos=True, author="me", requirements={"b", "a"}
    )
    assert meta["author"] == "me" and meta["requirements"] == ["a", "b"]
    assert "author_email" not in meta and meta["record_infos"] is True
    strict_loads(storage.dumps_metadata(meta))


# ------------------------------------------------------------------------------------------
# 8. verify


def three_shard_dataset(dsid: str) -> dict[str, Any]:
    return write_dataset(dsid, [synth([0, 1, 2]), synth([3, 4, 5]), synth([6, 7])])


def test_verify_sound_dataset() -> None:
    meta = three_shard_dataset("ns/sound-v0")
    report = storage.verify_dataset("ns/sound-v0")
    assert report.ok, report.problems
    assert report.fingerprint == meta["fingerprint"]
    assert report.episodes == 8
    assert report.steps == meta["total_steps"]


def _flip(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.chmod(0o644)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_flip, "sha256 mismatch"),
        (_truncate, "[0-9,]+ bytes, metadata.json says"),
        (Path.unlink, "missing"),
    ],
    ids=["flip", "truncate", "delete"],
)
def test_verify_reports_damaged_shards(damage: Any, says: str) -> None:
    dsid = "ns/damaged-v0"
    three_shard_dataset(dsid)
    target = shard_files(dsid)[1]
    damage(target)
    report = storage.verify_dataset(dsid)
    assert not report.ok
    assert len(report.problems) == 1, report.problems
    assert re.match(f"{re.escape(target.name)}: {says}", report.problems[0]), report.problems
    assert report.fingerprint is None


def test_verify_recomputes_digests_even_when_sha256_matches() -> None:
    # Someone rewrote a shard *and* its manifest entry: only the content digests catch it.
    dsid = "ns/tampered-v0"
    three_shard_dataset(dsid)
    target = shard_files(dsid)[2]
    batch = storage.read_shard(target)
    batch.rewards[0] += 1.0  # the stored digest is left stale
    image = storage.build_shard_bytes(batch, "gzip")
    target.chmod(0o644)
    target.write_bytes(image)
    path = storage.dataset_path(dsid)
    meta = storage.read_metadata(path)
    meta["shards"][2].update(sha256=hashlib.sha256(image).hexdigest(), bytes=len(image))
    meta["dataset_bytes"] = sum(e["bytes"] for e in meta["shards"])
    (path / "metadata.json").write_text(storage.seal_metadata(meta))  # sealed again, too
    report = storage.verify_dataset(dsid)
    assert not report.ok
    assert report.problems == [
        f"{target.name}: 1 episode digest(s) do not match their data (first id 6)"
    ]


# ------------------------------------------------------------------------------------------
# 9. repack


def test_repack_merges_small_shards_without_changing_data() -> None:
    dsid = "ns/repack-v0"
    batches = [synth(list(range(3 * i, 3 * i + 3))) for i in range(5)]
    meta = write_dataset(dsid, batches, compression="lzf")
    before = read_episodes(dsid)
    old_files = {e["file"] for e in meta["shards"]}
    with storage.DatasetWriter(dsid) as w:
        assert w.repack(target_bytes=1 << 30, compression="gzip") == 5
        assert w.repack(target_bytes=1 << 30) == 0  # nothing left to merge
    after_meta = storage.read_metadata(storage.dataset_path(dsid))
    assert len(after_meta["shards"]) == 1
    assert after_meta["shards"][0]["id_ranges"] == [[0, 15]]
    assert after_meta["fingerprint"] == meta["fingerprint"]
    assert after_meta["total_episodes"] == 15
    assert after_meta["total_steps"] == meta["total_steps"]
    # merged shards stay until the next writer opens the dataset, for open snapshots
    assert old_files <= data_listing(dsid)
    with storage.DatasetWriter(dsid):
        pass
    assert data_listing(dsid) == {after_meta["shards"][0]["file"]}
    assert old_files.isdisjoint(data_listing(dsid))
    after = read_episodes(dsid)
    assert [e["id"] for e in after] == [e["id"] for e in before] == list(range(15))
    for a, b in zip(before, after, strict=True):
        assert_same_episode(a, b)
        assert a["seed"] == b["seed"] and a["return"] == b["return"]
    report = storage.verify_dataset(dsid)
    assert report.ok, report.problems


def test_repack_leaves_shards_that_are_not_small() -> None:
    dsid = "ns/repack-big-enough-v0"
    meta = write_dataset(dsid, [synth([i]) for i in range(3)], compression="none")
    size = min(storage.decoded_bytes(meta, e) for e in meta["shards"])  # judged decoded
    with storage.DatasetWriter(dsid) as w:  # each shard is exactly at the "small" limit
        assert w.repack(target_bytes=storage.SMALL_SHARD_FRACTION * size) == 0
    assert storage.read_metadata(storage.dataset_path(dsid))["shards"] == meta["shards"]


def test_repack_respects_target_size() -> None:
    dsid = "ns/repack-size-v0"
    meta = write_dataset(dsid, [synth([i]) for i in range(20)], compression="none")
    size = max(e["bytes"] for e in meta["shards"])
    target = 16 * size + size // 2  # groups of 16 shards' bytes on disk
    # small = under target / SMALL_SHARD_FRACTION decoded, so every shard here is small
    assert all(
        storage.decoded_bytes(meta, e) < target // storage.SMALL_SHARD_FRACTION
        for e in meta["shards"]
    )
    with storage.DatasetWriter(dsid) as w:
        merged = w.repack(target_bytes=target, compression="none")
    after = storage.read_metadata(storage.dataset_path(dsid))
    assert merged == 20
    assert [e["episodes"] for e in after["shards"]] == [16, 4]
    assert after["fingerprint"] == meta["fingerprint"]
    assert storage.verify_dataset(dsid).ok


def recorded_info_batches() -> list[storage.EpisodeBatch]:
    return [
        cartpole_batch([0, 1], record_infos=True, info_fn=info_fn_a),
        cartpole_batch([2, 3], record_infos=True, info_fn=info_fn_b),
        cartpole_batch([4], record_infos=True, info_fn=lambda e, t, i: {}),
    ]


def test_concat_batches_unions_info_keys_with_correct_masks() -> None:
    a, b, c = recorded_info_batches()
    assert a.infos is not None and sorted(a.infos) == ["a"]
    assert b.infos is not None and sorted(b.infos) == ["b"]
    assert c.infos == {}
    cat = storage.concat_batches([a, b, c])
    assert cat.infos is not None and sorted(cat.infos) == ["a", "b"]
    rows_a, rows_b = len(a.infos["a"]), len(b.infos["b"])
    rows_c = int(c.table["length"].sum()) + c.num_episodes
    assert len(cat.infos["a"]) == len(cat.info_masks["a"]) == rows_a + rows_b + rows_c
    mask_a, mask_b = cat.info_masks["a"], cat.info_masks["b"]
    assert mask_a[:rows_a].all() and not mask_a[rows_a:].any()
    assert not mask_b[:rows_a].any() and mask_b[rows_a : rows_a + rows_b].all()
    assert not mask_b[rows_a + rows_b :].any()
    np.testing.assert_array_equal(cat.infos["a"][:rows_a], a.infos["a"])
    np.testing.assert_array_equal(cat.infos["b"][rows_a : rows_a + rows_b], b.infos["b"])
    assert not cat.infos["a"][rows_a:].any() and not cat.infos["b"][:rows_a].any()
    assert cat.infos["b"].dtype == np.int64
    np.testing.assert_array_equal(cat.table["id"], [0, 1, 2, 3, 4])
    obs_offset, step_offset = storage.batch._offsets(cat.table["length"])
    np.testing.assert_array_equal(cat.table["obs_offset"], obs_offset)
    np.testing.assert_array_equal(cat.table["step_offset"], step_offset)
    assert list(cat.table["metadata"]) == [
        *a.table["metadata"],
        *b.table["metadata"],
        *c.table["metadata"],
    ]


def test_repack_with_changing_info_keys_keeps_fingerprint_and_masks() -> None:
    dsid = "ns/repack-infos-v0"
    meta = write_dataset(dsid, recorded_info_batches(), base=cartpole_meta(record_infos=True))
    with storage.DatasetWriter(dsid) as w:
        assert w.repack(target_bytes=1 << 30) == 3
    after = storage.read_metadata(storage.dataset_path(dsid))
    assert len(after["shards"]) == 1
    assert after["fingerprint"] == meta["fingerprint"]
    episodes = read_episodes(dsid)
    for ep in episodes:
        infos = ep["infos"]
        has_a = ep["id"] in (0, 1)
        has_b = ep["id"] in (2, 3)
        assert infos["a"][1].all() == has_a and infos["a"][1].any() == has_a
        assert infos["b"][1].all() == has_b and infos["b"][1].any() == has_b
    assert storage.verify_dataset(dsid).ok


def test_repack_never_commits_a_changed_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    # If a merged shard ever digested differently, repack must refuse *before* the commit point:
    # metadata.json on disk has to keep the old shard list and fingerprint.
    dsid = "ns/repack-guard-v0"
    meta = write_dataset(dsid, [synth([0, 1]), synth([2, 3])])
    real = storage.episode_digests

    def skewed(batch: storage.EpisodeBatch) -> np.ndarray:
        out = real(batch)
        out[:, 0] ^= 1
        return out

    with storage.DatasetWriter(dsid) as w, monkeypatch.context() as m:
        m.setattr(storage.digests, "episode_digests", skewed)
        with pytest.raises(
            CorruptDatasetError, match="does not match its own digests; run verify before repacking"
        ):
            w.repack(target_bytes=1 << 30)
    on_disk = storage.read_metadata(storage.dataset_path(dsid))
    assert on_disk["fingerprint"] == meta["fingerprint"]
    assert [e["file"] for e in on_disk["shards"]] == [e["file"] for e in meta["shards"]]


# ------------------------------------------------------------------------------------------
# 10. adopt_shard


def spill(datasets_root: Path, batch: storage.EpisodeBatch, name: str) -> Path:
    batch.table["digest"] = storage.episode_digests(batch)
    path = datasets_root / storage.SPILL_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(storage.build_shard_bytes(batch, "gzip"))
    return path


def test_adopt_shard_with_id_offset(datasets_root: Path) -> None:
    dsid = "ns/adopt-v0"
    src = spill(datasets_root, synth([0, 1, 2], contents=[5, 6, 7]), "w0.h5")
    with storage.DatasetWriter(dsid) as w:
        w.start(base_meta())
        entry = w.adopt_shard(src, id_offset=10, compression="gzip")
        assert w.committed_ids().tolist() == [10, 11, 12]
        assert entry["id_ranges"] == [[10, 13]]
        assert entry["id_offset"] == 10
        assert SHARD_NAME.fullmatch(entry["file"])
        meta = w.commit()
    assert not src.exists()
    dest = storage.dataset_path(dsid) / "data" / entry["file"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o444
    # the immutable file keeps its own ids; the manifest carries the offset
    assert storage.read_shard_table(dest)["id"].tolist() == [0, 1, 2]
    assert [e["id"] for e in read_episodes(dsid)] == [10, 11, 12]
    report = storage.verify_dataset(dsid)
    assert report.ok, report.problems
    written = write_dataset("ns/direct-v0", [synth([10, 11, 12], contents=[5, 6, 7])])
    assert meta["fingerprint"] == written["fingerprint"]
    with storage.DatasetWriter(dsid) as w:
        assert w.committed_ids().tolist() == [10, 11, 12]


def test_duplicate_ids_refuse_to_commit(datasets_root: Path) -> None:
    dsid = "ns/dupes-v0"
    with storage.DatasetWriter(dsid) as w:
        w.start(base_meta())
        w.write_shard(synth([0, 1, 2]))
        before = w.commit()
        w.adopt_shard(spill(datasets_root, synth([1]), "dup.h5"))
        with pytest.raises(
            CorruptDatasetError,
            match=re.escape(
                "refusing to commit 'ns/dupes-v0': duplicate episode ids in the shard list"
            ),
        ):
            w.commit()
        w.adopt_shard(spill(datasets_root, synth([7, 8]), "shifted.h5"), id_offset=-6)
        with pytest.raises(CorruptDatasetError, match="duplicate episode ids"):
            w.commit()
    on_disk = storage.read_metadata(storage.dataset_path(dsid))
    assert on_disk["fingerprint"] == before["fingerprint"]
    assert on_disk["total_episodes"] == 3
    assert storage.verify_dataset(dsid).ok


def test_a_dataset_cannot_be_created_inside_or_around_another() -> None:
    write_dataset("outer-v0", [synth([0])])
    # refused when the writer opens: its lock would otherwise be made inside 'outer-v0'
    with (
        pytest.raises(UsageError, match=re.escape("would sit inside dataset 'outer-v0'")),
        storage.DatasetWriter("outer-v0/inner-v1") as w,
    ):
        w.start(base_meta())
    assert not storage.dataset_path("outer-v0/inner-v1").parent.joinpath(".locks").exists()
    write_dataset("ns/a/inner-v0", [synth([0])])
    with storage.DatasetWriter("ns/a-v0") as w:
        w.start(base_meta())  # a sibling folder is fine
    assert storage.read_metadata(storage.dataset_path("outer-v0"))["total_episodes"] == 1


@pytest.mark.parametrize("role", ["observation", "action"])
def test_a_top_level_text_space_round_trips_through_shards_and_repack(role: str) -> None:
    """A root Text leaf has two columns (characters and length): HDF5 cannot store the first as
    the ``observations`` dataset and the second inside an ``observations`` group."""
    from collector.data_collector import DataCollector
    from curation.api import load_dataset

    text = spaces.Text(5, charset="xyz")

    class TextEnv(gym.Env):
        observation_space = text if role == "observation" else spaces.Discrete(2)
        action_space = text if role == "action" else spaces.Discrete(2)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
            super().reset(seed=seed)
            self.t = 0
            return self.observation_space.sample(), {}

        def step(self, action: Any) -> Any:
            self.t += 1
            return self.observation_space.sample(), 1.0, self.t >= 3, False, {}

    env = DataCollector(TextEnv(), spill_bytes=1)  # one shard per episode: repack merges them
    seen = []
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        row = [obs]
        for _ in range(3):
            action = env.action_space.sample()
            obs, *_ = env.step(action)
            row += [action, obs]
        seen.append(row)
    env.create_dataset("txt/root-v0")
    ds = load_dataset("txt/root-v0")
    for ep, row in zip(ds.iterate_episodes(), seen, strict=True):
        assert list(ep.observations) == row[0::2]
        assert list(ep.actions) == row[1::2]
    with storage.DatasetWriter("txt/root-v0") as w:  # repack merges shards column by column
        assert w.repack(target_bytes=1 << 30) >= 2
    assert storage.verify_dataset("txt/root-v0").ok
    assert [list(e.observations) for e in load_dataset("txt/root-v0").iterate_episodes()] == [
        r[0::2] for r in seen
    ]


@pytest.mark.parametrize("rows", [1, 999, 16_385, 21_138, 100_000])
def test_uncompressed_columns_are_chunked_without_a_mostly_empty_last_chunk(rows: int) -> None:
    # uncompressed chunks (chunked for fletcher32) store their unused rows as they are: a
    # 21,138-row column in chunks of 16,384 rows cost 1.71x its raw bytes at 20k steps
    kw = storage.hdf5._dataset_kwargs(rows, (4,), np.dtype(np.float32), None, None)
    chunk = kw["chunks"][0]
    chunks = -(-rows // chunk)
    assert chunk <= storage.CHUNK_ROWS and chunk * chunks - rows < chunks
    assert kw["fletcher32"] and "compression" not in kw
