"""Test policies that act in rows (``reset_row``/``act_rows``): one call for a vector env's
batch, each row its own episode and stream, the same actions as one episode at a time."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from collector.policies import CartPoleHeuristic, RandomPolicy


class RowsRandom(RandomPolicy):
    """``RandomPolicy`` with a ``RandomPolicy`` per row."""

    def __init__(self, action_space: spaces.Space) -> None:
        super().__init__(action_space)
        self.rows: dict[int, RandomPolicy] = {}

    def reset_row(self, row: int, seed: int | None) -> None:
        self.rows.setdefault(row, RandomPolicy(self.action_space)).reset(seed)

    def act_rows(self, obs: Any, n: int) -> np.ndarray:
        idle = RandomPolicy(self.action_space)
        return np.array([self.rows.get(i, idle).act(None) for i in range(n)])


class RowsHeuristic(CartPoleHeuristic):
    """``CartPoleHeuristic``: deterministic, so every row shares the rule."""

    def reset_row(self, row: int, seed: int | None) -> None:
        pass

    def act_rows(self, obs: Any, n: int) -> np.ndarray:
        return self.act_batch(obs, n)
