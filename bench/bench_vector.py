"""Benchmark ``vectorization_mode=vector_entry_point``: recording at numpy-vectorized env speed.

Workload (issue 04): CartPole-v1 with ``num_envs=256`` through Gymnasium's own
``CartPoleVectorEnv`` (``gym.make_vec(..., vectorization_mode="vector_entry_point")``), random
actions from the same ``RandomPolicy.act_batch`` that ``collect`` uses.

Measured side by side, median of interleaved repeats (one process):

* the plain vector loop: ``vec.step(policy.act_batch(obs))`` for the same number of vector
  steps; steps/s counts every sub-env step (``num_envs`` per vector step, the autoreset
  steps included, which flatters the baseline by ~4% on CartPole);
* ``collect(cfg)`` with ``num_envs=256 vectorization_mode=vector_entry_point``: recorded
  steps/s over the whole call (env creation, recording, digests, shard writes, commits and
  the final repack) and over the runner phase alone (recording and committing: every step
  is in a committed shard when it ends), plus the repack time.

Targets (issue 04): >= 1M recorded steps/s and >= 0.4x the plain vector loop.

Run: ``python bench/bench_vector.py`` (about 30 s on 2 cores) or ``--quick``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
from _common import compose_cfg, verdict

ENV_ID = "CartPole-v1"
NUM_ENVS = 256
ROOT_SEED = 0
RATE_TARGET = 1_000_000
RATIO_TARGET = 0.4


def plain_loop(vector_steps: int, num_envs: int) -> float:
    """Sub-env steps per second of the bare vector env with the batched random policy."""
    import gymnasium as gym

    from collector.policies import RandomPolicy

    vec = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point")
    policy = RandomPolicy(vec.single_action_space)
    policy.reset(ROOT_SEED)
    obs, _ = vec.reset(seed=ROOT_SEED)
    step, act = vec.step, policy.act_batch
    start = time.perf_counter()
    for _ in range(vector_steps):
        obs, _, _, _, _ = step(act(obs, num_envs))
    wall = time.perf_counter() - start
    vec.close()
    return vector_steps * num_envs / wall


def collect_run(episodes: int, num_envs: int, root: str, tag: str) -> dict[str, Any]:
    """One ``collect`` call, timed whole and by phase (runner, repack)."""
    from omegaconf import OmegaConf

    import collector.runners.vector as vector_mod
    from collector import storage
    from collector.collect import collect

    cfg = compose_cfg(
        [
            f"env={ENV_ID}",
            f"episodes={episodes}",
            f"num_envs={num_envs}",
            "vectorization_mode=vector_entry_point",
            f"seed={ROOT_SEED}",
            f"dataset_id=bench/vector-{tag}-v0",
            f"datasets_root={root}",
            "progress=false",
        ]
    )
    conf = OmegaConf.to_container(cfg, resolve=True)
    phases: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    saved_run, saved_repack = vector_mod.run_vector_entry_point, storage.DatasetWriter.repack
    vector_mod.run_vector_entry_point = timed("runner", saved_run)
    storage.DatasetWriter.repack = timed("repack", saved_repack)
    gc.collect()
    try:
        start = time.perf_counter()
        res = collect(conf)
        wall = time.perf_counter() - start
    finally:
        vector_mod.run_vector_entry_point, storage.DatasetWriter.repack = saved_run, saved_repack
    shutil.rmtree(res.path, ignore_errors=True)
    return {
        "steps": res.total_steps,
        "wall": wall,
        "runner": phases.get("runner", 0.0),
        "repack": phases.get("repack", 0.0),
        "steps_per_s": res.total_steps / wall,
        "runner_steps_per_s": res.total_steps / phases["runner"],
        "fingerprint": res.fingerprint,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=90_000, help="episodes per collect (~2M steps)")
    ap.add_argument("--num-envs", type=int, default=NUM_ENVS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="20k episodes, 2 repeats")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.repeats = 20_000, 2
    root = tempfile.mkdtemp(prefix="harvest-bench-vector-")
    print(f"datasets root {root}; CartPole-v1 num_envs={args.num_envs}, {args.episodes} episodes")
    collect_run(500, args.num_envs, root, "warm")  # imports, first env
    plains, runs = [], []
    fingerprints = set()
    for r in range(args.repeats):
        run = collect_run(args.episodes, args.num_envs, root, f"r{r}")
        fingerprints.add(run["fingerprint"])
        vector_steps = int(np.ceil(run["steps"] / args.num_envs))
        plain = plain_loop(vector_steps, args.num_envs)
        plains.append(plain)
        runs.append(run)
        print(
            f"  repeat {r + 1}/{args.repeats}: plain {plain:,.0f}/s; collect {run['steps']:,} "
            f"steps in {run['wall']:.2f} s = {run['steps_per_s']:,.0f}/s (runner "
            f"{run['runner_steps_per_s']:,.0f}/s, repack {run['repack']:.2f} s)"
        )
    assert len(fingerprints) == 1, f"same config, different fingerprints: {fingerprints}"
    shutil.rmtree(root, ignore_errors=True)

    def med(key: str) -> float:
        return statistics.median(x[key] for x in runs)

    plain = statistics.median(plains)
    ratio = statistics.median(x["steps_per_s"] / p for x, p in zip(runs, plains, strict=True))
    runner_ratio = statistics.median(
        x["runner_steps_per_s"] / p for x, p in zip(runs, plains, strict=True)
    )
    rate, runner_rate = med("steps_per_s"), med("runner_steps_per_s")
    print()
    print("| CartPole-v1, num_envs=256, vector_entry_point | steps/s | vs plain vector loop |")
    print("|---|---|---|")
    print(f"| plain vector loop | {plain:,.0f} | 1.00x |")
    repack = med("repack")
    print(f"| `collect`, whole call (incl. repack {repack:.2f} s) | {rate:,.0f} | {ratio:.2f}x |")
    print(f"| `collect`, recording and commits | {runner_rate:,.0f} | {runner_ratio:.2f}x |")
    print()
    print(
        f"target >= {RATE_TARGET:,} recorded steps/s (whole call): "
        f"{verdict(rate >= RATE_TARGET)}; target >= {RATIO_TARGET}x plain (whole call): "
        f"{verdict(ratio >= RATIO_TARGET)}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "command": " ".join(shlex.quote(a) for a in sys.argv),
                    "python": platform.python_version(),
                    "plain_steps_per_s": plain,
                    "runs": runs,
                    "ratio": ratio,
                    "runner_ratio": runner_ratio,
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
