"""Benchmark importing a Minari HDF5 dataset: ``from_minari`` against Minari's own full iteration.

Setup, once per run (not timed in the table): a CartPole-v1 Minari dataset of ``--steps``
steps (default 1,000,000) written by the real ``minari`` package with
``create_dataset_from_buffers(..., data_format="hdf5")`` into a temp dir
(``MINARI_DATASETS_PATH`` points there). Episode lengths are drawn uniformly from 10..500 with
a seeded rng (the last one trimmed so the steps add up exactly; a few thousand episodes);
observations are a float32 random walk from CartPole's reset range, actions int64 in {0, 1},
rewards 1.0, the 500-step episodes truncated and the others terminated; every episode has a
seed. Minari writes HDF5 uncompressed (``chunks=True``), one group per episode.

Measured per repeat, interleaved (the order reversed on every other repeat), medians reported:

a) **Minari iteration**: ``minari.load_dataset(id)`` plus ``for ep in ds.iterate_episodes()``
   touching each episode's observations, actions and rewards (open inside the timed region);
b) **harvest import**: ``from_minari(id, new_id, root=<fresh root>, compression=c)`` for c in
   ``--compressions`` (default gzip, lzf, none), each into a fresh harvest root;
c) **harvest iteration** of each freshly imported dataset (the ``Dataset`` ``from_minari``
   returns, never read before: its block cache is cold) with the same touch.

The table gives seconds and steps/s, the ratio import / Minari iteration of the same repeat
(median of per-repeat ratios), and the on-disk size of each import (``dataset_bytes`` of its
metadata) against Minari's ``data/`` folder. The OS page cache holds the Minari file for every
measurement after the first (the setup wrote it).

Correctness, checked on every import (the exit status is 1 when any check fails): the imported
dataset's ``total_episodes`` and ``total_steps`` equal Minari's, and the first, middle and last
episodes are field-equal (observations, actions, rewards, terminations, truncations, and the
seed against Minari's ``storage.get_episode_metadata``).

``--profile`` runs one more gzip import under cProfile after the repeats and prints the top
functions by cumulative time in ``curation/minari`` and ``collector/storage/`` (to stderr).

Run: ``python bench/bench_minari.py`` (about 1.5 min on 2 cores; needs the ``minari`` extra)
or ``--steps 50000`` (a few seconds).
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
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from _common import dir_bytes, verdict

ENV_ID = "CartPole-v1"
MINARI_ID = "bench/cartpole-synthetic-v0"
HARVEST_ID = "bench/cartpole-from-minari-v0"
MIN_LEN, MAX_LEN = 10, 500  # CartPole-v1: at least ~8 steps, truncated at 500
ROOT_SEED = 0
COMPRESSIONS = ("gzip", "lzf", "none")
FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")
MB = 1e6


def quiet_minari() -> None:
    """Minari warns about every missing author/permalink/... field: not what is measured."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"minari(\.|$)")


# --------------------------------------------------------------------------------------------
# setup


