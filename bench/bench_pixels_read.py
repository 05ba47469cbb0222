"""batch_iter on pixels: peak RSS, transitions/s against numpy, first batch (issue 19 item 5).

Two datasets of real ``ALE/Pong-v5`` frames from a random policy (needs ``ale-py``):
``raw`` (210x160x3 uint8, about 8,000 frames, 800 MB decoded) and ``gray84``
(``AtariPreprocessing``: 84x84 uint8, about 20,000 frames), plus ``gray84gz``: the same 84x84
episodes stored with ``compression="gzip"`` (what the README suggests for data published to
plain HDF5 readers), whose decoding dominates a read. Each measure runs in a fresh
process: ``batch_iter(32, seq_len=4)`` at default settings, its peak RSS (``VmHWM``), the
time to the first batch and transitions/s over ``--batches`` batches, against numpy drawing
the same batches (obs, next obs, action, reward, done) from in-memory arrays (in a process
of its own).

    python bench/bench_pixels_read.py make --root /tmp/pxbench
    python bench/bench_pixels_read.py run --root /tmp/pxbench --data gray84 --workers 0
    python bench/bench_pixels_read.py run --root /tmp/pxbench --data gray84 --numpy \
        --batches 4000 --repeats 5   # against numpy, A B A B; 400 batches is 2.5 epochs,
                                     # the first decoding every block, 0.05-0.3 s in all
    python bench/bench_pixels_read.py run --root /tmp/pxbench --data gray84 --compare 0,2 \
        --max-memory 128 --repeats 3   # A B A B: decoding dominates (the cache holds half)

With ``--max-memory`` (MiB) under twice the decoded dataset, the block cache cannot hold it
and every epoch decodes every block again: the case reader processes are for. ``--compare``
runs the worker counts alternately, ``--repeats`` times, and prints each ratio to the first.

``--code DIR`` runs the measure with another checkout's ``curation`` (for before/after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

MEASURE = """
import json, os, resource, sys, time
import numpy as np
from curation import load_dataset

def hwm():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024

ds_id, workers, n_batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
numpy_only = sys.argv[4] == "1"
ds = load_dataset(ds_id, max_memory=int(sys.argv[5]))
out = {"steps": int(ds.total_steps), "rss_open": hwm()}
if numpy_only:  # the same draws from in-memory arrays, in a process of its own
    eps = list(ds.iterate_episodes())
    obs = np.concatenate([e.observations for e in eps])
    act = np.concatenate([np.append(e.actions, 0) for e in eps])
    rew = np.concatenate([np.append(e.rewards, 0) for e in eps])
    done = np.concatenate([np.append(e.terminations, False) for e in eps])
    firsts = np.cumsum([0] + [len(e) + 1 for e in eps[:-1]])
    starts = np.concatenate([o + np.arange(len(e) - 3) for o, e in zip(firsts, eps)])
    rng = np.random.default_rng(0)
    offs = np.arange(4)
    t2 = time.perf_counter()
    for _ in range(n_batches):
        idx = starts[rng.integers(len(starts), size=32)][:, None] + offs
        batch = (obs[idx], act[idx], rew[idx], obs[idx + 1], done[idx])
    print(json.dumps({"numpy_per_s": n_batches * 32 * 4 / (time.perf_counter() - t2)}))
    sys.exit(0)
t0 = time.perf_counter()
it = ds.pipeline(num_workers=workers).batch_iter(32, 4, seed=0)
next(it)
out["first_batch_s"] = time.perf_counter() - t0
t1 = time.perf_counter()
for _ in range(n_batches):
    next(it)
