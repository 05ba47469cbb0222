"""Benchmark the Ray runner: workers=1 vs workers=2 scaling, Ray start-up and overheads.

Scaling workload (issue 04): ``BurnEnv``, a tiny env whose every step burns ``--burn-us``
(default 50) microseconds of *thread CPU time* in a busy loop on ``time.thread_time_ns()``, so
a worker that is preempted gets no credit for the time it did not run (a wall-clock busy wait
would finish "on time" after losing the core, and flatter the scaling). Episodes have a fixed
length (``--episode-steps``, default 100); observations are seeded by ``reset(seed)`` only.
The env lives in this module and is registered as ``harvest-bench/Burn-v0`` with entry point
``bench_ray:BurnEnv``; the config names it ``bench_ray:harvest-bench/Burn-v0`` so Gymnasium
imports this module before making it, in the driver and in every Ray worker (Ray is started
here, once, with ``bench/`` on ``PYTHONPATH``, which its workers inherit).

Measured (one Ray instance, started once and reused; ``collect`` does not shut down a Ray it
did not start), each through ``collector.collect.collect(dict config)``:

* steps/s of ``runner=local``, ``runner=ray workers=1`` and ``runner=ray workers=2``
  (``num_cpus_per_worker=1``) on the same episodes, timed over the whole ``collect()`` call
  (actor creation included), median of interleaved repeats (the order rotates per repeat);
  the ratio workers=2 / workers=1 is the median of per-repeat ratios, over the whole call, over
  the runner phase and after the first shard. The three datasets must have the same
  fingerprint (asserted). Phases are timed by wrapping ``run_local``/``run_ray``,
  ``DatasetWriter.repack`` and the first shard write from here (no harvest code changes).
  Each run also reports the cores other processes used meanwhile (``LoadGauge``, from /proc):
  on 2 cores any other job comes straight out of workers=2, and the table warns about it;
* Ray start-up: wall time of ``ray.init``;
* actor start-up: wall time of a 2-episode ``collect`` on ``runner=ray workers=1`` minus the
  same on ``runner=local`` (cold = the very first actor of the session, warm = median later);
* per-episode overhead: CartPole-v1 random, ``runner=ray workers=1`` vs ``runner=local`` on
  the same episodes, (ray wall - local wall) / episodes, raw and net of the ray run's own
  time to its first shard (``ray.init`` excluded).

Target (issue 04): workers=2 / workers=1 >= 1.7 on this 2-core machine. The whole-call ratio
depends on run length: actor start-up (~0.4-0.9 s) is paid once per call and the repack at the
end is serial, so short runs (``--quick``: 20k steps) miss the target that longer ones meet.

Run: ``python bench/bench_ray.py`` (about 2 minutes on 2 cores) or ``--quick`` (under 1 min).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from _common import verdict
from gymnasium import spaces

ENV_NAME = "harvest-bench/Burn-v0"
ENV_ID = f"bench_ray:{ENV_NAME}"  # "module:id": gymnasium imports bench_ray first
CARTPOLE = "CartPole-v1"
ROOT_SEED = 0
SCALING_TARGET = 1.7
NOISY_LOAD = 0.2  # cores used by other processes during a run before the result is flagged
BENCH_DIR = str(Path(__file__).resolve().parent)


# --------------------------------------------------------------------------------------------
# the CPU-burning env


def burn(ns: int) -> None:
    """Busy-loop until this thread has used ``ns`` more nanoseconds of CPU time."""
    clock = time.thread_time_ns
    end = clock() + ns
    while clock() < end:
        pass


class BurnEnv(gym.Env):
    """A 4-float state that drifts with the action; each step burns ``burn_us`` of CPU.

    Fixed length: truncated after ``episode_steps`` steps, never terminated. All randomness
    comes from ``self.np_random``, seeded by ``reset(seed)``.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, burn_us: float = 50.0, episode_steps: int = 100) -> None:
        self.burn_ns = int(burn_us * 1000)
        self.episode_steps = int(episode_steps)
        self.observation_space = spaces.Box(-10.0, 10.0, shape=(4,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._state = np.zeros(4, dtype=np.float64)
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._state = self.np_random.uniform(-0.05, 0.05, size=4)
        self._t = 0
        return self._state.astype(np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.burn_ns:
            burn(self.burn_ns)
        push = 0.1 if int(action) == 1 else -0.1
        noise = self.np_random.normal(0.0, 0.01, size=4)
        self._state = np.clip(0.95 * self._state + push + noise, -10.0, 10.0)
        self._t += 1
        reward = float(1.0 - abs(self._state[0]))
        return self._state.astype(np.float32), reward, False, self._t >= self.episode_steps, {}


if ENV_NAME not in gym.registry:
    gym.register(ENV_NAME, entry_point="bench_ray:BurnEnv")


# --------------------------------------------------------------------------------------------
# workloads


def env_step_cost(burn_us: float, episode_steps: int, steps: int = 2000) -> dict[str, float]:
    """Wall and CPU microseconds per step of the bare env (driver, plain loop, fixed action)."""
    env = BurnEnv(burn_us, episode_steps)
    env.reset(seed=0)
    start, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        _, _, _, truncated, _ = env.step(1)
        if truncated:
            env.reset()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return {"wall_us": wall / steps * 1e6, "cpu_us": cpu / steps * 1e6}


def make_conf(
    env: str,
    episodes: int,
    dataset_id: str,
    runner: str,
    workers: int = 1,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The default ``conf/collect.yaml`` config with the bench's overrides, as a plain dict."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    overrides = [
        f"env={env}",
        f"episodes={episodes}",
        f"seed={ROOT_SEED}",
        f"dataset_id={dataset_id}",
        "progress=false",
        f"runner={runner}",
    ]
    if runner == "ray":
        overrides += [f"runner.workers={workers}", "runner.num_cpus_per_worker=1"]
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("collect", overrides=overrides)
    conf: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    conf["env_kwargs"] = dict(env_kwargs or {})
    return conf


class LoadGauge:
    """Cores used by *other* processes during a run: machine busy time minus this tree's.

    From /proc: the machine's busy CPU time (``/proc/stat``, idle and iowait excluded) and the
    CPU time (utime, stime, cutime, cstime) of this process and its descendants (Ray's gcs,
    raylet and workers are started by ``ray.init`` here). An actor killed at the end of a run
    is not reaped into the raylet's cutime, so the tree is also sampled just before the runner
    kills its actors, and each process counts with the most CPU seen for it. Unavailable
    (None) where /proc is missing.
    """

    def __init__(self) -> None:
        self.start = self._snapshot()
        self.seen: dict[int, int] = {}
        self.sample()

    @staticmethod
    def _snapshot() -> tuple[int, dict[int, int]] | None:
        try:
            with open("/proc/stat") as fh:
                f = [int(x) for x in fh.readline().split()[1:]]
            busy = f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)
            children: dict[int, list[int]] = {}
            ticks: dict[int, int] = {}
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/stat") as fh:
                        rest = fh.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue  # exited meanwhile
                pid = int(entry.name)
                children.setdefault(int(rest[1]), []).append(pid)
                ticks[pid] = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            return None
        mine: dict[int, int] = {}
        todo = [os.getpid()]
        while todo:
            pid = todo.pop()
            mine[pid] = ticks.get(pid, 0)
            todo.extend(children.get(pid, []))
        return busy, mine

    def sample(self) -> tuple[int, dict[int, int]] | None:
        snap = self._snapshot()
        if snap is not None:
            for pid, t in snap[1].items():
                self.seen[pid] = max(t, self.seen.get(pid, 0))
        return snap

    def cores(self, wall: float) -> float | None:
        """Average cores used by processes outside this tree since the gauge was made."""
        end = self.sample()
        if self.start is None or end is None or wall <= 0:
            return None
        first = self.start[1]
        mine = sum(t - first.get(pid, 0) for pid, t in self.seen.items())
        tick = os.sysconf("SC_CLK_TCK")
        return max(0.0, (end[0] - self.start[0]) - mine) / tick / wall


@contextlib.contextmanager
def phase_clock(gauge: LoadGauge) -> Iterator[dict[str, float]]:
    """Time the phases of ``collect`` without touching harvest: wrappers on its module attributes.

    Records ``runner`` (``run_local``/``run_ray``: actor creation to last commit), ``first``
    (runner start to the first shard written: actor start-up plus the first batch on Ray) and
    ``repack`` (``DatasetWriter.repack``); samples ``gauge`` before the runner's first
    ``ray.kill``. Everything is restored on exit.
    """
    import collector.runners.local as local_mod
    import collector.runners.ray as ray_mod
    from collector import storage

    out: dict[str, float] = {}
    ray = ray_mod.ray
    saved = [
        (local_mod, "run_local", local_mod.run_local),
        (ray_mod, "run_ray", ray_mod.run_ray),
        (storage.DatasetWriter, "repack", storage.DatasetWriter.repack),
        (storage.DatasetWriter, "write_image", storage.DatasetWriter.write_image),
        (storage.DatasetWriter, "write_shard", storage.DatasetWriter.write_shard),
        (ray, "kill", ray.kill),
    ]

    def timed(name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            if name == "runner":
                out["runner_start"] = start
            try:
                return fn(*a, **k)
            finally:
                out[name] = out.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    def first(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            if "first" not in out and "runner_start" in out:
                out["first"] = time.perf_counter() - out["runner_start"]
            return fn(*a, **k)

        return wrapper

    def before_kill(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            if "killed" not in out:
                out["killed"] = time.perf_counter()
                gauge.sample()
            return fn(*a, **k)

        return wrapper

    local_mod.run_local = timed("runner", local_mod.run_local)
    ray_mod.run_ray = timed("runner", ray_mod.run_ray)
    storage.DatasetWriter.repack = timed("repack", storage.DatasetWriter.repack)
    storage.DatasetWriter.write_image = first(storage.DatasetWriter.write_image)
    storage.DatasetWriter.write_shard = first(storage.DatasetWriter.write_shard)
    ray.kill = before_kill(ray.kill)
    try:
        yield out
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def collect_run(conf: dict[str, Any]) -> dict[str, Any]:
    """``collect(conf)``, the whole call timed; the dataset is removed afterwards."""
    from collector.collect import collect

    gc.collect()
    gauge = LoadGauge()
    with phase_clock(gauge) as phases:
        start, cpu0 = time.perf_counter(), time.process_time()
        res = collect(conf)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    others = gauge.cores(wall)
    shutil.rmtree(res.path, ignore_errors=True)
    runner_s, repack_s = phases.get("runner", 0.0), phases.get("repack", 0.0)
    return {
        "runner": conf["runner"]["name"],
        "workers": conf["runner"].get("workers", 1) if conf["runner"]["name"] == "ray" else 0,
        "episodes": res.total_episodes,
        "steps": res.total_steps,
        "wall": wall,
        "driver_cpu": cpu,
        "other_load": others,  # cores busy with other processes during the run
        "internal_wall": res.wall_seconds,  # collect's own clock: runner + repack
        "setup_wall": wall - runner_s - repack_s,  # config checks, env, dataset open, close
        "runner_wall": runner_s,
        "first_write": phases.get("first"),
        "repack_wall": repack_s,
        "steps_per_s": res.total_steps / wall,
        "runner_steps_per_s": res.total_steps / runner_s if runner_s else None,
        # after the first shard: steady state, approximately (the first batch is not subtracted)
        "steady_steps_per_s": (
            res.total_steps / (runner_s - phases["first"])
            if runner_s and phases.get("first") is not None and runner_s > phases["first"]
            else None
        ),
        "fingerprint": res.fingerprint,
    }


def fmt_load(load: float | None) -> str:
    return "n/a" if load is None else f"{load:.2f}"


def label(kind: str) -> str:
    return {"local": "local", "ray1": "ray workers=1", "ray2": "ray workers=2"}[kind]


def bench_scaling(
    episodes: int, burn_us: float, episode_steps: int, repeats: int, log: Any
) -> dict[str, Any]:
    kwargs = {"burn_us": burn_us, "episode_steps": episode_steps}
    kinds = ["local", "ray1", "ray2"]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for r in range(repeats):
        order = kinds[r % 3 :] + kinds[: r % 3]  # rotate so no runner always goes first
        for kind in order:
            runner = "local" if kind == "local" else "ray"
            workers = 2 if kind == "ray2" else 1
            conf = make_conf(ENV_ID, episodes, f"bench/burn-{kind}-v{r}", runner, workers, kwargs)
            runs[kind].append(collect_run(conf))
        fps = {k: runs[k][-1]["fingerprint"] for k in kinds}
        assert len(set(fps.values())) == 1, f"fingerprints differ across runners: {fps}"
        steps = {runs[k][-1]["steps"] for k in kinds}
        assert steps == {episodes * episode_steps}, f"unexpected step counts {steps}"
        r1, r2 = runs["ray1"][-1], runs["ray2"][-1]
        log(
            f"  [burn] repeat {r + 1}/{repeats} ({' -> '.join(order)}): "
            + ", ".join(f"{label(k)} {runs[k][-1]['steps_per_s']:,.0f}/s" for k in kinds)
            + f"; workers 2/1 = {r2['steps_per_s'] / r1['steps_per_s']:.2f}x; other load "
            + ", ".join(fmt_load(runs[k][-1]["other_load"]) for k in kinds)
        )

    def med(kind: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[kind])

    def med_load(kind: str) -> float | None:
        loads = [x["other_load"] for x in runs[kind] if x["other_load"] is not None]
        return statistics.median(loads) if loads else None

    def med_ratio(key: str) -> float:
        pairs = zip(runs["ray1"], runs["ray2"], strict=True)
        return statistics.median(b[key] / a[key] for a, b in pairs)

    return {
        "episodes": episodes,
        "episode_steps": episode_steps,
        "steps": episodes * episode_steps,
        "burn_us": burn_us,
        "repeats": repeats,
        "fingerprint": runs["local"][0]["fingerprint"],
        "steps_per_s": {k: med(k, "steps_per_s") for k in kinds},
        "wall": {k: med(k, "wall") for k in kinds},
        "driver_cpu": {k: med(k, "driver_cpu") for k in kinds},
        "setup_wall": {k: med(k, "setup_wall") for k in kinds},
        "runner_wall": {k: med(k, "runner_wall") for k in kinds},
        "first_write": {k: med(k, "first_write") for k in kinds},
        "repack_wall": {k: med(k, "repack_wall") for k in kinds},
        "other_load": {k: med_load(k) for k in kinds},
        "ratio": med_ratio("steps_per_s"),
        "runner_ratio": med_ratio("runner_steps_per_s"),
        "steady_ratio": med_ratio("steady_steps_per_s"),
        "runs": runs,
    }


def bench_startup(repeats: int, log: Any) -> dict[str, Any]:
    """Actor start-up: 2-episode collects on ray workers=1 vs local (CartPole, random)."""
    ray_walls, local_walls = [], []
    for r in range(repeats + 1):  # the first ray run is the session's cold actor
        ray_walls.append(
            collect_run(make_conf(CARTPOLE, 2, f"bench/start-ray-v{r}", "ray", 1))["wall"]
        )
        local_walls.append(
            collect_run(make_conf(CARTPOLE, 2, f"bench/start-local-v{r}", "local"))["wall"]
        )
        log(
            f"  [start-up] {'cold' if r == 0 else 'warm'} 2-episode collect: "
            f"ray {ray_walls[-1]:.3f} s, local {local_walls[-1]:.3f} s"
        )
    local = statistics.median(local_walls)
    return {
        "ray_walls": ray_walls,
        "local_walls": local_walls,
        "cold": ray_walls[0] - local,
        "warm": statistics.median(ray_walls[1:]) - local,
        "local_2ep": local,
    }


def bench_overhead(episodes: int, repeats: int, log: Any) -> dict[str, Any]:
    """Per-episode overhead of runner=ray workers=1 over runner=local, CartPole random.

    Raw: (ray wall - local wall) / episodes, paired per repeat. Net: the same minus the ray
    run's own time to its first shard (actor start-up plus one episode), which varies from run
    to run with Ray's idle-worker pool more than the rest.
    """
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray1": []}
    for r in range(repeats):
        order = ["local", "ray1"] if r % 2 == 0 else ["ray1", "local"]
        for kind in order:
            runner = "local" if kind == "local" else "ray"
            runs[kind].append(
                collect_run(make_conf(CARTPOLE, episodes, f"bench/ovh-{kind}-v{r}", runner, 1))
            )
        a, b = runs["local"][-1], runs["ray1"][-1]
        assert a["fingerprint"] == b["fingerprint"], "CartPole fingerprints differ"
        log(
            f"  [overhead] repeat {r + 1}/{repeats}: local {a['wall']:.3f} s, "
            f"ray workers=1 {b['wall']:.3f} s (first shard at {b['first_write']:.3f} s) for "
            f"{episodes} episodes / {a['steps']} steps"
        )
    pairs = list(zip(runs["local"], runs["ray1"], strict=True))
    return {
        "episodes": episodes,
        "steps": runs["local"][0]["steps"],
        "local_wall": statistics.median(x["wall"] for x in runs["local"]),
        "ray_wall": statistics.median(x["wall"] for x in runs["ray1"]),
        "first_write": statistics.median(x["first_write"] for x in runs["ray1"]),
        "per_episode_raw": statistics.median((b["wall"] - a["wall"]) / episodes for a, b in pairs),
        "per_episode_net": statistics.median(
            (b["wall"] - b["first_write"] - a["wall"]) / episodes for a, b in pairs
        ),
        "repack_per_episode": statistics.median(
            (b["repack_wall"] - a["repack_wall"]) / episodes for a, b in pairs
        ),
        "runs": runs,
    }


# --------------------------------------------------------------------------------------------
# driver


def start_ray() -> float:
    """Start a local 2-CPU Ray whose workers can import ``bench_ray``; returns its wall time.

    ``bench/`` reaches the workers through ``PYTHONPATH`` in this process's environment (the
    raylet and its workers inherit it), as when ``collect`` starts Ray itself. A job-level
    ``runtime_env={"env_vars": ...}`` works too but adds 0.3-0.6 s to every actor start here
    (prestarted idle workers are not used for it), which would be charged to harvest.
    """
    import ray

    path = os.pathsep.join(p for p in (BENCH_DIR, os.environ.get("PYTHONPATH")) if p)
    os.environ["PYTHONPATH"] = path
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    return time.perf_counter() - start


def markdown(res: dict[str, Any], argv: list[str]) -> str:
    sc, st, ov = res["scaling"], res["startup"], res["overhead"]
    cost = res["env_step_cost"]
    kinds = ["local", "ray1", "ray2"]
    base = sc["steps_per_s"]["ray1"]
    lines = [
        f"Scaling: {ENV_NAME} (burns {sc['burn_us']:g} us CPU/step; measured bare step "
        f"{cost['wall_us']:.1f} us wall, {cost['cpu_us']:.1f} us CPU), random policy, "
        f"{sc['episodes']} episodes x {sc['episode_steps']} steps = {sc['steps']:,} steps.",
        "",
        "| runner | wall s | steps/s | vs ray workers=1 | setup s | runner s (first shard) "
        "| repack s | driver CPU s | other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in kinds:
        lines.append(
            f"| {label(k)} | {sc['wall'][k]:.2f} | {sc['steps_per_s'][k]:,.0f} "
            f"| {sc['steps_per_s'][k] / base:.2f}x | {sc['setup_wall'][k]:.2f} "
            f"| {sc['runner_wall'][k]:.2f} ({sc['first_write'][k]:.2f}) "
            f"| {sc['repack_wall'][k]:.2f} | {sc['driver_cpu'][k]:.2f} "
            f"| {fmt_load(sc['other_load'][k])} |"
        )
    lines += [
        "",
        f"workers=2 / workers=1: **{sc['ratio']:.2f}x** over the whole collect() call (median of "
        f"{sc['repeats']} per-repeat ratios; target >= {SCALING_TARGET}: "
        f"{verdict(sc['ratio'] >= SCALING_TARGET)}); {sc['runner_ratio']:.2f}x over the runner "
        "phase alone (actor start-up included, setup and repack excluded); "
        f"~{sc['steady_ratio']:.2f}x after the first shard (steady state). Fingerprints equal "
        f"across the three runners ({sc['fingerprint'][:16]}...). Phases: setup = collect() "
        "minus runner and repack (config checks, env, dataset open and close); runner = "
        "run_local/run_ray, first shard = seconds into it until the first shard was written "
        "(on Ray: actor start-up plus the first one-episode batch); repack = merging the "
        "runner's shards at the end (serial, in the driver); other load = average cores used "
        "during the run by processes outside this bench's tree (/proc), i.e. other jobs on the "
        "box: any of it comes straight out of workers=2.",
    ]
    busy = [v for v in sc["other_load"].values() if v is not None]
    if busy and max(busy) > NOISY_LOAD:
        lines.append(
            f"**Warning: other processes used up to {max(busy):.2f} cores (median per runner) "
            "during these runs; on 2 cores the workers=2 figures and the ratio are understated. "
            "Re-run on an idle machine.**"
        )
    lines += [
        "",
        "| overhead | value |",
        "|---|---|",
        f"| Ray start-up (`ray.init`, 2 CPUs, no dashboard) | {res['ray_init']:.2f} s |",
        f"| actor start-up, cold (first actor of the session) | {st['cold']:.2f} s |",
        f"| actor start-up, warm (median of {len(st['ray_walls']) - 1}) | {st['warm']:.2f} s |",
        f"| per-episode overhead, ray workers=1 vs local, raw ({CARTPOLE}, "
        f"{ov['episodes']} eps / {ov['steps']:,} steps) | {ov['per_episode_raw'] * 1e3:.3f} ms |",
        f"| per-episode overhead, net of the run's own start-up (first shard at "
        f"{ov['first_write']:.2f} s) | "
        f"{ov['per_episode_net'] * 1e3:.3f} ms |",
        f"| ... of which the extra repack (ray writes one shard per batch) | "
        f"{ov['repack_per_episode'] * 1e3:.3f} ms |",
        "",
        "All walls time the whole collect() call, medians of interleaved repeats on one Ray "
        "session started once (ray.init excluded). Actor start-up = 2-episode ray collect wall "
        f"minus 2-episode local collect wall ({st['local_2ep']:.3f} s). Overhead walls: local "
        f"{ov['local_wall']:.2f} s, ray workers=1 {ov['ray_wall']:.2f} s.",
        "",
        "Command: `" + shlex.join([sys.executable, *argv]) + "`",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--episodes", type=int, default=2000, help="BurnEnv episodes per run")
    ap.add_argument("--episode-steps", type=int, default=100, help="BurnEnv episode length")
    ap.add_argument("--burn-us", type=float, default=50.0, help="CPU microseconds burnt per step")
    ap.add_argument(
        "--overhead-episodes", type=int, default=2000, help="CartPole episodes for the overhead"
    )
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median reported)")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    ap.add_argument("--quick", action="store_true", help="200 burn / 500 CartPole episodes")
    args = ap.parse_args(argv[1:])
    if args.quick:
        if args.episodes == ap.get_default("episodes"):
            args.episodes = 200
        if args.overhead_episodes == ap.get_default("overhead_episodes"):
            args.overhead_episodes = 500
    if min(args.episodes, args.episode_steps, args.overhead_episodes, args.repeats) < 1:
        ap.error("episodes, episode steps, overhead episodes and repeats must be >= 1")
    if BENCH_DIR not in sys.path:
        sys.path.insert(0, BENCH_DIR)  # the driver imports bench_ray through gym.make too

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import ray

    with tempfile.TemporaryDirectory(prefix="harvest-bench-ray-") as tmp:
        os.environ["HARVEST_DATASETS"] = tmp
        t0 = time.perf_counter()
        log(f"datasets root {tmp}; warming up (imports, first env), then ray.init")
        cost = env_step_cost(args.burn_us, args.episode_steps)
        collect_run(make_conf(CARTPOLE, 5, "bench/warmup-local-v0", "local"))
        collect_run(
            make_conf(
                ENV_ID,
                2,
                "bench/warmup-burn-v0",
                "local",
                env_kwargs={"burn_us": args.burn_us, "episode_steps": args.episode_steps},
            )
        )
        ray_init = start_ray()
        log(f"  ray.init {ray_init:.2f} s")
        try:
            startup = bench_startup(args.repeats, log)
            scaling = bench_scaling(
                args.episodes, args.burn_us, args.episode_steps, args.repeats, log
            )
            overhead = bench_overhead(args.overhead_episodes, args.repeats, log)
        finally:
            ray.shutdown()
        total = time.perf_counter() - t0

    res = {
        "env_step_cost": cost,
        "ray_init": ray_init,
        "startup": startup,
        "scaling": scaling,
        "overhead": overhead,
    }
    table = markdown(res, argv)
    print(table)
    print(
        f"\n(bench wall time {total:.0f} s on {os.cpu_count()} CPU(s), "
        f"Python {platform.python_version()}, Ray {ray.__version__})"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "command": argv,
                    "python": platform.python_version(),
                    "ray": ray.__version__,
                    "cpus": os.cpu_count(),
                    "wall_seconds": total,
                    **res,
                    "table": table,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
