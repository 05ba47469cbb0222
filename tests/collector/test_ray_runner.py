"""``runner=ray``: same data as the local runner, and the fault handling of DESIGN.md section 6.

One Ray instance (2 CPUs) is shared by the module; ``collect`` joins it instead of starting
its own. Ray workers import test envs by module path, so the envs live in ``tests/helpers.py``
and ``tests/ray_envs.py`` and ``tests/`` is put on the workers' ``PYTHONPATH``. Tests that
need a Ray of their own (a two-node cluster, a driver that is killed, a bad address) run in
subprocesses.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import ray
import ray_envs
from helpers import CLI, PYTHONPATH, cli_env, read_episodes, wait_for_commit
from ray_support import (
    LOCAL,
    SLOW,
    conf,
    module_ray,
    on_ray,
    rollout_worker_pids,
    wait_for_free_cpus,
)

from collector import storage
from collector.collect import CollectResult, collect
from collector.errors import CollectionError
from collector.runners import ray as ray_runner
from collector.runners.ray import RolloutWorker
from collector.seeding import env_seed

FLAKY = f"ray_envs:{ray_envs.FLAKY_ID}"  # 20-step episodes that can raise or hang once
BAD_ADDRESS_SECONDS = 60  # how long a user may wait to learn that runner.address is wrong


def committed_ids(dataset_id: str) -> list[int]:
    return [ep["id"] for ep in read_episodes(dataset_id)]


def assert_complete(dataset_id: str, episodes: int, fingerprint: str) -> None:
    """Exactly ids 0..episodes-1, verified from disk, with the expected fingerprint."""
    report = storage.verify_dataset(dataset_id)
    assert report.ok, report.problems
    assert report.episodes == episodes
    assert committed_ids(dataset_id) == list(range(episodes))
    assert report.fingerprint == fingerprint
    data = storage.dataset_path(dataset_id) / storage.DATA_DIR
    assert not [p.name for p in data.iterdir() if p.name.startswith(".")]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def bad_address_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``collect runner=ray runner.address=127.0.0.1:1`` started when the module starts.

    It runs in the background while the other tests run (it mostly waits on the network);
    ``test_unreachable_address_fails_clearly`` looks at its outcome at the end.
    """
    root = tmp_path_factory.mktemp("bad-address")
    out = (root / "stdout").open("w")
    err = (root / "stderr").open("w")
    args = ["runner=ray", "runner.address=127.0.0.1:1", "episodes=3", f"hydra.run.dir={root}"]
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, *args],
        env=cli_env(root / "datasets"),
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
    )
    try:
        yield {"proc": proc, "started": time.monotonic(), "root": root}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        out.close()
        err.close()


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """One local Ray for the module; ``collect`` reuses it (and leaves it running)."""
    yield from module_ray()


@pytest.fixture(scope="module")
def local_fingerprint(tmp_path_factory: pytest.TempPathFactory):
    """``local_fingerprint(episodes, env=..., env_kwargs=...)``: a cached local-runner run."""
    root = tmp_path_factory.mktemp("local-reference")
    cache: dict[str, str] = {}

    def get(episodes: int, env: str = "CartPole-v1", env_kwargs: dict | None = None) -> str:
        key = json.dumps([episodes, env, env_kwargs], sort_keys=True)
        if key not in cache:
            did = f"ref/run{len(cache)}-v0"
            result = collect(conf(episodes, did, LOCAL, env=env, env_kwargs=env_kwargs, root=root))
            assert result.total_episodes == episodes
            cache[key] = result.fingerprint
        return cache[key]

    return get


# -- same data whatever the layout ------------------------------------------------------------


def test_ray_gives_the_local_fingerprint_whatever_workers_and_batch_size(
    ray_address: str, local_fingerprint
) -> None:
    n = 200
    reference = local_fingerprint(n)
    layouts = [
        {"workers": 1, "batch_seconds": 0.5},  # large batches, one actor
        {"workers": 2, "batch_seconds": 1e-4},  # one episode per task
    ]
    for k, layout in enumerate(layouts):
        dataset_id = f"ray/layout{k}-v0"
        result = collect(conf(n, dataset_id, on_ray(**layout)))
        assert (result.new_episodes, result.total_episodes) == (n, n), layout
        assert result.fingerprint == reference, layout
        assert_complete(dataset_id, n, reference)


def test_vector_envs_in_ray_workers_give_the_local_fingerprint(
    ray_address: str, local_fingerprint
) -> None:
    """Each worker steps a sync (or async) vector env over its batch: same data as local."""
    n = 120
    for k, mode in enumerate(["sync", "async"]):
        cfg = conf(n, f"ray/vec{k}-v0", on_ray(batch_seconds=0.02))
        cfg.update(num_envs=4, vectorization_mode=mode)
        result = collect(cfg)
        assert result.fingerprint == local_fingerprint(n), mode
        assert_complete(f"ray/vec{k}-v0", n, local_fingerprint(n))


