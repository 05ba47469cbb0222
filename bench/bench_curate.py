"""Benchmark curation (issue 05): combine against Minari and ``cp -r``; filter by expression.

* **Combine** two ~500k-step CartPole-v1 datasets (random policy):
  - ours, ``combine_datasets`` (shards hard-linked, renumbered in the manifest);
  - ``minari.combine_datasets`` on the same episodes written as Minari HDF5 datasets
    (``create_dataset_from_buffers``, as ``bench_read.py`` does);
  - ``cp -r`` of our two input folders: the cost of any real copy, the limit for a tool that
    copies; ours should be below it because it does not copy.
  Wall time and bytes written (new bytes on disk: files that share an inode with an input
  are not counted).
* **Filter** a ~100k-episode dataset by ``return >= 30 and length < 100``: time to open and
  filter, and the number of step-data reads (every h5py read outside a shard's ``episodes``
  table is counted; the claim is zero). Saving the result is timed too.

Run: ``python bench/bench_curate.py`` (about 35 minutes on 2 cores, 28 of them Minari's
combine) or ``--quick`` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import compose_cfg

ENV_ID = "CartPole-v1"
WHERE = "return >= 30 and length < 100"


def collect_fast(episodes: int, dataset_id: str, root: str, seed: int) -> dict[str, Any]:
    """A CartPole dataset through Gymnasium's numpy CartPole (the fastest collect path)."""
    from collector.collect import collect

    cfg = compose_cfg(
        [
            f"env={ENV_ID}",
            f"episodes={episodes}",
            f"seed={seed}",
            "num_envs=256",
            "vectorization_mode=vector_entry_point",
            f"dataset_id={dataset_id}",
            f"datasets_root={root}",
            "progress=false",
        ]
    )
    res = collect(cfg)
    return {"episodes": res.total_episodes, "steps": res.total_steps, "bytes": res.dataset_bytes}


def new_bytes(folder: Path, inputs: list[Path]) -> int:
    """Bytes of files under ``folder`` that are not hard links to files under ``inputs``."""
    seen = {p.stat().st_ino for d in inputs for p in d.rglob("*") if p.is_file()}
    return sum(
        p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.stat().st_ino not in seen
    )


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - start


def bench_combine(root: str, episodes: int, repeats: int) -> dict[str, Any]:
    import minari
    from bench_read import write_minari

    from collector import storage
    from curation import combine_datasets, delete_dataset

    inputs = []
    for k in (0, 1):
        info = collect_fast(episodes, f"bench/in{k}-v0", root, seed=k)
        info["minari"] = write_minari(ENV_ID, f"bench/in{k}-v0", f"bench/in{k}-v0", root)
        inputs.append(info)
        mb, minari_mb = info["bytes"] / 1e6, info["minari"]["bytes"] / 1e6
        print(f"  input {k}: {info['episodes']:,} episodes, {info['steps']:,} steps, "
              f"{mb:.1f} MB ours, {minari_mb:.1f} MB Minari")  # fmt: skip
    in_paths = [storage.dataset_path(f"bench/in{k}-v0", root) for k in (0, 1)]
    ours, theirs, cps = [], [], []
    for r in range(repeats):
        ds, wall = timed(combine_datasets, ["bench/in0-v0", "bench/in1-v0"], "bench/both-v0",
                         root=root)  # fmt: skip
        path = storage.dataset_path("bench/both-v0", root)
        ours.append({"wall": wall, "bytes": new_bytes(path, in_paths), "steps": ds.total_steps})
        delete_dataset("bench/both-v0", root=root)

        if r == 0:  # minutes: once is enough to compare
            m_in = [minari.load_dataset(f"bench/in{k}-v0") for k in (0, 1)]
            mds, wall = timed(minari.combine_datasets, m_in, "bench/both-v0")
            m_path = Path(mds.spec.data_path).parent
            theirs.append({"wall": wall, "bytes": new_bytes(m_path, []), "steps": mds.total_steps})
            minari.delete_dataset("bench/both-v0")

        dest = Path(root) / f"cp-{r}"
        dest.mkdir()
        _, wall = timed(subprocess.run, ["cp", "-r", *map(str, in_paths), str(dest)], check=True)
        subprocess.run(["sync"], check=True)
        cps.append({"wall": wall, "bytes": new_bytes(dest, in_paths)})
        shutil.rmtree(dest)
        print(f"  repeat {r + 1}/{repeats}: ours {ours[-1]['wall']:.3f} s, "
              f"minari {theirs[-1]['wall']:.1f} s, cp -r {cps[-1]['wall']:.2f} s")  # fmt: skip
    assert ours[0]["steps"] == theirs[0]["steps"] == sum(i["steps"] for i in inputs)

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(x[key] for x in rows)

    return {
        "inputs": inputs,
        "ours": {"wall": med(ours, "wall"), "bytes": ours[0]["bytes"]},
        "minari": {"wall": med(theirs, "wall"), "bytes": theirs[0]["bytes"]},
        "cp": {"wall": med(cps, "wall"), "bytes": cps[0]["bytes"]},
    }


