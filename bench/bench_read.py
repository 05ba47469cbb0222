"""Benchmark reading: harvest against Minari 0.5.4 (HDF5) and against numpy on in-memory arrays.

Setup per dataset (not timed): ``collect`` a random-policy dataset with the default config
(gzip, default checkpoint cadence), then write **the same episodes** into a Minari dataset with
``minari.create_dataset_from_buffers`` (``MINARI_DATASETS_PATH`` points into a temp dir) and
check that both hold the same data (step and episode counts, and a few episodes' observations,
actions, rewards and flags compared exactly).

Measured per dataset (CartPole-v1 ~200k steps, Pendulum-v1 1M steps), each a median over
interleaved repeats (harvest and Minari back to back, order alternating between repeats):

a) iterate all episodes, touching each episode's observations: ``load_dataset`` + a full pass,
   with the open inside the timed region (open time also reported alone). A fresh dataset object
   each repeat, so harvest's block cache starts cold (the OS page cache is warm for both);
b) ``sample_episodes(32)`` and ``sample_episodes(256)``: the first (cold) call on a fresh,
   seeded dataset object, then the median of many further calls on the same object;
c) random transition batches of 256: ``pipeline(num_workers=W).batch_iter(256, 1)`` for W in
   (0, 2) against the in-memory limit (numpy fancy indexing of the six ``to_transitions()``
   arrays with ``rng.integers(N, size=256)`` per batch); the first batch is excluded and its
   latency reported as startup;
d) peak RSS of ``batch_iter(256, 1, num_workers=2)`` over CartPole ~200k and ~1M steps, each in a
   fresh process (``VmHWM`` from /proc of the consumer and of its reader processes, and the peak
   of their summed ``Pss`` sampled while iterating).

Targets (issue): iterate >= 50x Minari; sample_episodes(32) >= 20x Minari; transition batches
>= 0.25x the in-memory limit; peak RSS of batch_iter flat as the dataset grows 5x (read here as
<= 1.10x).

Run: ``python bench/bench_read.py`` (about 3 min on 2 cores; needs the ``minari`` extra) or
``--quick`` (CartPole only, small; about 30 s).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import compose_cfg, dir_bytes, pss_kib, verdict, vm_hwm_kib

ROOT_SEED = 0
BATCH = 256
ITERATE_TARGET = 50.0
SAMPLE_TARGET = 20.0
BATCH_TARGET = 0.25
RSS_TARGET = 1.10  # "flat": our reading of the issue
ISSUE_LIMIT = 8.8e6  # the issue's quoted numpy in-memory figure, transitions/s
MEAN_STEPS = {"CartPole-v1": 22, "Pendulum-v1": 200}
TRANSITION_KEYS = (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "terminals",
    "timeouts",
)


# --------------------------------------------------------------------------------------------
# setup: the same episodes in both formats


def collect_ours(env_id: str, episodes: int, dataset_id: str, root: str) -> dict[str, Any]:
    """``collect`` with the default config (RandomPolicy, gzip, default checkpoints)."""
    from collector.collect import collect

    cfg = compose_cfg(
        [
            f"env={env_id}",
            f"episodes={episodes}",
            f"seed={ROOT_SEED}",
            f"dataset_id={dataset_id}",
            f"datasets_root={root}",
            "progress=false",
        ]
    )
    start = time.perf_counter()
    res = collect(cfg)
    return {
        "episodes": res.total_episodes,
        "steps": res.total_steps,
        "bytes": res.dataset_bytes,
        "wall": time.perf_counter() - start,
    }


def write_minari(env_id: str, dataset_id: str, minari_id: str, root: str) -> dict[str, Any]:
    """Write our episodes, unchanged, into a Minari HDF5 dataset."""
    import minari
    from minari.data_collector import EpisodeBuffer

    from curation import load_dataset

    start = time.perf_counter()
    ds = load_dataset(dataset_id, root=root)
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=ep.seed,
            observations=ep.observations,
            actions=ep.actions,
            rewards=ep.rewards,
            terminations=ep.terminations,
            truncations=ep.truncations,
            infos={},
        )
        for i, ep in enumerate(ds)
    ]
    read = time.perf_counter() - start
    start = time.perf_counter()
    mds = minari.create_dataset_from_buffers(
        dataset_id=minari_id,
        buffer=buffers,
        env=env_id,
        eval_env=env_id,  # None warns
        algorithm_name="random",
        author="harvest bench",
        author_email="bench@example.invalid",
        code_permalink="https://example.invalid/bench_read.py",
        description="harvest bench_read: the same episodes as the harvest dataset",
        data_format="hdf5",
    )
    return {
        "read_ours": read,
        "write": time.perf_counter() - start,
        "episodes": mds.total_episodes,
        "steps": mds.total_steps,
        "bytes": dir_bytes(Path(mds.spec.data_path)),
    }


def verify_same(dataset_id: str, minari_id: str, root: str) -> dict[str, Any]:
    """Both datasets hold the same episodes: counts, and a few episodes compared exactly."""
    import minari
    import numpy as np

    from curation import load_dataset

    ours, theirs = load_dataset(dataset_id, root=root), minari.load_dataset(minari_id)
    if (ours.total_steps, ours.total_episodes) != (theirs.total_steps, theirs.total_episodes):
        raise RuntimeError(
            f"datasets differ: harvest {ours.total_episodes} eps / {ours.total_steps} steps, "
            f"Minari {theirs.total_episodes} eps / {theirs.total_steps} steps"
        )
    n = ours.total_episodes
    checked = sorted({0, 1, n // 3, n // 2, n - 1} & set(range(n)))
    for i in checked:
        a, b = ours[i], theirs[i]
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            x, y = getattr(a, field), getattr(b, field)
            if not np.array_equal(np.asarray(x), np.asarray(y)):
                raise RuntimeError(f"episode {i}: {field} differ between harvest and Minari")
    return {"steps": ours.total_steps, "episodes": n, "episodes_compared": checked}


# --------------------------------------------------------------------------------------------
# a) iterate all episodes


def iterate_ours(dataset_id: str, root: str) -> dict[str, Any]:
    from curation import load_dataset

    gc.collect()
    start = time.perf_counter()
    ds = load_dataset(dataset_id, root=root)  # fresh object: cold block cache
    opened = time.perf_counter()
    steps = rows = 0
    for ep in ds:
        rows += ep.observations.shape[0]
        steps += len(ep.rewards)
    wall = time.perf_counter() - start
    return {"wall": wall, "open": opened - start, "steps": steps, "obs_rows": rows,
            "steps_per_s": steps / wall}  # fmt: skip


def iterate_minari(minari_id: str) -> dict[str, Any]:
    import minari

    gc.collect()
    start = time.perf_counter()
    ds = minari.load_dataset(minari_id)
    opened = time.perf_counter()
    steps = rows = 0
    for ep in ds.iterate_episodes():
        rows += ep.observations.shape[0]
        steps += len(ep.rewards)
    wall = time.perf_counter() - start
    return {"wall": wall, "open": opened - start, "steps": steps, "obs_rows": rows,
            "steps_per_s": steps / wall}  # fmt: skip


# --------------------------------------------------------------------------------------------
# b) sample_episodes


def sample_calls(ds: Any, n: int, calls: int, seed: int) -> dict[str, Any]:
    """First call on a fresh seeded object (cold), then ``calls`` more, each timed alone."""
    ds.set_seed(seed)
    gc.collect()
    start = time.perf_counter()
    eps = ds.sample_episodes(n)
    cold = time.perf_counter() - start
    if len(eps) != n:
        raise RuntimeError(f"sample_episodes({n}) returned {len(eps)} episodes")
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        eps = ds.sample_episodes(n)
        times.append(time.perf_counter() - start)
    return {"cold_ms": cold * 1e3, "warm_ms": statistics.median(times) * 1e3,
            "warm_ms_all": [t * 1e3 for t in times]}  # fmt: skip


def sample_ours(dataset_id: str, root: str, n: int, calls: int, seed: int) -> dict[str, Any]:
    from curation import load_dataset

    return sample_calls(load_dataset(dataset_id, root=root), n, calls, seed)


def sample_minari(minari_id: str, n: int, calls: int, seed: int) -> dict[str, Any]:
    import minari

    return sample_calls(minari.load_dataset(minari_id), n, calls, seed)


# --------------------------------------------------------------------------------------------
# c) transition batches


def load_transitions(dataset_id: str, root: str) -> tuple[list[Any], float]:
    from curation import load_dataset

    start = time.perf_counter()
    tr = load_dataset(dataset_id, root=root).to_transitions()
    return [tr[k] for k in TRANSITION_KEYS], time.perf_counter() - start


def limit_batches(arrays: list[Any], transitions: int) -> dict[str, Any]:
    """The in-memory limit: one ``rng.integers`` and six fancy indexes per batch."""
    import numpy as np

    obs, act, rew, nxt, term, trunc = arrays
    n = len(rew)
    rng = np.random.default_rng(ROOT_SEED)
    batches = -(-transitions // BATCH)
    gc.collect()
    start = time.perf_counter()
    for _ in range(batches):
        idx = rng.integers(n, size=BATCH)
        _ = (obs[idx], act[idx], rew[idx], nxt[idx], term[idx], trunc[idx])
    wall = time.perf_counter() - start
    done = batches * BATCH
    return {"transitions": done, "wall": wall, "per_s": done / wall}


def pipeline_batches(dataset_id: str, root: str, workers: int, transitions: int) -> dict[str, Any]:
    """``batch_iter(256, 1)`` on a fresh dataset; the first batch is timed apart (startup)."""
    from curation import load_dataset

    ds = load_dataset(dataset_id, root=root)
    epochs = math.ceil((transitions + 2 * BATCH) / max(1, ds.total_steps)) + 1
    pipe = ds.pipeline(num_workers=workers)
    gc.collect()
    start = time.perf_counter()
    it = pipe.batch_iter(BATCH, 1, num_epochs=epochs, seed=ROOT_SEED)
    first = next(it)
    t_first = time.perf_counter()
    if first[2].shape[:2] != (BATCH, 1):
        raise RuntimeError(f"unexpected batch shape {first[2].shape}")
    done = 0
    for batch in it:
        done += batch[2].shape[0]
        if done >= transitions:
            break
    t_end = time.perf_counter()
    it.close()  # stops and reaps the reader processes
    closed = time.perf_counter()
    wall = t_end - t_first
    return {"workers": workers, "transitions": done, "wall": wall, "per_s": done / wall,
            "startup_ms": (t_first - start) * 1e3, "close_ms": (closed - t_end) * 1e3}  # fmt: skip


# --------------------------------------------------------------------------------------------
# d) peak RSS in fresh processes

_RSS_CHILD = """
import json, sys
sys.path.insert(0, {bench_dir!r})
import bench_read as b
print(json.dumps(b.rss_measure({dataset_id!r}, {root!r}, {workers}, {batches})))
"""


def rss_measure(dataset_id: str, root: str, workers: int, batches: int) -> dict[str, Any]:
    """Run in a fresh process: peak RSS of batch_iter, consumer and reader processes."""
    import multiprocessing as mp

    import h5py  # noqa: F401  (imports before the baseline reading)
    import numpy as np  # noqa: F401

    import curation.pipeline  # noqa: F401
    from curation import load_dataset

    hwm_imports = vm_hwm_kib()
    ds = load_dataset(dataset_id, root=root)
    hwm_open = vm_hwm_kib()
    workers_hwm: dict[int, int] = {}
    pss_peak = [0]

    def poll() -> None:
        pss = pss_kib() or 0
        for child in mp.active_children():
            if child.pid is not None:
                kib = vm_hwm_kib(child.pid)
                if kib is not None:
                    workers_hwm[child.pid] = max(kib, workers_hwm.get(child.pid, 0))
                pss += pss_kib(child.pid) or 0
        pss_peak[0] = max(pss_peak[0], pss)

    it = ds.pipeline(num_workers=workers).batch_iter(BATCH, 1, num_epochs=-1, seed=ROOT_SEED)
    done = 0
    start = time.perf_counter()
    for i, _batch in enumerate(it):
        done += 1
        if i % 50 == 0 or done >= batches:
            poll()
        if done >= batches:
            break
    wall = time.perf_counter() - start
    it.close()
    consumer = vm_hwm_kib()
    per_worker = sorted(workers_hwm.values())
    return {
        "steps": ds.total_steps,
        "episodes": ds.total_episodes,
        "raw_bytes": raw_bytes(ds),
        "batches": done,
        "wall": wall,
        "workers": workers,
        "hwm_imports_kib": hwm_imports,
        "hwm_open_kib": hwm_open,
        "consumer_kib": consumer,
        "workers_kib": per_worker,
        "total_kib": (consumer or 0) + sum(per_worker),
        "pss_peak_kib": pss_peak[0] or None,
    }


def raw_bytes(ds: Any) -> int:
    """Uncompressed step data: T+1 observation rows, T actions, float64 rewards, two flags."""
    import numpy as np

    def row(space: Any) -> int:
        return int(np.prod(space.shape, dtype=np.int64)) * np.dtype(space.dtype).itemsize

    steps, episodes = ds.total_steps, ds.total_episodes
    return (steps + episodes) * row(ds.observation_space) + steps * (row(ds.action_space) + 8 + 2)


def rss_child(dataset_id: str, root: str, workers: int, batches: int) -> dict[str, Any]:
    code = _RSS_CHILD.format(
        bench_dir=str(Path(__file__).resolve().parent),
        dataset_id=dataset_id,
        root=root,
        workers=workers,
        batches=batches,
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=os.environ
    )
    if out.returncode != 0:
        raise RuntimeError(f"RSS child failed ({out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# driver


def med(xs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(x[key] for x in xs)


def med_ratio(num: list[dict[str, Any]], den: list[dict[str, Any]], key: str) -> float:
    return statistics.median(a[key] / b[key] for a, b in zip(num, den, strict=True))


def bench_dataset(
    env_id: str, episodes: int, root: str, args: argparse.Namespace, log: Any
) -> dict[str, Any]:
    name = env_id.split("-")[0].lower()
    dataset_id = f"bench/{name}-random-v0"
    minari_id = f"bench/{name}-random-v0"
    hroot = str(Path(root) / "harvest")

    log(f"[{env_id}] collect {episodes} episodes (harvest, default config)")
    ours = collect_ours(env_id, episodes, dataset_id, hroot)
    log(f"[{env_id}]   {ours['steps']} steps in {ours['wall']:.1f} s; writing the same to Minari")
    theirs = write_minari(env_id, dataset_id, minari_id, hroot)
    check = verify_same(dataset_id, minari_id, hroot)
    log(f"[{env_id}]   Minari write {theirs['write']:.1f} s; same data: {check}")
    steps = ours["steps"]

    # a) iterate
    it_ours: list[dict[str, Any]] = []
    it_minari: list[dict[str, Any]] = []
    for r in range(args.repeats):
        pair = [lambda: iterate_ours(dataset_id, hroot), lambda: iterate_minari(minari_id)]
        if r % 2:
            b, a = pair[1](), pair[0]()
        else:
            a, b = pair[0](), pair[1]()
        if a["steps"] != steps or b["steps"] != steps or a["obs_rows"] != b["obs_rows"]:
            raise RuntimeError(f"iterate counts differ: {a} vs {b}")
        it_ours.append(a)
        it_minari.append(b)
        log(
            f"[{env_id}] iterate {r + 1}/{args.repeats}: harvest {a['steps_per_s']:,.0f} steps/s, "
            f"Minari {b['steps_per_s']:,.0f} steps/s ({a['steps_per_s'] / b['steps_per_s']:.0f}x)"
        )

    # b) sample_episodes
    samples: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for n in (32, 256):
        n_eff = min(n, check["episodes"])
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "minari": []}
        for r in range(args.repeats):
            seed = ROOT_SEED + r
            pair = [
                lambda n_eff=n_eff, seed=seed: sample_ours(
                    dataset_id, hroot, n_eff, args.sample_calls, seed
                ),
                lambda n_eff=n_eff, seed=seed: sample_minari(
                    minari_id, n_eff, args.sample_calls, seed
                ),
            ]
            if r % 2:
                b, a = pair[1](), pair[0]()
            else:
                a, b = pair[0](), pair[1]()
            runs["ours"].append(a)
            runs["minari"].append(b)
            log(
                f"[{env_id}] sample_episodes({n_eff}) {r + 1}/{args.repeats}: harvest "
                f"{a['warm_ms']:.2f} ms (cold {a['cold_ms']:.1f}), Minari {b['warm_ms']:.1f} ms "
                f"(cold {b['cold_ms']:.1f}) -> {b['warm_ms'] / a['warm_ms']:.0f}x"
            )
        samples[n] = runs

    # c) transition batches
    arrays, to_tr = load_transitions(dataset_id, hroot)
    if len(arrays[2]) != steps:
        raise RuntimeError(f"to_transitions gave {len(arrays[2])} rows, expected {steps}")
    target = max(args.transitions, BATCH)
    batches: dict[str, list[dict[str, Any]]] = {"limit": []}
    batches.update({f"w{w}": [] for w in args.workers})
    for r in range(args.repeats):
        lim = limit_batches(arrays, target)
        batches["limit"].append(lim)
        msg = [f"limit {lim['per_s'] / 1e6:.2f}M/s"]
        for w in args.workers:
            p = pipeline_batches(dataset_id, hroot, w, target)
            batches[f"w{w}"].append(p)
            msg.append(
                f"W={w} {p['per_s'] / 1e6:.2f}M/s ({p['per_s'] / lim['per_s']:.2f}x, "
                f"startup {p['startup_ms']:.0f} ms)"
            )
        log(f"[{env_id}] batches of {BATCH} {r + 1}/{args.repeats}: " + ", ".join(msg))
    del arrays
    gc.collect()

    result: dict[str, Any] = {
        "env": env_id,
        "dataset_id": dataset_id,
        "episodes": check["episodes"],
        "steps": steps,
        "repeats": args.repeats,
        "collect": ours,
        "minari_write": theirs,
        "verified": check,
        "iterate": {
            "ours_steps_per_s": med(it_ours, "steps_per_s"),
            "minari_steps_per_s": med(it_minari, "steps_per_s"),
            "ratio": med_ratio(it_ours, it_minari, "steps_per_s"),
            "ours_open_ms": med(it_ours, "open") * 1e3,
            "minari_open_ms": med(it_minari, "open") * 1e3,
            "ours_wall": med(it_ours, "wall"),
            "minari_wall": med(it_minari, "wall"),
            "runs": {"ours": it_ours, "minari": it_minari},
        },
        "sample": {},
        "to_transitions_s": to_tr,
        "batches": {
            "transitions": target,
            "limit_per_s": med(batches["limit"], "per_s"),
            "runs": batches,
        },
    }
    for n, runs in samples.items():
        result["sample"][n] = {
            "n": min(n, check["episodes"]),
            "calls": args.sample_calls,
            "ours_warm_ms": statistics.median(x for r in runs["ours"] for x in r["warm_ms_all"]),
            "minari_warm_ms": statistics.median(
                x for r in runs["minari"] for x in r["warm_ms_all"]
            ),
            "ratio": med_ratio(runs["minari"], runs["ours"], "warm_ms"),
            "ours_cold_ms": med(runs["ours"], "cold_ms"),
            "minari_cold_ms": med(runs["minari"], "cold_ms"),
            "cold_ratio": med_ratio(runs["minari"], runs["ours"], "cold_ms"),
            "runs": runs,
        }
    for w in args.workers:
        runs_w = batches[f"w{w}"]
        result["batches"][f"w{w}"] = {
            "per_s": med(runs_w, "per_s"),
            "ratio": med_ratio(runs_w, batches["limit"], "per_s"),
            "startup_ms": med(runs_w, "startup_ms"),
            "close_ms": med(runs_w, "close_ms"),
        }
    return result


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}x"


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:,.1f}k"


def markdown_dataset(r: dict[str, Any], workers: list[int]) -> list[str]:
    it, b = r["iterate"], r["batches"]
    lines = [
        f"### {r['env']} random: {r['episodes']} episodes / {r['steps']:,} steps",
        "",
        "| measure | harvest | Minari (or limit) | ratio | target | verdict |",
        "|---|---|---|---|---|---|",
        f"| iterate all episodes, steps/s (open included) | {it['ours_steps_per_s']:,.0f} "
        f"| {it['minari_steps_per_s']:,.0f} | {it['ratio']:.1f}x | >= {ITERATE_TARGET:.0f}x "
        f"| {verdict(it['ratio'] >= ITERATE_TARGET)} |",
        f"| dataset open alone, ms (ratio: Minari ms / harvest ms) | {it['ours_open_ms']:.1f} "
        f"| {it['minari_open_ms']:.1f} | {it['minari_open_ms'] / it['ours_open_ms']:.2f}x | - "
        "| - |",
    ]
    for n, s in r["sample"].items():
        tgt = f">= {SAMPLE_TARGET:.0f}x" if n == 32 else "-"
        ok = verdict(s["ratio"] >= SAMPLE_TARGET) if n == 32 else "-"
        lines.append(
            f"| sample_episodes({s['n']}), warm median ms/call (ratio: Minari / harvest) "
            f"| {s['ours_warm_ms']:.2f} | {s['minari_warm_ms']:.1f} | {s['ratio']:.1f}x | {tgt} "
            f"| {ok} |"
        )
        lines.append(
            f"| sample_episodes({s['n']}), first call on a fresh object, ms (Minari / harvest) "
            f"| {s['ours_cold_ms']:.1f} | {s['minari_cold_ms']:.1f} | {s['cold_ratio']:.2f}x "
            "| - | - |"
        )
    for w in workers:
        bw = b[f"w{w}"]
        lines.append(
            f"| batch_iter(256, 1) num_workers={w}, transitions/s | {fmt_rate(bw['per_s'])} "
            f"| {fmt_rate(b['limit_per_s'])} (numpy limit) | {bw['ratio']:.2f}x "
            f"| >= {BATCH_TARGET}x | {verdict(bw['ratio'] >= BATCH_TARGET)} |"
        )
    for w in workers:
        bw = b[f"w{w}"]
        ratio = bw["per_s"] / ISSUE_LIMIT
        lines.append(
            f"| batch_iter(256, 1) num_workers={w} vs the issue's figure | {fmt_rate(bw['per_s'])} "
            f"| {fmt_rate(ISSUE_LIMIT)} (quoted) | {ratio:.2f}x | >= {BATCH_TARGET}x "
            f"| {verdict(ratio >= BATCH_TARGET)} |"
        )
    lines.append("")
    eps = r["episodes"]
    lines.append(
        f"Per episode (iterate wall / episodes): harvest {it['ours_wall'] / eps * 1e6:.1f} us, "
        f"Minari {it['minari_wall'] / eps * 1e3:.2f} ms (Minari's cost is mostly per episode: "
        "a group open and five dataset reads each)."
    )
    lines.append(
        f"Setup (not timed in the table): collect {r['collect']['wall']:.1f} s "
        f"({r['collect']['bytes'] / 2**20:.1f} MiB on disk); Minari create_dataset_from_buffers "
        f"{r['minari_write']['write']:.1f} s ({r['minari_write']['bytes'] / 2**20:.1f} MiB); "
        f"same data verified (steps, episodes; episodes {r['verified']['episodes_compared']} "
        f"compared field by field). to_transitions() {r['to_transitions_s'] * 1e3:.0f} ms. "
        "batch_iter startup (first batch, excluded from the rate): "
        + ", ".join(
            f"W={w} {b[f'w{w}']['startup_ms']:.0f} ms (close {b[f'w{w}']['close_ms']:.0f} ms)"
            for w in workers
        )
        + f"; {b['transitions']:,} transitions per measurement."
    )
    return lines


def markdown(
    results: list[dict[str, Any]], rss: dict[str, Any] | None, args: argparse.Namespace,
    argv: list[str],
) -> str:  # fmt: skip
    lines: list[str] = []
    for r in results:
        lines.extend(markdown_dataset(r, args.workers))
        lines.append("")
    lines.append(
        f"Medians of {args.repeats} interleaved repeat(s) (harvest and Minari back to back, order "
        "alternating); ratios are medians of per-repeat ratios. Iterate: a fresh dataset object "
        "per repeat (harvest's block cache cold, the OS page cache warm for both), open inside "
        "the timed region, every episode's observations touched. sample_episodes: per repeat a "
        f"fresh object seeded with set_seed(repeat), one cold call, then {args.sample_calls} "
        "calls timed one by one (warm = median of all of them). Transition batches: the limit "
        "indexes the six to_transitions() arrays with rng.integers(N, size=256) per batch; "
        "batch_iter(256, 1, seed=0) on a fresh dataset, first batch excluded. The limit's random "
        "reads span the whole dataset (cache misses grow with N) while batch_iter draws from a "
        "window of preload_buffer_size blocks, so on a large dataset it can beat the limit."
    )
    if rss is not None:
        base, big = rss["base"], rss["big"]

        def mib(kib: float | None) -> str:
            return "n/a" if kib is None else f"{kib / 1024:.1f}"

        lines += [
            "",
            f"### Peak RSS of batch_iter(256, 1, num_workers={rss['workers']}), "
            f"{rss['batches']} batches, fresh processes (MiB)",
            "",
            "| dataset | consumer VmHWM | reader VmHWM | sum of VmHWM (upper bound) "
            "| peak sum of Pss | consumer after imports | after load_dataset |",
            "|---|---|---|---|---|---|---|",
        ]
        for tag, x in (("base", base), ("5x", big)):
            lines.append(
                f"| CartPole {x['episodes']} eps / {x['steps']:,} steps ({tag}) "
                f"| {mib(x['consumer_kib'])} | {', '.join(mib(k) for k in x['workers_kib'])} "
                f"| {mib(x['total_kib'])} | {mib(x['pss_peak_kib'])} "
                f"| {mib(x['hwm_imports_kib'])} | {mib(x['hwm_open_kib'])} |"
            )
        lines.append(
            f"| ratio 5x / base | {rss['consumer_ratio']:.3f}x | - | {rss['total_ratio']:.3f}x "
            f"| {fmt_ratio(rss['pss_ratio'])} | - | - |"
        )
        lines.append("")
        added = max(1, big["episodes"] - base["episodes"])
        per_episode = (big["consumer_kib"] - base["consumer_kib"]) * 1024 / added
        pss_ok = rss["pss_ratio"] is not None and rss["pss_ratio"] <= RSS_TARGET
        lines.append(
            f"Steps grow {big['steps'] / base['steps']:.2f}x. Target: flat, read as <= "
            f"{RSS_TARGET}x: consumer VmHWM {verdict(rss['consumer_ratio'] <= RSS_TARGET)} "
            f"(+{mib(big['consumer_kib'] - base['consumer_kib'])} MiB); consumer + readers by "
            f"Pss {verdict(pss_ok)}; consumer + readers by summed VmHWM "
            f"{verdict(rss['total_ratio'] <= RSS_TARGET)} "
            f"(+{mib(big['total_kib'] - base['total_kib'])} MiB). Uncompressed step data grows "
            f"{(big['raw_bytes'] - base['raw_bytes']) / 2**20:.1f} MiB; the consumer's peak grows "
            f"{per_episode:.0f} "
            "B per added episode (the episode index is O(episodes); a dataset of one block also "
            "fills a smaller window). The readers are forked after "
            "load_dataset, so each reader's VmHWM also counts the consumer's pages (the episode "
            "index included) that it shares copy-on-write: their sum counts those pages once per "
            "process. Pss splits shared pages between the processes sharing them; it is a "
            "current value, sampled every 50 batches (the peak of the sum is reported)."
        )
    lines.append("")
    lines.append("Command: `" + shlex.join([sys.executable, *argv]) + "`")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--datasets",
        default="CartPole-v1:9000,Pendulum-v1:5000",
        help="comma-separated ENV:EPISODES (CartPole ~22 steps/episode, Pendulum 200)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    ap.add_argument("--sample-calls", type=int, default=10, help="warm calls per repeat")
    ap.add_argument(
        "--transitions", type=int, default=2_000_000, help="transitions per batch measurement"
    )
    ap.add_argument("--workers", default="0,2", help="batch_iter num_workers values")
    ap.add_argument(
        "--rss",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="peak RSS of batch_iter on CartPole at the first size and 5x its episodes",
    )
    ap.add_argument("--rss-batches", type=int, default=4000, help="batches per RSS child")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="CartPole 2000 episodes (a single block: RSS base not steady state), 500k transitions",
    )
    args = ap.parse_args(argv[1:])
    if args.quick:
        if args.datasets == ap.get_default("datasets"):
            args.datasets = "CartPole-v1:2000"
        if args.transitions == ap.get_default("transitions"):
            args.transitions = 500_000
        if args.rss_batches == ap.get_default("rss_batches"):
            args.rss_batches = 1000
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    datasets = []
    for item in args.datasets.split(","):
        if item.strip():
            env_id, _, eps = item.strip().partition(":")
            datasets.append((env_id, int(eps)))
    if not datasets or args.repeats < 1 or args.sample_calls < 1:
        ap.error("need at least one dataset, one repeat and one sample call")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="harvest-bench-read-") as tmp:
        # before minari is imported anywhere: its root is read from the environment
        os.environ["MINARI_DATASETS_PATH"] = str(Path(tmp) / "minari")
        os.environ["HARVEST_DATASETS"] = str(Path(tmp) / "harvest")
        t0 = time.perf_counter()
        results = [bench_dataset(env_id, eps, tmp, args, log) for env_id, eps in datasets]
        rss = None
        cartpole = [(e, n) for e, n in datasets if e.startswith("CartPole")]
        if args.rss and cartpole:
            env_id, eps = cartpole[0]
            hroot = str(Path(tmp) / "harvest")
            big_id = "bench/cartpole-random-5x-v0"
            log(f"[rss] collect {5 * eps} {env_id} episodes for the 5x dataset")
            collect_ours(env_id, 5 * eps, big_id, hroot)
            w = max(args.workers)
            log(f"[rss] batch_iter, num_workers={w}, {args.rss_batches} batches, fresh processes")
            base = rss_child("bench/cartpole-random-v0", hroot, w, args.rss_batches)
            big = rss_child(big_id, hroot, w, args.rss_batches)
            rss = {
                "workers": w,
                "batches": args.rss_batches,
                "base": base,
                "big": big,
                "consumer_ratio": big["consumer_kib"] / base["consumer_kib"],
                "total_ratio": big["total_kib"] / base["total_kib"],
                "pss_ratio": big["pss_peak_kib"] / base["pss_peak_kib"]
                if big["pss_peak_kib"] and base["pss_peak_kib"]
                else None,
            }
        total = time.perf_counter() - t0

    import minari

    table = markdown(results, rss, args, argv)
    print(table)
    print(
        f"\n(bench wall time {total:.0f} s on {os.cpu_count()} CPU(s), Python "
        f"{platform.python_version()}, minari {minari.__version__})"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "command": argv,
                    "python": platform.python_version(),
                    "minari": minari.__version__,
                    "cpus": os.cpu_count(),
                    "wall_seconds": total,
                    "results": results,
                    "rss": rss,
                    "table": table,
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
