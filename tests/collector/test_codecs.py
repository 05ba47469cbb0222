"""Shard codecs (issue 19 item 1): zstd and ``auto`` are bit-exact for every leaf kind, leave
the fingerprint alone, coexist with lzf/gzip shards, and refuse bad specs and unknown filters
in one line."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import pytest
from gymnasium import spaces

from collector import storage
from collector.errors import CorruptDatasetError, UsageError
from collector.recorder import EpisodeRecorder

ZSTD = 32015  # hdf5plugin's registered HDF5 filter id
SHUFFLE = h5py.h5z.FILTER_SHUFFLE
CODECS = ["none", "lzf", "gzip", "gzip:1", "zstd", "zstd:1", "zstd:9", "auto"]

OBS = spaces.Dict(
    {
        "pong": spaces.Box(0, 255, (210, 160, 3), np.uint8),
        "gray": spaces.Box(0, 255, (84, 84), np.uint8),
        "pov": spaces.Box(0, 255, (64, 64, 3), np.uint8),
        "odd": spaces.Box(0, 255, (7, 5, 3), np.uint8),
        "f32": spaces.Box(-np.inf, np.inf, (5,), np.float32),
        "f64": spaces.Box(-np.inf, np.inf, (17,), np.float64),
        "ints": spaces.Box(-(2**31), 2**31 - 1, (3,), np.int32),
    }
)
ACT = spaces.Box(-1, 1, (6,), np.float32)


def _frame(rng: np.random.Generator, shape: tuple[int, ...], t: int) -> np.ndarray:
    """A frame like a game's: a flat background, a moving block and a few noisy pixels."""
    img = np.full(shape, 87, np.uint8)
    img[t % shape[0] : t % shape[0] + 3, 1:4] = 236
    flat = img.reshape(-1)
    flat[rng.integers(0, flat.size, 5)] = rng.integers(0, 256, 5, dtype=np.uint8)
    return img


def _obs(rng: np.random.Generator, t: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, space in OBS.spaces.items():
        if space.dtype == np.uint8:
            out[key] = _frame(rng, space.shape, t)
        elif space.dtype == np.int32:
            out[key] = rng.integers(-(2**31), 2**31 - 1, space.shape, dtype=np.int32)
        else:
            out[key] = rng.normal(size=space.shape).astype(space.dtype)
    return out


def mixed_batch(ids: list[int], lengths: list[int]) -> storage.EpisodeBatch:
    """Episodes of Dict observations mixing images of several shapes with vectors."""
    rec = EpisodeRecorder(OBS, ACT, record_infos=True)
    for eid, length in zip(ids, lengths, strict=True):
        rng = np.random.default_rng(eid)
        rec.begin_episode(eid, eid, None, _obs(rng, 0), {"lives": np.int64(3)})
        for t in range(length):
            info = {"lives": np.int64(3 - t % 2), "frame": _frame(rng, (6, 4), t)}
            action = rng.uniform(-1, 1, 6).astype(np.float32)
            rec.add_step(action, _obs(rng, t + 1), float(t), t == length - 1, False, info)
        rec.end_episode(force_truncate=True)
    batch = rec.take()
    assert batch is not None
    return batch


def write(dataset_id: str, batches: list[storage.EpisodeBatch], compression: str) -> dict:
    with storage.DatasetWriter(dataset_id) as w:
        w.start(storage.new_metadata(OBS, ACT, None, record_infos=True))
        for b in batches:
            w.write_shard(b, compression)
        return w.commit()


def shard_paths(dataset_id: str, meta: dict[str, Any]) -> list[Path]:
    data = storage.dataset_path(dataset_id) / storage.DATA_DIR
    return [data / e["file"] for e in meta["shards"]]


def assert_bytes_equal(a: storage.EpisodeBatch, b: storage.EpisodeBatch) -> None:
    """Every column of ``b`` holds exactly ``a``'s bytes, dtype and shape."""
    pairs = [
        (f"{g}/{k}", getattr(a, g)[k], getattr(b, g)[k])
        for g in ("observations", "actions")
        for k in getattr(a, g)
    ]
    pairs += [(c, getattr(a, c), getattr(b, c)) for c in storage.STEP_COLUMNS]
    assert a.infos is not None and b.infos is not None
    pairs += [(f"infos/{k}", a.infos[k], b.infos[k]) for k in a.infos]
    pairs += [(f"masks/{k}", a.info_masks[k], b.info_masks[k]) for k in a.info_masks]
    assert sorted(b.observations) == sorted(a.observations)
    for name, x, y in pairs:
        assert (x.dtype, x.shape) == (y.dtype, y.shape), name
        assert x.tobytes() == y.tobytes(), name


def filters(dset: h5py.Dataset) -> list[int]:
    plist = dset.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


# ------------------------------------------------------------------------------------------
# specs


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("auto", ("auto", None)),
        ("zstd", ("zstd", 3)),
        ("zstd:1", ("zstd", 1)),
        (" ZSTD:22 ", ("zstd", 22)),
        ("lzf", ("lzf", None)),
        ("gzip", ("gzip", 4)),
        ("none", (None, None)),
    ],
)
def test_parse_compression_accepts_zstd_and_auto(spec: str, parsed: tuple) -> None:
    assert storage.parse_compression(spec) == parsed


