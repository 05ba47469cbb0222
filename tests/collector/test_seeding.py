"""Episode seeds are numpy's ``SeedSequence`` words, bit for bit (they are data-affecting)."""

from __future__ import annotations

import numpy as np
import pytest

from collector.seeding import env_seed, policy_seed, stream_seed


def numpy_seed(entropy: int, episode_id: int, stream: int) -> int:
    """The definition: the first two 32-bit words of the spawned ``SeedSequence``'s state."""
    seq = np.random.SeedSequence(entropy, spawn_key=(episode_id, stream))
    state = seq.generate_state(2, np.uint32)
    return int(state[0]) | (int(state[1]) << 32)


ENTROPIES = [0, 1, 12345, 2**32 - 1, 2**32, 2**64 + 3, 2**96 - 1, 2**127 + 5, 2**200 + 77]
IDS = [0, 1, 1023, 1024, 1025, 999_999, 2**32 - 1, 2**32, 2**40 + 9]


@pytest.mark.parametrize("entropy", ENTROPIES)
def test_seeds_are_numpy_seed_sequence_words(entropy: int) -> None:
    # computed 1,024 ids at a time (a SeedSequence each cost ~10 us, two an episode): the
    # same words for every entropy length, block edge and id past 32 bits
    rng = np.random.default_rng(entropy % 2**32)
    ids = IDS + rng.integers(0, 2**32, 40).tolist()
    for episode_id in ids:
        for stream in (0, 1, 2, 7):
            assert stream_seed(entropy, episode_id, stream) == numpy_seed(
                entropy, episode_id, stream
            ), (entropy, episode_id, stream)


def test_a_drawn_entropy_and_every_id_of_a_block_match() -> None:
    entropy = int(np.random.SeedSequence(2026).entropy)  # 128 bits, as draw_entropy gives
    got = [env_seed(entropy, i) for i in range(2048)]
    assert got == [numpy_seed(entropy, i, 0) for i in range(2048)]
    assert [policy_seed(entropy, i) for i in (0, 5, 2047)] == [
        numpy_seed(entropy, i, 1) for i in (0, 5, 2047)
    ]
