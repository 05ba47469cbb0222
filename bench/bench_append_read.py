"""Quick check (issue 18 item 1): a dataset built by many ``add_to_dataset`` calls reads as
fast as the same episodes collected in one run.

Builds, in a temp root, 3,000 seeded CartPole-v1 random-policy episodes twice: once recorded
and committed by one ``create_dataset`` (one shard), once by ``create_dataset`` of the first
10 then ``add_to_dataset`` every 10 episodes (299 calls). Checks both have the same
fingerprint, then times (median of interleaved repeats, a fresh ``load_dataset`` each) a full
``iterate_episodes`` pass touching observations and a ``batch_iter(256, 1)`` epoch with
``num_workers=0``. Reports the shard count and the per-call ``add_to_dataset`` time.

Run: ``python bench/bench_append_read.py [--episodes 3000] [--every 10] [--repeats 5]``
(about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym


def record(env: object, first: int, count: int) -> None:
    for seed in range(first, first + count):
        env.reset(seed=seed)  # type: ignore[attr-defined]
        env.action_space.seed(seed)  # type: ignore[attr-defined]
        done = False
        while not done:
            *_, term, trunc, _ = env.step(env.action_space.sample())  # type: ignore[attr-defined]
            done = term or trunc


def build(root: Path, episodes: int, every: int) -> list[float]:
    from collector.data_collector import DataCollector

    one = DataCollector(gym.make("CartPole-v1"), root=root)
    record(one, 0, episodes)
    one.create_dataset("bench/one-v0")
    one.close()
    many = DataCollector(gym.make("CartPole-v1"), root=root)
    record(many, 0, every)
    many.create_dataset("bench/appended-v0")
    calls = []
    for first in range(every, episodes, every):
        record(many, first, every)
        t = time.perf_counter()
        many.add_to_dataset("bench/appended-v0")
        calls.append(time.perf_counter() - t)
    many.close()
    return calls


def full_pass(dataset_id: str, root: Path) -> float:
    from curation.api import load_dataset

    t = time.perf_counter()
    ds = load_dataset(dataset_id, root=root)
    steps = sum(len(ep.observations) for ep in ds.iterate_episodes())
    assert steps > 0
    return time.perf_counter() - t


def batch_epoch(dataset_id: str, root: Path) -> float:
    from curation.api import load_dataset

    t = time.perf_counter()
    ds = load_dataset(dataset_id, root=root)
    n = sum(len(b.mask) for b in ds.pipeline(num_workers=0).batch_iter(256, 1, 1, seed=0))
    assert n > 0
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=3000)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    from collector import storage

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        calls = build(root, args.episodes, args.every)
        ids = {"one": "bench/one-v0", "app": "bench/appended-v0"}
        metas = {k: storage.read_metadata(storage.dataset_path(d, root)) for k, d in ids.items()}
        assert metas["one"]["fingerprint"] == metas["app"]["fingerprint"], "data differ"
        times: dict[str, list[float]] = {}
        for r in range(args.repeats):
            for k in ("one", "app") if r % 2 == 0 else ("app", "one"):
                times.setdefault(f"iterate {k}", []).append(full_pass(ids[k], root))
                times.setdefault(f"batch_iter {k}", []).append(batch_epoch(ids[k], root))
        print(f"episodes {args.episodes}, add_to_dataset every {args.every} ({len(calls)} calls)")
        print(
            f"shards: one run {len(metas['one']['shards'])}, appended {len(metas['app']['shards'])}"
        )
        tenth = max(1, len(calls) // 10)
        print(
            f"add_to_dataset per call: first {tenth} median "
            f"{1e3 * statistics.median(calls[:tenth]):.1f} ms, last {tenth} median "
            f"{1e3 * statistics.median(calls[-tenth:]):.1f} ms, max {1e3 * max(calls):.1f} ms"
        )
        for what in ("iterate", "batch_iter"):
            a = statistics.median(times[f"{what} one"])
            b = statistics.median(times[f"{what} app"])
            print(f"{what}: one run {1e3 * a:.1f} ms, appended {1e3 * b:.1f} ms ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