@pytest.mark.parametrize("spec", ["zstd:99", "zstd:x", "zstd:", "brotli", "auto:1", "zstd:-3"])
def test_a_bad_spec_is_one_usage_line_naming_the_choices(spec: str) -> None:
    with pytest.raises(UsageError) as err:
        storage.parse_compression(spec)
    line = str(err.value)
    assert "\n" not in line
    assert line == (
        f"storage.compression={spec!r} is not valid; "
        "use auto, none, lzf, gzip, gzip:0-9, zstd or zstd:1-22"
    )


# ------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_round_trips_every_leaf_kind_bit_exactly(codec: str) -> None:
    # one 1-step episode (2 frames), and odd lengths so chunks end part-filled
    batch = mixed_batch([0, 1, 2], [1, 13, 4])
    image = storage.build_shard_bytes(storage.fill_digests(batch), codec)
    path = Path(storage.dataset_path("codec/rt-v0").parent / "shard.h5")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image)
    assert_bytes_equal(batch, storage.read_shard(path))
    reader = storage.ShardReader()
    try:
        rows = reader.read_rows(path, slice(3, 17), slice(1, 14))  # a block mid-shard
    finally:
        reader.close()
    for key, column in batch.observations.items():
        assert rows.observations[key].tobytes() == column[3:17].tobytes(), key
    assert rows.actions[""].tobytes() == batch.actions[""][1:14].tobytes()


def test_auto_gives_images_zstd_in_chunks_of_whole_frames_and_vectors_shuffle_zstd_1() -> None:
    """Frames of at most 16 KiB get zstd:5 (84x84 Pong 38 -> 30 B/frame), larger ones zstd:3
    (raw Pong: zstd:5 is larger, 147 B/frame against 93)."""
    meta = write("codec/auto-v0", [mixed_batch([0, 1], [30, 12])], "auto")
    assert meta["shards"][0]["compression"] == "auto"
    (path,) = shard_paths("codec/auto-v0", meta)
    with h5py.File(path, "r") as f:
        for key, level in (("pong", 3), ("gray", 5), ("pov", 5), ("odd", 5)):
            dset = f[f"observations/{key}"]
            assert filters(dset) == [ZSTD, h5py.h5z.FILTER_FLETCHER32], key
            assert dset.id.get_create_plist().get_filter(0)[2] == (level,), key
            assert dset.chunks[1:] == dset.shape[1:], key  # whole frames per chunk
            assert np.prod(dset.chunks) <= 1 << 20, key  # fits the reader's chunk cache
        assert f["observations/pong"].chunks[0] == 10  # 1 MiB of 100,800-byte frames
        for key in ("observations/f32", "observations/f64", "observations/ints", "actions"):
            assert filters(f[key]) == [SHUFFLE, ZSTD, h5py.h5z.FILTER_FLETCHER32], key
            assert f[key].id.get_create_plist().get_filter(1)[2] == (1,), key
        assert filters(f["terminations"]) == [
            ZSTD,
            h5py.h5z.FILTER_FLETCHER32,
        ]  # 1-byte: no shuffle


def test_an_explicit_codec_applies_to_every_leaf() -> None:
    meta = write("codec/lzf-v0", [mixed_batch([0], [5])], "lzf")
    (path,) = shard_paths("codec/lzf-v0", meta)
    with h5py.File(path, "r") as f:
        for key in ("observations/pong", "observations/f64", "actions", "rewards"):
            assert f[key].compression == "lzf", key
            assert not f[key].shuffle, key


