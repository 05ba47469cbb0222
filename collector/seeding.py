"""Per-episode seeds derived only from the run's root entropy and the episode id.

Episode ``i`` is reset with ``env_seed(entropy, i)`` and its policy draws from
``policy_seed(entropy, i)``, so an episode's content does not depend on which worker ran it,
in which order, or how often the run was restarted (DESIGN.md section 5).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = ["draw_entropy", "env_seed", "policy_seed", "stream_seed"]


def draw_entropy() -> int:
    """Fresh root entropy for a run with ``seed`` unset (persisted before collecting)."""
    return int(np.random.SeedSequence().entropy)


def stream_seed(entropy: int, episode_id: int, stream: int) -> int:
    """A 64-bit seed of stream ``stream`` for index ``episode_id`` of a run's entropy.

    The first two 32-bit words of ``np.random.SeedSequence(entropy, spawn_key=(episode_id,
    stream))``'s state (data-affecting). Streams 0 and 1 are an episode's env and policy
    (``env_seed``, ``policy_seed``); other users (reference-score rollouts) take streams of
    their own. Ids below 2**32 are computed ``_BLOCK`` at a time (``_seed_block``): one
    ``SeedSequence`` costs ~10 us, two an episode, ~10% of a CartPole run.
    """
    if 0 <= episode_id <= _MASK and 0 <= stream <= _MASK and entropy >= 0:
        return int(
            _seed_block(int(entropy), int(stream), episode_id // _BLOCK)[episode_id % _BLOCK]
        )
    state = np.random.SeedSequence(entropy, spawn_key=(episode_id, stream)).generate_state(
        2, np.uint32
    )
    return int(state[0]) | (int(state[1]) << 32)


#: ``_seed_block``: consecutive episode ids whose seeds are computed together.
_BLOCK = 1024
# numpy's SeedSequence (numpy/random/bit_generator.pyx), whose pool of 4 words it mirrors
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _MASK = 0xCA01F9DD, 0x4973F715, 0xFFFFFFFF


@functools.lru_cache(maxsize=32)
def _seed_block(entropy: int, stream: int, block: int) -> np.ndarray:
    """``stream_seed`` of the ``_BLOCK`` ids from ``block * _BLOCK``, computed together.

    numpy's ``SeedSequence`` mixing, for all ids at once: the run's words are the same for
    every id, so only the id's word is mixed per id (uint64 lanes, masked to 32 bits).
    ``tests/collector/test_seeding.py`` holds it to numpy's, bit for bit.
    """
    run = []
    while entropy:
        run.append(entropy & _MASK)
        entropy >>= 32
    run = run or [0]
    run += [0] * (4 - len(run))  # padded to the pool: a spawn key follows
    const = _INIT_A

    def hashmix(value: Any) -> Any:
        nonlocal const
        value = value ^ const
        const = (const * _MULT_A) & _MASK
        value = (value * const) & _MASK
        return value ^ (value >> 16)

    def mix(x: Any, y: Any) -> Any:
        result = (_MIX_L * x - _MIX_R * y) & _MASK
        return result ^ (result >> 16)

    pool: list[Any] = [hashmix(word) for word in run[:4]]
    for src in range(4):
        for dst in range(4):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for word in run[4:]:  # a run's words past the pool (entropy over 128 bits)
        for dst in range(4):
            pool[dst] = mix(pool[dst], hashmix(word))
    pool = [np.full(_BLOCK, word, np.uint64) for word in pool]  # one lane an id from here
    ids = np.arange(block * _BLOCK, (block + 1) * _BLOCK, dtype=np.uint64)
    for word in (ids, stream):
        for dst in range(4):
            pool[dst] = mix(pool[dst], hashmix(word))
    out = np.zeros(_BLOCK, np.uint64)
    const = _INIT_B
    for k in range(2):
        value = pool[k] ^ np.uint64(const)
        const = (const * _MULT_B) & _MASK
        value = (value * np.uint64(const)) & np.uint64(_MASK)
        out |= (value ^ (value >> np.uint64(16))) << np.uint64(32 * k)
    out.flags.writeable = False
    return out


def env_seed(entropy: int, episode_id: int) -> int:
    """Reset seed of episode ``episode_id`` (a 64-bit int).

    >>> env_seed(0, 3) == env_seed(0, 3) != env_seed(0, 4)
    True
    """
    return stream_seed(entropy, episode_id, 0)


def policy_seed(entropy: int, episode_id: int) -> int:
    """Seed of the policy's random stream for episode ``episode_id``, independent of the env's."""
    return stream_seed(entropy, episode_id, 1)
