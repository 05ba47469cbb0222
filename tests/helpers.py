"""Test helpers: read a dataset back without the curation reader; the test envs; and running
the ``collect`` command line in a subprocess that imports this checkout's code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from collector import storage
from collector.spaces import space_from_json, unflatten


def read_episodes(
    dataset_id: str, root: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """Every committed episode of a dataset, sorted by id, as plain dicts.

    Keys: id, seed (None when absent), options, metadata, length, return, terminated, truncated,
    observations (nested like the space), actions, rewards, terminations, truncations,
    infos (dict name -> (values, mask)) or None.
    """
    path = storage.dataset_path(dataset_id, root)
    meta = storage.read_metadata(path, dataset_id)
    obs_space = space_from_json(meta["observation_space"])
    act_space = space_from_json(meta["action_space"])
    out = []
    for entry in meta["shards"]:
        batch = storage.read_shard(path / storage.DATA_DIR / entry["file"])
        t = batch.table
        positions, mapped = storage.map_shard_ids(entry, t["id"])
        for e, new_id in zip(positions.tolist(), mapped.tolist(), strict=True):
            length = int(t["length"][e])
            o0, s0 = int(t["obs_offset"][e]), int(t["step_offset"][e])
            orows, srows = slice(o0, o0 + length + 1), slice(s0, s0 + length)
            infos = None
            if batch.infos is not None:
                infos = {n: (v[orows], batch.info_masks[n][orows]) for n, v in batch.infos.items()}
            out.append(
                {
                    "id": new_id,
                    "seed": int(t["seed"][e]) if t["has_seed"][e] else None,
                    "options": None if t["options"][e] is None else json.loads(t["options"][e]),
                    "metadata": None if t["metadata"][e] is None else json.loads(t["metadata"][e]),
                    "length": length,
                    "return": float(t["return"][e]),
                    "terminated": bool(t["terminated"][e]),
                    "truncated": bool(t["truncated"][e]),
                    "observations": unflatten(
                        obs_space, {k: v[orows] for k, v in batch.observations.items()}
                    ),
                    "actions": unflatten(
                        act_space, {k: v[srows] for k, v in batch.actions.items()}
                    ),
                    "rewards": batch.rewards[srows],
                    "terminations": batch.terminations[srows],
                    "truncations": batch.truncations[srows],
                    "infos": infos,
                }
            )
    return sorted(out, key=lambda ep: ep["id"])


def assert_same_episode(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two recorded episodes hold the same data (ids may differ)."""
    for key in ("length", "terminated", "truncated"):
        assert a[key] == b[key], key
    for key in ("rewards", "terminations", "truncations"):
        np.testing.assert_array_equal(a[key], b[key])
    _assert_nested_equal(a["observations"], b["observations"])
    _assert_nested_equal(a["actions"], b["actions"])


def _assert_nested_equal(x: Any, y: Any) -> None:
    if isinstance(x, dict):
        assert list(x) == list(y)
        for k in x:
            _assert_nested_equal(x[k], y[k])
    elif isinstance(x, tuple | list) and not isinstance(x, np.ndarray):
        assert len(x) == len(y)
        for i, j in zip(x, y, strict=True):
            _assert_nested_equal(i, j)
    else:
        np.testing.assert_array_equal(x, y)


def always_left(obs: Any) -> int:
    """A plain-function policy, importable as ``helpers.always_left`` for ``_target_`` tests."""
    return 0


import gymnasium as gym  # noqa: E402
from gymnasium import spaces  # noqa: E402


class UnseededEnv(gym.Env):
    """Negative control: its start state comes from an RNG that ``reset(seed=...)`` ignores."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self) -> None:
        self._rng = np.random.default_rng()  # deliberately unseeded
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self._t = 0
        return self._rng.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action: Any):  # type: ignore[override]
        self._t += 1
        obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return obs, 1.0, False, self._t >= 5, {}


class SequenceObsEnv(gym.Env):
    """An env whose observation space harvest cannot store."""

    observation_space = spaces.Sequence(spaces.Discrete(2))
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        return (0,), {}

    def step(self, action: Any):  # type: ignore[override]
        return (0,), 0.0, True, False, {}


class SlowEnv(gym.Env):
    """Seeded, 50-step episodes that take ~1 ms a step: room to kill a run in the middle."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self._t = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action: Any):  # type: ignore[override]
        import time

        time.sleep(0.001)
        self._t += 1
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return obs, float(action), False, self._t >= 50, {}


