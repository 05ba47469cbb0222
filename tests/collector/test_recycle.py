"""Recycled recorder arrays (issue 19): a take gives the rows recorded, whatever came before."""

from __future__ import annotations

import sys

import numpy as np
import pytest
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


def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_POPULATE_WRITE is Linux's")
def test_fresh_frame_arrays_are_populated_off_the_recording_thread() -> None:
    # a 100 kB frame written to never-touched memory costs ~100 us of page faults on a VM,
    # more than stepping the env (issue 19): large arrays are populated by another thread
    import time

    obs_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)  # 12 kB a frame, 12 MiB a store
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (301, 64, 64, 3), dtype=np.uint8)
    before = _rss_bytes()
    rec = EpisodeRecorder(obs_space, spaces.Discrete(3))
    store = rec.row_bytes * 1024
    rec.begin_episode(0, 0, None, frames[0], {})
    deadline = time.monotonic() + 10
    while _rss_bytes() - before < 0.9 * store and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _rss_bytes() - before >= 0.9 * store
    # the arrays of the last take of a run are never recorded into: left untouched
    rec.add_step(1, frames[1], 0.0, False, True, {})
    rec.end_episode()
    assert rec.take() is not None
    before = _rss_bytes()
    time.sleep(0.3)
    assert _rss_bytes() - before < 0.5 * store
    # and the rows recorded meanwhile are those given (populating never writes a byte)
    rec = EpisodeRecorder(obs_space, spaces.Discrete(3))
    rec.begin_episode(0, 0, None, frames[0], {})
    for t in range(300):
        rec.add_step(1, frames[t + 1], 0.0, False, t == 299, {})
    rec.end_episode()
    batch = rec.take()
    assert batch is not None and np.array_equal(batch.observations[""], frames)
