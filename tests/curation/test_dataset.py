"""Tests for ``curation.dataset``: ``load_dataset``, snapshots, views and ``EpisodeData``.

Ground truth is ``helpers.read_episodes``, which reads the shards directly; every read path of
``Dataset`` (indexing, iteration, ``iterate_episodes``, ``sample_episodes``, ``to_transitions``)
is compared with it field by field. ``DeepEnv`` below has one of every storable space kind,
nested, so the nested read paths are covered; CartPole covers the flat fast path with many
shards and many blocks.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from helpers import read_episodes, record_cartpole

from collector import storage
from collector.collect import collect
from collector.data_collector import DataCollector
from collector.errors import (
    CorruptDatasetError,
    DatasetIdError,
    DatasetNotFoundError,
    HarvestWarning,
    LockHeldError,
    UsageError,
)
from collector.spaces import escape_key
from curation.api import load_dataset
from curation.catalog import delete_dataset, list_local_datasets
from curation.dataset import Dataset, DatasetSpec, EpisodeData

# --------------------------------------------------------------------------------------------
# a test env with every space kind, nested


CHARSET = "aβγ€😀"  # 1-, 2-, 3- and 4-byte UTF-8 characters

# a Tuple inside a Dict inside a Tuple inside a Dict (whose key holds a '/', not nesting)
DEEP_TUPLE = spaces.Tuple(
    (
        spaces.Discrete(3),
        spaces.Dict([("img", spaces.Box(0, 255, (2, 2), np.uint8))]),
        spaces.Tuple((spaces.MultiBinary([2, 2]), spaces.Text(3, min_length=1, charset=CHARSET))),
    )
)
DEEP_OBS = spaces.Dict(
    [
        ("pos", spaces.Box(-1.0, 1.0, (3,), np.float32)),
        ("grid", spaces.Box(-1.0, 1.0, (2, 3), np.float32)),
        ("scalar", spaces.Box(-1.0, 1.0, (), np.float32)),
        ("disc", spaces.Discrete(5, start=-1, dtype=np.int32)),
        ("md", spaces.MultiDiscrete([3, 4])),
        ("mb", spaces.MultiBinary(4)),
        ("text", spaces.Text(6, min_length=1, charset=CHARSET)),
        ("deep/er", spaces.Dict([("tup", DEEP_TUPLE)])),
    ]
)
DEEP_ACT = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1.0, 1.0, (2,), np.float32)))


class DeepEnv(gym.Env):
    """Seeded random observations in ``DEEP_OBS``; episodes of ``options["length"]`` steps.

    Infos: ``nested`` (a dict: ``t`` and ``vec``) and ``rate/s`` on every row, ``final`` only on
    the last step of an episode (a late key). ``options["truncate"]`` ends episodes by
    truncation instead of termination. Stepping past the end keeps counting.
    """

    metadata = {"render_modes": []}
    observation_space = DEEP_OBS
    action_space = DEEP_ACT

    def __init__(self, emit_final: bool = True) -> None:
        self.emit_final = emit_final
        self.length = 3
        self.truncate = False
        self.t = 0

    def _text(self, n: int) -> str:
        return "".join(self.np_random.choice(list(CHARSET), n))

    def _obs(self) -> dict[str, Any]:
        r = self.np_random
        return {
            "pos": r.uniform(-1, 1, 3).astype(np.float32),
            "grid": r.uniform(-1, 1, (2, 3)).astype(np.float32),
            "scalar": np.float32(r.uniform(-1, 1)),
            "disc": np.int32(r.integers(-1, 4)),
            "md": r.integers(0, [3, 4]),
            "mb": r.integers(0, 2, 4).astype(np.int8),
            "text": self._text(int(r.integers(1, 7))),
            "deep/er": {
                "tup": (
                    int(r.integers(3)),
                    {"img": r.integers(0, 256, (2, 2)).astype(np.uint8)},
                    (r.integers(0, 2, (2, 2)).astype(np.int8), self._text(int(r.integers(1, 4)))),
                )
            },
        }

    def _info(self) -> dict[str, Any]:
        return {
            "nested": {"t": self.t, "vec": np.array([self.t, -self.t], np.float32)},
            "rate/s": self.t / 2,
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        opts = options or {}
        self.length = int(opts.get("length", 3))
        self.truncate = bool(opts.get("truncate", False))
        self.t = 0
        return self._obs(), self._info()

    def step(self, action: Any):  # type: ignore[override]
        self.t += 1
        end = self.t % self.length == 0
        info = self._info()
        if end and self.emit_final:
            info["final"] = 7 * self.t
        reward = float(action[0]) + float(np.sum(action[1]))
        return self._obs(), reward, end and not self.truncate, end and self.truncate, info


def deep_action(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    return int(rng.integers(3)), rng.uniform(-1, 1, 2).astype(np.float32)


def run_to_end(env: gym.Env, rng: np.random.Generator) -> None:
    while True:
        _, _, terminated, truncated, _ = env.step(deep_action(rng))
        if terminated or truncated:
            return


# (seed, options) of each episode recorded by record_deep; None seed: stepped on, no reset
DEEP_EPISODES: list[tuple[int | None, dict[str, Any] | None]] = [
    (10, {"length": 4, "tags": ["a", "β"], "nested": {"k": 1.5}}),
    (11, {"length": 2}),
    (None, None),  # stepping past the end of episode 1 starts a seedless episode
    (13, {"length": 5, "truncate": True}),
    (14, None),
]
DEEP_LENGTHS = [4, 2, 2, 5, 3]


def episode_meta(episode: dict[str, Any]) -> dict[str, Any]:
    # "id" collides with a built-in metadata key: the built-in one must win
    steps, total = int(len(episode["rewards"])), float(episode["rewards"].sum())
    return {"steps": steps, "neg_return": -total, "id": -1}


def record_deep(dataset_id: str = "deep/all-spaces-v0", **create: Any) -> str:
    """Record ``DEEP_EPISODES`` with a DataCollector, one shard per episode."""
    env = DataCollector(
        DeepEnv(), record_infos=True, spill_bytes=1, episode_metadata_callback=episode_meta
    )
    rng = np.random.default_rng(0)
    for seed, options in DEEP_EPISODES:
        if seed is not None:
            env.reset(seed=seed, options=options)
        run_to_end(env, rng)
    env.create_dataset(dataset_id, **create)
    env.close()
    return dataset_id


def cartpole_config(dataset_id: str, episodes: int = 20, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "env": "CartPole-v1",
        "episodes": episodes,
        "seed": 0,
        "dataset_id": dataset_id,
        "policy": {"_target_": "collector.policies.RandomPolicy"},
        "record_infos": False,
        "checkpoint": {"every_episodes": 5},
        "storage": {"shard_mb": 0.001},  # tiny: no repack, one shard per commit
    }
    cfg.update(overrides)
    return cfg


def collect_cartpole(dataset_id: str = "cart/random-v0", episodes: int = 20, **kw: Any) -> str:
    collect(cartpole_config(dataset_id, episodes, **kw))
    return dataset_id


# --------------------------------------------------------------------------------------------
# synthetic episodes written straight through DatasetWriter (content derived from the id)

SYN_OBS = spaces.Box(-np.inf, np.inf, (2,), np.float32)
SYN_ACT = spaces.Discrete(2)


def syn_length(episode_id: int) -> int:
    return 1 + episode_id % 4


def synthetic_batch(ids: list[int]) -> storage.EpisodeBatch:
    """Episode ``i``: obs ``[i, t]``, action ``t % 2``, reward ``1000 i + t``, terminated."""
    obs, act, rew, term = [], [], [], []
    for i in ids:
        n = syn_length(i)
        obs.append(np.stack([np.full(n + 1, i), np.arange(n + 1)], axis=1).astype(np.float32))
        act.append(np.arange(n, dtype=np.int64) % 2)
        rew.append(1000.0 * i + np.arange(n))
        term.append(np.arange(n) == n - 1)
    table = storage.make_table(
        ids,
        ids,
        [syn_length(i) for i in ids],
        [float(r.sum()) for r in rew],
        [True] * len(ids),
        [False] * len(ids),
        [None] * len(ids),
    )
    return storage.EpisodeBatch(
        observations={"": np.concatenate(obs)},
        actions={"": np.concatenate(act)},
        rewards=np.concatenate(rew),
        terminations=np.concatenate(term),
        truncations=np.zeros(sum(len(r) for r in rew), bool),
        table=table,
    )


def write_synthetic(dataset_id: str, shards: list[list[int]]) -> None:
    with storage.DatasetWriter(dataset_id) as w:
        w.start(storage.new_metadata(SYN_OBS, SYN_ACT, None, record_infos=False))
        for ids in shards:
            w.write_shard(synthetic_batch(ids))
        w.commit()


def check_synthetic(ep: EpisodeData) -> None:
    n = syn_length(ep.id)
    assert len(ep) == n
    np.testing.assert_array_equal(ep.observations[:, 0], np.full(n + 1, ep.id, np.float32))
    np.testing.assert_array_equal(ep.observations[:, 1], np.arange(n + 1, dtype=np.float32))
    np.testing.assert_array_equal(ep.actions, np.arange(n) % 2)
    np.testing.assert_array_equal(ep.rewards, 1000.0 * ep.id + np.arange(n))
    assert ep.seed == ep.id


# --------------------------------------------------------------------------------------------
# comparing nested values


def assert_nested_equal(got: Any, want: Any, where: str = "") -> None:
    """Same container types (dict/tuple/list[str]/ndarray), keys, dtypes, shapes and values."""
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        assert list(got) == list(want), where
        for k in want:
            assert_nested_equal(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, tuple):
        assert isinstance(got, tuple), where
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_nested_equal(g, w, f"{where}/{i}")
    elif isinstance(want, list):
        assert isinstance(got, list), where
        assert all(isinstance(s, str) for s in got), where
        assert got == want, where
    else:
        assert isinstance(got, np.ndarray), where
        assert got.dtype == want.dtype, where
        assert got.shape == want.shape, where
        np.testing.assert_array_equal(got, want, err_msg=where)


def rows(value: Any, index: Any) -> Any:
    """Rows ``index`` (slice, int or index array) of a nested value."""
    if isinstance(value, dict):
        return {k: rows(v, index) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(rows(v, index) for v in value)
    if isinstance(value, list):
        if isinstance(index, slice | int):
            return value[index]
        return [value[i] for i in index]
    return value[index]


def concat(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, dict):
        return {k: concat([v[k] for v in values]) for k in first}
    if isinstance(first, tuple):
        return tuple(concat([v[i] for v in values]) for i in range(len(first)))
    if isinstance(first, list):
        return [s for v in values for s in v]
    return np.concatenate(values)


def check_against_space(value: Any, space: spaces.Space, n_rows: int) -> None:
    """``value`` holds ``n_rows`` rows nested like ``space``, each row inside ``space``."""
    if isinstance(space, spaces.Dict):
        assert isinstance(value, dict) and list(value) == list(space.spaces)
        for k, sub in space.spaces.items():
            check_against_space(value[k], sub, n_rows)
    elif isinstance(space, spaces.Tuple):
        assert isinstance(value, tuple) and len(value) == len(space.spaces)
        for v, sub in zip(value, space.spaces, strict=True):
            check_against_space(v, sub, n_rows)
    elif isinstance(space, spaces.Text):
        assert isinstance(value, list) and len(value) == n_rows
        assert all(space.contains(s) for s in value)
    else:
        assert isinstance(value, np.ndarray)
        assert value.dtype == space.dtype, (value.dtype, space)
        assert value.shape == (n_rows, *space.shape)
        assert all(space.contains(np.asarray(value[i])) for i in range(n_rows)), space


def flat_infos(infos: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Inverse of the reader's nesting: ``{"a/b": (values, mask)}`` with escaped segments."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def walk(node: dict[str, Any], prefix: list[str]) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, [*prefix, key])
            elif not key.startswith("_"):
                name = "/".join(escape_key(k) for k in [*prefix, key])
                out[name] = (value, node["_" + key])

    walk(infos, [])
    return out


def assert_episode_matches(ep: EpisodeData, gt: dict[str, Any], space_check: bool = True) -> None:
    """``ep`` (from the reader) equals ``gt`` (from ``helpers.read_episodes``) in every field."""
    assert isinstance(ep, EpisodeData)
    assert ep.id == gt["id"]
    assert ep.seed == gt["seed"]
    assert ep.options == gt["options"]
    assert len(ep) == gt["length"]
    for key in ("rewards", "terminations", "truncations"):
        assert_nested_equal(getattr(ep, key), gt[key], key)
    assert_nested_equal(ep.observations, gt["observations"], "observations")
    assert_nested_equal(ep.actions, gt["actions"], "actions")
    assert bool(ep.terminations[-1]) == gt["terminated"]
    assert bool(ep.truncations[-1]) == gt["truncated"]
    if gt["infos"] is None:
        assert ep.infos == {}
    else:
        got = flat_infos(ep.infos)
        assert sorted(got) == sorted(gt["infos"])
        for name, (values, mask) in gt["infos"].items():
            assert_nested_equal(got[name][0], values, f"infos {name}")
            assert_nested_equal(got[name][1], mask, f"infos _{name}")


def checksum(dataset: Dataset) -> str:
    h = hashlib.sha256()
    for ep in dataset:
        h.update(str(ep.id).encode())
        h.update(np.ascontiguousarray(ep.observations).tobytes())
        h.update(np.ascontiguousarray(ep.actions).tobytes())
        h.update(ep.rewards.tobytes())
        h.update(ep.terminations.tobytes() + ep.truncations.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# 1. every space kind through every read path


def test_deep_spaces_round_trip_through_indexing_and_iteration() -> None:
    dsid = record_deep()
    truth = read_episodes(dsid)
    ds = load_dataset(dsid)
    assert ds.observation_space == DEEP_OBS
    assert ds.action_space == DEEP_ACT
    assert len(ds.metadata["shards"]) == len(DEEP_EPISODES)  # one shard per episode
    assert [gt["length"] for gt in truth] == DEEP_LENGTHS
    assert len(ds) == len(truth) == 5

    for i, gt in enumerate(truth):
        ep = ds[i]
        assert_episode_matches(ep, gt)
        check_against_space(ep.observations, DEEP_OBS, gt["length"] + 1)
        check_against_space(ep.actions, DEEP_ACT, gt["length"])
        assert ep.rewards.dtype == np.float64
        assert ep.terminations.dtype == ep.truncations.dtype == np.bool_
        assert_episode_matches(ds[i - len(truth)], gt)

    for ep, gt in zip(ds, truth, strict=True):
        assert_episode_matches(ep, gt)
    picked = list(ds.iterate_episodes([3, 0, 4]))
    assert [ep.id for ep in picked] == [3, 0, 4]
    for ep in picked:
        assert_episode_matches(ep, truth[ep.id])
    ds.set_seed(1)
    sampled = ds.sample_episodes(5)
    assert sorted(ep.id for ep in sampled) == [0, 1, 2, 3, 4]
    for ep in sampled:
        assert_episode_matches(ep, truth[ep.id])


def test_deep_episode_fields_and_repr() -> None:
    ds = load_dataset(record_deep())
    assert [ep.seed for ep in ds] == [s for s, _ in DEEP_EPISODES]
    assert [ep.options for ep in ds] == [o for _, o in DEEP_EPISODES]
    third = ds[3]
    assert bool(third.truncations[-1]) and not third.terminations.any()
    text = repr(ds[0])
    assert text.startswith("EpisodeData(id=0, seed=10, steps=4, ")
    assert "'text': list[str] x5" in text
    assert "'disc': ndarray(5,) int32" in text
    assert "actions=(ndarray(4,) int64, ndarray(4, 2) float32)" in text


def test_infos_come_back_nested_with_presence_masks() -> None:
    ds = load_dataset(record_deep())
    for ep, length in zip(ds, DEEP_LENGTHS, strict=True):
        infos = ep.infos
        assert set(infos) == {"nested", "rate/s", "_rate/s", "final", "_final"}
        assert set(infos["nested"]) == {"t", "_t", "vec", "_vec"}
        assert infos["nested"]["_t"].dtype == np.bool_ and infos["nested"]["_t"].all()
        assert infos["nested"]["vec"].shape == (length + 1, 2)
        assert infos["nested"]["vec"].dtype == np.float32
        np.testing.assert_array_equal(infos["nested"]["vec"][:, 0], -infos["nested"]["vec"][:, 1])
        assert infos["_rate/s"].all()
        np.testing.assert_array_equal(infos["rate/s"], infos["nested"]["t"] / 2)
        # the late key: present on the last row (the env's end) and nowhere inside the episode
        final, present = infos["final"], infos["_final"]
        assert present.shape == (length + 1,) and present.dtype == np.bool_
        assert present[-1] and final[-1] == 7 * infos["nested"]["t"][-1]
        assert not present[1:-1].any()
        np.testing.assert_array_equal(final[~present], 0)
        # row 0 is the reset info, except for the seedless episode, which starts from the
        # previous episode's last step (and so with its "final")
        assert present[0] == (ep.seed is None)


def test_infos_use_the_union_of_keys_across_shards() -> None:
    """DESIGN.md 4: the info schema is per shard and "readers take the union".

    Episode 0 never sees ``final`` and is committed by ``create_dataset`` (its shard has no
    such column); episode 1 ends with ``final`` and is appended by ``add_to_dataset``. Both
    episodes must expose the same info keys, with ``_final`` all False where it never appeared.
    """
    deep = DeepEnv(emit_final=False)
    env = DataCollector(deep, record_infos=True)
    rng = np.random.default_rng(0)
    env.reset(seed=1, options={"length": 2})
    run_to_end(env, rng)
    env.create_dataset("deep/union-v0")  # its shard has no "final" column
    deep.emit_final = True
    env.reset(seed=2, options={"length": 3})
    run_to_end(env, rng)
    env.add_to_dataset("deep/union-v0")  # a fresh recorder: this shard has one
    env.close()
    ds = load_dataset("deep/union-v0")
    assert len(ds.metadata["shards"]) == 2
    first, second = ds[0], ds[1]
    assert second.infos["_final"].tolist() == [False, False, False, True]
    assert set(first.infos) == set(second.infos)
    np.testing.assert_array_equal(first.infos["_final"], np.zeros(len(first) + 1, bool))
    np.testing.assert_array_equal(first.infos["final"], np.zeros(len(first) + 1))


def test_deep_to_transitions_matches_ground_truth() -> None:
    dsid = record_deep()
    truth = read_episodes(dsid)
    tr = load_dataset(dsid).to_transitions()
    n = sum(DEEP_LENGTHS)
    check_against_space(tr["observations"], DEEP_OBS, n)
    check_against_space(tr["next_observations"], DEEP_OBS, n)
    check_against_space(tr["actions"], DEEP_ACT, n)
    assert_nested_equal(
        tr["observations"], concat([rows(gt["observations"], slice(0, -1)) for gt in truth])
    )
    nexts = concat([rows(gt["observations"], slice(1, None)) for gt in truth])
    assert_nested_equal(tr["next_observations"], nexts)
    assert_nested_equal(tr["actions"], concat([gt["actions"] for gt in truth]))
    assert_nested_equal(tr["rewards"], np.concatenate([gt["rewards"] for gt in truth]))
    assert_nested_equal(tr["terminals"], np.concatenate([gt["terminations"] for gt in truth]))
    assert_nested_equal(tr["timeouts"], np.concatenate([gt["truncations"] for gt in truth]))


@pytest.mark.parametrize(
    ("block_rows", "cache_mb"),
    [(50, 256.0), (50, 0.0001), (1, 256.0), (None, 256.0)],
    ids=["blocks50", "blocks50-tiny-cache", "block-per-episode", "default"],
)
def test_cartpole_many_shards_and_blocks_read_back(block_rows: int | None, cache_mb: float) -> None:
    dsid = collect_cartpole(episodes=20)
    truth = read_episodes(dsid)
    kw: dict[str, Any] = {"cache_mb": cache_mb}
    if block_rows is not None:
        kw["block_rows"] = block_rows
    ds = load_dataset(dsid, **kw)
    n_shards = len(ds.metadata["shards"])
    assert n_shards == 4  # a commit every 5 episodes, never repacked
    n_blocks = len(np.unique(ds.snapshot.block))  # white box: the multi-block path is exercised
    if block_rows == 50:
        assert n_blocks > n_shards
    elif block_rows == 1:
        assert n_blocks == 20
    else:
        assert n_blocks == n_shards
    for i, gt in enumerate(truth):
        ep = ds[i]
        assert_episode_matches(ep, gt)
        assert isinstance(ep.observations, np.ndarray) and ep.observations.dtype == np.float32
        assert ep.observations.shape == (gt["length"] + 1, 4)
        assert ep.actions.dtype == np.int64 and ep.actions.shape == (gt["length"],)
        assert ep.infos == {}
    for ep, gt in zip(ds, truth, strict=True):
        assert_episode_matches(ep, gt)
    for ep in ds.iterate_episodes([19, 0, 7]):
        assert_episode_matches(ep, truth[ep.id])
    tr = ds.to_transitions()
    np.testing.assert_array_equal(
        tr["observations"], np.concatenate([gt["observations"][:-1] for gt in truth])
    )
    np.testing.assert_array_equal(tr["rewards"], np.concatenate([gt["rewards"] for gt in truth]))


# --------------------------------------------------------------------------------------------
# 2. the Dataset API


def test_len_total_steps_and_positional_indexing() -> None:
    ds = load_dataset(collect_cartpole(episodes=12))
    lengths = [len(ep) for ep in ds]
    assert len(ds) == ds.total_episodes == 12
    assert ds.total_steps == sum(lengths) == ds.metadata["total_steps"]
    assert ds[-1].id == 11 and ds[-12].id == 0
    assert ds[np.int64(3)].id == 3
    assert repr(ds) == f"<Dataset 'cart/random-v0': 12 episodes, {sum(lengths)} steps>"


@pytest.mark.parametrize("index", [12, -13, 100])
def test_index_out_of_range_raises_index_error(index: int) -> None:
    ds = load_dataset(collect_cartpole(episodes=12))
    with pytest.raises(
        IndexError, match=re.escape(f"episode position {index} out of range for 12 episodes")
    ):
        ds[index]


def test_unknown_episode_ids_raise_key_error() -> None:
    ds = load_dataset(collect_cartpole(episodes=5))
    with pytest.raises(KeyError, match=re.escape("episode id(s) [99] not in 'cart/random-v0'")):
        list(ds.iterate_episodes([1, 99]))
    with pytest.raises(KeyError, match="not in"):
        list(ds.get_episode_metadata([-1]))


def test_episode_indices_are_sorted_and_read_only() -> None:
    ds = load_dataset(collect_cartpole(episodes=10))
    idx = ds.episode_indices
    np.testing.assert_array_equal(idx, np.arange(10))
    assert idx.dtype == np.int64
    with pytest.raises(ValueError, match="read-only"):
        idx[0] = 5
    view = ds.filter_episodes(lambda ep: ep.id in (7, 2, 5))
    np.testing.assert_array_equal(view.episode_indices, [2, 5, 7])
    with pytest.raises(ValueError, match="read-only"):
        view.episode_indices[1] = 0


def test_spec_fields(datasets_root: Path) -> None:
    dsid = collect_cartpole("ns/sub/name-v3", episodes=6)
    ds = load_dataset(dsid)
    spec = ds.spec
    assert isinstance(spec, DatasetSpec)
    assert spec.dataset_id == "ns/sub/name-v3"
    assert spec.namespace == "ns/sub"
    assert spec.dataset_name == "name"
    assert spec.version == 3
    assert spec.total_episodes == 6
    assert spec.total_steps == ds.total_steps
    assert spec.data_path == str(datasets_root / "ns" / "sub" / "name-v3")
    assert spec.fingerprint == ds.fingerprint == ds.metadata["fingerprint"]
    assert spec.observation_space == gym.make("CartPole-v1").observation_space
    assert spec.action_space == spaces.Discrete(2)
    assert spec.env_spec is not None and spec.env_spec.id == "CartPole-v1"
    assert spec.combined_datasets == ()
    view = ds.filter_episodes(lambda ep: ep.id < 2)
    assert view.spec.total_episodes == 2
    assert view.spec.total_steps == len(ds[0]) + len(ds[1])
    assert view.spec.fingerprint == ds.fingerprint  # of the whole dataset
    top = load_dataset(collect_cartpole("top-v0", episodes=1))
    assert (top.spec.namespace, top.spec.dataset_name, top.spec.version) == (None, "top", 0)


def test_metadata_is_an_independent_copy() -> None:
    ds = load_dataset(collect_cartpole(episodes=5))
    meta = ds.metadata
    meta["total_episodes"] = 999
    meta["shards"].clear()
    meta["provenance"]["seed_entropy"] = -1
    assert ds.metadata["total_episodes"] == 5
    assert len(ds.metadata["shards"]) == 1
    assert ds.metadata["provenance"]["seed_entropy"] == 0
    assert len(ds) == 5 and len(list(ds)) == 5


def test_env_spec_and_recover_environment() -> None:
    ds = load_dataset(collect_cartpole(episodes=2))
    assert ds.env_spec is not None and ds.env_spec.id == "CartPole-v1"
    env = ds.recover_environment()
    try:
        assert env.spec is not None and env.spec.id == "CartPole-v1"
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        obs, reward, *_ = env.step(0)
        assert reward == 1.0
    finally:
        env.close()
    short = ds.recover_environment(max_episode_steps=3)
    try:
        assert short.spec is not None and short.spec.max_episode_steps == 3
    finally:
        short.close()


def test_recover_eval_environment() -> None:
    ds = load_dataset(record_cartpole("cart/eval-v0", eval_env="CartPole-v0"))
    env, eval_env = ds.recover_environment(), ds.recover_environment(eval_env=True)
    try:
        assert env.spec is not None and env.spec.id == "CartPole-v1"
        assert eval_env.spec is not None and eval_env.spec.id == "CartPole-v0"
        assert eval_env.spec.max_episode_steps == 200
    finally:
        env.close()
        eval_env.close()
    # without an eval env spec, eval_env=True falls back to the dataset's env
    plain = load_dataset(record_cartpole("cart/plain-v0", episodes=1))
    fallback = plain.recover_environment(eval_env=True)
    try:
        assert fallback.spec is not None and fallback.spec.id == "CartPole-v1"
    finally:
        fallback.close()


@pytest.mark.parametrize(
    ("requirement", "message"),
    [
        ("definitely-not-installed-pkg>=1", "'definitely-not-installed-pkg>=1' is not installed"),
        ("numpy>=999", "'numpy>=999' is installed at"),
        ("not a requirement!!", "'not a requirement!!' is not valid"),
    ],
)
def test_recover_environment_warns_about_requirements(requirement: str, message: str) -> None:
    ds = load_dataset(record_cartpole("cart/reqs-v0", episodes=1, requirements=[requirement]))
    with pytest.warns(HarvestWarning, match=re.escape(message)):
        env = ds.recover_environment()
    try:  # the environment is still made
        assert env.spec is not None and env.spec.id == "CartPole-v1"
    finally:
        env.close()


def test_recover_environment_without_env_spec_is_a_usage_error() -> None:
    ds = load_dataset(record_deep())  # DeepEnv was not made by gym.make: no spec
    assert ds.env_spec is None
    with pytest.raises(
        UsageError,
        match=re.escape("dataset 'deep/all-spaces-v0' has no env_spec to recover an environment"),
    ):
        ds.recover_environment()


def test_normalized_score() -> None:
    ds = load_dataset(
        record_cartpole("cart/scored-v0", episodes=1, ref_min_score=0, ref_max_score=100)
    )
    assert ds.get_normalized_score(50.0) == pytest.approx(0.5)
    np.testing.assert_allclose(ds.get_normalized_score(np.array([0.0, 100.0, 150.0])), [0, 1, 1.5])
    plain = load_dataset(record_cartpole("cart/unscored-v0", episodes=1))
    with pytest.raises(
        ValueError, match=re.escape("dataset 'cart/unscored-v0' has no ref_min_score/ref_max_score")
    ):
        plain.get_normalized_score(1.0)


# --------------------------------------------------------------------------------------------
# 3. sample_episodes


def test_sample_episodes_without_replacement() -> None:
    ds = load_dataset(collect_cartpole(episodes=20))
    truth = read_episodes("cart/random-v0")
    for n in (0, 1, 7, 20):
        picked = ds.sample_episodes(n)
        ids = [ep.id for ep in picked]
        assert len(ids) == n == len(set(ids))
        for ep in picked:
            assert_episode_matches(ep, truth[ep.id])
    with pytest.raises(
        ValueError, match=re.escape("cannot sample 21 episodes without replacement from 20")
    ):
        ds.sample_episodes(21)


def test_set_seed_makes_sampling_repeat() -> None:
    ds = load_dataset(collect_cartpole(episodes=20))
    ds.set_seed(7)
    first = [[ep.id for ep in ds.sample_episodes(5)] for _ in range(3)]
    ds.set_seed(7)
    again = [[ep.id for ep in ds.sample_episodes(5)] for _ in range(3)]
    assert first == again
    ds.set_seed(8)
    other = [[ep.id for ep in ds.sample_episodes(5)] for _ in range(3)]
    assert other != first
    twin = load_dataset("cart/random-v0")
    twin.set_seed(7)
    assert [ep.id for ep in twin.sample_episodes(5)] == first[0]


def test_samples_from_a_view_stay_in_the_view() -> None:
    ds = load_dataset(collect_cartpole(episodes=20))
    view = ds.filter_episodes(lambda ep: ep.id % 3 == 0)
    allowed = {0, 3, 6, 9, 12, 15, 18}
    view.set_seed(0)
    seen: set[int] = set()
    for _ in range(20):
        seen.update(ep.id for ep in view.sample_episodes(3))
    assert seen == allowed
    assert sorted(ep.id for ep in view.sample_episodes(7)) == sorted(allowed)
    with pytest.raises(ValueError, match="cannot sample 8 episodes without replacement from 7"):
        view.sample_episodes(8)


# --------------------------------------------------------------------------------------------
# 4. views


def test_filter_episodes_returns_a_view() -> None:
    ds = load_dataset(collect_cartpole(episodes=20))
    truth = read_episodes("cart/random-v0")
    long_ids = [gt["id"] for gt in truth if gt["length"] >= 20]
    assert 0 < len(long_ids) < 20
    view = ds.filter_episodes(lambda ep: len(ep) >= 20)
    assert isinstance(view, Dataset)
    assert len(view) == len(long_ids)
    assert view.total_steps == sum(truth[i]["length"] for i in long_ids)
    assert repr(view).startswith("<Dataset view of 'cart/random-v0': ")
    assert repr(view).endswith(f": {len(long_ids)} episodes, {view.total_steps} steps>")
    assert repr(ds).startswith("<Dataset 'cart/random-v0'")
    assert [ep.id for ep in view] == long_ids
    for i, ep in enumerate(view):
        assert_episode_matches(ep, truth[long_ids[i]])
        assert view[i].id == long_ids[i]
    assert view[-1].id == long_ids[-1]
    with pytest.raises(IndexError, match="out of range"):
        view[len(long_ids)]
    assert len(ds) == 20  # the parent is unchanged


def test_filter_of_a_filter_and_reads_touch_only_the_view() -> None:
    ds = load_dataset(collect_cartpole(episodes=20), block_rows=50)
    truth = read_episodes("cart/random-v0")
    evens = ds.filter_episodes(lambda ep: ep.id % 2 == 0)
    quarter = evens.filter_episodes(lambda ep: ep.id % 4 == 0)
    assert quarter.episode_indices.tolist() == [0, 4, 8, 12, 16]
    seen: list[int] = []
    quarter.filter_episodes(lambda ep: seen.append(ep.id) or True)  # type: ignore[func-returns-value]
    assert seen == [0, 4, 8, 12, 16]  # a filter of a view visits only the view
    assert [ep.id for ep in quarter] == [0, 4, 8, 12, 16]
    assert quarter.total_steps == sum(truth[i]["length"] for i in (0, 4, 8, 12, 16))
    tr = quarter.to_transitions()
    assert len(tr["rewards"]) == quarter.total_steps
    np.testing.assert_array_equal(
        tr["rewards"], np.concatenate([truth[i]["rewards"] for i in (0, 4, 8, 12, 16)])
    )
    empty = quarter.filter_episodes(lambda ep: False)
    assert len(empty) == 0 and empty.total_steps == 0 and list(empty) == []


def test_public_read_layer_matches_episodes() -> None:
    """``snapshot``/``positions``/``read_block``/``transition``/``view``: the rows of ``ds[i]``."""
    ds = load_dataset(collect_cartpole(episodes=10), block_rows=50)
    view = ds.view(np.array([7, 2, 5]), {"name": "pick"})
    assert view.episode_indices.tolist() == [2, 5, 7]
    assert view.lineage_steps == ({"name": "pick"},)
    snap = view.snapshot
    assert snap is ds.snapshot and snap.ids[view.positions].tolist() == [2, 5, 7]
    assert not view.positions.flags.writeable
    for i, ep in enumerate(view):
        pos = int(view.positions[i])
        rows = view.read_block(int(snap.block[pos]))
        o0, t0 = (int(r) for r in snap.rows_in_block(pos))
        np.testing.assert_array_equal(rows.rewards[t0 : t0 + len(ep)], ep.rewards)
        np.testing.assert_array_equal(rows.observations[""][o0 : o0 + len(ep) + 1], ep.observations)
        ref = snap.block_ref(int(snap.block[pos]))
        assert ref.file == str(snap.files[snap.block_shard[snap.block[pos]]])
        for t in (0, len(ep) - 1):
            step = view.transition(i, t)
            np.testing.assert_array_equal(step["observation"], ep.observations[t])
            np.testing.assert_array_equal(step["next_observation"], ep.observations[t + 1])
            assert step["reward"] == ep.rewards[t]
            assert step["terminated"] == bool(ep.terminations[t])


def test_views_share_the_parent_snapshot_and_cache() -> None:
    ds = load_dataset(collect_cartpole(episodes=10))
    view = ds.filter_episodes(lambda ep: ep.id > 4)
    assert view.snapshot is ds.snapshot  # white box: no copy of the index or of any data
    assert view.block_cache is ds.block_cache
    assert view.fingerprint == ds.fingerprint
    assert view.metadata == ds.metadata
    assert view.observation_space is ds.observation_space
    for ep in view:
        parent = ds[ep.id]
        np.testing.assert_array_equal(ep.observations, parent.observations)
        np.testing.assert_array_equal(ep.rewards, parent.rewards)
    # episodes handed out are copies: editing one does not change the cached block
    got = ds[6]
    got.observations[:] = 0
    got.rewards[:] = -1
    assert view[1].id == 6
    assert (view[1].rewards == 1.0).all()
    assert np.abs(view[1].observations).sum() > 0


# --------------------------------------------------------------------------------------------
# 5. per-episode columns and metadata


def test_episodes_columns() -> None:
    ds = load_dataset(record_deep())
    cols = ds.episodes()
    assert set(cols) == {"id", "seed", "has_seed", "length", "return", "terminated", "truncated"}
    np.testing.assert_array_equal(cols["id"], np.arange(5))
    np.testing.assert_array_equal(cols["seed"], [10, 11, 0, 13, 14])  # 0 where has_seed is False
    assert cols["seed"].dtype == np.uint64  # exact: 64-bit seeds do not fit a float64
    np.testing.assert_array_equal(cols["has_seed"], [True, True, False, True, True])
    np.testing.assert_array_equal(cols["length"], DEEP_LENGTHS)
    np.testing.assert_allclose(cols["return"], [ep.rewards.sum() for ep in ds])
    np.testing.assert_array_equal(cols["terminated"], [True, True, True, False, True])
    np.testing.assert_array_equal(cols["truncated"], [False, False, False, True, False])
    cols["length"][:] = 0  # a copy
    assert ds.episodes()["length"].tolist() == DEEP_LENGTHS
    view = ds.filter_episodes(lambda ep: ep.seed is None or ep.id == 4)
    vcols = view.episodes()
    np.testing.assert_array_equal(vcols["id"], [2, 4])
    np.testing.assert_array_equal(vcols["has_seed"], [False, True])


def test_get_episode_metadata() -> None:
    ds = load_dataset(record_deep())
    metas = list(ds.get_episode_metadata())
    assert [m["id"] for m in metas] == [0, 1, 2, 3, 4]  # the callback's "id" does not win
    assert [m["seed"] for m in metas] == [10, 11, None, 13, 14]
    assert [m["options"] for m in metas] == [o for _, o in DEEP_EPISODES]
    assert metas[0]["options"] == {"length": 4, "tags": ["a", "β"], "nested": {"k": 1.5}}
    assert [m["length"] for m in metas] == DEEP_LENGTHS
    assert [m["steps"] for m in metas] == DEEP_LENGTHS  # from episode_metadata_callback
    for m, ep in zip(metas, ds, strict=True):
        assert m["return"] == pytest.approx(float(ep.rewards.sum()))
        assert m["neg_return"] == pytest.approx(-m["return"])
        assert m["terminated"] == bool(ep.terminations[-1])
        assert m["truncated"] == bool(ep.truncations[-1])
        assert isinstance(m["seed"], int | None) and isinstance(m["length"], int)
    some = list(ds.get_episode_metadata([4, 2]))
    assert [m["id"] for m in some] == [4, 2]
    assert some[1]["seed"] is None and some[1]["options"] is None
    view = ds.filter_episodes(lambda ep: ep.id in (1, 3))
    assert [m["id"] for m in view.get_episode_metadata()] == [1, 3]


def test_episode_metadata_without_callback_has_only_the_builtin_keys() -> None:
    ds = load_dataset(collect_cartpole(episodes=3))
    (meta,) = ds.get_episode_metadata([1])
    assert set(meta) == {"id", "seed", "options", "length", "return", "terminated", "truncated"}
    assert isinstance(meta["seed"], int) and meta["options"] is None


# --------------------------------------------------------------------------------------------
# 6. snapshots, refresh and a concurrent writer


def test_open_snapshot_ignores_later_commits_until_refresh() -> None:
    dsid = collect_cartpole(episodes=20)
    ds = load_dataset(dsid)
    before = checksum(ds)
    steps = ds.total_steps
    view = ds.filter_episodes(lambda ep: ep.id % 2 == 0)
    collect(cartpole_config(dsid, episodes=30))  # resume: appends episodes 20..29
    assert len(ds) == 20 and ds.total_steps == steps
    assert checksum(ds) == before  # still reads the old commit
    assert ds.metadata["total_episodes"] == 20
    assert ds.refresh() is ds
    assert len(ds) == 30 and ds.total_steps == load_dataset(dsid).total_steps
    assert ds.metadata["total_episodes"] == 30
    for ep, gt in zip(ds, read_episodes(dsid), strict=True):
        assert_episode_matches(ep, gt)
    # a view keeps its episodes (not the new even ids) and still reads after a refresh
    assert view.refresh() is view
    assert view.episode_indices.tolist() == list(range(0, 20, 2))
    assert repr(view).startswith("<Dataset view of")
    assert [ep.id for ep in view] == list(range(0, 20, 2))
    assert len(ds[25]) > 0


def test_open_snapshot_survives_a_resume_that_repacks() -> None:
    """The ``Dataset`` docstring: "a collect run writing the same dataset does not disturb it".

    With the default ``storage.shard_mb`` a resumed ``collect`` repacks the small shards at the
    end and deletes the merged ones; a snapshot opened before must still read its commit.
    """
    dsid = "cart/repacked-v0"
    collect(cartpole_config(dsid, episodes=20, storage={}))
    ds = load_dataset(dsid)
    expected = [(gt["id"], gt["rewards"].sum()) for gt in read_episodes(dsid)]
    collect(cartpole_config(dsid, episodes=30, storage={}))
    assert len(ds) == 20
    assert [(ep.id, ep.rewards.sum()) for ep in ds] == expected


def test_refresh_after_add_to_dataset_sees_offset_ids() -> None:
    env = DataCollector(DeepEnv(), record_infos=True)
    rng = np.random.default_rng(0)
    env.reset(seed=1)
    run_to_end(env, rng)
    env.create_dataset("deep/grow-v0")
    ds = load_dataset("deep/grow-v0")
    env.reset(seed=2)
    run_to_end(env, rng)
    env.reset(seed=3)
    run_to_end(env, rng)
    env.add_to_dataset(ds)
    env.close()
    assert len(ds) == 1
    ds.refresh()
    assert ds.episode_indices.tolist() == [0, 1, 2]
    assert [ep.seed for ep in ds] == [1, 2, 3]
    for ep, gt in zip(ds, read_episodes("deep/grow-v0"), strict=True):
        assert_episode_matches(ep, gt)


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from gymnasium import spaces
    from collector import storage

    dataset_id, rounds = sys.argv[1], int(sys.argv[2])

    def batch(ids):  # the same content as synthetic_batch in the test module
        obs, act, rew, term = [], [], [], []
        for i in ids:
            n = 1 + i % 4
            obs.append(np.stack([np.full(n + 1, i), np.arange(n + 1)], 1).astype(np.float32))
            act.append(np.arange(n, dtype=np.int64) % 2)
            rew.append(1000.0 * i + np.arange(n))
            term.append(np.arange(n) == n - 1)
        table = storage.make_table(ids, ids, [1 + i % 4 for i in ids],
                                   [float(r.sum()) for r in rew],
                                   [True] * len(ids), [False] * len(ids), [None] * len(ids))
        return storage.EpisodeBatch(
            observations={"": np.concatenate(obs)}, actions={"": np.concatenate(act)},
            rewards=np.concatenate(rew), terminations=np.concatenate(term),
            truncations=np.zeros(sum(map(len, rew)), bool), table=table)

    with storage.DatasetWriter(dataset_id) as w:
        w.start(storage.new_metadata(spaces.Box(-np.inf, np.inf, (2,), np.float32),
                                 spaces.Discrete(2), None, record_infos=False))
        print("started", flush=True)
        for k in range(rounds):
            w.write_shard(batch(list(range(3 * k, 3 * k + 3))))
            w.commit()
            time.sleep(0.01)
    """
)


