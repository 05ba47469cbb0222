"""Benchmark recording overhead: plain loop vs ``DataCollector`` vs ``collect`` on CartPole-v1.

The baseline (design review, findings 4 and 17) is a plain Gymnasium loop with the *same*
``RandomPolicy`` object and the *same* per-episode ``reset(seed=env_seed(0, i))`` /
``policy.reset(policy_seed(0, i))`` that ``collect`` uses, so the ratio measures recording
(buffers, digests, shard writes, commits, repack), not seeding or the policy.

Measured per workload (one process, median of interleaved repeats; each repeat runs plain,
DataCollector and collect back to back so the ratios are taken side by side on a noisy box):

* steps/s of the plain loop, of ``DataCollector`` (loop + ``create_dataset``) and of
  ``collect(cfg)`` (the whole call: env and policy creation, recording, shard writes, commits
  and repack; steps/s = total steps / wall);
* bytes on disk per step (every file under the dataset folder, ``metadata.json`` included) for
  ``storage.compression=none`` and the default compression (lzf), against the raw bytes per
  step: observations in the space dtype with T+1 rows, actions in the space dtype, float64
  rewards, bool flags;
* peak RSS of ``collect`` at the smallest size and at 10x its episodes, each in a fresh process.

Targets (issue 02) at default settings: recorded throughput >= 0.7x the plain loop; bytes per
step <= 1.5x raw without compression.

Run: ``python bench/bench_collect.py`` (30-40 s on 2 cores) or ``--quick`` (a few seconds).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import compose_cfg, dir_bytes, verdict, vm_hwm_kib

ENV_ID = "CartPole-v1"
MEAN_EPISODE_STEPS = 22  # CartPole-v1 under a uniform random policy
ROOT_SEED = 0
OBS_TARGET = 0.7
BYTES_TARGET = 1.5


# --------------------------------------------------------------------------------------------
# workloads


def drive(env: Any, policy: Any, episodes: int) -> int:
    """The one episode loop both sides run: per-episode seeds as ``collect`` derives them."""
    from collector.seeding import env_seed, policy_seed

    reset, step, act = env.reset, env.step, policy.act
    steps = 0
    for i in range(episodes):
        policy.reset(policy_seed(ROOT_SEED, i))
        obs, _ = reset(seed=env_seed(ROOT_SEED, i))
        while True:
            obs, _, terminated, truncated, _ = step(act(obs))
            steps += 1
            if terminated or truncated:
                break
    return steps


def plain_loop(episodes: int) -> dict[str, Any]:
    """The baseline: same policy object, same per-episode seeds, nothing recorded."""
    import gymnasium as gym

    from collector.policies import RandomPolicy

    env = gym.make(ENV_ID)
    policy = RandomPolicy(env.action_space)
    gc.collect()
    start, cpu0 = time.perf_counter(), time.process_time()
    steps = drive(env, policy, episodes)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    env.close()
    return {
        "steps": steps,
        "episodes": episodes,
        "wall": wall,
        "cpu": cpu,
        "steps_per_s": steps / wall,
        "cpu_steps_per_s": steps / cpu,
    }


def data_collector_loop(episodes: int, dataset_id: str) -> dict[str, Any]:
    """The same loop through a default ``DataCollector``; ``create_dataset`` is timed too."""
    import gymnasium as gym

    from collector.data_collector import DataCollector
    from collector.policies import RandomPolicy
    from collector.storage import dataset_path

    inner = gym.make(ENV_ID)
    gc.collect()
    start, cpu0 = time.perf_counter(), time.process_time()
    env = DataCollector(inner)
    policy = RandomPolicy(env.action_space)
    steps = drive(env, policy, episodes)
    loop_wall = time.perf_counter() - start
    summary = env.create_dataset(dataset_id)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    env.close()
    if summary.total_steps != steps:
        raise RuntimeError(f"DataCollector stored {summary.total_steps} steps, ran {steps}")
    return {
        "steps": steps,
        "episodes": episodes,
        "wall": wall,
        "loop_wall": loop_wall,
        "cpu": cpu,
        "steps_per_s": steps / wall,
        "cpu_steps_per_s": steps / cpu,
        "bytes_on_disk": dir_bytes(dataset_path(dataset_id)),
    }


def collect_run(episodes: int, dataset_id: str, extra: list[str] | None = None) -> dict[str, Any]:
    """``collect(cfg)`` with the default config; the whole call is timed."""
    from collector.collect import collect

    cfg = compose_cfg(
        [f"episodes={episodes}", f"seed={ROOT_SEED}", f"dataset_id={dataset_id}", "progress=false"]
        + list(extra or [])
    )
    gc.collect()
    start, cpu0 = time.perf_counter(), time.process_time()
    res = collect(cfg)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    meta = json.loads((res.path / "metadata.json").read_text())
    return {
        "steps": res.total_steps,
        "episodes": res.total_episodes,
        "wall": wall,
        "cpu": cpu,
        "steps_per_s": res.total_steps / wall,
        "cpu_steps_per_s": res.total_steps / cpu,
        "internal_steps_per_s": res.steps_per_second,  # collect's own clock: no env/setup
        "shards": len(meta.get("shards", [])),
        "bytes_on_disk": dir_bytes(res.path),
        "dataset_bytes": res.dataset_bytes,
        "fingerprint": res.fingerprint,
    }


# --------------------------------------------------------------------------------------------
# bytes


def raw_bytes(steps: int, episodes: int) -> int:
    """Raw size of ``episodes`` episodes totalling ``steps`` steps (review finding 17)."""
    import gymnasium as gym
    import numpy as np

    env = gym.make(ENV_ID)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    obs_row = int(np.prod(obs_space.shape, dtype=np.int64)) * obs_space.dtype.itemsize
    act_row = int(np.prod(act_space.shape, dtype=np.int64)) * act_space.dtype.itemsize
    # T+1 observation rows per episode, T actions, float64 rewards, terminated+truncated bools
    return (steps + episodes) * obs_row + steps * act_row + steps * 8 + steps * 2


# --------------------------------------------------------------------------------------------
# peak RSS in a fresh process

_RSS_CHILD = """
import json, resource, sys
sys.path.insert(0, {bench_dir!r})
import bench_collect as b
import collector.collect, collector.runners.local, h5py, hydra
before = b.vm_hwm_kib()
r = b.collect_run({episodes}, {dataset_id!r})
print(json.dumps({{"episodes": r["episodes"], "steps": r["steps"], "wall": r["wall"],
    "hwm_after_imports_kib": before, "hwm_kib": b.vm_hwm_kib(),
    "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def rss_child(episodes: int, dataset_id: str) -> dict[str, Any]:
    """Run ``collect`` in a fresh interpreter and return its peak RSS (KiB)."""
    code = _RSS_CHILD.format(
        bench_dir=str(Path(__file__).resolve().parent), episodes=episodes, dataset_id=dataset_id
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=os.environ
    )
    if out.returncode != 0:
        raise RuntimeError(f"RSS child failed ({out.returncode}):\n{out.stderr}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["peak_kib"] = res["hwm_kib"] if res["hwm_kib"] is not None else res["ru_maxrss_kib"]
    return res


# --------------------------------------------------------------------------------------------
# driver


def remove_dataset(dataset_id: str) -> None:
    from collector.storage import dataset_path

    shutil.rmtree(dataset_path(dataset_id), ignore_errors=True)


def bench_size(target_steps: int, repeats: int, log: Any) -> dict[str, Any]:
    episodes = max(1, target_steps // MEAN_EPISODE_STEPS)
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "data_collector": [], "collect": []}
    for r in range(repeats):
        p = plain_loop(episodes)
        d = data_collector_loop(episodes, f"bench/dc-v{r}")
        c = collect_run(episodes, f"bench/collect-v{r}")
        if not p["steps"] == d["steps"] == c["steps"]:
            raise RuntimeError(
                f"step counts differ: plain {p['steps']}, DC {d['steps']}, collect {c['steps']}"
            )
        runs["plain"].append(p)
        runs["data_collector"].append(d)
        runs["collect"].append(c)
        log(
            f"  [{target_steps} steps] repeat {r + 1}/{repeats}: "
            f"plain {p['steps_per_s']:,.0f}/s, "
            f"DataCollector {d['steps_per_s']:,.0f}/s "
            f"({d['steps_per_s'] / p['steps_per_s']:.2f}x), "
            f"collect {c['steps_per_s']:,.0f}/s ({c['steps_per_s'] / p['steps_per_s']:.2f}x)"
        )
        if r < repeats - 1:
            remove_dataset(f"bench/dc-v{r}")
            remove_dataset(f"bench/collect-v{r}")
    steps = runs["plain"][0]["steps"]
    default = runs["collect"][-1]
    none = collect_run(episodes, "bench/none-v0", ["storage.compression=none"])
    if none["fingerprint"] != default["fingerprint"]:
        raise RuntimeError("compression=none and default datasets have different fingerprints")
    raw = raw_bytes(steps, episodes)
    for r in range(repeats):
        remove_dataset(f"bench/dc-v{r}")
        remove_dataset(f"bench/collect-v{r}")
    remove_dataset("bench/none-v0")

    def med(kind: str, key: str = "steps_per_s") -> float:
        return statistics.median(x[key] for x in runs[kind])

    def med_ratio(kind: str, key: str = "steps_per_s") -> float:
        return statistics.median(
            x[key] / p[key] for x, p in zip(runs[kind], runs["plain"], strict=True)
        )

    return {
        "target_steps": target_steps,
        "episodes": episodes,
        "steps": steps,
        "repeats": repeats,
        "plain_steps_per_s": med("plain"),
        "data_collector_steps_per_s": med("data_collector"),
        "collect_steps_per_s": med("collect"),
        "collect_internal_steps_per_s": med("collect", "internal_steps_per_s"),
        "data_collector_ratio": med_ratio("data_collector"),
        "collect_ratio": med_ratio("collect"),
        "data_collector_cpu_ratio": med_ratio("data_collector", "cpu_steps_per_s"),
        "collect_cpu_ratio": med_ratio("collect", "cpu_steps_per_s"),
        "raw_bytes_per_step": raw / steps,
        "none_bytes_per_step": none["bytes_on_disk"] / steps,
        "default_bytes_per_step": default["bytes_on_disk"] / steps,
        "none_ratio": none["bytes_on_disk"] / raw,
        "default_ratio": default["bytes_on_disk"] / raw,
        "none_shards": none["shards"],
        "default_shards": default["shards"],
        "data_collector_bytes_per_step": runs["data_collector"][-1]["bytes_on_disk"] / steps,
        "none_collect_steps_per_s": none["steps_per_s"],
        "runs": runs,
    }


def markdown(results: list[dict[str, Any]], rss: dict[str, Any] | None, argv: list[str]) -> str:
    lines = [
        "| workload | plain steps/s | DataCollector steps/s (ratio) | collect steps/s (ratio) "
        "| bytes/step none (x raw) | bytes/step default lzf (x raw) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {ENV_ID} random, {r['episodes']} eps / {r['steps']} steps "
            f"| {r['plain_steps_per_s']:,.0f} "
            f"| {r['data_collector_steps_per_s']:,.0f} ({r['data_collector_ratio']:.2f}x) "
            f"| {r['collect_steps_per_s']:,.0f} ({r['collect_ratio']:.2f}x) "
            f"| {r['none_bytes_per_step']:.1f} ({r['none_ratio']:.2f}x) "
            f"| {r['default_bytes_per_step']:.1f} ({r['default_ratio']:.2f}x) |"
        )
    lines.append("")
    lines.append(
        f"Medians of {results[0]['repeats']} interleaved repeat(s); ratios are medians of "
        "per-repeat ratios against the plain loop of the same repeat. Raw bytes/step: "
        + ", ".join(f"{r['raw_bytes_per_step']:.2f} ({r['steps']} steps)" for r in results)
        + "."
    )
    lines.append(
        "collect steps/s time the whole collect() call (env + policy creation, recording, shard "
        "writes, commits, repack); collect's own clock (no setup): "
        + ", ".join(f"{r['collect_internal_steps_per_s']:,.0f}/s" for r in results)
        + ". DataCollector steps/s include wrapper creation and create_dataset()."
    )
    lines.append(
        "Same ratios by process CPU time (less sensitive to other load on the box; excludes "
        "fsync waits): "
        + "; ".join(
            f"{r['steps']} steps: DataCollector {r['data_collector_cpu_ratio']:.2f}x, "
            f"collect {r['collect_cpu_ratio']:.2f}x"
            for r in results
        )
        + "."
    )
    lines.append(
        f"Targets: recorded >= {OBS_TARGET}x plain; bytes/step (none) <= {BYTES_TARGET}x raw. "
        + "; ".join(
            f"{r['steps']} steps: "
            f"collect {verdict(r['collect_ratio'] >= OBS_TARGET)}, "
            f"DataCollector {verdict(r['data_collector_ratio'] >= OBS_TARGET)}, "
            f"bytes {verdict(r['none_ratio'] <= BYTES_TARGET)}"
            for r in results
        )
    )
    if rss is not None:
        base, big = rss["base"], rss["big"]

        def mib(kib: float | None) -> str:
            return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"

        lines.append("")
        lines.append(
            f"Peak RSS of collect, each in a fresh process (VmHWM): {base['episodes']} eps / "
            f"{base['steps']} steps: {mib(base['peak_kib'])}; {big['episodes']} eps / "
            f"{big['steps']} steps (10x episodes): {mib(big['peak_kib'])}; ratio "
            f"{rss['ratio']:.2f}x (+{mib(big['peak_kib'] - base['peak_kib'])}). After imports, "
            f"before collect: {mib(base['hwm_after_imports_kib'])}."
        )
        lines.append(
            f"getrusage ru_maxrss in the same children: {mib(base['ru_maxrss_kib'])} / "
            f"{mib(big['ru_maxrss_kib'])} (Linux carries the forking parent's high-water mark, "
            f"{mib(rss['parent_hwm_kib'])} here, into a child's ru_maxrss, so it is not used)."
        )
    lines.append("")
    lines.append("Command: `" + shlex.join([sys.executable, *argv]) + "`")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", default="20000,200000", help="comma-separated target step counts")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median reported)")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    ap.add_argument(
        "--rss",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="peak RSS at the smallest size vs 10x its episodes (default: on, off with --quick)",
    )
    ap.add_argument("--quick", action="store_true", help="5000 steps, 3 repeats, no RSS")
    args = ap.parse_args(argv[1:])
    if args.quick:
        if args.steps == ap.get_default("steps"):
            args.steps = "5000"
        if args.repeats == ap.get_default("repeats"):
            args.repeats = 3
    sizes = [int(s) for s in args.steps.split(",") if s.strip()]
    do_rss = (not args.quick) if args.rss is None else args.rss
    if not sizes or args.repeats < 1:
        ap.error("need at least one step count and one repeat")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="harvest-bench-") as tmp:
        os.environ["HARVEST_DATASETS"] = tmp
        t0 = time.perf_counter()
        log(f"datasets root {tmp}; warming up (imports, first env)")
        plain_loop(50)
        data_collector_loop(50, "bench/warmup-dc-v0")
        collect_run(50, "bench/warmup-collect-v0")
        remove_dataset("bench/warmup-dc-v0")
        remove_dataset("bench/warmup-collect-v0")
        results = []
        for n in sizes:
            results.append(bench_size(n, args.repeats, log))
        rss = None
        if do_rss:
            base_eps = min(sizes) // MEAN_EPISODE_STEPS
            log(f"  peak RSS: collect {base_eps} and {10 * base_eps} episodes in fresh processes")
            base = rss_child(base_eps, "bench/rss-base-v0")
            big = rss_child(10 * base_eps, "bench/rss-big-v0")
            rss = {
                "base": base,
                "big": big,
                "ratio": big["peak_kib"] / base["peak_kib"],
                "parent_hwm_kib": vm_hwm_kib(),
            }
        total = time.perf_counter() - t0

    table = markdown(results, rss, argv)
    print(table)
    print(
        f"\n(bench wall time {total:.0f} s on {os.cpu_count()} CPU(s), "
        f"Python {platform.python_version()})"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "command": argv,
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "wall_seconds": total,
                    "results": results,
                    "rss": rss,
                    "table": table,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
