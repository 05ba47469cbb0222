"""The Ray runner: episodes in parallel actors, one committer (DESIGN.md section 6).

Each actor (``RolloutWorker``) builds its env and policy once from the config and turns a
batch of episode ids into finished shard bytes (compressed, with the episode table and
digests). The driver owns the queue of ids, sizes batches from measured episode times (a
share of the work left, shrinking to ``runner.batch_seconds`` near the end), keeps at most
two batches in flight per actor, and only writes, fsyncs and commits. Ray is at-least-once,
so the driver deduplicates by episode id (a batch whose ids are already written is dropped).
Dead actors are replaced and their batches requeued; a batch still running
``runner.batch_timeout`` seconds after it started is a hang (the actor is killed, replaced and
the batch requeued); an episode whose env keeps raising fails the run naming the episode and
its seed, after everything finished is committed. More workers than free CPUs share them
(a fraction of a CPU each); a batch's deadline runs from when it starts (its actor is up and
the batch before it done), and an actor Ray cannot schedule within ``START_SECONDS`` is given
up and its batches go to the others, so a worker Ray cannot schedule never stalls the run.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
from typing import Any

import numpy as np
from tqdm import tqdm

from collector import storage
from collector.collect import Cadence
from collector.errors import CollectionError, HarvestError, MissingExtraError
from collector.plan import EpisodePlan, IdQueue
from collector.recorder import EpisodeRecorder
from collector.rollout import rollout_episodes

try:
    import ray
    from ray.exceptions import RayActorError, RayTaskError
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError('runner=ray needs Ray: pip install "harvest[ray]"') from e

log = logging.getLogger(__name__)

__all__ = ["RolloutWorker", "run_ray"]

MB = 1024 * 1024
IN_FLIGHT_PER_ACTOR = 2
#: Ids in one batch at most: a plan of 10**12 ids with no checkpoint cadence is not one batch.
MAX_BATCH_EPISODES = 100_000
#: An actor not up after this long (or ``runner.batch_timeout`` if longer) is given up: Ray
#: has no room for it. Its batches go to the others; with none up, the run fails.
START_SECONDS = 120.0


class RolloutWorker:
    """Builds env and policy once; ``run(ids)`` returns one shard's bytes and episode table.

    A plain class (tested without Ray); the runner wraps it with ``ray.remote``.
    """

    def __init__(self, conf: dict[str, Any], entropy: int, compression: str) -> None:
        from collector.collect import build_policy
        from collector.envs import make_env

        self.conf = conf
        self.entropy = entropy
        self.compression = compression
        self.retries = int((conf.get("runner") or {}).get("episode_retries", 2))

        def new_env() -> Any:
            return make_env(conf["env"], conf.get("env_kwargs"), conf.get("max_episode_steps"))

        self._new_env = new_env
        self.env = new_env()
        self.policy = build_policy(conf.get("policy") or {}, self.env)
        self.recorder = EpisodeRecorder(
            self.env.observation_space, self.env.action_space, bool(conf.get("record_infos"))
        )
        self.num_envs = int(conf.get("num_envs") or 1)
        self.vector_mode = str(conf.get("vectorization_mode") or "sync")

    def where(self) -> tuple[int, str]:
        """(pid, Ray node id) of this worker."""
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        return os.getpid(), node

    def run(self, episode_ids: list[int]) -> tuple[bytes, dict[str, Any], Any, int, float]:
        """Record ``episode_ids``; returns (shard bytes, table, info schema, steps, seconds)."""
        start = time.perf_counter()
        if self.num_envs > 1:
            batch, steps = self._run_vector(episode_ids)
        else:
            batch, steps, self.env = rollout_episodes(
                self._new_env,
                self.env,
                self.policy,
                self.recorder,
                episode_ids,
                self.entropy,
                self.retries,
            )
        assert batch is not None
        batch.table["digest"] = storage.episode_digests(batch)
        image = storage.build_shard_bytes(batch, self.compression)
        return image, batch.table, batch.info_schema(), steps, time.perf_counter() - start

    def _run_vector(self, episode_ids: list[int]) -> tuple[storage.EpisodeBatch | None, int]:
        """``episode_ids`` on a sync/async vector env of ``num_envs`` sub-envs (same data)."""
        from collector.collect import build_policy
        from collector.runners.vector import run_vector

        env = self.env
        recorders = [
            EpisodeRecorder(env.observation_space, env.action_space, self.recorder.record_infos)
            for _ in range(self.num_envs)
        ]
        steps = run_vector(
            self._new_env,
            lambda spaces: build_policy(self.conf.get("policy") or {}, spaces),
            recorders,
            _HoldEpisodes(),
            np.asarray(episode_ids, np.int64),
            self.entropy,
            self.vector_mode,
        )
        batches = [b for b in (r.take() for r in recorders) if b is not None]
        return (storage.concat_batches(batches) if batches else None), steps


class _HoldEpisodes:
    """A committer for ``run_vector`` that commits nothing: the batch goes back to the driver."""

    def after_episode(self) -> None:
        """Nothing: the worker returns every episode of its batch at once."""

    def flush(self) -> None:
        """Nothing to write here."""


def run_ray(
    conf: dict[str, Any],
    writer: storage.DatasetWriter,
    todo: EpisodePlan,
    entropy: int,
    *,
    compression: str,
    every_episodes: int | None,
    every_seconds: float | None,
    every_mb: float | None,
    progress: bool | None = None,
) -> int:
    """Collect ``todo`` episode ids on Ray actors into ``writer``; returns steps recorded."""
    rcfg = dict(conf.get("runner") or {})
    started_ray = _init_ray(rcfg)
    workers = int(rcfg.get("workers", 2))
    if workers < 1:
        raise CollectionError(f"runner.workers={workers} must be at least 1")
    cpus = _cpus_per_worker(float(rcfg.get("num_cpus_per_worker", 1)), workers)
    remote = ray.remote(RolloutWorker).options(num_cpus=cpus, max_restarts=0, max_task_retries=0)
    max_restarts = int(rcfg.get("max_restarts", 3))
    timeout = float(rcfg.get("batch_timeout", 300))
    target = float(rcfg.get("batch_seconds", 0.2))
    actors: dict[int, Any] = {}
    # ref of an actor's first call -> (slot, actor): until it answers, the actor's batches
    # have not started, so none of them can count as hung
    pings: dict[Any, tuple[int, Any]] = {}
    ready: set[int] = set()  # slots whose current actor answered
    launched: dict[int, float] = {}  # slot -> when its current actor was asked for
    queue = IdQueue(todo)  # lazily: a plan of 10**12 ids costs nothing up front
    # ref -> (slot, actor, ids, deadline); the deadline is set when the batch starts running
    # (the actor is up and its earlier batch is done), None before
    inflight: dict[Any, tuple[int, Any, list[int], float | None]] = {}
    written: set[int] = set(writer.committed_ids().tolist())
    cadence = Cadence(every_episodes, every_seconds, every_mb)
    uncommitted = window_bytes = 0
    restarts = steps = 0
    episode_seconds: float | None = None
    episode_bytes = 0.0  # compressed, from the shards seen so far
    bar = tqdm(total=len(todo), unit="ep", disable=None if progress else True, file=sys.stderr)
    started = time.perf_counter()
    start_limit = max(timeout, START_SECONDS)

    def launch(slot: int) -> None:
        actors[slot] = actor = remote.remote(conf, entropy, compression)
        ready.discard(slot)
        launched[slot] = time.monotonic()
        pings[actor.where.remote()] = (slot, actor)

    for k in range(workers):
        launch(k)

    def replace(slot: int, actor: Any, why: str) -> None:
        nonlocal restarts
        if actors.get(slot) is not actor:
            return  # already replaced (its other batches failing too)
        restarts += 1
        if restarts > max_restarts:
            raise CollectionError(
                f"Ray workers failed {restarts} times ({why}); committed episodes are safe, "
                "re-run to resume or raise runner.max_restarts"
            )
        log.warning("replacing Ray worker %d: %s", slot, why)
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass
        launch(slot)

    def failed_start(e: RayActorError) -> CollectionError:
        return CollectionError(
            f"a Ray worker could not start: {_last_line(str(e))}; check that "
            "the env and the policy import on every node (runner.init can "
            "pass a runtime_env)"
        )

    def batch_size() -> int:
        """Guided self-scheduling: a share of the work left, never under ``batch_seconds``.

        Big batches early mean few shards to repack and few round trips; batches shrink
        toward ``batch_seconds`` as the queue drains, so workers finish together. A batch
        holds at most half a commit window (seconds and bytes) so cadence holds.
        """
        if episode_seconds is None or episode_seconds <= 0:
            return 1  # first batches: measure
        seconds = max(target, len(queue) * episode_seconds / (2 * len(actors)))
        if every_seconds is not None:
            seconds = min(seconds, max(target, every_seconds / 2))
        size = seconds / episode_seconds
        if every_mb is not None and episode_bytes:
            size = min(size, every_mb * MB / 2 / len(actors) / episode_bytes)
        return int(max(1, size))

    try:
        while queue or inflight:
            for slot, actor in actors.items():
                busy = sum(1 for s, *_ in inflight.values() if s == slot)
                while queue and busy < IN_FLIGHT_PER_ACTOR:
                    take = min(batch_size(), len(queue), MAX_BATCH_EPISODES)
                    ids = [queue.popleft() for _ in range(take)]
                    inflight[actor.run.remote(ids)] = (slot, actor, ids, None)
                    busy += 1
            done, _ = ray.wait([*inflight, *pings], num_returns=1, timeout=1.0)
            for ref in done:
                if ref in pings:
                    slot, actor = pings.pop(ref)
                    try:
                        ray.get(ref)
                    except RayActorError as e:
                        if getattr(e, "actor_init_failed", False):
                            raise failed_start(e) from None
                        replace(slot, actor, f"worker died: {type(e).__name__}")
                        continue
                    if actors.get(slot) is actor:
                        ready.add(slot)
                    continue
                slot, actor, ids, _ = inflight.pop(ref)
                try:
                    image, table, schema, n_steps, seconds = ray.get(ref)
                except RayActorError as e:
                    if getattr(e, "actor_init_failed", False):
                        # a worker that cannot build env or policy will never work: stop
                        raise failed_start(e) from None
                    replace(slot, actor, f"worker died: {type(e).__name__}")
                    queue.extendleft(reversed(ids))
                    continue
                except RayTaskError as e:
                    cause = e.cause
                    if isinstance(cause, HarvestError):
                        raise cause from None  # one line, not Ray's remote traceback
                    raise CollectionError(
                        f"a Ray worker failed: {type(cause).__name__}: {cause}"
                    ) from None
                if written.intersection(ids):
                    continue  # at-least-once delivery: these ids are already written
                writer.write_image(image, table, schema, compression)
                written.update(ids)
                uncommitted += len(ids)
                steps += n_steps
                per = seconds / max(1, len(ids))
                episode_seconds = (
                    per if episode_seconds is None else 0.7 * episode_seconds + 0.3 * per
                )
                bar.update(len(ids))
                if not bar.disable:
                    rate = steps / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix_str(
                        f"{rate:,.0f} steps/s, {len(actors)} workers", refresh=False
                    )
                window_bytes += len(image)
                episode_bytes = max(episode_bytes, len(image) / len(ids))
                if cadence.due(uncommitted, window_bytes):
                    writer.commit()
                    cadence.restart()
                    uncommitted = window_bytes = 0
            now = time.monotonic()
            for slot in [s for s in actors if s not in ready and now - launched[s] > start_limit]:
                actor = actors.pop(slot)  # Ray found no room for it: the others do its work
                log.warning(
                    "Ray worker %d was not scheduled in %g s (no room for %g CPU); "
                    "going on with %d worker(s)",
                    slot,
                    start_limit,
                    cpus,
                    len(actors),
                )
                for ref in [r for r, v in inflight.items() if v[1] is actor]:
                    queue.extendleft(reversed(inflight.pop(ref)[2]))
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:
                    pass
            if not actors:
                raise CollectionError(
                    f"no Ray worker started in {start_limit:g} s: the cluster has no room for "
                    f"{workers} worker(s) of {cpus:g} CPU; free CPUs there or lower "
                    "runner.workers or runner.num_cpus_per_worker"
                )
            running: set[int] = set()  # an actor runs its batches in order: the first one runs
            for ref, (slot, actor, ids, deadline) in inflight.items():
                if slot in running or actors.get(slot) is not actor or slot not in ready:
                    continue
                running.add(slot)
                if deadline is None:
                    inflight[ref] = (slot, actor, ids, now + timeout)
            for slot, actor, _ids, deadline in list(inflight.values()):
                if deadline is not None and now > deadline and actors.get(slot) is actor:
                    hung = [r for r, v in inflight.items() if v[1] is actor]
                    replace(slot, actor, f"no result for {timeout:.0f} s (hung)")
                    for r in hung:
                        queue.extendleft(reversed(inflight.pop(r)[2]))
    finally:
        bar.close()
        if uncommitted:
            writer.commit()  # whatever finished is safe before any error propagates
        for actor in actors.values():
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        if started_ray:
            ray.shutdown()
    return steps


def _cpus_per_worker(requested: float, workers: int) -> float:
    """CPUs each actor asks Ray for: ``requested``, or an equal share of the free CPUs.

    Actors that ask for more CPUs than Ray can schedule wait unscheduled; sharing the CPUs
    out (a fraction each) lets every worker start, as ``runner.workers`` asked.
    """
    free = ray.available_resources().get("CPU", 0.0) or ray.cluster_resources().get("CPU", 0.0)
    if free <= 0 or requested * workers <= free:
        return requested
    share = free / workers
    # Ray takes whole numbers above one CPU and four decimals below
    share = float(math.floor(share)) if share >= 1 else max(math.floor(share * 1e4) / 1e4, 1e-4)
    log.warning(
        "%d workers share %g CPUs: each asks Ray for %g CPU (runner.num_cpus_per_worker=%g)",
        workers,
        free,
        share,
        requested,
    )
    return share


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def _check_reachable(address: str | None) -> None:
    """Fail in seconds, not minutes, when ``runner.address`` names a host:port nobody serves."""
    if not address or address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # let ray.init judge other forms
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise CollectionError(
            f"cannot reach the Ray cluster at runner.address={address!r} ({e.strerror or e}); "
            "start it with `ray start --head` or fix the address"
        ) from None


def _init_ray(rcfg: dict[str, Any]) -> bool:
    """Start (or join) Ray quietly unless it is already up; True when this call started it."""
    if ray.is_initialized():
        return False
    _check_reachable(rcfg.get("address"))
    kwargs: dict[str, Any] = {
        "address": rcfg.get("address"),
        "include_dashboard": False,
        "log_to_driver": bool(rcfg.get("log_to_driver", False)),
        "logging_level": logging.ERROR,
        **dict(rcfg.get("init") or {}),
    }
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise CollectionError(
            f"cannot reach the Ray cluster at runner.address={rcfg.get('address')!r} ({e}); "
            "start it with `ray start --head` or fix the address"
        ) from e
    return True