def test_resume_and_extend_on_ray_match_local(ray_address: str, local_fingerprint) -> None:
    first = collect(conf(50, "ray/grow-v0", on_ray()))
    assert first.new_episodes == 50
    assert first.fingerprint == local_fingerprint(50)

    grown = collect(conf(100, "ray/grow-v0", on_ray()))
    assert (grown.new_episodes, grown.total_episodes) == (50, 100)  # only the new ids
    assert_complete("ray/grow-v0", 100, local_fingerprint(100))
    shards = storage.read_metadata(storage.dataset_path("ray/grow-v0"))["shards"]

    again = collect(conf(100, "ray/grow-v0", on_ray()))
    assert again.noop and again.new_steps == 0
    assert again.fingerprint == grown.fingerprint
    assert storage.read_metadata(storage.dataset_path("ray/grow-v0"))["shards"] == shards

    # the runner is execution-only: a dataset started on Ray extends locally
    collect(conf(50, "mixed/a-v0", on_ray()))
    mixed = collect(conf(100, "mixed/a-v0", LOCAL))
    assert mixed.new_episodes == 50
    assert_complete("mixed/a-v0", 100, grown.fingerprint)


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_killing_a_worker_mid_run_loses_and_duplicates_nothing(
    ray_address: str, local_fingerprint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="collector.runners.ray")
    n = 60
    reference = local_fingerprint(n, env=SLOW)
    wait_for_free_cpus()
    before = set(rollout_worker_pids())
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = collect(conf(n, "ray/killed-v0", on_ray(), env=SLOW, every=5))
        except BaseException as e:  # reported by the main thread
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    committed = wait_for_commit("ray/killed-v0", timeout=60)
    deadline = time.monotonic() + 10
    busy: list[int] = []
    while not busy and time.monotonic() < deadline:  # an actor of this run, inside run()
        procs = rollout_worker_pids()
        busy = [p for p, title in procs.items() if p not in before and title.endswith(".run")]
    assert busy, "no RolloutWorker actor is running a batch"
    assert thread.is_alive() and committed < n, "the run finished before a worker was killed"
    os.kill(busy[0], signal.SIGKILL)

    thread.join(timeout=120)
    assert not thread.is_alive(), "the run did not finish after a worker was killed"
    assert "error" not in outcome, outcome.get("error")
    result: CollectResult = outcome["result"]
    assert (result.new_episodes, result.total_episodes) == (n, n)
    assert any("replacing Ray worker" in r.getMessage() for r in caplog.records), (
        "the kill was not noticed"
    )
    assert_complete("ray/killed-v0", n, reference)


def test_an_env_that_always_raises_fails_naming_episode_and_seed(ray_address: str) -> None:
    k, n = 7, 30
    seed = env_seed(0, k)
    with pytest.raises(CollectionError) as info:
        collect(
            conf(n, "ray/fails-v0", on_ray(), env=FLAKY, env_kwargs={"fail_seed": seed}, every=5)
        )
    message = str(info.value)
    assert f"episode {k} (seed {seed})" in message
    report = storage.verify_dataset("ray/fails-v0")
    assert report.ok, report.problems
    ids = committed_ids("ray/fails-v0")
    assert 1 <= len(ids) < n  # what finished before the failure was committed
    assert k not in ids
    assert len(set(ids)) == len(ids) and set(ids) <= set(range(n))


def test_an_env_failure_is_one_clear_line_not_a_remote_traceback(ray_address: str) -> None:
    """DESIGN.md section 9: the CLI prints ``collect: error: <message>`` as one line."""
    seed = env_seed(0, 3)
    with pytest.raises(CollectionError) as info:
        collect(conf(10, "ray/fails-v0", on_ray(), env=FLAKY, env_kwargs={"fail_seed": seed}))
    message = str(info.value)
    assert message.startswith(f"episode 3 (seed {seed}) failed 3 times"), message[:300]
    assert "\n" not in message and "Traceback" not in message, message[:300]


def test_an_env_that_raises_once_is_retried_and_gives_the_local_data(
    ray_address: str, local_fingerprint, tmp_path: Path
) -> None:
    n = 30
    marker = tmp_path / "raised-once"
    kwargs = {"fail_seed": env_seed(0, 11), "marker": str(marker)}
    result = collect(conf(n, "ray/flaky-v0", on_ray(), env=FLAKY, env_kwargs=kwargs, every=5))
    assert marker.exists(), "the env never raised: the test proves nothing"
    assert result.total_episodes == n
    assert_complete("ray/flaky-v0", n, local_fingerprint(n, env=FLAKY))


