"""Tiny Stable-Baselines3 agents trained inside the tests (seconds each, one CPU thread).

``tests/conftest.py`` trains the CartPole PPO once per session (``ppo_zip``); the Box agents
(Pendulum) are trained by the tests that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym


def train(algo: str, env_id: str, steps: int, path: Path, **kwargs: Any) -> Path:
    """Train ``algo`` (an SB3 class name) on ``env_id`` for ``steps`` and save it to ``path``."""
    import stable_baselines3
    import torch
    from stable_baselines3.common.logger import Logger

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cls = getattr(stable_baselines3, algo)
        model = cls("MlpPolicy", gym.make(env_id), seed=0, device="cpu", **kwargs)
        # SB3's default logger makes a /tmp/SB3-<time> folder per learn(): the suite left dozens
        model.set_logger(Logger(folder=None, output_formats=[]))
        model.learn(steps)
    finally:
        torch.set_num_threads(threads)
    model.save(path)
    return path


def train_ppo_cartpole(path: Path) -> Path:
    """A PPO that balances CartPole-v1 clearly better than random (~10 s)."""
    return train(
        "PPO",
        "CartPole-v1",
        10_000,
        path,
        n_steps=256,
        batch_size=64,
        policy_kwargs={"net_arch": [32, 32]},
    )