def episode_lengths(steps: int, seed: int) -> list[int]:
    """Uniform lengths in MIN_LEN..MAX_LEN adding up to ``steps`` (the last one trimmed)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths: list[int] = []
    total = 0
    while total < steps:
        n = int(rng.integers(MIN_LEN, MAX_LEN + 1))
        n = min(n, steps - total)
        if n < MIN_LEN and lengths:  # fold a short remainder into the previous episode
            lengths[-1] += n
        else:
            lengths.append(n)
        total += n
    return lengths


def build_minari(steps: int, seed: int) -> dict[str, Any]:
    """Write the synthetic CartPole episodes with ``minari.create_dataset_from_buffers``."""
    import minari
    import numpy as np
    from minari.data_collector import EpisodeBuffer

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    buffers = []
    for i, n in enumerate(episode_lengths(steps, seed)):
        reset = rng.uniform(-0.05, 0.05, size=(1, 4))
        walk = np.cumsum(rng.normal(0.0, 0.05, size=(n, 4)), axis=0)
        obs = np.concatenate([reset, reset + walk]).astype(np.float32)
        term = np.zeros(n, dtype=bool)
        trunc = np.zeros(n, dtype=bool)
        (trunc if n >= MAX_LEN else term)[-1] = True
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=int(rng.integers(2**31)),
                observations=obs,
                actions=rng.integers(0, 2, size=n, dtype=np.int64),
                rewards=np.ones(n, dtype=np.float64),
                terminations=term,
                truncations=trunc,
                infos={},
            )
        )
    made = time.perf_counter()
    mds = minari.create_dataset_from_buffers(
        dataset_id=MINARI_ID,
        buffer=buffers,
        env=ENV_ID,
        eval_env=ENV_ID,
        algorithm_name="synthetic",
        description="harvest bench_minari: synthetic CartPole-like episodes",
        data_format="hdf5",
    )
    data_dir = Path(mds.spec.data_path)
    return {
        "episodes": mds.total_episodes,
        "steps": mds.total_steps,
        "bytes": dir_bytes(data_dir),
        "data_dir": str(data_dir),
        "buffers_s": made - start,
        "write_s": time.perf_counter() - made,
    }


# --------------------------------------------------------------------------------------------
# measurements


def touch_all(episodes: Any) -> tuple[int, int]:
    """Steps and observation rows over all episodes (observations, actions, rewards read)."""
    steps = rows = 0
    for ep in episodes:
        rows += ep.observations.shape[0]
        steps += len(ep.rewards)
        if len(ep.actions) != len(ep.rewards):
            raise RuntimeError(f"episode {ep.id}: {len(ep.actions)} actions, {len(ep)} rewards")
    return steps, rows


def iterate_minari(info: dict[str, Any]) -> dict[str, Any]:
    import minari

    gc.collect()
    start = time.perf_counter()
    ds = minari.load_dataset(MINARI_ID)
    steps, rows = touch_all(ds.iterate_episodes())
    wall = time.perf_counter() - start
    if (steps, rows) != (info["steps"], info["steps"] + info["episodes"]):
        raise RuntimeError(f"Minari iteration saw {steps} steps / {rows} observation rows")
    return {"wall": wall, "steps": steps, "obs_rows": rows, "steps_per_s": steps / wall}


def import_harvest(compression: str, root: Path, info: dict[str, Any]) -> dict[str, Any]:
    """``from_minari`` into a fresh root, the iteration of the result, then the checks."""
    from curation.minari import from_minari

    root.mkdir(parents=True)
    gc.collect()
    start = time.perf_counter()
    ds = from_minari(
        MINARI_ID, HARVEST_ID, root=root, compression=None if compression == "none" else compression
    )
    wall = time.perf_counter() - start
    gc.collect()
    start = time.perf_counter()
    steps, rows = touch_all(ds.iterate_episodes())
    it_wall = time.perf_counter() - start
    meta = ds.metadata
    problems = check_same(ds, info)
    if (steps, rows) != (info["steps"], info["steps"] + info["episodes"]):
        problems.append(f"harvest iteration saw {steps} steps / {rows} observation rows")
    return {
        "wall": wall,
        "steps_per_s": info["steps"] / wall,
        "iterate": {"wall": it_wall, "steps": steps, "steps_per_s": steps / it_wall},
        "dataset_bytes": int(meta["dataset_bytes"]),
        "dir_bytes": dir_bytes(root),
        "shards": len(meta.get("shards", [])),
        "problems": problems,
    }


def check_same(ds: Any, info: dict[str, Any]) -> list[str]:
    """Counts equal to Minari's; first, middle and last episodes field-equal, seeds too."""
    import minari
    import numpy as np

    theirs = minari.load_dataset(MINARI_ID)
    problems = []
    ours_counts = (ds.total_episodes, ds.total_steps)
    theirs_counts = (theirs.total_episodes, theirs.total_steps)
    if ours_counts != theirs_counts or ours_counts != (info["episodes"], info["steps"]):
        return [f"counts differ: harvest {ours_counts}, Minari {theirs_counts} (episodes, steps)"]
    n = ds.total_episodes
    for i in sorted({0, n // 2, n - 1}):
        a = ds[i]
        (b,) = theirs.iterate_episodes([i])
        for field in FIELDS:
            x, y = np.asarray(getattr(a, field)), np.asarray(getattr(b, field))
            if x.dtype != y.dtype:
                problems.append(f"episode {i}: {field} dtype {x.dtype}, Minari's {y.dtype}")
            elif not np.array_equal(x, y):
                problems.append(f"episode {i}: {field} differ")
        (meta,) = theirs.storage.get_episode_metadata([i])
        if a.seed != meta.get("seed"):
            problems.append(f"episode {i}: seed {a.seed} vs Minari's {meta.get('seed')}")
    return problems


def profile_import(tmp: Path, top: int) -> None:
    """One gzip import under cProfile; the top hotspots in the import path, to stderr."""
    import cProfile
    import pstats

    from curation.minari import from_minari

    root = tmp / "harvest-profile"
    root.mkdir()
    prof = cProfile.Profile()
    prof.enable()
    from_minari(MINARI_ID, HARVEST_ID, root=root, compression="gzip")
    prof.disable()
    shutil.rmtree(root, ignore_errors=True)
    stats = pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative")
    print("\ncProfile of one gzip import, top by cumulative time:", file=sys.stderr)
    stats.print_stats(r"curation/minari/|collector/storage/", top)
    stats.print_stats(top)


# --------------------------------------------------------------------------------------------
# report


def summarize(runs: list[dict[str, Any]], compressions: list[str]) -> dict[str, Any]:
    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    out: dict[str, Any] = {
        "minari_iterate_s": med([r["minari"]["wall"] for r in runs]),
        "minari_iterate_steps_per_s": med([r["minari"]["steps_per_s"] for r in runs]),
    }
    for c in compressions:
        imps = [r["import"][c] for r in runs]
        minari_s = [r["minari"]["wall"] for r in runs]
        import_s = [x["wall"] for x in imps]
        iterate_s = [x["iterate"]["wall"] for x in imps]
        out[c] = {
            "import_s": med(import_s),
            "import_steps_per_s": med([x["steps_per_s"] for x in imps]),
            "ratio": med([a / b for a, b in zip(import_s, minari_s, strict=True)]),
            "iterate_s": med(iterate_s),
            "iterate_steps_per_s": med([x["iterate"]["steps_per_s"] for x in imps]),
            "iterate_ratio": med([b / a for a, b in zip(iterate_s, minari_s, strict=True)]),
            "dataset_bytes": imps[0]["dataset_bytes"],
            "dir_bytes": imps[0]["dir_bytes"],
            "shards": imps[0]["shards"],
            "problems": sorted({p for x in imps for p in x["problems"]}),
        }
    return out


def secs(t: float) -> str:
    return f"{t * 1e3:.0f} ms" if t < 1 else f"{t:.2f} s"


def rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:,.0f}k"


def markdown(
    s: dict[str, Any], info: dict[str, Any], args: argparse.Namespace, argv: list[str]
) -> str:
    mib = 2**20
    lines = [
        f"### Minari HDF5 import: CartPole-v1 synthetic, {info['episodes']:,} episodes / "
        f"{info['steps']:,} steps",
        "",
        "| measure | wall | steps/s | ratio to Minari iteration | on disk | checks |",
        "|---|---|---|---|---|---|",
        f"| Minari: load_dataset + iterate_episodes | {secs(s['minari_iterate_s'])} "
        f"| {rate(s['minari_iterate_steps_per_s'])} | 1.00x "
        f"| {info['bytes'] / mib:.1f} MiB (data/) | - |",
    ]
    for c in args.compressions:
        r = s[c]
        lines.append(
            f"| harvest: from_minari, compression={c} | {secs(r['import_s'])} "
            f"| {rate(r['import_steps_per_s'])} | {r['ratio']:.2f}x (import / iteration) "
            f"| {r['dataset_bytes'] / mib:.1f} MiB ({r['dataset_bytes'] / info['bytes']:.2f}x, "
            f"{r['shards']} shard(s)) | {verdict(not r['problems'])} |"
        )
    for c in args.compressions:
        r = s[c]
        lines.append(
            f"| harvest: iterate_episodes of the {c} import | {secs(r['iterate_s'])} "
            f"| {rate(r['iterate_steps_per_s'])} | {r['iterate_ratio']:.1f}x faster | - | - |"
        )
    lines += [
        "",
        f"Medians of {args.repeats} interleaved repeat(s) (order reversed every other repeat); "
        "ratios are medians of per-repeat ratios. Minari iteration includes load_dataset; each "
        "import goes to a fresh harvest root and its wall covers from_minari up to the loaded "
        "Dataset it returns; the harvest iteration reads that Dataset (cold block cache, warm "
        "OS page cache, as for Minari). Every episode's observations, actions and rewards are "
        "touched. On disk: Minari's data/ folder; harvest's metadata dataset_bytes (shards), "
        "ratio to Minari's.",
        f"Checks on every import: episode and step counts equal Minari's, episodes 0, "
        f"{info['episodes'] // 2} and {info['episodes'] - 1} field-equal "
        f"({', '.join(FIELDS)}, dtypes included) and seeds equal to Minari's episode metadata.",
        f"Setup (not timed in the table): {info['episodes']:,} episodes, lengths uniform "
        f"{MIN_LEN}..{MAX_LEN} (seed {args.seed}), buffers built in {info['buffers_s']:.1f} s, "
        f"Minari create_dataset_from_buffers {info['write_s']:.1f} s.",
        "",
        "Command: `" + shlex.join([sys.executable, *argv]) + "`",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=1_000_000, help="steps in the Minari dataset")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    ap.add_argument("--seed", type=int, default=ROOT_SEED, help="seed of the synthetic data")
    ap.add_argument(
        "--compressions",
        default=",".join(COMPRESSIONS),
        help="comma-separated from_minari compressions to time (gzip, lzf, none)",
    )
    ap.add_argument(
        "--profile", action="store_true", help="cProfile one more gzip import (to stderr)"
    )
    ap.add_argument("--profile-top", type=int, default=25, help="rows of the profile")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    args = ap.parse_args(argv[1:])
    args.compressions = [c.strip() for c in args.compressions.split(",") if c.strip()]
    if bad := [c for c in args.compressions if c not in COMPRESSIONS]:
        ap.error(f"unknown compression(s) {bad}; choose from {COMPRESSIONS}")
    if args.steps < MIN_LEN or args.repeats < 1 or not args.compressions:
        ap.error(f"need --steps >= {MIN_LEN}, one repeat and one compression")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    quiet_minari()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="harvest-bench-minari-") as tmp_s:
        tmp = Path(tmp_s)
        # minari reads it when a dataset is created or loaded
        os.environ["MINARI_DATASETS_PATH"] = str(tmp / "minari")
        os.environ["HARVEST_DATASETS"] = str(tmp / "harvest-default")  # unused: roots are given
        t0 = time.perf_counter()
        log(f"temp dir {tmp}; writing a {args.steps:,}-step Minari dataset")
        info = build_minari(args.steps, args.seed)
        log(
            f"  {info['episodes']:,} episodes, {info['steps']:,} steps, "
            f"{info['bytes'] / MB:.1f} MB (buffers {info['buffers_s']:.1f} s, "
            f"create_dataset_from_buffers {info['write_s']:.1f} s)"
        )
        for k in range(args.repeats):
            run: dict[str, Any] = {"import": {}}
            jobs: list[tuple[str, Any]] = [("minari", lambda: iterate_minari(info))]
            for c in args.compressions:
                root = tmp / f"harvest-{k}-{c}"
                jobs.append((c, lambda c=c, root=root: import_harvest(c, root, info)))
            if k % 2:
                jobs.reverse()
            for name, job in jobs:
                out = job()
                if name == "minari":
                    run["minari"] = out
                else:
                    run["import"][name] = out
                    shutil.rmtree(tmp / f"harvest-{k}-{name}", ignore_errors=True)
            runs.append(run)
            m = run["minari"]["wall"]
            log(
                f"  repeat {k + 1}/{args.repeats}: Minari iterate {secs(m)}; import "
                + ", ".join(
                    f"{c} {secs(run['import'][c]['wall'])} ({run['import'][c]['wall'] / m:.2f}x)"
                    for c in args.compressions
                )
                + "; harvest iterate "
                + ", ".join(
                    f"{c} {secs(run['import'][c]['iterate']['wall'])}" for c in args.compressions
                )
            )
        if args.profile:
            profile_import(tmp, args.profile_top)
        total = time.perf_counter() - t0

    import minari

    summary = summarize(runs, args.compressions)
    table = markdown(summary, info, args, argv)
    print(table)
    print(
        f"\n(bench wall time {total:.0f} s on {os.cpu_count()} CPU(s), Python "
        f"{platform.python_version()}, minari {minari.__version__})"
    )
    failures = [f"{c}: {p}" for c in args.compressions for p in summary[c]["problems"]]
    for f in failures:
        print(f"FAIL {f}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "command": argv,
                    "python": platform.python_version(),
                    "minari": minari.__version__,
                    "cpus": os.cpu_count(),
                    "wall_seconds": total,
                    "dataset": info,
                    "summary": summary,
                    "runs": runs,
                    "table": table,
                },
                indent=2,
                default=str,
            )
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
