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


class RandomLengthEnv(gym.Env):
    """Dict observations; each episode lasts 1-4 steps, drawn from the seeded RNG.

    Infos carry ``t`` every step and ``end`` only on the last one (a key that comes and goes),
    so sub-envs finish on the same step or not, and length-1 episodes are common.
    """

    observation_space = spaces.Dict(
        {"pos": spaces.Box(-1.0, 1.0, (2,), np.float32), "k": spaces.Discrete(5, start=-2)}
    )
    action_space = spaces.Discrete(2)

    def __init__(self) -> None:
        self._t = self._length = 0

    def _obs(self) -> dict[str, Any]:
        return {
            "pos": self.np_random.uniform(-1, 1, 2).astype(np.float32),
            "k": np.int64(self.np_random.integers(-2, 3)),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self._t, self._length = 0, int(self.np_random.integers(1, 5))
        return self._obs(), {"t": 0}

    def step(self, action: Any):  # type: ignore[override]
        self._t += 1
        done = self._t >= self._length
        info: dict[str, Any] = {"t": self._t}
        if done:
            info["end"] = 1.5
        return self._obs(), float(action) + 0.5, done, False, info


class RandomLengthVectorEnv(gym.vector.VectorEnv):
    """A numpy-vectorized ``RandomLengthEnv`` with one shared RNG (like ``CartPoleVectorEnv``).

    ``NEXT_STEP`` autoreset: the step after a sub-env's last one returns its reset observation
    with reward 0 and both flags False, and ignores its action.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 4) -> None:
        self.num_envs = num_envs
        self.single_observation_space = RandomLengthEnv.observation_space
        self.single_action_space = RandomLengthEnv.action_space
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._t = np.zeros(num_envs, np.int64)
        self._length = np.ones(num_envs, np.int64)
        self._pending = np.zeros(num_envs, bool)

    def _draw(self, mask: np.ndarray) -> None:
        self._t[mask] = 0
        self._length[mask] = self.np_random.integers(1, 5, int(mask.sum()))

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "pos": self.np_random.uniform(-1, 1, (self.num_envs, 2)).astype(np.float32),
            "k": self.np_random.integers(-2, 3, self.num_envs),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self._draw(np.ones(self.num_envs, bool))
        self._pending[:] = False
        return self._obs(), {}

    def step(self, actions: Any):  # type: ignore[override]
        restart = self._pending.copy()
        self._t += 1
        self._draw(restart)
        done = (self._t >= self._length) & ~restart
        reward = np.where(restart, 0.0, np.asarray(actions, np.float64) + 0.5)
        self._pending = done
        return self._obs(), reward, done, np.zeros(self.num_envs, bool), {}


if "harvest-test/RandomLength-v0" not in gym.registry:
    gym.register(
        "harvest-test/RandomLength-v0",
        entry_point="vec_envs:RandomLengthEnv",
        vector_entry_point="vec_envs:RandomLengthVectorEnv",
    )