def bench_filter(root: str, episodes: int, repeats: int) -> dict[str, Any]:
    import h5py

    from curation import delete_dataset, load_dataset

    info = collect_fast(episodes, "bench/many-v0", root, seed=7)
    reads: list[str] = []
    real = h5py.Dataset.__getitem__

    def counting(self: h5py.Dataset, *args: Any) -> Any:
        if not self.name.startswith("/episodes/"):
            reads.append(self.name)
        return real(self, *args)

    runs = []
    h5py.Dataset.__getitem__ = counting  # type: ignore[method-assign]
    try:
        for _ in range(repeats):
            ds, open_wall = timed(load_dataset, "bench/many-v0", root=root)
            view, filter_wall = timed(ds.filter_episodes, WHERE)
            runs.append({"open": open_wall, "filter": filter_wall, "kept": view.total_episodes})
        step_reads = len(reads)
        saved, save_wall = timed(view.save, "bench/kept-v0", root=root)
        save_step_reads = len(reads) - step_reads
        delete_dataset("bench/kept-v0", root=root)
    finally:
        h5py.Dataset.__getitem__ = real  # type: ignore[method-assign]
    return {
        "episodes": info["episodes"],
        "steps": info["steps"],
        "open": statistics.median(r["open"] for r in runs),
        "filter": statistics.median(r["filter"] for r in runs),
        "kept": runs[0]["kept"],
        "step_reads": step_reads,
        "save": save_wall,
        "save_step_reads": save_step_reads,
        "saved_episodes": saved.total_episodes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--combine-episodes", type=int, default=22_700, help="per input (~500k steps)")
    ap.add_argument("--filter-episodes", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3, help="ours and cp -r; Minari runs once")
    ap.add_argument("--quick", action="store_true", help="5k and 20k episodes, 1 repeat")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.combine_episodes, args.filter_episodes, args.repeats = 5_000, 20_000, 1
    root = tempfile.mkdtemp(prefix="harvest-bench-curate-")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(root) / "minari")
    print(f"datasets root {root}")
    try:
        print(f"combine: 2 x {args.combine_episodes:,} CartPole episodes")
        comb = bench_combine(root, args.combine_episodes, args.repeats)
        print(f"filter: {args.filter_episodes:,} episodes by {WHERE!r}")
        filt = bench_filter(root, args.filter_episodes, max(3, args.repeats))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    o, m, c = comb["ours"], comb["minari"], comb["cp"]
    steps = sum(i["steps"] for i in comb["inputs"])
    print(f"\ncombine {steps:,} steps ({platform.python_version()}, {os.cpu_count()} cpus)")
    print("| | wall | bytes written |\n|---|---|---|")
    for name, row in (("harvest combine_datasets", o), ("minari.combine_datasets", m),
                      ("cp -r of the inputs", c)):  # fmt: skip
        size = f"{row['bytes'] / 1e6:,.1f} MB" if row["bytes"] >= 1e5 else f"{row['bytes']:,} B"
        print(f"| {name} | {row['wall']:.3f} s | {size} |")
    print(
        f"Minari / ours: {m['wall'] / o['wall']:,.0f}x; cp -r / ours: {c['wall'] / o['wall']:.2f}x"
    )
    print(f"\nfilter {filt['episodes']:,} episodes ({filt['steps']:,} steps): open "
          f"{filt['open'] * 1e3:.0f} ms + filter {filt['filter'] * 1e3:.1f} ms; kept "
          f"{filt['kept']:,}; step-data reads: {filt['step_reads']}; save of the view "
          f"{filt['save']:.2f} s ({filt['save_step_reads']} step-data reads: shards it keeps "
          "under half of are copied)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"combine": comb, "filter": filt}, indent=2))
    sys.exit(0 if filt["step_reads"] == 0 else 1)


if __name__ == "__main__":
    main()
