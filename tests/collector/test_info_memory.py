"""Info recording in bounded memory (issue 18 item 3).

The info digest works per bounded chunk of the message, not per block of 4,096 episodes with
an 8-byte index per byte of info data, and the commit and spill windows count info bytes.
The digest values are the format: a fingerprint computed before the change is pinned here.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from helpers import read_episodes

from collector import storage
from collector.committer import Committer
from collector.data_collector import DataCollector
from collector.recorder import EpisodeRecorder
from collector.vector_recorder import VectorRecorder

#: ``_record_with_infos("pin/infos-v0")``'s fingerprint, computed on the code before issue 18.
PINNED_FINGERPRINT = "d7aafd06704a095ab563c8617df1c13e7b16ec2c482b48b993970415676a82e0"


MiB = 1024 * 1024


class _Infos(gym.Wrapper):
    """CartPole with deterministic infos of every kind the digest distinguishes.

    An int counter (widened to float at step 7 of episode 2: the canonical numbers keep the
    earlier digests), a vector, a key present only on some steps (mask), a late nested key,
    and a large non-integral float payload.
    """

    def __init__(self, env: gym.Env, width: int = 16) -> None:
        super().__init__(env)
        self.width = width
        self.episode = -1
        self.t = 0

    def _info(self) -> dict[str, Any]:
        e, t = self.episode, self.t
        info: dict[str, Any] = {
            "count": t + 0.5 if (e == 2 and t >= 7) else t,
            "vec": np.array([e, t, e * t], np.int16),
            "payload": np.linspace(e, t + 0.25, self.width, dtype=np.float32),
        }
        if t % 3 == 0:
            info["sparse"] = np.uint8(t % 256)
        if e >= 1 and t > 4:
            info["late"] = {"x": np.float64(t) / 3}
        return info

    def reset(self, **kwargs: Any) -> Any:
        obs, _ = self.env.reset(**kwargs)
        self.episode += 1
        self.t = 0
        return obs, self._info()

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, _ = self.env.step(action)
        self.t += 1
        return obs, reward, terminated, truncated, self._info()


def _record_with_infos(dataset_id: str, episodes: int = 5) -> str:
    collector = DataCollector(_Infos(gym.make("CartPole-v1")), record_infos=True)
    for e in range(episodes):
        collector.reset(seed=e)
        done, t = False, 0
        while not done:
            _, _, terminated, truncated, _ = collector.step((t * 7 + e) % 3 % 2)
            done, t = terminated or truncated, t + 1
    collector.create_dataset(dataset_id)
    collector.close()
    return dataset_id


def test_fingerprint_of_a_record_infos_dataset_is_unchanged() -> None:
    _record_with_infos("pin/infos-v0")
    report = storage.verify_dataset("pin/infos-v0")
    assert report.ok
    assert report.fingerprint == PINNED_FINGERPRINT, report.fingerprint
    episodes = read_episodes("pin/infos-v0")
    assert set(episodes[2]["infos"]) == {"count", "vec", "payload", "sparse", "late/x"}
    assert episodes[2]["infos"]["count"][0].dtype.kind == "f"  # widened in episode 2


def _batch_with_infos(episodes: int, length: int = 20, width: int = 64) -> storage.EpisodeBatch:
    """Episodes of ``length`` steps with a non-integral ``width``-float info payload per row."""
    rng = np.random.default_rng(episodes)
    steps, rows = episodes * length, episodes * (length + 1)
    return storage.EpisodeBatch(
        observations={"": rng.normal(size=(rows, 3)).astype(np.float32)},
        actions={"": rng.integers(0, 2, steps)},
        rewards=np.ones(steps),
        terminations=np.zeros(steps, bool),
        truncations=np.ones(steps, bool),
        table=storage.make_table(
            np.arange(episodes),
            list(range(episodes)),
            [length] * episodes,
            [float(length)] * episodes,
            [False] * episodes,
            [True] * episodes,
            [None] * episodes,
        ),
        infos={"payload": rng.normal(size=(rows, width)).astype(np.float32)},
        info_masks={"payload": np.ones(rows, bool)},
    )


def _digest_peak(batch: storage.EpisodeBatch) -> int:
    """Bytes ``episode_digests(batch)`` allocates at its peak, beyond its inputs."""
    tracemalloc.start()
    try:
        storage.episode_digests(batch)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_info_digests_work_in_memory_independent_of_the_episode_count() -> None:
    small, large = _batch_with_infos(100), _batch_with_infos(3000)
    info_bytes = large.infos["payload"].nbytes  # 15.4 MiB, hashed as float64: twice that
    assert info_bytes > 15 * MiB
    # before: every info byte of a 4,096-episode block joined, copied and indexed (8 bytes
    # each) at once: ~10x the info data (over 150 MiB here)
    peak_small, peak_large = _digest_peak(small), _digest_peak(large)
    assert peak_large < 8 * MiB
    assert peak_large < peak_small + 6 * MiB


def _record(rec: EpisodeRecorder, episode: int, payload: np.ndarray, steps: int = 9) -> None:
    obs = np.zeros(3, np.float32)
    rec.begin_episode(episode, episode, None, obs, {"payload": payload})
    for t in range(steps):
        rec.add_step(t % 2, obs, 1.0, False, t == steps - 1, {"payload": payload})
    rec.end_episode()


def test_recorder_bytes_count_infos() -> None:
    rec = EpisodeRecorder(spaces.Box(-1, 1, (3,), np.float32), spaces.Discrete(2), True)
    plain = EpisodeRecorder(rec.observation_space, rec.action_space, False)
    for r in (rec, plain):
        _record(r, 0, np.zeros(256))
    assert plain.nbytes == 10 * 12 + 9 * (8 + 8 + 2)
    assert rec.nbytes == plain.nbytes + 10 * (256 * 8 + 1)  # values and presence mask


def test_commit_window_counts_info_bytes() -> None:
    rec = EpisodeRecorder(spaces.Box(-1, 1, (3,), np.float32), spaces.Discrete(2), True)
    with storage.DatasetWriter("win/infos-v0") as writer:
        writer.start(
            storage.new_metadata(rec.observation_space, rec.action_space, None, record_infos=True)
        )
        committer = Committer(
            writer, rec, every_episodes=None, every_seconds=None, every_mb=0.05,
            compression="none", background=False,
        )  # fmt: skip
        try:
            for e in range(20):  # 20 KiB of infos an episode, under 0.5 KiB of the rest
                _record(rec, e, np.full(256, e, np.float64))
                committer.after_episode()
            committer.flush()
        finally:
            committer.close()
    assert committer.commits >= 7  # 0.05 MiB: every third episode, and the flush
    assert storage.verify_dataset("win/infos-v0").ok


def test_spill_window_counts_info_bytes(datasets_root: Path) -> None:
    env = _Infos(gym.make("CartPole-v1"), width=512)
    collector = DataCollector(env, record_infos=True, spill_bytes=64 * 1024)
    for e in range(30):  # ~2 KiB of infos a CartPole step; step data ~40 bytes
        collector.reset(seed=e)
        done = False
        while not done:
            _, _, terminated, truncated, _ = collector.step(e % 2)
            done = terminated or truncated
    spills = list((datasets_root / storage.SPILL_DIR).glob("*/spill-*.h5"))
    assert len(spills) >= 3
    collector.create_dataset("win/spilled-v0")
    collector.close()
    assert storage.verify_dataset("win/spilled-v0").ok


def test_vector_recorder_bytes_count_infos() -> None:
    args = (spaces.Box(-1, 1, (3,), np.float32), spaces.Discrete(2), 2)
    rec, plain = VectorRecorder(*args, record_infos=True), VectorRecorder(*args)
    obs, ids = np.zeros((2, 3), np.float32), np.arange(2)
    infos = {"payload": np.zeros((2, 256)), "_payload": np.ones(2, bool)}
    for r in (rec, plain):
        r.record(obs, infos, begin=ids, episode_ids=ids)
    assert rec.nbytes == plain.nbytes + 2 * (256 * 8 + 1)  # values and presence mask
