"""Envs for vector-runner tests, registered at import (``vec_envs:harvest-test/...``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class FixedLengthEnv(gym.Env):
    """Seeded observations; every episode lasts ``length`` steps (1 = single-step episodes).

    With one length for all episodes, sub-envs started together finish on the same step.
    """

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(3)

    def __init__(self, length: int = 5) -> None:
        self.length = length
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self._t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {"t": 0}

    def step(self, action: Any):  # type: ignore[override]
        self._t += 1
        obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        info = {"t": self._t}
        if self._t == self.length:
            info["last"] = {"a": float(action)}  # a key that appears only at the end
        return obs, float(action), self._t >= self.length, False, info


if "harvest-test/FixedLength-v0" not in gym.registry:
    gym.register("harvest-test/FixedLength-v0", entry_point="vec_envs:FixedLengthEnv")
