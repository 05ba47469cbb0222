"""Bytes per frame and encode/decode speed of each ``storage.compression`` on real frames.

Records ALE Pong (210x160x3), Pong through ``AtariPreprocessing`` (84x84 gray) and
HalfCheetah-v5 with random actions, writes each as one shard per codec (whole shard: every
column and the episode table) and reads it back, checking every byte.

    .venv/bin/python bench/bench_codecs.py --frames 4000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import gymnasium as gym

from collector import storage
from collector.recorder import EpisodeRecorder

CODECS = ("lzf", "gzip", "zstd:1", "zstd:3", "zstd:9", "auto")


def record(env: gym.Env, frames: int, seed: int = 0) -> storage.EpisodeBatch:
    """``frames`` observations of random play, as episodes."""
    rec = EpisodeRecorder(env.observation_space, env.action_space)
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    rec.begin_episode(0, seed, None, obs, info)
    n, eid = 1, 0
    while n < frames:
        action = env.action_space.sample()
        obs, reward, term, trunc, info = env.step(action)
        n += 1
        rec.add_step(action, obs, reward, term, trunc, info)
        if term or trunc or n == frames:
            rec.end_episode(force_truncate=True)
            if n < frames:
                eid += 1
                obs, info = env.reset()
                rec.begin_episode(eid, None, None, obs, info)
                n += 1
    env.close()
    batch = rec.take()
    assert batch is not None
    return storage.fill_digests(batch)


def measure(name: str, batch: storage.EpisodeBatch, folder: Path) -> None:
    raw = sum(a.nbytes for a in batch.observations.values())
    rows = sum(len(a) for a in batch.observations.values()) // len(batch.observations)
    for codec in CODECS:
        t = time.perf_counter()
        image = storage.build_shard_bytes(batch, codec)
        enc = time.perf_counter() - t
        path = folder / f"{name}-{codec.replace(':', '')}.h5"
        path.write_bytes(image)
        t = time.perf_counter()
        back = storage.read_shard(path)
        dec = time.perf_counter() - t
        for key, column in batch.observations.items():
            assert back.observations[key].tobytes() == column.tobytes(), (name, codec, key)
        print(
            f"| {name} | {codec} | {len(image) / rows:,.1f} | "
            f"{raw / 1e6 / enc:,.0f} | {raw / 1e6 / dec:,.0f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4000)
    args = parser.parse_args()
    import ale_py

    gym.register_envs(ale_py)
    workloads = {
        "Pong 210x160x3": lambda: gym.make("ALE/Pong-v5"),
        "Pong 84x84": lambda: gym.wrappers.AtariPreprocessing(
            gym.make("ALE/Pong-v5", frameskip=1), frame_skip=4
        ),
        "HalfCheetah-v5": lambda: gym.make("HalfCheetah-v5"),
    }
    print("| workload | codec | B/frame (whole shard) | encode MB/s | decode MB/s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in workloads.items():
            measure(name, record(make(), args.frames), Path(tmp))


if __name__ == "__main__":
    main()
