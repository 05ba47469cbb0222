"""Benchmark remotes: push, re-push, resumed push and pull on ``file://``, ``gcp://`` and ``hf://``.

One CartPole-v1 dataset (random policy, ~1M steps, ~25 MB in 12 shards; ``--quick``: ~100k
steps in 8 shards) goes through each backend side by side, each against a real server or
folder in a temporary directory:

* ``file://``: a folder on the same disk as the source;
* ``gcp://``: gcp-storage-emulator (in memory) through google-cloud-storage;
* ``hf://``: the in-test Hub (``tests/remotes/hub_server.py``) through huggingface_hub
  (classic LFS: ``HF_HUB_DISABLE_XET=1``).

Per backend and repeat (a fresh folder, bucket or organization each time):

1. **push**: wall, MB/s (data-file bytes / wall), files transferred;
2. **re-push** of the unchanged dataset: wall and files transferred (must be 0);
3. **resumed push**: the remote ``metadata.json`` is deleted through the backend's own client
   or folder (what a push killed after its data files looks like), then the dataset is pushed
   again: wall and files skipped (must be every file). ``file://`` hashes each remote file to
   skip it; GCS and the Hub report the sha256 they keep;
4. **pull** into a fresh root: wall, MB/s, and ``verify`` on the pulled copy (every shard
   re-hashed, fingerprint recomputed from the data) must give the source's fingerprint.

``cp -r`` of the local dataset folder is timed in the same repeat as the floor for a folder
remote (``push`` to ``file://`` also fsyncs every file, so ``cp -r`` followed by ``sync`` is
shown too). Medians of interleaved repeats. The exit status is non-zero when a re-push moves a
file, a resumed push re-sends one, or a pulled copy does not verify.

The GCS emulator and the Hub are pure-Python servers running *in this process* on loopback
(the emulator serves one request at a time; the Hub a thread per connection), sharing the GIL
and the 2 cores with the client: the figures measure harvest's overhead plus the client
libraries and these servers, not network bandwidth or the real services. The emulator's
single thread parses every upload with ``email.parser`` and bounds the GCS push rate. It also
answers HTTP/1.0 (a new connection per request) behind ``socketserver``'s listen backlog of 5:
8 parallel uploads overflow it, and a dropped SYN is retried by the kernel after 1 s. The
bench raises the backlog (``--emulator-backlog``, default 64; 5 reproduces the tests' server)
so that stall, which a real bucket does not have, stays out of the figures.

Run: ``python bench/bench_remotes.py`` (about 20 s on 2 cores) or ``--quick`` (about 4 s).
"""

from __future__ import annotations

import os

# huggingface_hub reads these when imported: the in-test Hub speaks classic LFS only (and no
# client bars in the bench's output).
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

import argparse
import contextlib
import http.server
import json
import logging
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import compose_cfg, dir_bytes

REPO = Path(__file__).resolve().parent.parent
ENV_ID = "CartPole-v1"
DATASET_ID = "bench/cartpole-v0"  # namespaced: hf:// maps the namespace to the repo
BACKENDS = ("file", "gcs", "hf")
MB = 1e6