def test_fingerprint_is_the_same_whatever_the_codec() -> None:
    batches = [mixed_batch([0, 1], [6, 3]), mixed_batch([2], [9])]
    prints = {}
    for i, codec in enumerate(["none", "lzf", "gzip", "zstd:3", "zstd:19", "auto"]):
        dataset_id = f"codec/fp{i}-v0"
        meta = write(dataset_id, batches, codec)
        prints[codec] = meta["fingerprint"]
        assert storage.verify_dataset(dataset_id).ok, codec
        for path, batch in zip(shard_paths(dataset_id, meta), batches, strict=True):
            assert_bytes_equal(batch, storage.read_shard(path))
    assert len(set(prints.values())) == 1, prints


def test_an_lzf_and_gzip_dataset_extended_with_auto_reads_verifies_and_repacks() -> None:
    """A dataset of the old default codecs keeps working next to new auto/zstd shards."""
    batches = [mixed_batch([i], [3 + i]) for i in range(4)]
    reference = write("codec/ref-v0", batches, "none")["fingerprint"]
    with storage.DatasetWriter("codec/old-v0") as w:
        w.start(storage.new_metadata(OBS, ACT, None, record_infos=True))
        w.write_shard(batches[0], "lzf")
        w.write_shard(batches[1], "gzip")
        w.commit()
    with storage.DatasetWriter("codec/old-v0") as w:
        w.write_shard(batches[2], "auto")
        w.write_shard(batches[3], "zstd:5")
        meta = w.commit()
    assert [e["compression"] for e in meta["shards"]] == ["lzf", "gzip", "auto", "zstd:5"]
    assert meta["fingerprint"] == reference
    assert storage.verify_dataset("codec/old-v0").ok
    with storage.DatasetWriter("codec/old-v0") as w:
        assert w.repack(1 << 30, "auto") > 0  # lzf + gzip + zstd sources, one auto shard
        meta = w.commit()
    assert meta["fingerprint"] == reference
    assert storage.verify_dataset("codec/old-v0").ok
    whole = storage.concat_batches(
        [storage.read_shard(p) for p in shard_paths("codec/old-v0", meta)]
    )
    for key in OBS.spaces:
        stored = np.concatenate([b.observations[key] for b in batches])
        assert whole.observations[key].tobytes() == stored.tobytes(), key


# ------------------------------------------------------------------------------------------
# hostile input


def _with_unknown_filter(src: Path, dest: Path, filter_id: int) -> None:
    """A copy of shard ``src`` whose ``rewards`` column names an HDF5 filter nobody registered."""
    dest.write_bytes(src.read_bytes())
    with h5py.File(dest, "r+") as f:
        values = f["rewards"][()]
        del f["rewards"]
        dset = f.create_dataset(
            "rewards",
            shape=values.shape,
            dtype=values.dtype,
            chunks=values.shape,
            compression=filter_id,
            allow_unknown_filter=True,
        )
        dset.id.write_direct_chunk((0,), values.tobytes())
        del f.attrs[storage.LAYOUT_CHECKSUM]  # as a tool other than harvest would leave it


def test_a_shard_naming_an_unknown_filter_fails_in_one_clear_line(tmp_path: Path) -> None:
    meta = write("codec/hostile-v0", [mixed_batch([0], [4])], "auto")
    (src,) = shard_paths("codec/hostile-v0", meta)
    bad = tmp_path / "bad.h5"
    _with_unknown_filter(src, bad, 32999)
    expected = re.escape(f"shard {bad}: column 'rewards' needs HDF5 filter 32999")
    with pytest.raises(CorruptDatasetError, match=expected) as err:
        storage.read_shard(bad)
    assert "\n" not in str(err.value) and "run verify" in str(err.value)
    reader = storage.ShardReader()
    with pytest.raises(CorruptDatasetError, match=expected):
        reader.read_rows(bad, slice(0, 2), slice(0, 1))
    reader.close()


@pytest.mark.parametrize("junk", ["brotli", "zstd:99", 7, None])
def test_the_manifest_refuses_a_shard_compression_that_is_not_a_codec(junk: Any) -> None:
    meta = write("codec/manifest-v0", [mixed_batch([0], [2])], "auto")
    meta = json.loads(json.dumps(meta))
    storage.check_metadata(meta, "metadata.json")  # as written: accepted
    meta["shards"][0]["compression"] = junk
    with pytest.raises(CorruptDatasetError, match="compression must be a storage.compression"):
        storage.check_metadata(meta, "metadata.json")


# ------------------------------------------------------------------------------------------
# a real Atari run


