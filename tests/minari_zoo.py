"""The space zoo the Minari interop tests share: every space kind Minari stores."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ZOO: dict[str, spaces.Space] = {
    "box": spaces.Box(-1.0, 1.0, (3,), np.float32),
    "box2d": spaces.Box(-np.inf, np.inf, (2, 3), np.float64),
    "box_scalar": spaces.Box(0, 10, (), np.int32),
    "discrete_start": spaces.Discrete(4, start=-2),
    "multidiscrete": spaces.MultiDiscrete([3, 5]),
    "multibinary": spaces.MultiBinary(4),
    "text": spaces.Text(6, charset="abc"),
    "dict": spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Box(0, 1, (2,), np.float32)}),
    "tuple": spaces.Tuple((spaces.Discrete(2), spaces.MultiBinary(3))),
    "deep": spaces.Dict(
        {"t": spaces.Tuple((spaces.Dict({"x": spaces.Box(0, 1, (1,)), "s": spaces.Text(4)}),))}
    ),
    "image": spaces.Box(0, 255, (32, 32, 3), np.uint8),
}


class ZooEnv(gym.Env):
    """Observations sampled from any space (seeded by reset), a few steps per episode."""

    def __init__(
        self, obs: spaces.Space, act: spaces.Space | None = None, horizon: int = 3
    ) -> None:
        self.horizon = horizon
        self.observation_space = obs
        self.action_space = act or spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        self.t = 0
        return self.observation_space.sample(), {"t": 0, "nested": {"v": 0.5}}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        info = {"t": self.t, "nested": {"v": 0.5 * self.t}}
        return self.observation_space.sample(), float(self.t), self.t >= self.horizon, False, info


def assert_same(ours: Any, theirs: Any, where: str = "") -> None:
    if isinstance(ours, dict):
        assert set(ours) <= set(theirs), where
        for k in ours:
            assert_same(ours[k], theirs[k], f"{where}/{k}")
    elif isinstance(ours, tuple):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{where}/{i}")
    elif isinstance(ours, list):
        assert list(ours) == list(theirs), where
    else:
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs), err_msg=where)


SEEDS = (0, 2**63 + 1, 7)  # the middle one needs uint64 in Minari's HDF5 attributes


def minari_record(
    dataset_id: str,
    obs: spaces.Space,
    act: spaces.Space | None = None,
    *,
    episodes: int = 3,
    data_format: str = "hdf5",
    record_infos: bool = True,
    jpeg_encoding: bool = True,
    **create: Any,
) -> Any:
    """A dataset written by Minari's own DataCollector under ``$MINARI_DATASETS_PATH``."""
    import warnings

    import minari

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about every missing author field
        env = minari.DataCollector(
            ZooEnv(obs, act),
            record_infos=record_infos,
            data_format=data_format,
            jpeg_encoding=jpeg_encoding,
        )
        for i in range(episodes):
            env.reset(seed=SEEDS[i % len(SEEDS)], options={"level": i, "cfg": {"k": 1.5}})
            done = False
            while not done:
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                done = terminated or truncated
        ds = env.create_dataset(dataset_id, **create)
        env.close()
    return ds
