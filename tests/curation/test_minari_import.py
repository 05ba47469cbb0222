"""``from_minari``: datasets written by Minari's own DataCollector import field for field."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from gymnasium import spaces
from minari_zoo import SEEDS, ZOO, assert_same, minari_record

from collector import storage
from collector.errors import (
    CorruptDatasetError,
    DatasetExistsError,
    DatasetNotFoundError,
    UsageError,
)
from curation.api import load_dataset
from curation.dataset import Dataset
from curation.minari import MinariSource, from_minari, to_minari

minari = pytest.importorskip("minari")
pytest.importorskip("pyarrow")

FORMATS = ("hdf5", "arrow", "parquet")


def theirs_infos(infos: dict[str, Any]) -> dict[str, Any]:
    """Minari's arrow reader leaves nested info dicts as per-step dicts (its PR #347)."""
    nested = infos.get("nested")
    if nested is not None and not isinstance(nested, dict):
        infos = {**infos, "nested": {"v": np.asarray([d["v"] for d in nested])}}
    return infos


def without_masks(infos: dict[str, Any]) -> dict[str, Any]:
    """Our infos minus the ``_key`` presence masks (all True for Minari's consistent infos)."""
    return {
        k: without_masks(v) if isinstance(v, dict) else v
        for k, v in infos.items()
        if not k.startswith("_")
    }


def assert_equal_to_minari(ours: Dataset, theirs: Any, *, infos: bool = True) -> None:
    """Every field of every episode equal to what ``minari.load_dataset`` returns."""
    assert ours.total_episodes == theirs.total_episodes
    assert ours.total_steps == theirs.total_steps
    assert ours.observation_space == theirs.observation_space
    assert ours.action_space == theirs.action_space
    metas = list(theirs.storage.get_episode_metadata(range(theirs.total_episodes)))
    ep_metas = ours.get_episode_metadata()
    for ep, their, meta, ep_meta in zip(
        ours.iterate_episodes(), theirs.iterate_episodes(), metas, ep_metas, strict=True
    ):
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            assert_same(getattr(ep, field), getattr(their, field), field)
        assert ep.seed == meta.get("seed")
        assert ep.options == meta.get("options")
        assert ep_meta["rewards_sum"] == meta["rewards_sum"]
        if infos:
            their_infos = theirs_infos(their.infos)
            assert_same(without_masks(ep.infos), their_infos, "infos")
            assert all(ep.infos["_t"])
        else:
            assert ep.infos == {} and their.infos == {}


@pytest.mark.parametrize("record_infos", [True, False], ids=["infos", "no-infos"])
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("kind", sorted(ZOO))
def test_every_space_kind_and_format_imports_equal_to_minari(
    kind: str, data_format: str, record_infos: bool
) -> None:
    dataset_id = f"zoo/{kind}-{data_format}-v0"
    # Minari's arrow writer cannot store JPEG actions (it pads actions with a missing row)
    act = None if kind == "image" and data_format != "hdf5" else ZOO[kind]
    minari_record(dataset_id, ZOO[kind], act, data_format=data_format, record_infos=record_infos)
    ours = from_minari(dataset_id)
    assert ours.id == dataset_id and ours.metadata["record_infos"] is record_infos
    assert_equal_to_minari(ours, minari.load_dataset(dataset_id), infos=record_infos)
    assert [ep.seed for ep in ours] == list(SEEDS)


@pytest.mark.parametrize("data_format", FORMATS)
def test_raw_images_with_jpeg_encoding_off(data_format: str) -> None:
    image = ZOO["image"]
    act = image if data_format == "hdf5" else None  # see the zoo test
    minari_record("zoo/raw-v0", image, act, data_format=data_format, jpeg_encoding=False)
    assert_equal_to_minari(from_minari("zoo/raw-v0"), minari.load_dataset("zoo/raw-v0"))


def test_an_import_with_auto_compression_stores_frames_as_zstd_bit_exactly() -> None:
    image = ZOO["image"]
    minari_record("zoo/auto-v0", image, image, jpeg_encoding=False)
    ds = from_minari("zoo/auto-v0", "zoo/auto-h-v0", compression="auto")
    assert_equal_to_minari(ds, minari.load_dataset("zoo/auto-v0"))
    (entry,) = ds.metadata["shards"]
    assert entry["compression"] == "auto"
    shard = storage.dataset_path("zoo/auto-h-v0") / storage.DATA_DIR / entry["file"]
    with storage.open_shard(shard) as f:
        plist = f["observations"].id.get_create_plist()
        assert plist.get_filter(0)[0] == 32015  # zstd, for (32, 32, 3) uint8 frames


