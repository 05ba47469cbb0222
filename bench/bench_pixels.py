"""Real workloads side by side: the plain env loop, ``collect`` and Minari 0.5.4 (issue 19).

Workloads: CartPole-v1, HalfCheetah-v5 (MuJoCo), ALE/Pong-v5 raw 210x160x3, Pong 84x84 gray
(``AtariPreprocessing``, Gymnasium's documented form: ``frameskip=1`` below, ``frame_skip=4``
in the wrapper) and Crafter's 64x64x3 open world (the nearest pip-installable stand-in for
MineRL's POV frames; skipped unless ``pip install crafter``). Each is run as

- the plain loop: ``gym.make`` (and the wrappers), harvest's ``RandomPolicy`` seeded per
  episode, ``reset(seed=i)`` (a seed per episode, as ``collect`` and a user who wants
  reproducible episodes do; ``--unseeded`` also times a loop seeding its first reset only),
  nothing recorded; timed with its ``gym.make`` (``collect``'s time includes making its
  env) and without (the loop alone);
- ``collect``: the whole Python call at default settings (``storage.compression=auto``,
  ``storage.encoder=auto``), the same episodes;
- Minari 0.5.4: its ``DataCollector`` around the same env and loop, then ``create_dataset``,

each in a fresh process (imports not timed: each first makes and closes one env),
interleaved ``--repeats`` times (A B C A B C): ratios are taken within a repeat and the
median is printed. Bytes per frame are the
dataset's bytes on disk over its observation rows (harvest) or the folder over its
observations (Minari). Goals (issue 19): ``collect`` >= 0.8x the plain loop on every
workload; Pong <= 120 B/frame, 84x84 <= 45.

    python bench/bench_pixels.py                 # every workload, 2 repeats
    python bench/bench_pixels.py --only pong84 --repeats 3

Reading pixels (``batch_iter`` RSS, rate against numpy, first batch) is
``bench/bench_pixels_read.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

HERE = Path(__file__).resolve().parent

#: name -> (env id, env kwargs, wrappers, episodes, max_episode_steps)
WORKLOADS: dict[str, tuple[str, dict[str, Any], list[dict[str, Any]], int, int | None]] = {
    "cartpole": ("CartPole-v1", {}, [], 2000, None),
    "halfcheetah": ("HalfCheetah-v5", {}, [], 20, None),
    "pong": ("ALE/Pong-v5", {}, [], 3, 1000),
    "pong84": (
        "ALE/Pong-v5",
        {"frameskip": 1},
        [{"_target_": "gymnasium.wrappers.AtariPreprocessing", "frame_skip": 4}],
        3,
        4000,
    ),
    "crafter": ("bench_pixels:bench/Crafter-v0", {}, [], 3, 500),
}


class CrafterEnv(gym.Env):
    """Crafter (old gym API) as a Gymnasium env: 64x64x3 uint8 frames, 17 actions."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, length: int = 10000) -> None:
        import crafter

        self._env = crafter.Env(length=length)
        self.observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(17)

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        if seed is not None:
            self._env._seed = int(seed)  # crafter seeds its world from this at reset
        return self._env.reset(), {}

    def step(self, action: Any):  # type: ignore[override]
        obs, reward, done, _ = self._env.step(int(action))
        return obs, float(reward), bool(done), False, {}


if "bench/Crafter-v0" not in gym.registry:
    gym.register("bench/Crafter-v0", entry_point="bench_pixels:CrafterEnv")


def _make(name: str) -> gym.Env:
    from collector.envs import make_env

    env_id, kwargs, wrappers, _, max_steps = WORKLOADS[name]
    return make_env(env_id, kwargs, max_steps, wrappers)


def _loop(env: gym.Env, episodes: int, on_step: Any = None, seeded: bool = True) -> int:
    """harvest's RandomPolicy, seeded per episode; returns the steps taken.

    ``seeded``: every reset gets the episode's seed, as a user who wants reproducible
    episodes writes it and as ``collect`` does (DESIGN.md section 5); False seeds the first
    reset only (ale-py reloads its ROM at every seeded reset: ~0.1 s a Pong episode).
    """
    from collector.policies import RandomPolicy

    policy = RandomPolicy(env.action_space)
    steps = 0
    for i in range(episodes):
        policy.reset(i)
        obs, _ = env.reset(seed=i) if seeded or i == 0 else env.reset()
        done = False
        while not done:
            obs, _, term, trunc, _ = env.step(policy.act(obs))
            steps += 1
            done = term or trunc
    return steps


