"""Recycled recorder arrays (issue 19): a take gives the rows recorded, whatever came before."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from collector.recorder import EpisodeRecorder


def test_recycled_arrays_record_the_same_rows_as_fresh_ones() -> None:
    obs_space = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    act_space = spaces.Discrete(3)
    recycled, fresh = EpisodeRecorder(obs_space, act_space), EpisodeRecorder(obs_space, act_space)
    rng = np.random.default_rng(0)
    ep, open_steps = 0, 0
    for window in range(8):
        for _ in range(1 + window % 3):
            length = int(rng.integers(1, 700))  # some longer than the 1024-row arrays hold
            frames = rng.integers(0, 256, (length + 1, 8, 8, 3), dtype=np.uint8)
            actions = rng.integers(0, 3, length)
            for rec in (recycled, fresh):
                rec.begin_episode(ep, ep, None, frames[0], {})
                for t in range(length):
                    rec.add_step(
                        int(actions[t]), frames[t + 1], float(t), False, t == length - 1, {}
                    )
                rec.end_episode()
            ep += 1
        # an episode left open across the take: its rows move to the front of the next arrays
        open_steps = int(rng.integers(0, 50))
        frames = rng.integers(0, 256, (open_steps + 1, 8, 8, 3), dtype=np.uint8)
        for rec in (recycled, fresh):
            rec.begin_episode(ep, ep, None, frames[0], {})
            for t in range(open_steps):
                rec.add_step(0, frames[t + 1], 0.0, False, False, {})
        a, b = recycled.take(), fresh.take()
        assert a is not None and b is not None
        assert np.array_equal(a.observations[""], b.observations[""])
        assert np.array_equal(a.actions[""], b.actions[""])
        assert np.array_equal(a.rewards, b.rewards)
        assert a.table["id"].tolist() == b.table["id"].tolist()
        recycled.recycle(a)  # its arrays are reused by the next take; `fresh` never reuses
        for rec in (recycled, fresh):  # end the open episode in the next window
            rec.add_step(1, frames[-1], 1.0, True, False, {})
            rec.end_episode()
        ep += 1