@pytest.mark.slow
def test_snapshots_stay_consistent_while_a_writer_appends() -> None:
    dsid, rounds = "live/append-v0", 40
    sizes: list[int] = []
    with subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, dsid, str(rounds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        while True:
            done = proc.poll() is not None
            ds = load_dataset(dsid, block_rows=8)
            n = len(ds)
            meta = ds.metadata
            assert meta["total_episodes"] == n
            np.testing.assert_array_equal(ds.episode_indices, np.arange(n))
            episodes = list(ds)
            assert [ep.id for ep in episodes] == list(range(n))
            assert sum(len(ep) for ep in episodes) == ds.total_steps == meta["total_steps"]
            for ep in episodes:
                check_synthetic(ep)
            sizes.append(n)
            if done:
                break
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert sizes[-1] == 3 * rounds
    assert sizes == sorted(sizes)  # commits only ever add episodes
    assert len(set(sizes)) >= 3, sizes  # the reader did see the dataset grow


# --------------------------------------------------------------------------------------------
# 7. to_transitions (D4RL layout)


def assert_d4rl_layout(ds: Dataset) -> None:
    tr = ds.to_transitions()
    assert set(tr) == {
        "observations",
        "actions",
        "rewards",
        "next_observations",
        "terminals",
        "timeouts",
    }
    episodes = list(ds)
    assert len(tr["rewards"]) == ds.total_steps == sum(len(ep) for ep in episodes)
    start = 0
    for ep in episodes:  # rows are in episode-id order, episode after episode
        span = slice(start, start + len(ep))
        assert_nested_equal(rows(tr["observations"], span), rows(ep.observations, slice(0, -1)))
        nexts = rows(ep.observations, slice(1, None))
        assert_nested_equal(rows(tr["next_observations"], span), nexts)
        assert_nested_equal(rows(tr["actions"], span), ep.actions)
        assert_nested_equal(tr["rewards"][span], ep.rewards)
        assert_nested_equal(tr["terminals"][span], ep.terminations)
        assert_nested_equal(tr["timeouts"][span], ep.truncations)
        # within an episode, next_observations[i] == observations[i + 1]
        inner = np.arange(start, start + len(ep) - 1)
        following = rows(tr["observations"], inner + 1)
        assert_nested_equal(rows(tr["next_observations"], inner), following)
        last = start + len(ep) - 1
        assert bool(tr["terminals"][last]) == bool(ep.terminations[-1])
        assert bool(tr["timeouts"][last]) == bool(ep.truncations[-1])
        start += len(ep)


def test_to_transitions_d4rl_layout_cartpole() -> None:
    ds = load_dataset(collect_cartpole(episodes=20), block_rows=50)
    assert_d4rl_layout(ds)
    tr = ds.to_transitions()
    assert tr["observations"].shape == (ds.total_steps, 4)
    assert tr["observations"].dtype == np.float32
    assert tr["terminals"].dtype == tr["timeouts"].dtype == np.bool_
    assert tr["rewards"].dtype == np.float64
    ends = np.cumsum(ds.episodes()["length"]) - 1
    np.testing.assert_array_equal(tr["terminals"][ends], ds.episodes()["terminated"])
    np.testing.assert_array_equal(tr["timeouts"][ends], ds.episodes()["truncated"])
    not_ends = np.setdiff1d(np.arange(ds.total_steps), ends)
    assert not tr["terminals"][not_ends].any() and not tr["timeouts"][not_ends].any()


def test_to_transitions_nested_spaces_and_views() -> None:
    ds = load_dataset(record_deep(), block_rows=4)
    assert_d4rl_layout(ds)
    view = ds.filter_episodes(lambda ep: ep.id in (1, 3))
    assert_d4rl_layout(view)
    assert len(view.to_transitions()["rewards"]) == DEEP_LENGTHS[1] + DEEP_LENGTHS[3]


def test_to_transitions_rows_follow_ids_not_shard_order() -> None:
    write_synthetic("syn/shuffled-v0", [[9, 7, 8], [0, 1, 2, 3], [5, 4, 6]])
    ds = load_dataset("syn/shuffled-v0", block_rows=3)
    assert ds.episode_indices.tolist() == list(range(10))
    for ep in ds:
        check_synthetic(ep)
    assert_d4rl_layout(ds)
    tr = ds.to_transitions()
    expected_ids = np.repeat(np.arange(10), [syn_length(i) for i in range(10)])
    np.testing.assert_array_equal(tr["observations"][:, 0], expected_ids)
    view = ds.filter_episodes(lambda ep: ep.id in (8, 0, 5))
    vt = view.to_transitions()
    np.testing.assert_array_equal(
        vt["observations"][:, 0], np.repeat([0, 5, 8], [syn_length(i) for i in (0, 5, 8)])
    )


@pytest.mark.parametrize("record", ["cartpole", "deep"])
def test_to_transitions_of_an_empty_view(record: str) -> None:
    ds = load_dataset(collect_cartpole(episodes=3) if record == "cartpole" else record_deep())
    empty = ds.filter_episodes(lambda ep: False)
    assert len(empty) == 0 and empty.total_steps == 0
    tr = empty.to_transitions()
    assert len(tr["rewards"]) == 0 and tr["rewards"].dtype == np.float64
    assert tr["terminals"].dtype == tr["timeouts"].dtype == np.bool_
    assert len(tr["terminals"]) == len(tr["timeouts"]) == 0
    check_against_space(tr["observations"], ds.observation_space, 0)
    check_against_space(tr["next_observations"], ds.observation_space, 0)
    check_against_space(tr["actions"], ds.action_space, 0)


EMPTY_READS: dict[str, tuple[Any, Any]] = {
    "len": (len, 0),
    "total_steps": (lambda ds: ds.total_steps, 0),
    "iterate": (list, []),
    "episode_indices": (lambda ds: ds.episode_indices.tolist(), []),
    "sample_episodes(0)": (lambda ds: ds.sample_episodes(0), []),
    "to_transitions": (lambda ds: ds.to_transitions()["observations"].shape, (0, 2)),
    "episodes()": (lambda ds: ds.episodes()["id"].tolist(), []),
    "filter_episodes": (lambda ds: len(ds.filter_episodes(lambda ep: True)), 0),
    "iterate_episodes([])": (lambda ds: list(ds.iterate_episodes([])), []),
    "get_episode_metadata()": (lambda ds: list(ds.get_episode_metadata()), []),
    "get_episode_metadata([])": (lambda ds: list(ds.get_episode_metadata([])), []),
}


@pytest.mark.parametrize("read", list(EMPTY_READS))
def test_dataset_with_no_episodes(read: str) -> None:
    """A commit with no shards (``collect`` commits one before its first episode) reads empty."""
    with storage.DatasetWriter("syn/empty-v0") as w:
        w.start(storage.new_metadata(SYN_OBS, SYN_ACT, None, record_infos=False))
    fn, expected = EMPTY_READS[read]
    assert fn(load_dataset("syn/empty-v0")) == expected


# --------------------------------------------------------------------------------------------
# 8. listing, deleting and errors


def test_list_local_datasets_finds_nested_namespaces(datasets_root: Path) -> None:
    assert list_local_datasets() == {}
    for dsid in ("top-v0", "a/b-v1", "a/b/c-v2"):
        write_synthetic(dsid, [[0, 1]])
    record_cartpole("cart/dc-v0", episodes=1)  # leaves .tmp and .locks folders behind
    # hidden folders are not datasets, even when they look like one
    fake = datasets_root / ".tmp" / "fake-v0"
    fake.mkdir(parents=True)
    (fake / storage.METADATA_FILE).write_text(
        (datasets_root / "top-v0" / "metadata.json").read_text()
    )
    assert (datasets_root / storage.LOCKS_DIR).is_dir()
    found = list_local_datasets()
    assert list(found) == ["a/b-v1", "a/b/c-v2", "cart/dc-v0", "top-v0"]
    assert found["a/b/c-v2"]["dataset_id"] == "a/b/c-v2"
    assert found["top-v0"]["total_episodes"] == 2
    assert list(list_local_datasets(root=datasets_root)) == list(found)
    assert list_local_datasets(root=datasets_root / "nowhere") == {}


def test_list_local_datasets_skips_a_bad_folder_with_a_warning(datasets_root: Path) -> None:
    write_synthetic("ok-v0", [[0]])
    bad = datasets_root / "not an id"
    bad.mkdir()
    (bad / storage.METADATA_FILE).write_text("{}")
    broken = datasets_root / "ns" / "broken-v0"
    broken.mkdir(parents=True)
    (broken / storage.METADATA_FILE).write_text("{not json")
    with pytest.warns(HarvestWarning, match="skipping") as record:
        found = list_local_datasets()
    assert list(found) == ["ok-v0"]
    messages = " ".join(str(w.message) for w in record)
    assert "not an id" in messages and "is not valid JSON" in messages


def test_delete_dataset(datasets_root: Path) -> None:
    write_synthetic("ns/gone-v0", [[0, 1]])
    write_synthetic("ns/kept-v0", [[0]])
    load_dataset("ns/gone-v0")
    delete_dataset("ns/gone-v0")
    assert not (datasets_root / "ns" / "gone-v0").exists()
    assert list(list_local_datasets()) == ["ns/kept-v0"]
    with pytest.raises(DatasetNotFoundError, match=re.escape("no dataset 'ns/gone-v0'")):
        load_dataset("ns/gone-v0")
    with pytest.raises(DatasetNotFoundError, match=re.escape("no dataset 'ns/gone-v0'")):
        delete_dataset("ns/gone-v0")
    assert len(load_dataset("ns/kept-v0")) == 1


@pytest.mark.parametrize("linked", ["dataset", "data"])
def test_delete_of_a_symlinked_dataset_refuses_before_touching_anything(
    datasets_root: Path, tmp_path: Path, linked: str
) -> None:
    """Issue 16 item 4: delete unlinked metadata.json, then rmtree failed on the link."""
    write_synthetic("ns/linked-v0", [[0, 1]])
    path = datasets_root / "ns" / "linked-v0"
    moved = tmp_path / "elsewhere"
    link = path if linked == "dataset" else path / storage.DATA_DIR
    os.rename(link, moved)
    link.symlink_to(moved, target_is_directory=True)

    def listing() -> list[str]:  # the lock files are not the dataset's
        return sorted(str(p) for p in tmp_path.rglob("*") if storage.LOCKS_DIR not in p.parts)

    before = listing()
    with pytest.raises(UsageError, match="is a symbolic link") as info:
        delete_dataset("ns/linked-v0")
    assert "\n" not in str(info.value) and str(link) in str(info.value)
    assert listing() == before
    assert [ep.id for ep in load_dataset("ns/linked-v0")] == [0, 1]


def test_delete_while_a_writer_holds_the_lock_deletes_nothing(datasets_root: Path) -> None:
    write_synthetic("ns/busy-v0", [[0, 1], [2]])
    before = sorted(p.name for p in (datasets_root / "ns" / "busy-v0").rglob("*"))
    with storage.DatasetWriter("ns/busy-v0"):
        with pytest.raises(LockHeldError, match="'ns/busy-v0' is being written by another process"):
            delete_dataset("ns/busy-v0")
    assert sorted(p.name for p in (datasets_root / "ns" / "busy-v0").rglob("*")) == before
    ds = load_dataset("ns/busy-v0")
    assert len(ds) == 3
    for ep in ds:
        check_synthetic(ep)


@pytest.mark.parametrize(
    ("dataset_id", "why"),
    [
        ("../escape-v0", "is a path, not an id"),
        ("/abs-v0", "is a path, not an id"),
        ("noversion", "has no version suffix"),
        ("a//b-v0", "has an empty segment"),
        ("sp ace-v0", "has a character outside"),
        ("", "is empty"),
    ],
)
def test_bad_ids_raise_dataset_id_error(dataset_id: str, why: str) -> None:
    for fn in (load_dataset, delete_dataset):
        with pytest.raises(DatasetIdError, match=re.escape(why)):
            fn(dataset_id)


def test_missing_dataset_errors() -> None:
    with pytest.raises(DatasetNotFoundError, match=re.escape("no dataset 'ns/missing-v0'")):
        load_dataset("ns/missing-v0")
    with pytest.raises(UsageError, match=re.escape("no remote given: pass --remote URI")):
        load_dataset("ns/missing-v0", download=True)  # $HARVEST_REMOTE unset
    write_synthetic("ns/present-v0", [[0]])
    assert len(load_dataset("ns/present-v0", download=True)) == 1


def test_a_missing_shard_is_a_corrupt_dataset_error(datasets_root: Path) -> None:
    write_synthetic("ns/holes-v0", [[0, 1], [2, 3]])
    ds = load_dataset("ns/holes-v0")
    ds[0]  # shard 0 is read and cached; shard 1 is not
    shard = datasets_root / "ns" / "holes-v0" / storage.DATA_DIR / ds.metadata["shards"][1]["file"]
    shard.unlink()
    check_synthetic(ds[1])  # cached block
    with pytest.raises(CorruptDatasetError, match=r"is missing: .*call refresh\(\).*run verify"):
        ds[2]
    # opening reads the manifest only (issue 18): the gap shows on the first read of it
    again = load_dataset("ns/holes-v0")
    assert len(again) == 4
    with pytest.raises(CorruptDatasetError, match=r"is missing: .*refresh\(\).*run verify"):
        again[2]
    with pytest.raises(CorruptDatasetError, match="is missing"):
        ds.refresh()[2]


def test_a_damaged_metadata_file_is_a_corrupt_dataset_error(datasets_root: Path) -> None:
    write_synthetic("ns/damaged-v0", [[0]])
    (datasets_root / "ns" / "damaged-v0" / storage.METADATA_FILE).write_text("[1, 2]")
    with pytest.raises(CorruptDatasetError, match="does not hold a JSON object"):
        load_dataset("ns/damaged-v0")


# --------------------------------------------------------------------------------------------
# 9. pickling and fork


def test_pickle_round_trip_reads_the_same_episodes() -> None:
    ds = load_dataset(collect_cartpole(episodes=10), block_rows=50)
    expected = checksum(ds)  # blocks cached, h5py handles open: neither may be pickled
    assert len(ds.block_cache)
    clone = pickle.loads(pickle.dumps(ds))
    assert not len(clone.block_cache)  # a fresh, empty cache
    assert clone.block_cache is not ds.block_cache
    assert len(clone) == 10 and clone.total_steps == ds.total_steps
    assert checksum(clone) == expected
    view = ds.filter_episodes(lambda ep: ep.id in (2, 9))
    vclone = pickle.loads(pickle.dumps(view))
    assert vclone.episode_indices.tolist() == [2, 9]
    assert repr(vclone) == repr(view)
    assert checksum(vclone) == checksum(view)
    deep = load_dataset(record_deep())
    deep_clone = pickle.loads(pickle.dumps(deep))
    for a, b in zip(deep, deep_clone, strict=True):
        assert_nested_equal(b.observations, a.observations)


_FORKED: dict[str, Dataset] = {}


def _checksum_in_child(queue: Any) -> None:
    try:
        queue.put(checksum(_FORKED["ds"]))
    except BaseException as e:  # report instead of dying silently
        queue.put(f"error: {e!r}")


@pytest.mark.slow
def test_reading_after_fork() -> None:
    ds = load_dataset(collect_cartpole(episodes=10), block_rows=50)
    expected = checksum(ds)
    ds.block_cache.evict_all()  # the child must read from the files with inherited handles
    _FORKED["ds"] = ds
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    try:
        proc = ctx.Process(target=_checksum_in_child, args=(queue,))
        proc.start()
        got = queue.get(timeout=60)
        proc.join(timeout=60)
    finally:
        _FORKED.clear()
    assert proc.exitcode == 0
    assert got == expected
    assert checksum(ds) == expected  # the parent's handles still work
    assert os.getpid() == ds.block_cache.reader._pid


def test_escaped_info_keys_round_trip() -> None:
    """An info key with '/' is a leaf, not a nested dict (escaped in storage)."""
    ds = load_dataset(record_deep())
    assert "rate/s" in ds[0].infos and "rate" not in ds[0].infos


def tree_names(root: Path) -> list[str]:
    """Every path under ``root`` but lock files and (empty) spill folders."""
    paths = [p.relative_to(root) for p in root.rglob("*")]
    return sorted(p.as_posix() for p in paths if p.parts[0] not in (".locks", ".tmp"))


def test_no_writer_puts_a_dataset_inside_or_around_another(datasets_root: Path) -> None:
    """Issue 16, item 1: every writer refuses nesting with one line naming both ids."""
    from curation.ops import save_dataset

    write_synthetic("ns/out-v0", [[0, 1, 2]])
    write_synthetic("ns/deep/in-v0", [[0]])
    source = load_dataset("ns/out-v0")
    before = tree_names(datasets_root)
    for new_id, what in (
        ("ns/out-v0/sub-v0", "would sit inside dataset 'ns/out-v0'"),
        ("ns/out-v0/data/sub-v0", "would sit inside dataset 'ns/out-v0'"),
        ("ns/deep/in-v0/x/y-v1", "would sit inside dataset 'ns/deep/in-v0'"),
        ("ns/deep/in-v0/data/y-v1", "would sit inside dataset 'ns/deep/in-v0'"),
    ):
        with pytest.raises(UsageError, match=re.escape(f"{new_id!r} {what}")) as e:
            save_dataset(source, new_id)
        assert "pick another id, or delete" in str(e.value)
        with pytest.raises(UsageError, match=re.escape(f"{new_id!r} {what}")):
            record_cartpole(new_id, episodes=1)
        with pytest.raises(UsageError, match=re.escape(f"{new_id!r} {what}")):
            storage.check_not_nested(new_id)
    assert tree_names(datasets_root) == before
    storage.check_not_nested("ns/out-v0")  # its own folder is fine
    storage.check_not_nested("ns/deep-v0")  # so is a sibling whose name extends a folder's
    save_dataset(source, "ns/out-v01")


def test_delete_leaves_a_dataset_nested_inside_whole(datasets_root: Path) -> None:
    """Issue 16, item 1: a root nested by an older harvest; delete refuses, deleting nothing."""
    write_synthetic("ns/out-v0/in-v0", [[0, 1]])
    os.rename(datasets_root / "ns" / "out-v0", datasets_root / "held")
    write_synthetic("ns/out-v0", [[0, 1, 2]])
    os.rename(datasets_root / "held" / "in-v0", datasets_root / "ns" / "out-v0" / "in-v0")
    before = tree_names(datasets_root)
    with pytest.raises(
        UsageError,
        match=re.escape("dataset 'ns/out-v0' contains dataset 'ns/out-v0/in-v0'"),
    ) as e:
        delete_dataset("ns/out-v0")
    assert "delete 'ns/out-v0/in-v0' first" in str(e.value)
    assert tree_names(datasets_root) == before
    assert len(load_dataset("ns/out-v0")) == 3
    delete_dataset("ns/out-v0/in-v0")
    delete_dataset("ns/out-v0")
    assert list_local_datasets() == {}


def test_unknown_episode_ids_are_one_line_in_the_family() -> None:
    """Issue 17 item 6: still a KeyError for Minari-style callers, but a HarvestError whose
    message prints as one plain line (a bare KeyError prints its message quoted)."""
    from collector.errors import EpisodeNotFoundError, HarvestError

    ds = load_dataset(collect_cartpole(episodes=5))
    with pytest.raises(EpisodeNotFoundError) as info:
        list(ds.iterate_episodes([1, 99]))
    assert isinstance(info.value, HarvestError) and isinstance(info.value, KeyError)
    assert str(info.value) == (
        "episode id(s) [99] not in 'cart/random-v0'; ds.episode_indices lists the ids it holds"
    )
