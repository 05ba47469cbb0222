"""``create_dataset_from_buffers`` (Minari's buffer API) and ``create_dataset``'s return value.

Buffers in Minari's own layout (``minari.data_collector.EpisodeBuffer``, built step by step by
Minari's ``add_step_data``) must make the same dataset, fingerprint included, as the same
episodes recorded by ``DataCollector``; values are checked exactly as ``DataCollector`` checks
them; and both return the opened ``Dataset`` with the summary still available.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from minari_zoo import ZOO, ZooEnv

from collector import DataCollector, DatasetSummary, create_dataset_from_buffers, storage
from collector.errors import CollectionError, DatasetExistsError, DatasetIdError, UsageError
from curation import Dataset, load_dataset

REPO = Path(__file__).resolve().parents[2]


def action_for(space: spaces.Space, t: int) -> Any:
    """A deterministic action (no shared RNG), so both recordings take the same ones."""
    space.seed(t)
    return space.sample()


def run(env: gym.Env, seeds: list[int], options: dict | None = None) -> list[dict[str, Any]]:
    """Run episodes on ``env`` and return them as Minari-layout dict buffers (lists)."""
    out = []
    for s in seeds:
        obs, info = env.reset(seed=s, options=options)
        ep: dict[str, Any] = {"seed": s, "options": options, "observations": [obs]}
        ep.update(actions=[], rewards=[], terminations=[], truncations=[], infos=[info])
        done, t = False, 0
        while not done:
            action = action_for(env.action_space, t)
            obs, rew, term, trunc, info = env.step(action)
            for key, value in zip(
                ("actions", "observations", "rewards", "terminations", "truncations", "infos"),
                (action, obs, rew, term, trunc, info),
                strict=True,
            ):
                ep[key].append(value)
            done, t = term or trunc, t + 1
        out.append(ep)
    return out


def collected(env: gym.Env, dataset_id: str, seeds: list[int], **kw: Any) -> tuple[Any, list]:
    """The same episodes through ``DataCollector`` (and their buffers, from the same run)."""
    collector = DataCollector(env, **kw)
    buffers = run(collector, seeds)
    return collector.create_dataset(dataset_id), buffers


def minari_buffers(episodes: list[dict[str, Any]], infos: bool) -> list[Any]:
    """The episodes as Minari 0.5.4 builds them: ``EpisodeBuffer.add_step_data`` per step."""
    from minari.data_collector import EpisodeBuffer

    out = []
    for ep in episodes:
        buf = EpisodeBuffer(
            seed=ep["seed"],
            options=ep["options"],
            observations=ep["observations"][0],
            infos=ep["infos"][0] if infos else None,
        )
        for t in range(len(ep["actions"])):
            buf = buf.add_step_data(
                {
                    "observation": ep["observations"][t + 1],
                    "action": ep["actions"][t],
                    "reward": ep["rewards"][t],
                    "terminated": ep["terminations"][t],
                    "truncated": ep["truncations"][t],
                    "info": ep["infos"][t + 1] if infos else {},
                }
            )
        out.append(buf)
    return out


@pytest.mark.parametrize("name", ["box", "discrete_start", "text", "dict", "tuple", "deep"])
def test_minari_buffers_make_the_same_dataset_as_data_collector(name: str) -> None:
    pytest.importorskip("minari")
    pytest.importorskip("jax")
    space = ZOO[name]
    seeds = [3, 4, 2**63 + 5]
    ours, episodes = collected(ZooEnv(space), f"zoo/{name}-dc-v0", seeds, record_infos=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jax's own start-up warnings
        buffers = minari_buffers(episodes, infos=True)
    made = create_dataset_from_buffers(f"zoo/{name}-buf-v0", buffers, env=ZooEnv(space))

    assert isinstance(made, Dataset)
    assert made.fingerprint == ours.fingerprint
    assert made.total_steps == ours.total_steps == sum(len(e["actions"]) for e in episodes)
    assert made.metadata["record_infos"] is True
    assert made.metadata["provenance"]["created_by"] == "create_dataset_from_buffers"
    for a, b in zip(made, ours, strict=True):
        assert a.seed == b.seed
        np.testing.assert_array_equal(a.rewards, b.rewards)
    assert storage.verify_dataset(made.id).ok


def test_stacked_dict_buffers_without_infos_match_and_commit_once() -> None:
    ours, episodes = collected(gym.make("CartPole-v1"), "cart/dc-v0", [0, 1, 2, 3])
    buffers = [
        {
            "id": i,
            "seed": ep["seed"],
            "observations": np.stack(ep["observations"]),
            "actions": np.asarray(ep["actions"]),
            "rewards": np.asarray(ep["rewards"]),
            "terminations": np.asarray(ep["terminations"]),
            "truncations": np.asarray(ep["truncations"]),
        }
        for i, ep in enumerate(episodes)
    ]
    made = create_dataset_from_buffers(
        "cart/buf-v0",
        buffers,
        env="CartPole-v1",
        author="ann",
        author_email="ann@example.org",
        algorithm_name="alternate",
        code_permalink="https://example.org/code",
        description="four episodes",
        requirements=["gymnasium"],
        ref_min_score=1.0,
        ref_max_score=500.0,
        data_format="hdf5",
    )
    assert made.fingerprint == ours.fingerprint
    meta = made.metadata
    assert meta["record_infos"] is False
    assert len(meta["shards"]) == 1  # one shard, one commit
    assert meta["env_spec"]["id"] == "CartPole-v1"
    assert (meta["author"], meta["description"], meta["ref_max_score"]) == (
        "ann",
        "four episodes",
        500.0,
    )
    again = load_dataset("cart/buf-v0")
    np.testing.assert_array_equal(again[2].observations, buffers[2]["observations"])
    np.testing.assert_array_equal(again[2].actions, buffers[2]["actions"])


def test_spaces_without_env_and_an_empty_list() -> None:
    box = spaces.Box(-1, 1, (2,), np.float32)
    made = create_dataset_from_buffers(
        "plain/empty-v0", [], observation_space=box, action_space=spaces.Discrete(2)
    )
    assert made.total_episodes == 0 and made.env_spec is None
    assert made.observation_space == box


def test_create_dataset_returns_the_opened_dataset_with_the_summary(datasets_root: Path) -> None:
    ds, _ = collected(gym.make("CartPole-v1"), "cart/opened-v0", [5, 6])
    assert isinstance(ds, Dataset) and len(ds) == 2
    assert isinstance(ds.summary, DatasetSummary)
    assert ds.summary == DatasetSummary(
        "cart/opened-v0", datasets_root / "cart/opened-v0", 2, ds.total_steps, ds.fingerprint
    )
    # the summary's fields, as callers of the DatasetSummary it returned before used them
    assert (ds.dataset_id, ds.path) == ("cart/opened-v0", datasets_root / "cart/opened-v0")
    summary = ds.summary
    assert summary.summary is summary
    assert ds[1].seed == 6


def test_without_curation_imported_create_dataset_returns_the_summary(tmp_path: Path) -> None:
    """``collector`` never imports ``curation``: with no opener registered, the summary."""
    code = (
        "import sys, gymnasium as gym\n"
        "from collector import DataCollector, DatasetSummary, create_dataset_from_buffers\n"
        "env = DataCollector(gym.make('CartPole-v1'))\n"
        "env.reset(seed=0); env.step(0)\n"
        "s = env.create_dataset('a/b-v0')\n"
        "assert type(s) is DatasetSummary and s.total_steps == 1, s\n"
        "assert 'curation' not in sys.modules\n"
        "print('ok')\n"
    )
    env = {"HARVEST_DATASETS": str(tmp_path / "ds"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def cartpole_buffer(**change: Any) -> dict[str, Any]:
    env = gym.make("CartPole-v1")
    (ep,) = run(env, [0])
    ep.pop("infos")
    ep["observations"] = np.stack(ep["observations"])
    ep.update(change)
    return ep


def refused(kind: type[Exception], match: str, *args: Any, **kw: Any) -> None:
    kw.setdefault("env", "CartPole-v1")
    with pytest.raises(kind, match=match):
        create_dataset_from_buffers("bad/one-v0", *args, **kw)
    assert not storage.dataset_path("bad/one-v0").exists()


@pytest.mark.parametrize(
    ("change", "kind", "match"),
    [
        (  # float64 values a float32 column would round: never cast silently
            {"observations": np.full((10, 4), 0.1, np.float64)},
            CollectionError,
            r"^create_dataset_from_buffers: buffer 0: episode 0 reset: observation value 0\.1 "
            r"at \(0,\) \(float64\) cannot be stored exactly as float32",
        ),
        (
            {"observations": np.zeros((10, 5), np.float32)},
            CollectionError,
            r"observation has shape \(5,\) where its space's is \(4,\)",
        ),
        ({"actions": [0, 0.5, 1]}, CollectionError, "action value 0.5"),
        ({"actions": [0]}, UsageError, r"buffer 0 actions has 1 rows where the episode needs"),
        ({"rewards": []}, UsageError, "buffer 0 has no steps"),
        ({"id": 3}, UsageError, "buffer 0 has id 3; episodes are numbered 0..N-1"),
        ({"seed": -1}, UsageError, r"buffer 0 has seed -1; a seed is None or an int"),
        ({"options": {"f": object()}}, UsageError, "buffer 0 has options that are not a JSON"),
        ({"extra": 1}, UsageError, r"buffer 0 has unknown key\(s\) \['extra'\]"),
        ({"infos": {"x": [1, 2]}}, UsageError, r"infos\['x'\] has 2 rows"),
    ],
)
def test_values_are_checked_like_data_collector(
    change: dict[str, Any], kind: type[Exception], match: str
) -> None:
    buf = cartpole_buffer()
    steps = len(buf["rewards"])
    for key, value in change.items():  # sized to the episode unless the test is about rows
        if isinstance(value, np.ndarray) and key == "observations":
            value = np.resize(value, (steps + 1, *value.shape[1:]))
        elif key == "actions" and len(value) == 3:
            value = [*value, *[0] * (steps - 3)]
        buf[key] = value
    refused(kind, match, [buf])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"data_format": "arrow"}, r"^data_format='arrow': harvest writes its own HDF5 shards"),
        ({"jpeg_encoding": True}, r"^jpeg_encoding=True: harvest stores frames losslessly"),
        ({"env": None}, "pass env, or both observation_space and action_space"),
        ({"env": 3}, "env is int; pass an env id"),
        ({"env": "CartPole-v9"}, "not a registered Gymnasium environment"),
        ({"env": None, "expert_policy": abs, "observation_space": spaces.Discrete(2),
          "action_space": spaces.Discrete(2)}, "expert_policy needs env or eval_env"),
    ],
)  # fmt: skip
def test_arguments_harvest_cannot_honour_are_refused_in_one_line(
    kw: dict[str, Any], match: str
) -> None:
    refused(UsageError, match, [cartpole_buffer()], **kw)


def test_not_a_list_of_buffers_and_taken_or_bad_ids() -> None:
    refused(UsageError, re.escape("buffer is str; pass a list"), "CartPole-v1")
    refused(UsageError, "buffer 0 is int; pass minari EpisodeBuffer", [5])
    with pytest.raises(DatasetIdError):
        create_dataset_from_buffers("no-version", [cartpole_buffer()], env="CartPole-v1")
    create_dataset_from_buffers("taken/one-v0", [cartpole_buffer()], env="CartPole-v1")
    with pytest.raises(DatasetExistsError, match="already exists"):
        create_dataset_from_buffers("taken/one-v0", [cartpole_buffer()], env="CartPole-v1")


def test_an_unknown_eval_env_is_refused_in_one_line_before_anything_is_written() -> None:
    env = DataCollector(gym.make("CartPole-v1"))
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(UsageError, match=r"^eval_env='CartPole-v9' is not a registered"):
        env.create_dataset("bad/eval-v0", eval_env="CartPole-v9")
    refused(UsageError, "^eval_env='CartPole-v9'", [cartpole_buffer()], eval_env="CartPole-v9")
    assert env.create_dataset("bad/eval-v0").total_steps == 1  # the episode was kept