def timed(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - start


def collect_dataset(root: Path, episodes: int, shards: int) -> dict[str, Any]:
    """CartPole through Gymnasium's numpy vector env, one shard per ``episodes / shards``."""
    from collector import storage
    from collector.collect import collect

    cfg = compose_cfg(
        [
            f"env={ENV_ID}",
            f"episodes={episodes}",
            "seed=0",
            "num_envs=256",
            "vectorization_mode=vector_entry_point",
            f"dataset_id={DATASET_ID}",
            f"datasets_root={root}",
            "progress=false",
            f"checkpoint.every_episodes={-(-episodes // shards)}",
            "checkpoint.every_mb=null",
            "storage.shard_mb=1",  # repack merges shards under 64 KB only: these stay apart
        ]
    )
    res = collect(cfg)
    path = storage.dataset_path(DATASET_ID, root)
    meta = storage.read_metadata(path, DATASET_ID)
    files = storage.dataset_files(meta, DATASET_ID)
    return {
        "episodes": res.total_episodes,
        "steps": res.total_steps,
        "files": len(files),
        "data_bytes": sum(size for _, _, size in files),
        "bytes": dir_bytes(path),
        "fingerprint": meta["fingerprint"],
    }


# --------------------------------------------------------------------------------------------
# servers and fresh remotes


@contextlib.contextmanager
def servers(emulator_backlog: int) -> Iterator[dict[str, Any]]:
    """The GCS emulator and the Hub, started as ``tests/remotes/conftest.py`` does.

    The emulator builds a plain ``http.server.HTTPServer`` in its thread; its listen backlog is
    the class attribute ``request_queue_size``, set for that one construction.
    """
    from gcp_storage_emulator.server import create_server

    sys.path.insert(0, str(REPO / "tests"))
    from remotes.hub_server import HubServer

    for name in ("gcp_storage_emulator", "api.bucket", "api.object"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # a 404 it serves is not an error
    gcs = create_server("127.0.0.1", 0, in_memory=True)
    default_backlog = http.server.HTTPServer.request_queue_size
    http.server.HTTPServer.request_queue_size = emulator_backlog
    try:
        gcs.start()  # returns once the server is listening
    finally:
        http.server.HTTPServer.request_queue_size = default_backlog
    with contextlib.ExitStack() as stack:
        stack.callback(gcs.stop)
        hub = HubServer()
        hub.start()
        stack.callback(hub.stop)
        port = gcs._api._httpd.server_address[1]
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
        os.environ["HF_ENDPOINT"] = hub.url
        yield {"gcs": gcs, "hub": hub}


def fresh_remote(name: str, tmp: Path, srv: dict[str, Any]) -> tuple[str, Callable[[], None]]:
    """A new empty remote of backend ``name``: its URI and how to delete its ``metadata.json``."""
    tag = uuid.uuid4().hex[:10]
    if name == "file":
        base = tmp / f"remote-{tag}"
        base.mkdir()

        def drop() -> None:
            meta = base / DATASET_ID / "metadata.json"
            meta.unlink()

        return f"file://{base}", drop
    if name == "gcs":
        from google.cloud import storage

        client = storage.Client()
        bucket = client.create_bucket(f"b-{tag}")

        def drop() -> None:
            bucket.blob(f"team/{DATASET_ID}/metadata.json").delete()

        return f"gcp://{bucket.name}/team", drop
    if name == "hf":
        from huggingface_hub import HfApi

        srv["hub"].reset()  # LFS objects are shared across repos there: start with none
        org = f"org{tag}"
        ns, _, folder = DATASET_ID.partition("/")

        def drop() -> None:
            HfApi(endpoint=srv["hub"].url).delete_file(
                f"{folder}/metadata.json", f"{org}/{ns}", repo_type="dataset"
            )

        return f"hf://{org}", drop
    raise ValueError(name)


# --------------------------------------------------------------------------------------------
# one repeat


def run_backend(
    name: str, src: Path, tmp: Path, srv: dict[str, Any], info: dict[str, Any]
) -> dict[str, Any]:
    """Push, re-push, resumed push and pull of the source dataset on a fresh remote."""
    from collector import storage
    from curation.remotes import pull_dataset, push_dataset

    uri, drop = fresh_remote(name, tmp, srv)
    out: dict[str, Any] = {"uri": uri}

    rep, wall = timed(push_dataset, DATASET_ID, uri, root=src, progress=False)
    out["push"] = {"wall": wall, "files": len(rep.transferred), "bytes": rep.bytes}

    rep, wall = timed(push_dataset, DATASET_ID, uri, root=src, progress=False)
    out["repush"] = {"wall": wall, "files": len(rep.transferred), "up_to_date": rep.up_to_date}

    drop()
    rep, wall = timed(push_dataset, DATASET_ID, uri, root=src, progress=False)
    out["resume"] = {"wall": wall, "files": len(rep.transferred), "skipped": len(rep.skipped)}

    dest = tmp / f"pulled-{name}-{uuid.uuid4().hex[:8]}"
    dest.mkdir()
    rep, wall = timed(pull_dataset, DATASET_ID, uri, root=dest, progress=False)
    check = storage.verify_dataset(DATASET_ID, dest)
    out["pull"] = {
        "wall": wall,
        "files": len(rep.transferred),
        "bytes": rep.bytes,
        "verified": check.ok and check.fingerprint == info["fingerprint"],
        "problems": check.problems,
    }
    shutil.rmtree(dest)
    if name == "file":
        shutil.rmtree(uri.removeprefix("file://"))
    return out


def run_cp(src: Path, tmp: Path) -> dict[str, Any]:
    """``cp -r`` of the dataset folder (and the ``sync`` after it): a folder remote's floor."""
    dest = tmp / f"cp-{uuid.uuid4().hex[:8]}"
    subprocess.run(["sync"], check=True)  # start clean: no dirty pages of earlier steps
    _, wall = timed(subprocess.run, ["cp", "-r", str(src / DATASET_ID), str(dest)], check=True)
    _, sync = timed(subprocess.run, ["sync"], check=True)
    shutil.rmtree(dest)
    return {"wall": wall, "sync": sync}


# --------------------------------------------------------------------------------------------
# report


def summarize(runs: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """Medians over repeats, plus the worst case of every check."""

    def med(name: str, step: str, key: str = "wall") -> float:
        return statistics.median(r[name][step][key] for r in runs)

    out: dict[str, Any] = {}
    for name in BACKENDS:
        push, pull = med(name, "push"), med(name, "pull")
        out[name] = {
            "push_s": push,
            "push_mb_s": info["data_bytes"] / MB / push,
            "push_files": runs[0][name]["push"]["files"],
            "repush_s": med(name, "repush"),
            "repush_files": max(r[name]["repush"]["files"] for r in runs),
            "resume_s": med(name, "resume"),
            "resume_skipped": min(r[name]["resume"]["skipped"] for r in runs),
            "resume_files": max(r[name]["resume"]["files"] for r in runs),
            "pull_s": pull,
            "pull_mb_s": info["data_bytes"] / MB / pull,
            "pull_verified": all(r[name]["pull"]["verified"] for r in runs),
        }
    cp = statistics.median(r["cp"]["wall"] for r in runs)
    cp_sync = statistics.median(r["cp"]["wall"] + r["cp"]["sync"] for r in runs)
    out["cp"] = {"s": cp, "mb_s": info["bytes"] / MB / cp, "sync_s": cp_sync}
    return out


def secs(t: float) -> str:
    return f"{t * 1e3:.0f} ms" if t < 1 else f"{t:.2f} s"


def print_table(s: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """The table; returns the failed checks."""
    n = info["files"]
    print("| backend | push | re-push | resumed push | pull | pulled copy |")
    print("|---|---|---|---|---|---|")
    failures = []
    for name in BACKENDS:
        r = s[name]
        ok_re = r["repush_files"] == 0
        ok_resume = r["resume_skipped"] == n and r["resume_files"] == 0
        if not ok_re:
            failures.append(f"{name}: re-push transferred {r['repush_files']} file(s)")
        if not ok_resume:
            failures.append(
                f"{name}: resumed push skipped {r['resume_skipped']}/{n}, sent {r['resume_files']}"
            )
        if not r["pull_verified"]:
            failures.append(f"{name}: pulled copy does not verify to the source fingerprint")
        print(
            f"| {name} | {secs(r['push_s'])}, {r['push_mb_s']:.0f} MB/s, {r['push_files']} files "
            f"| {secs(r['repush_s'])}, {r['repush_files']} sent "
            f"| {secs(r['resume_s'])}, {r['resume_skipped']}/{n} skipped "
            f"| {secs(r['pull_s'])}, {r['pull_mb_s']:.0f} MB/s "
            f"| {'fingerprint ok' if r['pull_verified'] else 'MISMATCH'} |"
        )
    cp = s["cp"]
    print(
        f"| cp -r (reference) | {secs(cp['s'])}, {cp['mb_s']:.0f} MB/s "
        f"({secs(cp['sync_s'])} with sync) | | | | |"
    )
    return failures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=45_500, help="~1M CartPole steps")
    ap.add_argument("--shards", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--emulator-backlog", type=int, default=64, help="5: as the tests start it")
    ap.add_argument(
        "--quick", action="store_true", help="4,550 episodes (~100k steps), 8 shards, 3 repeats"
    )
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.shards, args.repeats = 4_550, 8, 3
    tmp = Path(tempfile.mkdtemp(prefix="harvest-bench-remotes-"))
    os.environ["HF_HOME"] = str(tmp / "hf-home")  # before huggingface_hub is first used
    print(f"temp dir {tmp}")
    runs: list[dict[str, Any]] = []
    try:
        src = tmp / "source"
        info, wall = timed(collect_dataset, src, args.episodes, args.shards)
        print(f"dataset: {info['episodes']:,} episodes, {info['steps']:,} steps, {info['files']} "
              f"shards, {info['data_bytes'] / MB:.1f} MB (collected in {wall:.1f} s)")  # fmt: skip
        with servers(args.emulator_backlog) as srv:
            for k in range(args.repeats):
                run: dict[str, Any] = {name: run_backend(name, src, tmp, srv, info)
                                       for name in BACKENDS}  # fmt: skip
                run["cp"] = run_cp(src, tmp)
                runs.append(run)
                print(f"  repeat {k + 1}/{args.repeats}: push "
                      + ", ".join(f"{n} {secs(run[n]['push']['wall'])}" for n in BACKENDS)
                      + "; pull "
                      + ", ".join(f"{n} {secs(run[n]['pull']['wall'])}" for n in BACKENDS)
                      + f"; cp -r {secs(run['cp']['wall'])}")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize(runs, info)
    print(f"\n{info['steps']:,} CartPole steps, {info['files']} shards, "
          f"{info['data_bytes'] / MB:.1f} MB; median of {args.repeats}, emulator backlog "
          f"{args.emulator_backlog} "
          f"({platform.python_version()}, {os.cpu_count()} cpus)")  # fmt: skip
    failures = print_table(summary, info)
    for f in failures:
        print(f"FAIL {f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"dataset": info, "summary": summary, "runs": runs}, indent=2)
        )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
