"""Per-episode seeds derived only from the run's root entropy and the episode id.

Episode ``i`` is reset with ``env_seed(entropy, i)`` and its policy draws from
``policy_seed(entropy, i)``, so an episode's content does not depend on which worker ran it,
in which order, or how often the run was restarted (DESIGN.md section 5).
"""

from __future__ import annotations

import numpy as np

__all__ = ["draw_entropy", "env_seed", "policy_seed", "stream_seed"]


def draw_entropy() -> int:
    """Fresh root entropy for a run with ``seed`` unset (persisted before collecting)."""
    return int(np.random.SeedSequence().entropy)


def stream_seed(entropy: int, episode_id: int, stream: int) -> int:
    """A 64-bit seed of stream ``stream`` for index ``episode_id`` of a run's entropy.

    Streams 0 and 1 are an episode's env and policy (``env_seed``, ``policy_seed``); other
    users (reference-score rollouts) take streams of their own.
    """
    state = np.random.SeedSequence(entropy, spawn_key=(episode_id, stream)).generate_state(
        2, np.uint32
    )
    return int(state[0]) | (int(state[1]) << 32)


def env_seed(entropy: int, episode_id: int) -> int:
    """Reset seed of episode ``episode_id`` (a 64-bit int).

    >>> env_seed(0, 3) == env_seed(0, 3) != env_seed(0, 4)
    True
    """
    return stream_seed(entropy, episode_id, 0)


def policy_seed(entropy: int, episode_id: int) -> int:
    """Seed of the policy's random stream for episode ``episode_id``, independent of the env's."""
    return stream_seed(entropy, episode_id, 1)