def child(kind: str, name: str, root: str) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    env_id, kwargs, wrappers, episodes, max_steps = WORKLOADS[name]
    os.environ["HARVEST_DATASETS"] = root
    # imports are not timed, whoever does them (ale_py, cv2 for a wrapper, MuJoCo): one env
    # made and closed first; each kind's time then includes making its env, as collect's does
    _make(name).close()
    if kind in ("plain", "plain-unseeded"):
        start = time.perf_counter()
        env = _make(name)
        made = time.perf_counter()
        steps = _loop(env, episodes, seeded=kind == "plain")
        end = time.perf_counter()
        return {"steps": steps, "seconds": end - start, "loop_seconds": end - made}
    if kind == "collect":
        from collector.collect import collect

        start = time.perf_counter()
        result = collect(
            {
                "env": env_id,
                "env_kwargs": kwargs,
                "wrappers": wrappers,
                "max_episode_steps": max_steps,
                "episodes": episodes,
                "dataset_id": f"bench/{name}-v0",
                "progress": False,
            }
        )
        seconds = time.perf_counter() - start
        from collector import storage

        folder = sum(p.stat().st_size for p in Path(result.path).rglob("*") if p.is_file())
        frames = result.total_steps + result.total_episodes
        listed = storage.stored_bytes(storage.read_metadata(result.path))  # shards + indexes
        return {
            "steps": result.total_steps,
            "seconds": seconds,
            "bytes_per_frame": result.dataset_bytes / frames,
            "folder_ratio": folder / result.dataset_bytes,
            "listed_ratio": folder / listed,
        }
    import warnings

    warnings.filterwarnings("ignore")
    os.environ["MINARI_DATASETS_PATH"] = root
    from minari import DataCollector

    start = time.perf_counter()
    env = DataCollector(_make(name))
    steps = _loop(env, episodes)
    dataset = env.create_dataset(f"bench/{name}-v0", algorithm_name="random")
    seconds = time.perf_counter() - start
    folder = Path(root) / "bench" / f"{name}-v0"
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {
        "steps": steps,
        "seconds": seconds,
        "bytes_per_frame": size / (dataset.total_steps + dataset.total_episodes),
    }


def measure(kind: str, name: str) -> dict[str, Any] | None:
    root = tempfile.mkdtemp(prefix=f"bench-{name}-{kind}-")
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__)), "--child", kind, name, root],
            capture_output=True,
            text=True,
            timeout=1800,
            cwd=HERE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])},
        )
        if proc.returncode != 0:
            print(f"  {name} {kind}: failed: {proc.stderr.strip().splitlines()[-1:]}")
            return None
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-minari", action="store_true")
    ap.add_argument(
        "--unseeded",
        action="store_true",
        help="also time a plain loop seeding its first reset only",
    )
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    names = args.only or list(WORKLOADS)
    kinds = ["plain", "collect"] + ([] if args.no_minari else ["minari"])
    kinds += ["plain-unseeded"] if args.unseeded else []
    rows = []
    for name in names:
        if name == "crafter":
            try:
                import crafter  # noqa: F401
            except ImportError:
                print("crafter: skipped (pip install crafter)")
                continue
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for _ in range(args.repeats):
            for kind in kinds:
                out = measure(kind, name)
                if out is not None:
                    runs[kind].append(out)
        rows.append((name, runs))
        print(f"{name}: done", flush=True)
    print()
    head = (
        f"{'workload':<12} {'plain steps/s':>13} {'collect x':>9} {'x loop':>9} "
        f"{'x unseeded':>10} {'minari x':>8} {'B/frame':>9} {'minari B/frame':>14} "
        f"{'folder/data':>11} {'folder/listed':>13}"
    )
    print(head)
    print("-" * len(head))
    for name, runs in rows:
        plain = runs["plain"]
        rate = statistics.median(r["steps"] / r["loop_seconds"] for r in plain) if plain else 0

        def ratio(kind: str, base: str = "plain", key: str = "seconds", runs: dict = runs) -> str:
            pairs = zip(runs.get(base, []), runs.get(kind, []), strict=False)
            values = [p[key] / k["seconds"] * k["steps"] / p["steps"] for p, k in pairs]
            return f"{statistics.median(values):.2f}" if values else "-"

        def field(kind: str, key: str, fmt: str, runs: dict = runs) -> str:
            values = [r[key] for r in runs.get(kind, []) if key in r]
            return format(statistics.median(values), fmt) if values else "-"

        print(
            f"{name:<12} {rate:>13,.0f} {ratio('collect'):>9} "
            f"{ratio('collect', key='loop_seconds'):>9} "
            f"{ratio('collect', base='plain-unseeded'):>10} {ratio('minari'):>8} "
            f"{field('collect', 'bytes_per_frame', ',.0f'):>9} "
            f"{field('minari', 'bytes_per_frame', ',.0f'):>14} "
            f"{field('collect', 'folder_ratio', '.2f'):>11} "
            f"{field('collect', 'listed_ratio', '.2f'):>13}"
        )
    print(
        "\ncollect x: against the plain loop with its gym.make (collect's time has its own),"
        "\neach reset seeded (as collect seeds each episode); x loop: against the loop alone"
        "\n(before 2026-12-06 the only figure); x unseeded: against a loop with its gym.make"
        "\nseeding its first reset only (--unseeded). folder/data: the dataset's folder after"
        "\ncollect over its shards; folder/listed: over the files its commit lists (shards and"
        "\nindex files, the size curate list prints): above 1.00 only by metadata.json."
    )


if __name__ == "__main__":
    main()