def _pong(form: str) -> gym.Env:
    if form == "raw":
        return gym.make("ALE/Pong-v5", max_episode_steps=200)
    env = gym.make("ALE/Pong-v5", frameskip=1, max_episode_steps=800)
    return gym.wrappers.AtariPreprocessing(env, frame_skip=4)  # 84x84 gray, as DQN stores


@pytest.mark.parametrize(("form", "most"), [("raw", 300), ("84x84", 150)])
def test_a_real_pong_run_is_stored_bit_exactly_and_small_by_default(form: str, most: int) -> None:
    ale_py = pytest.importorskip("ale_py")
    from collector.data_collector import DataCollector
    from curation import load_dataset

    gym.register_envs(ale_py)
    env = DataCollector(_pong(form))
    frames = [env.reset(seed=3)[0]]
    rng = np.random.default_rng(3)
    done = False
    while not done:
        obs, _, term, trunc, _ = env.step(int(rng.integers(6)))
        frames.append(obs)
        done = term or trunc
    env.create_dataset(f"atari/pong-{form}-v0")
    env.close()
    ds = load_dataset(f"atari/pong-{form}-v0")
    (episode,) = list(ds.iterate_episodes())
    assert episode.observations.tobytes() == np.stack(frames).tobytes()
    shard_bytes = sum(e["bytes"] for e in ds.metadata["shards"])
    # 200 frames: auto 137 and 87 B/frame (fixed costs included); lzf ~1,920 and ~240
    assert shard_bytes / len(frames) < most


def test_a_zstd_shard_opens_whatever_h5py_calls_a_plugin_filter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """h5py 3.16 calls zstd's compression 'unknown', older h5py None: the layout checksum
    written by one must hold when read by the other."""
    batch = mixed_batch([0], [3])
    meta = write("codec/h5py-v0", [batch], "auto")
    (path,) = shard_paths("codec/h5py-v0", meta)
    name = h5py.Dataset.compression.fget

    def older(self: h5py.Dataset) -> str | None:
        found = name(self)
        return None if found == "unknown" else found

    monkeypatch.setattr(h5py.Dataset, "compression", property(older))
    assert_bytes_equal(batch, storage.read_shard(path))
    assert storage.verify_dataset("codec/h5py-v0").ok


def _layout_checksum_before_zstd(f: h5py.File) -> str:
    """``hdf5._layout_checksum`` as harvest computed it before zstd (copied verbatim)."""
    h = hashlib.sha256()

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        h.update(f"{name}|{obj.dtype.str}|{obj.shape}|{obj.chunks}|".encode())
        h.update(f"{obj.compression}|{obj.compression_opts}|{obj.fletcher32}|".encode())
        if obj.chunks is None:
            h.update(f"{obj.id.get_offset()}|{obj.id.get_storage_size()}|".encode())
            return
        obj.id.chunk_iter(
            lambda c: h.update(
                f"{c.chunk_offset}{c.filter_mask},{c.byte_offset},{c.size}|".encode()
            )
        )

    f.visititems(visit)
    return h.hexdigest()


@pytest.mark.parametrize("codec", ["none", "lzf", "gzip", "gzip:9"])
def test_lzf_gzip_and_none_shards_keep_the_layout_checksum_older_readers_compute(
    codec: str,
) -> None:
    """Shards of the old codecs stay byte-compatible with readers from before zstd."""
    meta = write(f"codec/old-{codec.replace(':', '')}-v0", [mixed_batch([0, 1], [4, 2])], codec)
    (path,) = shard_paths(f"codec/old-{codec.replace(':', '')}-v0", meta)
    with h5py.File(path, "r") as f:
        assert f.attrs[storage.LAYOUT_CHECKSUM].decode() == _layout_checksum_before_zstd(f)


@pytest.mark.parametrize("spec", ["zstd:99", "brotli"])
def test_collect_and_data_collector_refuse_a_bad_spec_in_one_line(spec: str) -> None:
    from collector.config import CollectConfig
    from collector.data_collector import DataCollector

    line = f"storage.compression={spec!r} is not valid; use auto,"
    with pytest.raises(UsageError, match=re.escape(line)):
        CollectConfig.from_dict({"env": "CartPole-v1", "storage": {"compression": spec}})
    with pytest.raises(UsageError, match=re.escape(line)):
        DataCollector(gym.make("CartPole-v1"), compression=spec)


def test_collect_defaults_to_auto() -> None:
    from collector.config import CollectConfig

    assert CollectConfig.from_dict({"env": "CartPole-v1"}).storage.compression == "auto"
