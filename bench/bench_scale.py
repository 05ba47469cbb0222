"""Benchmark the costs that should not grow with the dataset (issue 18), beside Minari 0.5.4.

Every measurement runs in a fresh child process (this script with ``--child``), so peak RSS
(``VmHWM``) and "the first ``load_dataset`` in a process" mean what they say. Measured:

a) **Checkpoint appends**, Minari's own pattern: a ``DataCollector`` over CartPole-v1 (a
   seeded random policy, ``reset(seed=i)``), ``create_dataset`` after the first 10 episodes,
   then ``add_to_dataset`` every 10 episodes, up to N episodes for N in ``--sizes`` (100, 1k,
   10k, 100k). Reported: the median ``add_to_dataset`` call over the first and the last 10%
   of calls (at least 3 each; flat is the goal), their ratio, and the total time in
   ``add_to_dataset``.
b) **Opening** the dataset a) made: ``load_dataset`` (``minari.load_dataset``) in a fresh
   process after the imports, then again in the same process.
c) **Peak RSS recording** ``--pendulum-steps`` Pendulum-v1 steps (1M) through a
   ``DataCollector`` then ``create_dataset``, without infos and with an info payload (16
   float64 a step, in the reset info too, as Minari needs the same keys every step).
d) **Peak RSS of a collection run** of N CartPole episodes for N in ``--collect-sizes`` (1k,
   10k, 100k): harvest's ``collect`` (default config), Minari's ``DataCollector`` loop plus
   ``create_dataset`` (Minari has no collect command).

Minari runs only up to ``--max-minari-episodes`` (10k) and ``--max-minari-steps`` (1M); above
that its cells say "skipped". ``--no-minari`` leaves it out. Goals (issue 18): per-call append
cost flat from 100 to 100k episodes and the whole pattern >= 3x Minari; opening <= 5 ms
first and <= 1 ms again at any size; recording with infos <= 1.3x the peak RSS without;
``collect`` peak RSS <= 1.5x from 1k to 100k episodes.

Run: ``python bench/bench_scale.py`` (the full sizes take hours on 2 cores, mostly Minari's
side: run it on a quiet machine) or ``--quick`` (100 and 1k episodes, 20k Pendulum steps,
collect at 1k and 2k: a minute or two).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from _common import verdict, vm_hwm_kib

CARTPOLE, PENDULUM = "CartPole-v1", "Pendulum-v1"
APPEND_ID, RECORD_ID, COLLECT_ID = "bench/appends-v0", "bench/record-v0", "bench/collect-v0"
EVERY = 10  # episodes between checkpoints, as in Minari's docs
PAYLOAD = 16  # float64 values in each step's info payload
SIZES = (100, 1_000, 10_000, 100_000)
COLLECT_SIZES = (1_000, 10_000, 100_000)
QUICK = {"sizes": (100, 1_000), "collect_sizes": (1_000, 2_000), "pendulum_steps": 20_000}


def quiet() -> None:
    """Minari warns about every missing author field; nothing measured."""
    warnings.filterwarnings("ignore")


# --------------------------------------------------------------------------------------------
# children: one measurement each, printed as one JSON line


def make_collector(tool: str, env: Any, record_infos: bool, root: str) -> Any:
    if tool == "minari":
        import minari

        return minari.DataCollector(env, record_infos=record_infos)
    from collector import DataCollector

    return DataCollector(env, record_infos=record_infos, root=root)


def run_episode(env: Any, seed: int, rng: Any, act: Any) -> int:
    env.reset(seed=seed)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(act(rng))
        steps, done = steps + 1, terminated or truncated
    return steps


def child_appends(tool: str, episodes: int, root: str) -> dict[str, Any]:
    """a) CartPole, a checkpoint every EVERY episodes; the time of each call."""
    import gymnasium as gym
    import numpy as np

    env = make_collector(tool, gym.make(CARTPOLE), False, root)
    rng = np.random.default_rng(0)
    calls: list[float] = []
    dataset, steps, start = None, 0, time.perf_counter()
    for i in range(episodes):
        steps += run_episode(env, i, rng, lambda r: int(r.integers(2)))
        if (i + 1) % EVERY and i + 1 != episodes:
            continue
        t0 = time.perf_counter()
        if dataset is None:
            dataset = env.create_dataset(APPEND_ID)
        else:
            env.add_to_dataset(dataset if tool == "minari" else APPEND_ID)
            calls.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    env.close()
    return {"calls": calls, "steps": steps, "wall": wall}


def child_open(tool: str, root: str) -> dict[str, Any]:
    """b) ``load_dataset`` twice in a fresh process (imports done first, not timed)."""
    if tool == "minari":
        import minari

        load = minari.load_dataset
    else:
        import curation

        def load(dataset_id: str) -> Any:
            return curation.load_dataset(dataset_id, root=root)

    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        ds = load(APPEND_ID)
        times.append(time.perf_counter() - t0)
    return {"first": times[0], "again": times[1], "episodes": ds.total_episodes}


def payload_env(env: Any) -> Any:
    """Pendulum with ``info["payload"]``: PAYLOAD float64 a step, the reset info included."""
    import gymnasium as gym
    import numpy as np

    class Payload(gym.Wrapper):
        def reset(self, **kw: Any) -> Any:
            obs, info = self.env.reset(**kw)
            self.t = 0
            return obs, {**info, "payload": np.zeros(PAYLOAD)}

        def step(self, action: Any) -> Any:
            obs, rew, term, trunc, info = self.env.step(action)
            self.t += 1
            return obs, rew, term, trunc, {**info, "payload": np.full(PAYLOAD, float(self.t))}

    return Payload(env)


def child_record(tool: str, steps: int, infos: bool, root: str) -> dict[str, Any]:
    """c) peak RSS recording ``steps`` Pendulum steps (with or without the info payload)."""
    import gymnasium as gym
    import numpy as np

    inner = gym.make(PENDULUM)
    env = make_collector(tool, payload_env(inner) if infos else inner, infos, root)
    base = vm_hwm_kib()
    rng = np.random.default_rng(0)
    done, i, start = 0, 0, time.perf_counter()
    while done < steps:
        done += run_episode(env, i, rng, lambda r: r.uniform(-2, 2, (1,)).astype(np.float32))
        i += 1
    env.create_dataset(RECORD_ID)
    env.close()
    return {"steps": done, "wall": time.perf_counter() - start, "base_kib": base}


def child_collect(tool: str, episodes: int, root: str) -> dict[str, Any]:
    """d) peak RSS of a whole collection run of ``episodes`` CartPole episodes."""
    start = time.perf_counter()
    if tool == "minari":
        import gymnasium as gym
        import numpy as np

        env = make_collector(tool, gym.make(CARTPOLE), False, root)
        rng = np.random.default_rng(0)
        steps = sum(run_episode(env, i, rng, lambda r: int(r.integers(2))) for i in range(episodes))
        env.create_dataset(COLLECT_ID)
        env.close()
    else:
        from _common import compose_cfg

        from collector.collect import collect

        cfg = compose_cfg(
            [f"episodes={episodes}", f"dataset_id={COLLECT_ID}", f"datasets_root={root}",
             "progress=false"]
        )  # fmt: skip
        steps = collect(cfg).total_steps
    return {"steps": steps, "wall": time.perf_counter() - start}


CHILDREN = {
    "appends": child_appends,
    "open": child_open,
    "record": child_record,
    "collect": child_collect,
}


def child_main(spec: str) -> int:
    quiet()
    args = json.loads(spec)
    out = CHILDREN[args.pop("task")](**args)
    out["peak_kib"] = vm_hwm_kib()
    print(json.dumps(out))
    return 0


def run_child(task: str, tmp: Path, timeout: float, **kw: Any) -> dict[str, Any]:
    """One measurement in a fresh interpreter; its own harvest root and Minari root."""
    root = tmp / kw["tool"] / "harvest"
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp / kw["tool"] / "minari")}
    env["HARVEST_DATASETS"] = str(root)
    spec = json.dumps({"task": task, **kw, "root": str(root)})
    try:
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", spec],
            capture_output=True, text=True, env=env, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {out.returncode}: {last}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# driver and table


def per_call(calls: list[float]) -> dict[str, float]:
    """Median call over the first and the last 10% of calls (at least three each).

    At least three: with 9 calls (100 episodes) one call alone is whichever one happened to
    merge shards, not the typical cost.
    """
    k = min(len(calls), max(3, len(calls) // 10))
    first, last = statistics.median(calls[:k]), statistics.median(calls[-k:])
    return {"first": first, "last": last, "growth": last / first, "total": sum(calls)}


def measure(args: argparse.Namespace, tmp: Path, log: Any) -> dict[str, Any]:
    tools = ["harvest"] + ([] if args.no_minari else ["minari"])
    res: dict[str, Any] = {"appends": {}, "record": {}, "collect": {}}
    for n in args.sizes:
        for tool in tools:
            if tool == "minari" and n > args.max_minari_episodes:
                continue
            where = tmp / f"appends-{n}"
            log(f"appends: {tool}, {n:,} episodes")
            got = run_child("appends", where, args.timeout, tool=tool, episodes=n)
            if "calls" in got:
                got.update(per_call(got.pop("calls")))
                log(f"open: {tool}, {n:,} episodes")
                got["open"] = run_child("open", where, args.timeout, tool=tool)
            res["appends"][(tool, n)] = got
    for infos in (False, True):
        for tool in tools:
            if tool == "minari" and args.pendulum_steps > args.max_minari_steps:
                continue
            log(f"record: {tool}, {args.pendulum_steps:,} Pendulum steps, infos={infos}")
            res["record"][(tool, infos)] = run_child(
                "record", tmp / f"record-{infos}", args.timeout, tool=tool,
                steps=args.pendulum_steps, infos=infos,
            )  # fmt: skip
    for n in args.collect_sizes:
        for tool in tools:
            if tool == "minari" and n > args.max_minari_episodes:
                continue
            log(f"collect: {tool}, {n:,} episodes")
            res["collect"][(tool, n)] = run_child(
                "collect", tmp / f"collect-{n}", args.timeout, tool=tool, episodes=n
            )
    return res


def ms(t: float) -> str:
    return f"{t * 1e3:.2f} ms" if t < 0.01 else f"{t * 1e3:.0f} ms" if t < 10 else f"{t:.0f} s"


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def cell(got: dict[str, Any] | None, show: Any) -> str:
    if got is None:
        return "skipped"
    if "error" in got:
        return f"failed ({got['error']})"
    return show(got)


def growth(g: dict[str, Any]) -> str:
    return f"{ms(g['first'])} -> {ms(g['last'])} ({g['growth']:.1f}x)"


def total(g: dict[str, Any]) -> str:
    return f"{g['total']:.2f} s"


def opened(g: dict[str, Any]) -> str:
    return cell(g.get("open"), lambda o: f"{ms(o['first'])} / {ms(o['again'])}")


def table(res: dict[str, Any], args: argparse.Namespace) -> list[str]:
    minari = not args.no_minari
    out = [
        "| measure | size | harvest | Minari 0.5.4 | goal |",
        "|---|---|---|---|---|",
    ]
    app = res["appends"]
    for n in args.sizes:
        h, m = app.get(("harvest", n)), app.get(("minari", n)) if minari else None
        out.append(
            f"| add_to_dataset per call, first -> last 10% | {n:,} eps "
            f"| {cell(h, growth)} | {cell(m, growth)} | flat |"
        )
        speed = ""
        if h and m and "total" in h and "total" in m:
            speed = f"{m['total'] / h['total']:.1f}x faster"
        out.append(
            f"| time in add_to_dataset (whole run) | {n:,} eps "
            f"| {cell(h, total)} | {cell(m, total)} | >= 3x Minari ({speed or '-'}) |"
        )
    for n in args.sizes:
        h, m = app.get(("harvest", n)), app.get(("minari", n)) if minari else None

        out.append(
            f"| load_dataset first / again (same process) | {n:,} eps "
            f"| {cell(h, opened)} | {cell(m, opened)} | <= 5 ms / <= 1 ms |"
        )
    rec = res["record"]
    steps = f"{args.pendulum_steps:,} steps"
    for infos in (False, True):
        h, m = rec.get(("harvest", infos)), rec.get(("minari", infos)) if minari else None
        ratio = ""
        base = rec.get(("harvest", False))
        if infos and h and base and "peak_kib" in h and "peak_kib" in base:
            ratio = f" ({h['peak_kib'] / base['peak_kib']:.2f}x without)"
        out.append(
            f"| peak RSS recording Pendulum, {'with' if infos else 'no'} info payload | {steps} "
            f"| {cell(h, lambda g, r=ratio: mib(g['peak_kib']) + r)} "
            f"| {cell(m, lambda g: mib(g['peak_kib']))} "
            f"| {'<= 1.3x without' if infos else '-'} |"
        )
    col = res["collect"]
    for n in args.collect_sizes:
        h, m = col.get(("harvest", n)), col.get(("minari", n)) if minari else None
        ratio = ""
        first = col.get(("harvest", args.collect_sizes[0]))
        if n != args.collect_sizes[0] and h and first and "peak_kib" in h and "peak_kib" in first:
            ratio = f" ({h['peak_kib'] / first['peak_kib']:.2f}x {args.collect_sizes[0]:,})"
        out.append(
            f"| peak RSS of a collection run (CartPole) | {n:,} eps "
            f"| {cell(h, lambda g, r=ratio: mib(g['peak_kib']) + r)} "
            f"| {cell(m, lambda g: mib(g['peak_kib']))} "
            f"| <= 1.5x from {args.collect_sizes[0]:,} |"
        )
    return out


def verdicts(res: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """PASS/FAIL of each goal that the sizes measured can judge."""
    lines = []
    app = [res["appends"].get(("harvest", n)) for n in args.sizes]
    if all(g and "growth" in g for g in app):
        worst = max(g["growth"] for g in app)
        lines.append(f"per-call append growth <= 2x at every size: {verdict(worst <= 2)}")
        opens = [g["open"] for g in app if "first" in g.get("open", {})]
        if opens:
            ok = all(o["first"] <= 5e-3 and o["again"] <= 1e-3 for o in opens)
            lines.append(f"open <= 5 ms first, <= 1 ms again: {verdict(ok)}")
    base, infos = res["record"].get(("harvest", False)), res["record"].get(("harvest", True))
    if base and infos and "peak_kib" in base and "peak_kib" in infos:
        lines.append(
            f"record RSS with infos <= 1.3x without: "
            f"{verdict(infos['peak_kib'] <= 1.3 * base['peak_kib'])}"
        )
    col = [res["collect"].get(("harvest", n)) for n in args.collect_sizes]
    if len(col) > 1 and all(g and "peak_kib" in g for g in col):
        lines.append(
            f"collect RSS <= 1.5x from {args.collect_sizes[0]:,} to {args.collect_sizes[-1]:,}: "
            f"{verdict(col[-1]['peak_kib'] <= 1.5 * col[0]['peak_kib'])}"
        )
    return lines


def sizes(text: str) -> tuple[int, ...]:
    return tuple(int(float(x)) for x in text.split(",") if x)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="CI-size: " + str(QUICK))
    ap.add_argument("--sizes", type=sizes, default=None, help="append/open episode counts")
    ap.add_argument("--collect-sizes", type=sizes, default=None)
    ap.add_argument("--pendulum-steps", type=int, default=None)
    ap.add_argument("--max-minari-episodes", type=int, default=10_000)
    ap.add_argument("--max-minari-steps", type=int, default=1_000_000)
    ap.add_argument("--no-minari", action="store_true")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per child")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args(argv[1:])
    if args.child:
        return child_main(args.child)
    preset = QUICK if args.quick else {}
    args.sizes = args.sizes or preset.get("sizes", SIZES)
    args.collect_sizes = args.collect_sizes or preset.get("collect_sizes", COLLECT_SIZES)
    args.pendulum_steps = args.pendulum_steps or preset.get("pendulum_steps", 1_000_000)
    if not args.no_minari:
        try:
            import minari  # noqa: F401
        except ImportError:
            print("minari is not installed: harvest only (--no-minari)", file=sys.stderr)
            args.no_minari = True

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        res = measure(args, Path(tmp), log)
    lines = [
        f"### Flat at any size (issue 18): {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "",
        *table(res, args),
        "",
        f"Each cell is one fresh child process. Appends: CartPole-v1, seeded random actions, "
        f"create_dataset after {EVERY} episodes then add_to_dataset every {EVERY}; per call: "
        "median of the first and of the last 10% of calls. Open: the appended dataset, "
        "load_dataset after the imports, then again in the same process. Record: Pendulum-v1 "
        f"through DataCollector then create_dataset; the payload is {PAYLOAD} float64 a step. "
        "Collect: harvest's collect (default config) / Minari's DataCollector loop and "
        "create_dataset. Peak RSS is the child's VmHWM.",
        *verdicts(res, args),
        "",
        "Command: `" + shlex.join([sys.executable, *argv]) + "`",
    ]
    print("\n".join(lines))
    if args.json:
        flat = {k: {f"{a}|{b}": v for (a, b), v in d.items()} for k, d in res.items()}
        args.json.write_text(json.dumps(flat, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