out["per_s"] = n_batches * 32 * 4 / (time.perf_counter() - t1)
it.close()
out["rss_peak"] = hwm()
out["children_peak"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps(out))
"""


def make(root: Path) -> None:
    import ale_py
    import gymnasium as gym
    import numpy as np

    from collector.data_collector import DataCollector

    os.environ["HARVEST_DATASETS"] = str(root)
    gym.register_envs(ale_py)

    def gray84() -> gym.Env:
        return gym.wrappers.AtariPreprocessing(gym.make("ALE/Pong-v5", frameskip=1), frame_skip=4)

    specs = {
        "bench/pong-raw-v0": (gym.make("ALE/Pong-v5"), 8_000, "auto"),
        "bench/pong-gray84-v0": (gray84(), 20_000, "auto"),
        "bench/pong-gray84-gzip-v0": (gray84(), 20_000, "gzip"),
    }
    for ds_id, (env, frames, codec) in specs.items():
        env = DataCollector(env, compression=codec)
        rng = np.random.default_rng(0)
        steps, k = 0, 0
        while steps < frames:
            env.reset(seed=k)
            k += 1
            while steps < frames:
                steps += 1
                _, _, term, trunc, _ = env.step(int(rng.integers(6)))
                if term or trunc:
                    break
        env.create_dataset(ds_id)
        env.close()
        print(f"{ds_id}: {steps} steps, {k} episodes")


def run(
    root: Path, data: str, workers: int, batches: int, code: Path, numpy_only: bool, mib: int
) -> dict:
    ds_id = {
        "raw": "bench/pong-raw-v0",
        "gray84": "bench/pong-gray84-v0",
        "gray84gz": "bench/pong-gray84-gzip-v0",
    }[data]
    args = [ds_id, str(workers), str(batches), "1" if numpy_only else "0", str(mib << 20)]
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEASURE), *args],
        capture_output=True,
        text=True,
        cwd=code,
        env={**os.environ, "HARVEST_DATASETS": str(root), "PYTHONPATH": str(code)},
        timeout=1800,
    )
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(a: argparse.Namespace, counts: list[int]) -> None:
    """Worker counts side by side (A B A B): rates, first batches and each ratio to the first."""
    ratios: dict[int, list[float]] = {w: [] for w in counts[1:]}
    for i in range(a.repeats):
        got = {w: run(a.root, a.data, w, a.batches, a.code, False, a.max_memory) for w in counts}
        base = got[counts[0]]["per_s"]
        cells = [
            f"W={w} {r['per_s']:,.0f}/s (first {r['first_batch_s']:.2f} s)" for w, r in got.items()
        ]
        for w in counts[1:]:
            ratios[w].append(got[w]["per_s"] / base)
        print(f"{a.data} max_memory={a.max_memory} MiB, repeat {i + 1}: " + ", ".join(cells))
    for w, rs in ratios.items():
        print(
            f"W={w} / W={counts[0]}: min {min(rs):.2f}x, median {statistics.median(rs):.2f}x, "
            f"max {max(rs):.2f}x over {len(rs)} repeats"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["make", "run"])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--data", choices=["raw", "gray84", "gray84gz"], default="gray84")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--numpy", action="store_true", help="also time numpy on in-memory arrays")
    ap.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--max-memory", type=int, default=512, help="load_dataset's budget, MiB")
    ap.add_argument("--compare", help="worker counts run alternately, e.g. 0,2")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if a.what == "make":
        make(a.root)
        return
    if a.compare:
        compare(a, [int(w) for w in a.compare.split(",")])
        return
    ratios = []
    for _ in range(a.repeats if a.numpy else 1):  # A B A B: each ratio within a pair
        r = run(a.root, a.data, a.workers, a.batches, a.code, False, a.max_memory)
        if a.numpy:
            r.update(run(a.root, a.data, a.workers, a.batches, a.code, True, a.max_memory))
        mib = 2**20
        line = (
            f"{a.data} W={a.workers}: {r['per_s']:,.0f} transitions/s, first batch "
            f"{r['first_batch_s']:.2f} s, peak RSS {r['rss_peak'] / mib:.0f} MiB "
            f"(children {r['children_peak'] / mib:.0f} MiB), {r['steps']} steps"
        )
        if "numpy_per_s" in r:
            ratios.append(r["per_s"] / r["numpy_per_s"])
            line += f"; numpy {r['numpy_per_s']:,.0f}/s = {ratios[-1]:.2f}x"
        print(line, flush=True)
    if len(ratios) > 1:
        print(
            f"vs numpy over {a.batches} batches: min {min(ratios):.2f}x, median "
            f"{statistics.median(ratios):.2f}x, max {max(ratios):.2f}x ({len(ratios)} pairs)"
        )


if __name__ == "__main__":
    main()