class BlankFramesEnv(gym.Env):
    """64x64x3 uint8 frames that are all zero: large decoded, tiny compressed. 50 steps."""

    observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self._t = 0
        return np.zeros((64, 64, 3), np.uint8), {}

    def step(self, action: Any):  # type: ignore[override]
        self._t += 1
        return np.zeros((64, 64, 3), np.uint8), 1.0, False, self._t >= 50, {}


def register_test_envs() -> None:
    """Register the test envs (idempotent)."""
    for name, cls in (
        ("harvest-test/Unseeded-v0", "UnseededEnv"),
        ("harvest-test/SequenceObs-v0", "SequenceObsEnv"),
        ("harvest-test/Slow-v0", "SlowEnv"),
        ("harvest-test/BlankFrames-v0", "BlankFramesEnv"),
    ):
        if name not in gym.registry:
            gym.register(name, entry_point=f"helpers:{cls}")


register_test_envs()


def collect_cartpole(
    dataset_id: str,
    episodes: int,
    *,
    seed: int = 0,
    policy: str = "RandomPolicy",
    shard_every: int | None = None,
    **overrides: Any,
) -> str:
    """A CartPole-v1 dataset through ``collect``; ``shard_every=N``: one small shard per N episodes.

    ``overrides`` replace top-level config keys (``env``, ``datasets_root``, ...).
    """
    from collector.collect import collect

    cfg: dict[str, Any] = {
        "env": "CartPole-v1",
        "episodes": episodes,
        "seed": seed,
        "dataset_id": dataset_id,
        "policy": {"_target_": f"collector.policies.{policy}"},
    }
    if shard_every is not None:
        cfg["checkpoint"] = {"every_episodes": shard_every}
        cfg["storage"] = {"shard_mb": 0.001}  # one shard per commit
    cfg.update(overrides)
    collect(cfg)
    return dataset_id


def record_cartpole(dataset_id: str, episodes: int = 3, **create: Any) -> str:
    """A small CartPole dataset through DataCollector (to pass create_dataset fields)."""
    from collector.data_collector import DataCollector

    env = DataCollector(gym.make("CartPole-v1"))
    for i in range(episodes):
        env.reset(seed=i)
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(i % 2)
            done = terminated or truncated
    env.create_dataset(dataset_id, **create)
    env.close()
    return dataset_id


# -- subprocesses -----------------------------------------------------------------------------

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
#: ``PYTHONPATH`` for subprocesses and Ray workers: the test envs, then this checkout (so they
#: import the code under test even where another checkout is installed in editable mode).
PYTHONPATH = os.pathsep.join([str(TESTS), str(REPO)])
#: The ``collect`` console entry point, for ``python -c``.
CLI = "import sys; from collector.cli import main; sys.argv[0] = 'collect'; main()"


def folder_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (links not followed): what ``du`` counts."""
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)


def cli_env(root: Path) -> dict[str, str]:
    """The environment of a ``collect`` (or ``curate``) subprocess writing under ``root``."""
    env = {**os.environ, "HARVEST_DATASETS": str(root), "PYTHONPATH": PYTHONPATH}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def spawn(code: str, *args: str, root: Path) -> subprocess.Popen[str]:
    """Start ``python -c code *args`` writing under ``root`` (output piped, no stdin)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=cli_env(root),
        cwd=root.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def committed_episodes(dataset_id: str, root: Path | None = None) -> int | None:
    """``total_episodes`` of the last commit, or None before the first (or while unreadable)."""
    try:
        meta = json.loads(
            (storage.dataset_path(dataset_id, root) / storage.METADATA_FILE).read_text()
        )
        return int(meta["total_episodes"])
    except (OSError, ValueError, KeyError):
        return None


def wait_for_commit(
    dataset_id: str, timeout: float, root: Path | None = None, *, above: int = 0
) -> int:
    """Wait for a commit of more than ``above`` episodes (at least one); returns its count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        total = committed_episodes(dataset_id, root)
        if total is not None and total > max(above, 0):
            return total
        time.sleep(0.01)
    raise AssertionError(f"no commit of more than {above} episodes of {dataset_id} in {timeout} s")


def constant_action(obs: Any, value: Any = 0) -> Any:
    """A policy that always returns ``value`` (``policy.value=5``: invalid CartPole actions)."""
    return value