def _patch_metadata(data_dir: Path, **changes: Any) -> None:
    file = data_dir / "metadata.json"
    meta = json.loads(file.read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    file.write_text(json.dumps(meta))


def test_jpeg_detected_from_what_is_stored_not_the_flag(tmp_path: Path) -> None:
    # a minari <= 0.5.2 file: raw frames, no jpeg_encoding flag (which means True)
    image = ZOO["image"]
    raw = minari_record("zoo/old-v0", image, jpeg_encoding=False)
    frames = [ep.observations for ep in raw.iterate_episodes()]
    data_dir = Path(raw.spec.data_path)
    _patch_metadata(data_dir, jpeg_encoding=None, minari_version="0.5.2")
    with pytest.raises(Exception):  # noqa: B017 - Minari 0.5.4 tries to JPEG-decode raw frames
        list(minari.load_dataset("zoo/old-v0").iterate_episodes())
    ours = from_minari("zoo/old-v0")
    for ep, expected in zip(ours, frames, strict=True):
        np.testing.assert_array_equal(ep.observations, expected)

    # a minari 0.5.3 file: JPEG bytes in a leaf no reader decodes (7x7x3, and a uint8 info)
    from PIL import Image

    def jpeg(frame: np.ndarray) -> np.ndarray:
        import io

        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG")
        return np.frombuffer(buf.getvalue(), np.uint8)

    small = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    minari_record("zoo/small-v0", small)
    src = Path(minari.load_dataset("zoo/small-v0").spec.data_path) / "main_data.hdf5"
    rng = np.random.default_rng(0)
    expected = {}
    with h5py.File(src, "a") as f:
        for name, group in f.items():
            obs = np.full((len(group["observations"]), 8, 8, 3), 128, np.uint8)
            obs += rng.integers(0, 8, obs.shape, dtype=np.uint8)
            encoded = [jpeg(o) for o in obs]
            del group["observations"]
            if len({len(e) for e in encoded}) == 1:
                group.create_dataset("observations", data=np.stack(encoded))
            else:
                dset = group.create_dataset(
                    "observations", (len(encoded),), dtype=h5py.vlen_dtype(np.uint8)
                )
                for i, e in enumerate(encoded):
                    dset[i] = e
            same_len = np.stack([jpeg(np.full((32, 32), 200, np.uint8))] * len(obs))
            group["infos"].create_dataset("frame", data=same_len)
            expected[int(name.split("_")[1])] = obs
    ours = from_minari("zoo/small-v0")
    for ep in ours:
        # JPEG is lossy: the decoded frames are close to the originals, and shaped like them
        assert ep.observations.shape == expected[ep.id].shape
        assert np.abs(ep.observations.astype(int) - expected[ep.id]).mean() < 8
        assert ep.infos["frame"].shape == (len(ep) + 1, 32, 32)
        assert np.abs(ep.infos["frame"].astype(int) - 200).max() <= 2


def test_metadata_lineage_and_environment_carry_over() -> None:
    import gymnasium as gym

    class Wrapped(gym.Wrapper):
        pass

    env = gym.make("CartPole-v1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collector = minari.DataCollector(env, data_format="hdf5")
        for seed in (3, 4):
            collector.reset(seed=seed)
            done = False
            while not done:
                *_, terminated, truncated, _ = collector.step(collector.action_space.sample())
                done = terminated or truncated
        collector.create_dataset(
            "cartpole/random-v1",
            eval_env="CartPole-v1",
            algorithm_name="random",
            author="ann",
            author_email="ann@example.org",
            code_permalink="https://example.org/code",
            description="two random episodes",
            ref_min_score=1.0,
            ref_max_score=500.0,
            requirements=["gymnasium>=1.0"],
        )
    ours = from_minari("cartpole/random-v1", "cart/imported-v0")
    meta = ours.metadata
    assert meta["author"] == ["ann"] and meta["author_email"] == ["ann@example.org"]
    assert meta["description"] == "two random episodes"
    assert meta["algorithm_name"] == "random"
    assert meta["code_permalink"] == "https://example.org/code"
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (1.0, 500.0)
    assert meta["requirements"] == ["gymnasium>=1.0"]
    assert meta["eval_env_spec"]["id"] == "CartPole-v1"
    assert ours.recover_environment().spec.id == "CartPole-v1"
    assert ours.recover_environment(eval_env=True).spec.id == "CartPole-v1"
    assert ours.get_normalized_score(500.0) == 1.0
    source = meta["lineage"]["sources"][0]
    assert source["dataset_id"] == "cartpole/random-v1"
    assert meta["lineage"]["operation"]["minari"]["minari_version"] == "0.5.4"
    assert meta["provenance"]["command"] == "import-minari"
    assert ours.episode_sources()["source"].tolist() == ["cartpole/random-v1"] * 2
    assert [ep.seed for ep in ours] == [3, 4]

    # and back: Minari sees the same dataset fields it wrote
    to_minari(ours, new_dataset_id="cartpole/again-v1")
    before = minari.load_dataset("cartpole/random-v1").storage.metadata
    after = minari.load_dataset("cartpole/again-v1").storage.metadata
    for key in (
        "author",
        "author_email",
        "algorithm_name",
        "code_permalink",
        "description",
        "requirements",
        "ref_min_score",
        "ref_max_score",
        "env_spec",
        "eval_env_spec",
    ):
        assert after[key] == before[key], key


def test_minari_to_harvest_to_minari_round_trip(tmp_path: Path) -> None:
    for data_format in ("hdf5", "arrow"):
        dataset_id = f"zoo/deep-{data_format}-v0"
        minari_record(dataset_id, ZOO["deep"], ZOO["tuple"], data_format=data_format)
        ours = from_minari(dataset_id)
        back = to_minari(ours, tmp_path / "back")
        os.environ["MINARI_DATASETS_PATH"] = str(tmp_path / "back")
        again = minari.load_dataset(dataset_id)
        assert back == tmp_path / "back" / dataset_id
        os.environ["MINARI_DATASETS_PATH"] = str(tmp_path / "minari")
        original = minari.load_dataset(dataset_id)
        for a, b in zip(original.iterate_episodes(), again.iterate_episodes(), strict=True):
            for field in ("observations", "actions", "rewards", "terminations", "truncations"):
                assert_same(getattr(a, field), getattr(b, field), field)
            assert_same(theirs_infos(a.infos), b.infos, "infos")
        metas = zip(
            original.storage.get_episode_metadata(range(3)),
            again.storage.get_episode_metadata(range(3)),
            strict=True,
        )
        for m1, m2 in metas:
            assert {k: m1[k] for k in ("seed", "options", "rewards_sum")} == {
                k: m2[k] for k in ("seed", "options", "rewards_sum")
            }


def test_arrow_episodes_longer_than_one_record_batch() -> None:
    """Minari's own arrow reader misaligns episodes over ~32k rows; the import does not."""
    from minari.data_collector import EpisodeBuffer

    steps = 40_000
    obs = np.arange(steps + 1, dtype=np.float32).reshape(-1, 1)
    buffer = EpisodeBuffer(
        id=0,
        seed=5,
        observations=obs,
        actions=np.zeros(steps, np.int64),
        rewards=np.ones(steps),
        terminations=np.r_[np.zeros(steps - 1, bool), True],
        truncations=np.zeros(steps, bool),
        infos={},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            "long/arrow-v0",
            [buffer],
            observation_space=spaces.Box(0, np.inf, (1,), np.float32),
            action_space=spaces.Discrete(2),
            data_format="arrow",
        )
    ep = from_minari("long/arrow-v0")[0]
    assert len(ep) == steps and ep.seed == 5 and bool(ep.terminations[-1])
    np.testing.assert_array_equal(ep.observations, obs)


def test_errors_are_one_line_and_leave_nothing(tmp_path: Path, datasets_root: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="no Minari dataset at 'zoo/none-v0'"):
        from_minari("zoo/none-v0")
    minari_record("zoo/box-v0", ZOO["box"])
    from_minari("zoo/box-v0")
    with pytest.raises(DatasetExistsError, match="overwrite=True"):
        from_minari("zoo/box-v0")
    assert from_minari("zoo/box-v0", overwrite=True).total_episodes == 3

    data_dir = tmp_path / "minari" / "zoo" / "box-v0" / "data"
    hdf5 = data_dir / "main_data.hdf5"
    good = hdf5.read_bytes()
    with h5py.File(hdf5, "a") as f:
        del f["episode_2/rewards"]  # found only after two episodes were read
    with pytest.raises(CorruptDatasetError, match="zoo/box-v0 episode 2: missing"):
        from_minari("zoo/box-v0", "zoo/partial-v0")
    assert not (datasets_root / "zoo" / "partial-v0").exists()
    with pytest.raises(CorruptDatasetError):
        from_minari("zoo/box-v0", overwrite=True)
    assert load_dataset("zoo/box-v0").total_episodes == 3  # the last commit stays
    hdf5.write_bytes(good)
    hdf5.write_bytes(hdf5.read_bytes()[:2000])  # truncated
    with pytest.raises(CorruptDatasetError, match="not a readable HDF5 file"):
        from_minari(data_dir.parent, "zoo/truncated-v0")
    assert not (datasets_root / "zoo" / "truncated-v0").exists()

    (data_dir / "metadata.json").write_text("{not json")
    with pytest.raises(CorruptDatasetError, match="not readable JSON") as e:
        from_minari(data_dir, "zoo/broken-v0")
    assert "\n" not in str(e.value)
    assert load_dataset("zoo/box-v0").total_episodes == 3  # the earlier import is intact


def test_source_reads_in_place_without_writing(tmp_path: Path) -> None:
    minari_record("zoo/text-v0", ZOO["text"], data_format="parquet")
    data_dir = tmp_path / "minari" / "zoo" / "text-v0" / "data"
    before = sorted((p, p.stat().st_mtime_ns) for p in data_dir.rglob("*"))
    with MinariSource(data_dir) as src:
        assert src.episode_ids == [0, 1, 2] and src.data_format == "parquet"
        batch = src.read_episode(1)
        assert batch.table["seed"][0] == SEEDS[1] and batch.num_steps == 3
    assert sorted((p, p.stat().st_mtime_ns) for p in data_dir.rglob("*")) == before


def test_curate_import_minari(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from curation.cli import main

    minari_record("zoo/box-v0", ZOO["box"], data_format="arrow")
    code = main(["import-minari", "zoo/box-v0", "--into", "mine/box-v3"])
    out, _ = capsys.readouterr()
    assert code == 0 and out == "imported zoo/box-v0 as mine/box-v3: 3 episodes, 9 steps\n"
    assert load_dataset("mine/box-v3").total_steps == 9
    code = main(["import-minari", "zoo/box-v0", "--minari-root", str(tmp_path / "elsewhere")])
    _, err = capsys.readouterr()
    assert code == 1 and "no Minari dataset at 'zoo/box-v0'" in err and err.count("\n") == 1


def _episodes_equal(a: Any, b: Any) -> None:
    assert (a.id, a.seed, a.options) == (b.id, b.seed, b.options)
    for field in ("observations", "actions", "rewards", "terminations", "truncations", "infos"):
        assert_same(getattr(a, field), getattr(b, field), field)


@pytest.mark.parametrize("data_format", FORMATS)
def test_load_dataset_reads_a_minari_folder_in_place(tmp_path: Path, data_format: str) -> None:
    import pickle

    from curation.ops import combine_datasets

    minari_record("zoo/deep-v0", ZOO["deep"], ZOO["dict"], episodes=6, data_format=data_format)
    folder = tmp_path / "minari" / "zoo" / "deep-v0"
    before = sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*"))
    direct = load_dataset(folder)
    imported = from_minari("zoo/deep-v0")
    assert direct.id == "zoo/deep-v0" and direct.fingerprint is None
    assert (direct.total_episodes, direct.total_steps) == (6, 18)
    assert direct.metadata["record_infos"] is True
    for a, b in zip(direct, imported, strict=True):
        _episodes_equal(a, b)
    assert list(direct.get_episode_metadata([2])) == list(imported.get_episode_metadata([2]))
    np.testing.assert_array_equal(direct.episodes()["seed"], imported.episodes()["seed"])
    assert direct.episode_sources()["source_id"].tolist() == list(range(6))
    view = direct.filter_episodes("seed == 7")
    assert view.episode_indices.tolist() == [2, 5]
    _episodes_equal(view[1], imported[5])
    batch = next(direct.pipeline(num_workers=2).batch_iter(4, 2, seed=0))
    assert batch[2].shape == (4, 2)  # rewards
    _episodes_equal(pickle.loads(pickle.dumps(direct))[3], imported[3])
    _episodes_equal(direct.refresh()[0], imported[0])
    with pytest.raises(UsageError, match="import it first"):
        combine_datasets([direct, imported], "zoo/both-v0")
    assert to_minari(direct, tmp_path / "again").is_dir()  # exporting reads only
    assert load_dataset(folder / "data").total_episodes == 6
    assert sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*")) == before


def test_combine_given_a_minari_folder_path_says_import_it_first(tmp_path: Path) -> None:
    from curation.ops import combine_datasets

    minari_record("zoo/box-v0", ZOO["box"], episodes=2)
    folder = tmp_path / "minari" / "zoo" / "box-v0"
    imported = from_minari("zoo/box-v0")
    with pytest.raises(UsageError, match="import it first"):
        combine_datasets([str(folder), imported], "zoo/both-v0")
    assert not (tmp_path / "datasets" / "zoo" / "both-v0").exists()


def test_progress_advances_per_episode_not_per_shard(tmp_path: Path) -> None:
    minari_record("zoo/box-v0", ZOO["box"], episodes=3)
    calls: list[int] = []
    with MinariSource(tmp_path / "minari" / "zoo" / "box-v0" / "data") as src:
        batches = src.iter_batches(on_episode=calls.append)  # one batch: far under 64 MB
        assert next(batches).num_episodes == 3 and calls == [1, 1, 1]


def test_undecodable_or_ragged_jpeg_frames_are_corrupt_not_a_traceback() -> None:
    import io

    from PIL import Image

    from curation.minari.layout import decode_jpeg

    def jpeg(shape: tuple[int, ...]) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.zeros(shape, np.uint8)).save(buf, format="JPEG")
        return buf.getvalue()

    with pytest.raises(CorruptDatasetError, match="frame 1 is not a readable JPEG"):
        decode_jpeg([jpeg((8, 8)), b"\xff\xd8 not a jpeg"], None, "ep 0")
    with pytest.raises(CorruptDatasetError, match=r"of different shapes \(\(8, 8\), ...\)"):
        decode_jpeg([jpeg((8, 8)), jpeg((9, 8))], None, "ep 0")


def test_arrow_columns_that_do_not_fit_the_space_are_corrupt(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    minari_record("zoo/dict-v0", ZOO["dict"], data_format="parquet")
    part = tmp_path / "minari" / "zoo" / "dict-v0" / "data" / "1" / "part-0.parquet"
    table = pq.read_table(part)
    obs = table.column("observations").combine_chunks()
    only_b = obs.flatten()[obs.type.get_field_index("b")]
    pruned = type(obs).from_arrays([only_b], names=["b"])  # key "a" gone
    pq.write_table(table.set_column(0, "observations", pruned), part)
    with pytest.raises(CorruptDatasetError, match="episode 1 observations: no field 'a'"):
        from_minari("zoo/dict-v0")

    # rows of the wrong width for the space: refused, not reshaped into something else
    minari_record("zoo/box-v0", ZOO["box"], data_format="parquet")
    meta_file = tmp_path / "minari" / "zoo" / "box-v0" / "data" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    space = json.loads(meta["observation_space"])
    space.update(shape=[1], low=[-1.0], high=[1.0])
    meta["observation_space"] = json.dumps(space)
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CorruptDatasetError, match="rows of 3 values do not fit"):
        from_minari("zoo/box-v0")


def test_an_import_is_never_put_inside_or_around_another_dataset(datasets_root: Path) -> None:
    """Issue 16, item 1: import-minari refuses nesting, in one line, leaving nothing."""
    minari_record("zoo/box-v0", ZOO["box"])
    from_minari("zoo/box-v0")
    from_minari("zoo/box-v0", new_dataset_id="outer-v0/in-v0")
    before = sorted(p for p in datasets_root.rglob("*") if ".locks" not in p.parts)
    for new_id, what in (
        ("zoo/box-v0/sub-v0", "would sit inside dataset 'zoo/box-v0'"),
        ("zoo/box-v0/data/sub-v0", "would sit inside dataset 'zoo/box-v0'"),
        ("outer-v0", "would contain dataset 'outer-v0/in-v0'"),
    ):
        with pytest.raises(UsageError, match=re.escape(f"{new_id!r} {what}")):
            from_minari("zoo/box-v0", new_dataset_id=new_id)
    assert sorted(p for p in datasets_root.rglob("*") if ".locks" not in p.parts) == before
