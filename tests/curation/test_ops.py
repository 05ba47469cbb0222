"""Tests for ``curation.ops``: combine, split and save, with lineage and linked shards.

Ground truth is ``helpers.read_episodes`` on the sources: a curated dataset must hold the same
episodes (data, seeds, options, statistics) under its new ids, pass ``verify`` and share the
sources' shard files rather than copies.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from helpers import assert_same_episode, collect_cartpole, read_episodes

from collector import storage
from collector.data_collector import DataCollector
from collector.errors import (
    CorruptDatasetError,
    DatasetExistsError,
    IncompatibleDatasetsError,
    UsageError,
)
from curation.api import load_dataset
from curation.ops import combine_datasets, compare_datasets, split_dataset, split_sizes


def cartpole(dataset_id: str, episodes: int = 12, seed: int = 0, **overrides: Any) -> str:
    # one shard per commit: several shards to link
    return collect_cartpole(dataset_id, episodes, seed=seed, shard_every=5, **overrides)


class ShapedEnv(gym.Env):
    """A one-step env whose spaces are set by the test, to make incompatible datasets."""

    def __init__(
        self, obs: spaces.Space | None = None, act: spaces.Space | None = None, info: Any = 0.0
    ) -> None:
        self.observation_space = obs or spaces.Box(-1, 1, (3,), np.float32)
        self.action_space = act or spaces.Discrete(2)
        self.info = info

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {"x": self.info}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return self.observation_space.sample(), 1.0, True, False, {"x": self.info}


def record(dataset_id: str, episodes: int = 3, record_infos: bool = False, **env_kw: Any) -> str:
    env = DataCollector(ShapedEnv(**env_kw), record_infos=record_infos)
    for i in range(episodes):
        env.reset(seed=i, options={"k": i})
        env.step(env.action_space.sample())
    env.create_dataset(dataset_id, author="ann")
    env.close()
    return dataset_id


def inode(path: Path) -> int:
    return path.stat().st_ino


def shard_inodes(dataset_id: str) -> set[int]:
    data = storage.dataset_path(dataset_id) / storage.DATA_DIR
    return {inode(p) for p in data.iterdir() if storage.SHARD_RE.match(p.name)}


# -- combine --------------------------------------------------------------------------------------


def test_combine_keeps_every_episode_under_new_ids_and_links_the_shards() -> None:
    a, b = cartpole("cart/a-v0", 12), cartpole("cart/b-v0", 7, seed=5)
    combined = combine_datasets([a, b], "cart/ab-v0")
    assert combined.total_episodes == 19
    assert combined.total_steps == load_dataset(a).total_steps + load_dataset(b).total_steps
    got = read_episodes("cart/ab-v0")
    want = read_episodes(a) + read_episodes(b)
    assert [ep["id"] for ep in got] == list(range(19))
    for g, w in zip(got, want, strict=True):
        assert_same_episode(g, w)
        for key in ("seed", "options", "return", "length", "terminated", "truncated"):
            assert g[key] == w[key], key
    # the same files, not copies
    assert shard_inodes("cart/ab-v0") == shard_inodes(a) | shard_inodes(b)
    report = storage.verify_dataset("cart/ab-v0")
    assert report.ok, report.problems
    assert report.fingerprint == combined.fingerprint


def test_combined_episodes_know_their_source_and_original_id() -> None:
    a, b = cartpole("cart/a-v0", 4), cartpole("cart/b-v0", 3, seed=1)
    combined = combine_datasets([a, b], "cart/ab-v0")
    src = combined.episode_sources()
    assert src["source"].tolist() == [a] * 4 + [b] * 3
    assert src["source_id"].tolist() == [0, 1, 2, 3, 0, 1, 2]
    # and so do the episodes of a view of it
    view = combined.filter_episodes(lambda ep: ep.id in (1, 5))
    assert view.episode_sources()["source_id"].tolist() == [1, 1]


def test_lineage_names_sources_fingerprints_ids_and_steps() -> None:
    a, b = cartpole("cart/a-v0", 6), cartpole("cart/b-v0", 6, seed=1)
    da, db = load_dataset(a), load_dataset(b)
    view = db.filter_episodes(lambda ep: ep.id % 2 == 0)
    combined = combine_datasets([da, view], "cart/ab-v0")
    lineage = combined.metadata["lineage"]
    assert lineage["operation"] == {"name": "combine"}
    first, second = lineage["sources"]
    assert first == {
        "dataset_id": a,
        "fingerprint": da.fingerprint,
        "first_id": 0,
        "episodes": 6,
        "episode_ids": [[0, 6]],
        "steps": [],
    }
    assert second["dataset_id"] == b and second["fingerprint"] == db.fingerprint
    assert second["first_id"] == 6 and second["episodes"] == 3
    assert storage.ids_from_ranges(second["episode_ids"]).tolist() == [0, 2, 4]
    assert second["steps"][0]["name"] == "filter"
    assert combined.spec.combined_datasets == (a, b)
    assert combined.metadata["provenance"]["command"] == "combine"


def test_combine_of_combined_datasets_composes_the_id_maps() -> None:
    a, b = cartpole("cart/a-v0", 5), cartpole("cart/b-v0", 4, seed=1)
    ab = combine_datasets([a, b], "cart/ab-v0")
    odd = ab.filter_episodes(lambda ep: ep.id % 2 == 1)  # ids 1, 3 (of a), 5, 7 (of b)
    combine_datasets([odd, a], "cart/twice-v0")
    got = read_episodes("cart/twice-v0")
    ea, eb = read_episodes(a), read_episodes(b)
    want = [ea[1], ea[3], eb[0], eb[2], *ea]
    assert len(got) == len(want) == 9
    for g, w in zip(got, want, strict=True):
        assert_same_episode(g, w)
        assert g["seed"] == w["seed"]
    assert storage.verify_dataset("cart/twice-v0").ok


def test_combine_rule_for_max_episode_steps_and_author_fields() -> None:
    a = cartpole("cart/a-v0", 2, env_kwargs={"max_episode_steps": 50})
    b = cartpole("cart/b-v0", 2, env_kwargs={"max_episode_steps": 80})
    combined = combine_datasets([a, b], "cart/ab-v0", metadata={"description": "both"})
    assert combined.env_spec is not None and combined.env_spec.max_episode_steps == 80
    assert combined.metadata["description"] == "both"
    r1, r2 = record("shape/a-v0"), record("shape/b-v0")
    both = combine_datasets([r1, r2], "shape/ab-v0")
    assert both.env_spec is None  # ShapedEnv is not registered: no spec on either side
    assert both.metadata["author"] == "ann"


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        ({"obs": spaces.Box(-1, 1, (4,), np.float32)}, "observation_space.shape: [3] != [4]"),
        ({"obs": spaces.Box(-1, 1, (3,), np.float64)}, "dtype: float32 != float64"),
        ({"obs": spaces.Box(-2, 1, (3,), np.float32)}, "observation_space.low: -1.0 != -2.0"),
        ({"act": spaces.Discrete(3)}, "action_space.n: 2 != 3"),
        ({"act": spaces.Discrete(2, start=1)}, "action_space.start: 0 != 1"),
        (
            {"obs": spaces.Dict({"a": spaces.Discrete(2)})},
            "observation_space.type: Box != Dict",
        ),
        ({"record_infos": True}, "record_infos: False != True"),
    ],
)
def test_combine_explains_each_kind_of_mismatch(other: dict[str, Any], expected: str) -> None:
    base = record("shape/a-v0")
    odd = record("shape/b-v0", **other)
    with pytest.raises(IncompatibleDatasetsError) as info:
        combine_datasets([base, odd], "shape/ab-v0")
    message = str(info.value)
    assert message.startswith("cannot combine shape/a-v0, shape/b-v0 into 'shape/ab-v0': ")
    assert any(expected in d for d in info.value.differences), info.value.differences
    assert all(d.endswith("(shape/a-v0 vs shape/b-v0)") for d in info.value.differences)
    assert not storage.dataset_path("shape/ab-v0").exists()  # nothing written


def test_combine_explains_info_and_env_spec_mismatches() -> None:
    a = record("shape/a-v0", record_infos=True, info=0.0)
    b = record("shape/b-v0", record_infos=True, info=np.zeros(2))
    assert compare_datasets([load_dataset(a), load_dataset(b)]) == [
        "infos.x.shape: [()] != [(2,)] (shape/a-v0 vs shape/b-v0)"
    ]
    c = cartpole("cart/c-v0", 2)
    k = cartpole("cart/k-v0", 2, env_kwargs={"sutton_barto_reward": True})
    assert compare_datasets([load_dataset(c), load_dataset(k)]) == [
        "env_spec.kwargs.sutton_barto_reward: <absent> != true (cart/c-v0 vs cart/k-v0)"
    ]
    r = record("shape/r-v0", obs=spaces.Box(-4.8, 4.8, (4,), np.float32))
    diffs = compare_datasets([load_dataset(c), load_dataset(r)])
    assert any(d.startswith("env_spec: shape/r-v0 has none") for d in diffs), diffs


def test_combine_refuses_existing_ids_sources_and_single_inputs() -> None:
    a, b = cartpole("cart/a-v0", 3), cartpole("cart/b-v0", 3, seed=1)
    combine_datasets([a, b], "cart/ab-v0")
    before = (storage.dataset_path("cart/ab-v0") / storage.METADATA_FILE).read_bytes()
    with pytest.raises(DatasetExistsError, match=re.escape("pass overwrite=True")):
        combine_datasets([b, a], "cart/ab-v0")
    assert (storage.dataset_path("cart/ab-v0") / storage.METADATA_FILE).read_bytes() == before
    swapped = combine_datasets([b, a], "cart/ab-v0", overwrite=True)
    assert swapped.episode_sources()["source"][0] == b
    with pytest.raises(UsageError, match=re.escape("is also a source")):
        combine_datasets([a, b], a, overwrite=True)
    with pytest.raises(UsageError, match=re.escape("at least 2 datasets")):
        combine_datasets([a], "cart/one-v0")
    assert load_dataset(a).total_episodes == 3  # untouched


def test_a_failed_combine_leaves_no_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = cartpole("cart/a-v0", 6), cartpole("cart/b-v0", 6, seed=1)
    calls = {"n": 0}
    real = storage.DatasetWriter.link_shard

    def flaky(self: storage.DatasetWriter, *args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kw)

    monkeypatch.setattr(storage.DatasetWriter, "link_shard", flaky)
    with pytest.raises(OSError, match="No space left"):
        combine_datasets([a, b], "cart/ab-v0")
    assert not storage.dataset_path("cart/ab-v0").exists()
    # an overwrite that fails keeps the previous commit
    monkeypatch.setattr(storage.DatasetWriter, "link_shard", real)
    first = combine_datasets([a, b], "cart/ab-v0")
    monkeypatch.setattr(storage.DatasetWriter, "link_shard", flaky)
    calls["n"] = 0
    with pytest.raises(OSError):
        combine_datasets([b, a], "cart/ab-v0", overwrite=True)
    again = load_dataset("cart/ab-v0")
    assert again.fingerprint == first.fingerprint
    assert storage.verify_dataset("cart/ab-v0").ok


def test_combine_copies_when_hard_links_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = cartpole("cart/a-v0", 4), cartpole("cart/b-v0", 4, seed=1)

    def no_link(src: Any, dst: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    combined = combine_datasets([a, b], "cart/ab-v0")
    assert not shard_inodes("cart/ab-v0") & (shard_inodes(a) | shard_inodes(b))
    assert storage.verify_dataset("cart/ab-v0").ok
    assert combined.total_episodes == 8
    files = list((storage.dataset_path("cart/ab-v0") / storage.DATA_DIR).iterdir())
    assert all(p.stat().st_mode & 0o777 == 0o444 for p in files)


def test_curated_datasets_are_not_repacked_or_resumed_by_collect() -> None:
    a, b = cartpole("cart/a-v0", 4), cartpole("cart/b-v0", 4, seed=1)
    combine_datasets([a, b], "cart/ab-v0")
    with storage.DatasetWriter("cart/ab-v0") as w:
        assert w.repack(1 << 30) == 0  # id-mapped shards stay as they are
        assert len(w.committed_ids()) == 8
    with pytest.raises(UsageError, match=re.escape("was not written by collect")):
        cartpole("cart/ab-v0", 10)


# -- split and save -------------------------------------------------------------------------------


def test_split_sizes_counts_and_fractions() -> None:
    assert split_sizes([0.8, 0.1, 0.1], 10) == [8, 1, 1]
    assert split_sizes([0.5, 0.5], 7) == [4, 3]
    assert split_sizes([0.5, 0.25], 10) == [5, 2]  # not all: the rest is left out
    assert split_sizes([4, 6], 10) == [4, 6]
    for bad, message in [
        ([0.8, 0.3], "add up to 1.1, over 1"),
        ([8, 3], "add up to 11 episodes; the dataset has 10"),
        ([-1, 2], "non-negative"),
        ([], "non-negative"),
    ]:
        with pytest.raises(UsageError, match=re.escape(message)):
            split_sizes(bad, 10)


def test_split_is_seeded_disjoint_and_complete() -> None:
    ds = load_dataset(cartpole("cart/a-v0", 20))
    parts = split_dataset(ds, [0.8, 0.1, 0.1], seed=3)
    assert [p.total_episodes for p in parts] == [16, 2, 2]
    ids = np.concatenate([p.episode_indices for p in parts])
    assert sorted(ids.tolist()) == list(range(20))
    again = split_dataset(ds, [0.8, 0.1, 0.1], seed=3)
    assert all(
        np.array_equal(p.episode_indices, q.episode_indices)
        for p, q in zip(parts, again, strict=True)
    )
    other = split_dataset(ds, [0.8, 0.1, 0.1], seed=4)
    assert not np.array_equal(parts[1].episode_indices, other[1].episode_indices)
    assert [p.total_episodes for p in split_dataset(ds, [5, 3])] == [5, 3]


def test_saved_views_renumber_and_record_lineage() -> None:
    src = load_dataset(cartpole("cart/a-v0", 20))
    train, val = split_dataset(src, [0.75, 0.25], seed=1)
    saved = val.save("cart/val-v0", metadata={"description": "validation"})
    assert saved.total_episodes == 5
    assert saved.episode_indices.tolist() == list(range(5))
    want = [read_episodes("cart/a-v0")[i] for i in val.episode_indices.tolist()]
    for g, w in zip(read_episodes("cart/val-v0"), want, strict=True):
        assert_same_episode(g, w)
        assert g["seed"] == w["seed"]
    lineage = saved.metadata["lineage"]
    assert lineage["operation"] == {"name": "save"}
    (source,) = lineage["sources"]
    assert source["dataset_id"] == "cart/a-v0" and source["fingerprint"] == src.fingerprint
    assert storage.ids_from_ranges(source["episode_ids"]).tolist() == val.episode_indices.tolist()
    assert source["steps"] == [{"name": "split", "sizes": [0.75, 0.25], "seed": 1, "part": 1}]
    assert saved.metadata["description"] == "validation"
    assert saved.env_spec == src.env_spec
    assert storage.verify_dataset("cart/val-v0").ok
    assert saved.episode_sources()["source_id"].tolist() == val.episode_indices.tolist()
    # val keeps under half of each source shard: its episodes were copied into a new shard
    assert not shard_inodes("cart/val-v0") & shard_inodes("cart/a-v0")
    meta = json.loads((storage.dataset_path("cart/val-v0") / storage.METADATA_FILE).read_text())
    assert len(meta["shards"]) == 1 and "id_map" not in meta["shards"][0]
    # train keeps most of each: linked, renumbered by the manifest only
    big = train.save("cart/train-v0")
    meta = json.loads((storage.dataset_path("cart/train-v0") / storage.METADATA_FILE).read_text())
    linked = [e for e in meta["shards"] if "id_map" in e]
    assert linked and shard_inodes("cart/train-v0") & shard_inodes("cart/a-v0")
    assert sum(e["episodes"] for e in meta["shards"]) == big.total_episodes == 15
    for g, i in zip(read_episodes("cart/train-v0"), train.episode_indices.tolist(), strict=True):
        assert_same_episode(g, read_episodes("cart/a-v0")[i])
    assert storage.verify_dataset("cart/train-v0").ok


def test_save_of_a_whole_dataset_has_its_fingerprint() -> None:
    src = load_dataset(cartpole("cart/a-v0", 10))
    copy = src.save("cart/copy-v0")
    assert copy.fingerprint == src.fingerprint
    assert copy.metadata["provenance"]["command"] == "save"


@pytest.mark.parametrize("part", ["linked", "copied"])
def test_saving_a_stale_view_says_refresh_like_reads(part: str) -> None:
    """Issue 16 item 18: saving a view whose shards were superseded gave FileNotFoundError."""
    src = load_dataset(cartpole("cart/a-v0", 20))
    train, val = split_dataset(src, [0.75, 0.25], seed=1)
    view = train if part == "linked" else val
    cartpole("cart/a-v0", 20, seed=5, overwrite=True)  # a new generation replaces the shards
    with storage.DatasetWriter("cart/a-v0"):
        pass  # the next writer removes the old generation's files
    with pytest.raises(CorruptDatasetError, match=re.escape("refresh()")) as info:
        view.save("cart/stale-v0")
    assert "\n" not in str(info.value)
    assert not storage.dataset_path("cart/stale-v0").exists()
    with pytest.raises(CorruptDatasetError, match=re.escape("refresh()")):
        view[0].observations  # noqa: B018 - reads say the same
    assert len(view.refresh()) > 0  # and the advice works
    assert view.save("cart/fresh-v0").total_episodes == len(view)


# -- filtering by expression ----------------------------------------------------------------------


def test_filter_by_expression_reads_no_step_data(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = load_dataset(cartpole("cart/a-v0", 30))
    cols = ds.episodes()
    monkeypatch.setattr(
        storage.ShardReader, "read_rows", lambda *a, **k: pytest.fail("step data read")
    )
    monkeypatch.setattr(storage, "read_shard", lambda *a, **k: pytest.fail("step data read"))
    view = ds.filter_episodes("return >= 20 and length < 500")
    want = cols["id"][(cols["return"] >= 20) & (cols["length"] < 500)]
    assert view.episode_indices.tolist() == want.tolist()
    assert view.lineage_steps == ({"name": "filter", "where": "return >= 20 and length < 500"},)
    even = ds.filter_episodes("seed % 2 == 0")  # exact on 64-bit seeds
    assert even.episode_indices.tolist() == cols["id"][cols["seed"] % 2 == 0].tolist()
    assert 0 < even.total_episodes < 30
    assert ds.filter_episodes("terminated").total_episodes == int(cols["terminated"].sum())


def test_filter_by_source_and_unseeded_episodes() -> None:
    a, b = cartpole("cart/a-v0", 4), record("shape/b-v0", 3)
    combined = combine_datasets([a, a], "cart/aa-v0")
    assert combined.filter_episodes(f"source == '{a}' and source_id < 2").total_episodes == 4
    # an episode with no seed: comparisons on `seed` are false for it, as for NaN
    table = storage.make_table([0, 1], [None, 2**64 - 2], [1, 1], [0.0, 0.0], [True] * 2,
                           [False] * 2, [None] * 2)  # fmt: skip
    batch = storage.EpisodeBatch(
        observations={"": np.zeros((4, 3), np.float32)},
        actions={"": np.zeros(2, np.int64)},
        rewards=np.zeros(2),
        terminations=np.ones(2, bool),
        truncations=np.zeros(2, bool),
        table=table,
    )
    with storage.DatasetWriter("shape/mixed-v0") as w:
        w.start(storage.new_metadata(ShapedEnv().observation_space, spaces.Discrete(2), None,
                                 record_infos=False))  # fmt: skip
        w.write_shard(batch)
        w.commit()
    mixed = load_dataset("shape/mixed-v0")
    assert mixed.filter_episodes("seed >= 0").episode_indices.tolist() == [1]
    assert mixed.filter_episodes("seed % 2 == 0").episode_indices.tolist() == [1]
    assert mixed.filter_episodes("seed != 5").episode_indices.tolist() == [0, 1]
    assert mixed.filter_episodes("not has_seed").episode_indices.tolist() == [0]
    assert load_dataset(b).filter_episodes("seed >= 0").total_episodes == 3


def test_copying_from_a_damaged_source_fails_and_leaves_no_dataset(datasets_root: Path) -> None:
    # a shard whose table digests do not match its data (adopt_shard trusts the file's table)
    n = 10
    table = storage.make_table(list(range(n)), list(range(n)), [1] * n, [1.0] * n, [True] * n,
                           [False] * n, [None] * n)  # fmt: skip
    batch = storage.EpisodeBatch(
        observations={"": np.arange(2 * n * 3, dtype=np.float32).reshape(2 * n, 3)},
        actions={"": np.zeros(n, np.int64)},
        rewards=np.ones(n),
        terminations=np.ones(n, bool),
        truncations=np.zeros(n, bool),
        table=table,
    )
    batch.table["digest"] = storage.episode_digests(batch)
    batch.table["digest"][7] ^= 1  # episode 7's digest no longer matches its data
    spill = datasets_root / "damaged.h5"
    spill.parent.mkdir(parents=True, exist_ok=True)
    storage.write_shard_file(batch, spill, None)
    with storage.DatasetWriter("shape/damaged-v0") as w:
        w.start(storage.new_metadata(ShapedEnv().observation_space, spaces.Discrete(2), None,
                                 record_infos=False))  # fmt: skip
        w.adopt_shard(spill)
        w.commit()
    ds = load_dataset("shape/damaged-v0")
    small = ds.filter_episodes("id >= 6 and id < 9")  # under half of the shard: copied
    with pytest.raises(CorruptDatasetError, match=re.escape("does not match its own digests")):
        small.save("shape/small-v0")
    assert not storage.dataset_path("shape/small-v0").exists()
    ok = ds.filter_episodes("id < 3").save("shape/ok-v0")  # undamaged episodes copy fine
    assert storage.verify_dataset("shape/ok-v0").ok and ok.total_episodes == 3
