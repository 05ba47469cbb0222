"""An env that hangs in ``step``: for the local runner's step deadline and commit cadence.

Importing this module registers ``harvest-test/Hang-v0`` (use ``hang_envs:harvest-test/Hang-v0``
from a subprocess). Episodes are 10 seeded steps; the env's ``hang_episode``-th reset (0-based,
counted per env instance) starts an episode whose step ``hang_step`` sleeps ``seconds`` (or
with ``spin=True`` loops in Python for that long).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

HANG_ID = "harvest-test/Hang-v0"


class HangEnv(gym.Env):
    """10-step episodes; one step of one episode sleeps (an env that stopped answering)."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(
        self, hang_episode: int = 1, hang_step: int = 3, seconds: float = 3600.0, spin: bool = False
    ):
        self.hang_episode, self.hang_step, self.seconds = hang_episode, hang_step, seconds
        self.spin = spin
        self._resets = 0
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self._episode = self._resets
        self._resets += 1
        self._t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action: Any):  # type: ignore[override]
        if self._episode == self.hang_episode and self._t == self.hang_step:
            if self.spin:
                end = time.monotonic() + self.seconds
                while time.monotonic() < end:
                    pass
            else:
                time.sleep(self.seconds)
        self._t += 1
        obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return obs, float(action), False, self._t >= 10, {}


if HANG_ID not in gym.registry:
    gym.register(HANG_ID, entry_point="hang_envs:HangEnv")
