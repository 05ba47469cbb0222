"""Policies and a config for the encoder tests (importable by name, also in subprocesses)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import gymnasium as gym


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
