"""Test envs for the Ray runner tests, importable by Ray worker processes.

Ray workers build envs by id, in their own processes, so the env classes must live in a
module they can import by path (``tests/`` is on the workers' ``PYTHONPATH``), not in a test
module that pytest imports with ``--import-mode=importlib``. Use them as
``ray_envs:harvest-test/Flaky-v0``: gymnasium imports this module, which registers them.
"""

from __future__ import annotations

import os
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

FLAKY_ID = "harvest-test/Flaky-v0"


class FlakyEnv(gym.Env):
    """Seeded 20-step episodes; the episode reset with ``fail_seed`` misbehaves at step 5.

    ``mode="raise"`` raises ``RuntimeError``, ``mode="hang"`` sleeps for an hour. With
    ``marker`` (a file path) it misbehaves only while the file does not exist, creating it
    first: once over the whole run, across processes. Without ``marker`` it misbehaves on
    every attempt. ``step_seconds`` slows every step down. The data never depends on
    ``fail_seed``, ``marker`` or ``mode``: a well-behaved run gives the same episodes.
    """

    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Discrete(3)

    def __init__(
        self,
        fail_seed: int | None = None,
        marker: str | None = None,
        mode: str = "raise",
        step_seconds: float = 0.0,
    ) -> None:
        if mode not in ("raise", "hang"):
            raise ValueError(f"mode={mode!r}")
        self.fail_seed = fail_seed
        self.marker = marker
        self.mode = mode
        self.step_seconds = step_seconds
        self._seed: int | None = None
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self._seed = seed
        self._t = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def _misbehave(self) -> None:
        if self.marker is not None:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return  # already misbehaved once
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
        if self.mode == "hang":
            time.sleep(3600)
        raise RuntimeError(f"flaky env failed on seed {self._seed}")

    def step(self, action: Any):  # type: ignore[override]
        if self.step_seconds:
            time.sleep(self.step_seconds)
        self._t += 1
        if self._t == 5 and self.fail_seed is not None and self._seed == self.fail_seed:
            self._misbehave()
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return obs, float(action) - 1.0, False, self._t >= 20, {}


if FLAKY_ID not in gym.registry:
    gym.register(FLAKY_ID, entry_point="ray_envs:FlakyEnv")
