"""Policies and a config for the encoder tests (importable by name, also in subprocesses)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np


def encoder_children(pid: int) -> list[int]:
    """Child processes of ``pid`` that run harvest's encoder."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"collector.encoder" in cmdline:
                found.append(int(child))
    return found


def config(dataset_id: str, encoder: str, policy: str = "Random", **extra: Any) -> dict[str, Any]:
    """Pendulum with infos, a commit every 3 episodes, the given encoder and test policy."""
    return {
        "env": "Pendulum-v1",
        "episodes": 12,
        "seed": 3,
        "record_infos": True,
        "dataset_id": dataset_id,
        "progress": False,
        "checkpoint": {"every_seconds": None, "every_mb": None, "every_episodes": 3},
        "storage": {"encoder": encoder},
        "policy": {"_target_": f"encoder_support.{policy}"},
        **extra,
    }


class Random:
    """Actions from the action space, seeded per episode."""

    def __init__(self, action_space: gym.Space, observation_space: gym.Space) -> None:
        self.action_space = action_space
        self.episode = -1

    def reset(self, seed: int | None = None) -> None:
        self.episode += 1
        self.action_space.seed(seed)

    def act(self, obs: Any) -> Any:
        return self.action_space.sample()


class KillsTheEncoder(Random):
    """The same actions; SIGKILLs harvest's encoder process during episode 5."""

    killed: list[int] = []

    def act(self, obs: Any) -> Any:
        if self.episode == 5 and not KillsTheEncoder.killed:
            for pid in encoder_children(os.getpid()):
                os.kill(pid, signal.SIGKILL)
                KillsTheEncoder.killed.append(pid)
        return self.action_space.sample()


class Slow(Random):
    """The same actions; slowly (2 ms a step) when ``ENCODER_TEST_SLOW`` is set: a run to kill."""

    def act(self, obs: Any) -> Any:
        if os.environ.get("ENCODER_TEST_SLOW"):
            time.sleep(0.002)
        return self.action_space.sample()


class Frames(gym.Env):
    """96x96x3 uint8 frames from the reset seed (27 kB each: the recorder's arrays are shared)."""

    metadata: dict[str, Any] = {"render_modes": []}
    observation_space = gym.spaces.Box(0, 255, (96, 96, 3), np.uint8)
    action_space = gym.spaces.Discrete(4)

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def step(self, action: Any):  # type: ignore[override]
        self.t += 1
        return self._frame(), float(action), False, self.t >= 120, {}

    def _frame(self) -> np.ndarray:
        return self.np_random.integers(0, 256, (96, 96, 3), dtype=np.uint8)


if "encoder_support/Frames-v0" not in gym.registry:
    gym.register("encoder_support/Frames-v0", entry_point="encoder_support:Frames")


def frames_config(dataset_id: str, encoder: str, policy: str = "Random") -> dict[str, Any]:
    """``Frames`` episodes, a commit every 2 episodes, the given encoder and test policy."""
    return {
        **config(dataset_id, encoder, policy),
        "env": "encoder_support:encoder_support/Frames-v0",
        "record_infos": False,
        "checkpoint": {"every_seconds": None, "every_mb": None, "every_episodes": 2},
    }
