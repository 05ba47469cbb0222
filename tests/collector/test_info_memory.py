"""Info recording in bounded memory (issue 18 item 3).

The info digest works per bounded chunk of the message, not per block of 4,096 episodes with
an 8-byte index per byte of info data, and the commit and spill windows count info bytes.
The digest values are the format: a fingerprint computed before the change is pinned here.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from helpers import read_episodes

from collector import storage
from collector.data_collector import DataCollector

#: ``_record_with_infos("pin/infos-v0")``'s fingerprint, computed on the code before issue 18.
PINNED_FINGERPRINT = "d7aafd06704a095ab563c8617df1c13e7b16ec2c482b48b993970415676a82e0"


class _Infos(gym.Wrapper):
    """CartPole with deterministic infos of every kind the digest distinguishes.

    An int counter (widened to float at step 7 of episode 2: the canonical numbers keep the
    earlier digests), a vector, a key present only on some steps (mask), a late nested key,
    and a large non-integral float payload.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.episode = -1
        self.t = 0

    def _info(self) -> dict[str, Any]:
        e, t = self.episode, self.t
        info: dict[str, Any] = {
            "count": t + 0.5 if (e == 2 and t >= 7) else t,
            "vec": np.array([e, t, e * t], np.int16),
            "payload": np.linspace(e, t + 0.25, 16, dtype=np.float32),
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
