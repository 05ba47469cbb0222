"""A tiny checkpoint-backed policy for the provenance and Hub tests (no torch, no SB3).

``LinearPolicy(path)`` reads ``{"w": [4 floats], "b": float}`` from a JSON file and pushes a
CartPole cart right when ``w . obs + b > 0``; with ``noise`` it replaces that action by a
random one from its own per-episode stream, so a fingerprint depends on the seeding too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

#: Weights that balance the pole (the CartPoleHeuristic's rule), and ones that do not.
GOOD = {"w": [0.01, 0.1, 1.0, 0.5], "b": 0.0}
BAD = {"w": [0.0, 0.0, -1.0, -0.5], "b": 0.0}


def write_weights(path: Path, weights: dict[str, Any]) -> bytes:
    """Write ``weights`` as the JSON checkpoint ``LinearPolicy`` reads; return its bytes."""
    data = json.dumps(weights, sort_keys=True).encode()
    path.write_bytes(data)
    return data


class LinearPolicy:
    """A linear CartPole policy loaded from a JSON checkpoint file."""

    def __init__(self, path: str, noise: float = 0.0) -> None:
        data = json.loads(Path(path).read_text())
        self.w = np.asarray(data["w"], np.float64)
        self.b = float(data["b"])
        self.noise = float(noise)
        self._rng = np.random.default_rng(0)

    def reset(self, seed: int | None) -> None:
        """Reseed the per-episode noise stream."""
        self._rng = np.random.default_rng(seed)

    def act(self, obs: Any) -> int:
        """The linear rule, or with probability ``noise`` a random action."""
        if self.noise and self._rng.random() < self.noise:
            return int(self._rng.integers(2))
        return int(float(np.dot(self.w, np.asarray(obs, np.float64))) + self.b > 0)

    def provenance(self) -> dict[str, Any]:
        """What a loader reports about itself."""
        return {"loader": "linear-json", "noise": self.noise}
