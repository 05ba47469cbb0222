"""Envs and a policy that return values their spaces cannot hold exactly (issue 16, item 3),
plus a policy that presses Ctrl-C and an env whose shards are slow to write (item 19).

Registered at import as ``misbehaving_envs:harvest-test/Misbehaving-v0`` (with a
``vector_entry_point``). ``kind`` picks what goes wrong at step ``bad_step`` of the env's
``bad_episode``-th reset (counted per env instance, from 0):

- ``short``: a shape (1,) observation for a Box(4,) space (numpy would broadcast it);
- ``big`` / ``negative``: 300 / -1 in an int64 array for a uint8 Box (numpy would wrap it);
- ``nan``: a NaN in a float32 observation (a valid value: must be stored as it is);
- ``wide``: a float64 observation whose values float32 holds exactly (must be stored);
- ``inexact``: a float64 observation 0.1, which float32 cannot hold exactly;
- ``info``: nothing goes wrong, but the info ``x`` is ``t`` (an int), except at step
  ``bad_step + 1`` of an episode reset with an odd seed: ``t + 0.5`` (Gymnasium's vector envs
  cast it into an int array when another sub-env's ``x`` is an int at that step);
- ``none``: nothing goes wrong.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

ENV_ID = "harvest-test/Misbehaving-v0"
LENGTH = 8


def _space(kind: str) -> spaces.Box:
    if kind in ("big", "negative"):
        return spaces.Box(0, 255, (4,), np.uint8)
    return spaces.Box(-np.inf, np.inf, (4,), np.float32)


def bad_obs(kind: str, t: int) -> Any:
    """The observation ``kind`` returns where it misbehaves."""
    if kind == "short":
        return np.array([0.5], np.float32)
    if kind == "big":
        return np.array([300, 1, 2, 3])
    if kind == "negative":
        return np.array([1, 2, -1, 3])
    if kind == "nan":
        return np.array([np.nan, 1, 2, 3], np.float32)
    if kind == "wide":
        return np.array([0.5, 1, 2, t], np.float64)
    if kind == "inexact":
        return np.array([0.1, 1, 2, 3], np.float64)
    return good_obs(kind, t)


def good_obs(kind: str, t: int) -> np.ndarray:
    """The observation of step ``t`` when nothing goes wrong (``t`` in every entry)."""
    return np.full(4, t, _space(kind).dtype)


class MisbehavingEnv(gym.Env):
    """Episodes of ``LENGTH`` steps; see the module docstring."""

    def __init__(self, kind: str = "none", bad_episode: int = 2, bad_step: int = 3) -> None:
        self.kind, self.bad_episode, self.bad_step = kind, bad_episode, bad_step
        self.observation_space = _space(kind)
        self.action_space = spaces.Discrete(2)
        self._resets = -1
        self._t = 0
        self._odd = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self._resets += 1
        self._t = 0
        self._odd = bool(seed is not None and seed % 2)
        return good_obs(self.kind, 0), {"x": 0}

    def step(self, action: Any):  # type: ignore[override]
        self._t += 1
        bad = self._resets == self.bad_episode and self._t == self.bad_step + 1
        obs = bad_obs(self.kind, self._t) if bad else good_obs(self.kind, self._t)
        return obs, 1.0, False, self._t >= LENGTH, {"x": info_x(self.kind, self._odd, self._t)}


def info_x(kind: str, odd_seed: bool, t: int) -> int | float:
    """The info ``x`` of step ``t`` (see ``info`` in the module docstring)."""
    return t + 0.5 if kind == "info" and odd_seed and t == 4 else t


class MisbehavingVectorEnv(VectorEnv):
    """A native vector env (NEXT_STEP autoreset) whose sub-env 0 misbehaves at vector step
    ``bad_step + 1`` of its ``bad_episode``-th episode."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self, num_envs: int = 2, kind: str = "none", bad_episode: int = 0, bad_step: int = 3
    ) -> None:
        self.num_envs = num_envs
        self.kind, self.bad_episode, self.bad_step = kind, bad_episode, bad_step
        self.single_observation_space = _space(kind)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._t = np.zeros(num_envs, np.int64)
        self._episode = np.zeros(num_envs, np.int64)
        self._pending = np.zeros(num_envs, bool)

    def _obs(self) -> np.ndarray:
        return np.stack([good_obs(self.kind, int(t)) for t in self._t])

    def reset(self, *, seed: Any = None, options: dict | None = None):  # type: ignore[override]
        self._t[:] = 0
        self._episode[:] = 0
        self._pending[:] = False
        return self._obs(), {}

    def step(self, actions: Any):  # type: ignore[override]
        restart = self._pending.copy()
        self._t += 1
        self._episode[restart] += 1
        self._t[restart] = 0
        obs: Any = self._obs()
        done = (self._t >= LENGTH) & ~restart
        if self._episode[0] == self.bad_episode and self._t[0] == self.bad_step + 1:
            bad = bad_obs(self.kind, int(self._t[0]))
            if bad.shape == obs.shape[1:]:
                obs = obs.astype(np.result_type(obs.dtype, bad.dtype))
                obs[0] = bad
            else:
                obs = np.stack([bad] * self.num_envs)
        self._pending = done
        rewards = np.where(restart, 0.0, 1.0)
        return obs, rewards, np.zeros(self.num_envs, bool), done, {}


def half_action(obs: Any) -> float:
    """A policy returning 0.5 for a Discrete action space (int64 cannot hold it)."""
    return 0.5


if ENV_ID not in gym.registry:
    gym.register(
        ENV_ID,
        entry_point="misbehaving_envs:MisbehavingEnv",
        vector_entry_point="misbehaving_envs:MisbehavingVectorEnv",
        disable_env_checker=True,
    )


class InterruptingPolicy:
    """Acts 0 and raises ``KeyboardInterrupt`` (a Ctrl-C) on its ``after``-th action.

    ``after`` is a class attribute (tests patch it): the policy config is data-affecting, so
    a resumed run must name the same one.
    """

    after = 0

    def __init__(self) -> None:
        self.calls = 0

    def act(self, obs: Any) -> int:
        self.calls += 1
        if self.calls == self.after:
            raise KeyboardInterrupt
        return 0


class NoiseFramesEnv(gym.Env):
    """Seeded, incompressible 48x48x3 frames, 100 steps an episode: slow shards to write."""

    observation_space = spaces.Box(0, 255, (48, 48, 3), np.uint8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self._t = 0
        return self.np_random.integers(0, 256, (48, 48, 3), np.uint8), {}

    def step(self, action: Any):  # type: ignore[override]
        self._t += 1
        obs = self.np_random.integers(0, 256, (48, 48, 3), np.uint8)
        return obs, 1.0, False, self._t >= 100, {}


FRAMES_ID = "harvest-test/NoiseFrames-v0"
if FRAMES_ID not in gym.registry:
    gym.register(FRAMES_ID, entry_point="misbehaving_envs:NoiseFramesEnv", disable_env_checker=True)