def test_a_worker_that_cannot_build_the_env_fails_naming_the_cause(
    ray_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The env's module is importable by the driver only (a common cluster mistake)."""
    (tmp_path / "driver_only_env.py").write_text(
        textwrap.dedent(
            """
            import gymnasium as gym

            ENTRY = "gymnasium.envs.classic_control:CartPoleEnv"
            if "harvest-test/DriverOnly-v0" not in gym.registry:
                gym.register("harvest-test/DriverOnly-v0", entry_point=ENTRY)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    env = "driver_only_env:harvest-test/DriverOnly-v0"
    with pytest.raises(CollectionError) as info:
        collect(conf(10, "ray/driver-only-v0", on_ray(max_restarts=1), env=env))
    message = str(info.value)
    assert "driver_only_env" in message, message  # the cause, not only "worker died"
    assert "runner.max_restarts" not in message, message  # more restarts cannot help


@pytest.mark.slow
def test_a_hung_batch_is_killed_and_requeued(
    ray_address: str, local_fingerprint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="collector.runners.ray")
    n = 30
    marker = tmp_path / "hung-once"
    kwargs = {"fail_seed": env_seed(0, 5), "marker": str(marker), "mode": "hang"}
    wait_for_free_cpus()
    start = time.monotonic()
    result = collect(
        conf(n, "ray/hang-v0", on_ray(batch_timeout=5), env=FLAKY, env_kwargs=kwargs, every=5)
    )
    took = time.monotonic() - start
    assert marker.exists(), "the env never hung: the test proves nothing"
    assert any("(hung)" in r.getMessage() for r in caplog.records)
    assert 5 <= took < 60
    assert result.total_episodes == n
    assert_complete("ray/hang-v0", n, local_fingerprint(n, env=FLAKY))


def test_more_workers_than_cpus_share_them_and_nothing_counts_as_hung(
    ray_address: str, local_fingerprint, caplog: pytest.LogCaptureFixture
) -> None:
    """``runner.workers=4`` on the module's 2 CPUs (the README's command): no stall.

    Actors asking for a whole CPU each left two of them unscheduled, holding batches until
    ``batch_timeout`` declared them hung (306 s for the README's command).
    """
    caplog.set_level(logging.INFO, logger="collector.runners.ray")
    n = 60
    wait_for_free_cpus()
    start = time.monotonic()
    result = collect(conf(n, "ray/four-on-two-v0", on_ray(workers=4, batch_timeout=5)))
    took = time.monotonic() - start
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "replacing Ray worker" in m], messages
    assert any("4 workers share 2 CPUs" in m for m in messages), messages
    assert (result.new_episodes, result.total_episodes) == (n, n)
    assert_complete("ray/four-on-two-v0", n, local_fingerprint(n))
    assert took < 60  # a safety bound only; the hang check above is the real one


def test_workers_ray_cannot_schedule_fail_the_run_in_one_line(
    ray_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every CPU held elsewhere: the workers are given up after the start limit, not hung."""
    monkeypatch.setattr(ray_runner, "START_SECONDS", 2.0)
    wait_for_free_cpus()
    hog = ray.remote(num_cpus=2)(_CpuHog).remote()
    ray.get(hog.ping.remote())
    try:
        start = time.monotonic()
        with pytest.raises(CollectionError, match=r"no Ray worker started in 2 s") as info:
            collect(conf(10, "ray/no-room-v0", on_ray(batch_timeout=1)))
        assert "\n" not in str(info.value)
        assert time.monotonic() - start < 30
    finally:
        ray.kill(hog)
    wait_for_free_cpus()


class _CpuHog:
    """An actor that holds CPUs (and does nothing else)."""

    def ping(self) -> int:
        return 1


@pytest.mark.slow
def test_killing_the_driver_then_rerunning_gives_the_uninterrupted_dataset(
    ray_address: str, local_fingerprint, datasets_root: Path
) -> None:
    n = 60
    dataset_id = "ray/driver-killed-v0"
    reference = local_fingerprint(n, env=SLOW)
    wait_for_free_cpus()
    # The subprocess driver joins this module's Ray; its job's workers get tests/ on their
    # path (and this checkout's) through runner.init (passed to ray.init) so that they can
    # import `helpers`.
    args = [
        f"env={SLOW}",
        f"episodes={n}",
        f"dataset_id={dataset_id}",
        "checkpoint.every_episodes=5",
        "runner=ray",
        f"runner.address={ray_address}",
        "runner.batch_seconds=0.05",
        f"+runner.init.runtime_env={{env_vars:{{PYTHONPATH:'{PYTHONPATH}'}}}}",
        f"hydra.run.dir={datasets_root.parent / 'runs'}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, *args],
        env=cli_env(datasets_root),
        cwd=datasets_root.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        committed = wait_for_commit(dataset_id, timeout=60)
    except AssertionError:
        proc.kill()
        stderr = proc.communicate()[1]
        raise AssertionError(f"no commit; driver stderr:\n{stderr[-3000:]}") from None
    assert proc.poll() is None and committed < n, "the driver finished before it was killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    meta = storage.read_metadata(storage.dataset_path(dataset_id))  # a consistent commit
    assert 0 < meta["total_episodes"] < n

    wait_for_free_cpus()  # the dead driver's actors are reaped with its job
    result = collect(conf(n, dataset_id, on_ray(), env=SLOW, every=5))
    assert result.new_episodes == n - meta["total_episodes"]
    assert_complete(dataset_id, n, reference)


@pytest.mark.slow
def test_workers_spread_over_a_two_node_cluster(
    tmp_path: Path, datasets_root: Path, local_fingerprint
) -> None:
    n = 100
    seen = tmp_path / "nodes.txt"
    config = conf(n, "ray/cluster-v0", on_ray(num_cpus_per_worker=1))
    script = tmp_path / "cluster_run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json

            import ray
            from ray.cluster_utils import Cluster

            import collector.runners.ray as runner
            from collector.collect import collect


            class Recording(runner.RolloutWorker):
                # the runner's own actors, noting the node each batch ran on
                def run(self, episode_ids):
                    with open({str(seen)!r}, "a") as fh:
                        fh.write(ray.get_runtime_context().get_node_id() + "\\n")
                    return super().run(episode_ids)


            runner.RolloutWorker = Recording
            config = json.loads({json.dumps(config)!r})
            cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
            try:
                cluster.add_node(num_cpus=1)
                cluster.wait_for_nodes()
                ray.init(address=cluster.address, log_to_driver=False)
                config["runner"]["address"] = cluster.address
                result = collect(config)
                nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
                print(json.dumps({{"fingerprint": result.fingerprint, "nodes": nodes}}))
            finally:
                ray.shutdown()
                cluster.shutdown()
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=cli_env(datasets_root),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(set(out["nodes"])) == 2
    used = set(seen.read_text().split())
    assert used == set(out["nodes"]), "the two actors did not land on two nodes"
    assert out["fingerprint"] == local_fingerprint(n)
    assert_complete("ray/cluster-v0", n, out["fingerprint"])


# -- the worker class without Ray ---------------------------------------------------------------


def test_rollout_worker_without_ray_returns_a_shard_image(tmp_path: Path) -> None:
    worker_conf = conf(3, "unused/x-v0", {"name": "ray", "episode_retries": 0})
    worker = RolloutWorker(worker_conf, 0, "lzf")
    image, table, schema, steps, seconds = worker.run([0, 1, 2])
    assert isinstance(image, bytes) and seconds >= 0 and schema is None
    with h5py.File(io.BytesIO(image), "r") as f:
        assert f["episodes/id"][()].tolist() == [0, 1, 2]
        np.testing.assert_array_equal(f["episodes/digest"][()], table["digest"])
    shard = tmp_path / "shard.h5"
    shard.write_bytes(image)
    batch = storage.read_shard(shard)
    np.testing.assert_array_equal(storage.episode_digests(batch), table["digest"])
    assert steps == batch.num_steps == int(table["length"].sum())

    # the same episodes as the local runner, and the worker keeps going batch after batch
    local = collect(conf(4, "local/worker-v0", LOCAL))
    digests = np.concatenate(
        [
            storage.read_shard_table(local.path / storage.DATA_DIR / e["file"])["digest"]
            for e in storage.read_metadata(local.path)["shards"]
        ]
    )
    image3, table3, *_ = worker.run([3])
    assert table3["id"].tolist() == [3]
    np.testing.assert_array_equal(np.concatenate([table["digest"], table3["digest"]]), digests)


# -- a wrong address ----------------------------------------------------------------------------


@pytest.mark.slow
def test_unreachable_address_fails_clearly(bad_address_run: dict[str, Any]) -> None:
    """Nothing listens at 127.0.0.1:1: the CLI must say so, in one line, within a minute."""
    proc = bad_address_run["proc"]
    left = bad_address_run["started"] + BAD_ADDRESS_SECONDS - time.monotonic()
    try:
        proc.wait(timeout=max(0.0, left))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        stderr = (bad_address_run["root"] / "stderr").read_text()
        pytest.fail(
            f"`collect runner=ray runner.address=127.0.0.1:1` gave no answer within "
            f"{BAD_ADDRESS_SECONDS} s; its stderr so far ends with:\n{stderr[-1500:]}"
        )
    stderr = (bad_address_run["root"] / "stderr").read_text()
    assert proc.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("collect: error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert "runner.address='127.0.0.1:1'" in errors[0]
    assert "Traceback" not in stderr
