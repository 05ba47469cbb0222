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
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from collector import storage
from collector.committer import (
    Committer,
    commit_finished_on_error,
    progress_bar,
    show_rate,
)
from collector.config import CollectConfig, RayRunnerConfig
from collector.envs import make_env
from collector.errors import CollectionError, HarvestError, MissingExtraError, UsageError
from collector.plan import EpisodePlan, IdQueue
from collector.policies import Policy, add_import_dir, build_policy
from collector.recorder import EpisodeRecorder
from collector.rollout import rollout_episodes

try:
    import ray
    from ray.exceptions import RayActorError, RayTaskError
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError('runner=ray needs Ray: pip install "harvest[ray]"') from e

log = logging.getLogger(__name__)

__all__ = ["RolloutWorker", "collect_ray", "run_ray"]

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

    def __init__(
        self,
        config: CollectConfig | Mapping[str, Any],
        entropy: int,
        compression: str,
        cwd: str | None = None,
    ) -> None:
        if not isinstance(config, CollectConfig):  # a plain dict, as tests build one
            config = CollectConfig.from_dict(config)
        self.config = conf = config
        # the driver's working directory: its modules import here, its relative paths resolve
        self.cwd = cwd
        if cwd is not None:
            add_import_dir(cwd)
        self.entropy = entropy
        self.compression = compression
        ray_conf = conf.runner if isinstance(conf.runner, RayRunnerConfig) else RayRunnerConfig()
        self.retries = ray_conf.episode_retries

        def new_env() -> Any:
            return make_env(conf.env, conf.env_kwargs, conf.max_episode_steps, conf.wrappers)

        self._new_env = new_env
        self.env = new_env()
        self.policy = build_policy(conf.policy, self.env, cwd)
        self.recorder = EpisodeRecorder(
            self.env.observation_space, self.env.action_space, conf.record_infos
        )
        self.num_envs = conf.num_envs
        self.vector_mode = conf.vectorization_mode

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
        image = storage.build_shard_bytes(storage.fill_digests(batch), self.compression)
        return image, batch.table, batch.info_schema(), steps, time.perf_counter() - start

    def _run_vector(self, episode_ids: list[int]) -> tuple[storage.EpisodeBatch | None, int]:
        """``episode_ids`` on a sync/async vector env of ``num_envs`` sub-envs (same data)."""
        from collector.runners.vector import run_vector

        env = self.env
        recorders = [
            EpisodeRecorder(env.observation_space, env.action_space, self.recorder.record_infos)
            for _ in range(self.num_envs)
        ]
        steps = run_vector(
            self._new_env,
            lambda spaces: build_policy(self.config.policy, spaces, self.cwd),
            recorders,
            None,  # no committer here: the batch goes back to the driver's
            np.asarray(episode_ids, np.int64),
            self.entropy,
            self.vector_mode,
        )
        batches = [b for b in (r.take() for r in recorders) if b is not None]
        return (storage.concat_batches(batches) if batches else None), steps


def run_ray(
    conf: CollectConfig,
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
    rcfg = conf.runner
    if not isinstance(rcfg, RayRunnerConfig):
        raise UsageError(f"the ray runner was given runner={rcfg.name}; use runner=ray")
    started_ray = _init_ray(rcfg)
    workers = rcfg.workers
    if workers < 1:
        raise CollectionError(f"runner.workers={workers} must be at least 1")
    cpus = _cpus_per_worker(float(rcfg.num_cpus_per_worker), workers)
    remote = ray.remote(RolloutWorker).options(num_cpus=cpus, max_restarts=0, max_task_retries=0)
    committer = Committer(  # the one committer, fed the workers' shard images
        writer,
        [],
        every_episodes=every_episodes,
        every_seconds=every_seconds,
        every_mb=every_mb,
        compression=compression,
        background=False,
    )
    bar = progress_bar(len(todo), progress)
    driver = _Driver(
        lambda: remote.remote(conf, entropy, compression, os.getcwd()),
        rcfg,
        cpus,
        IdQueue(todo),  # lazily: a plan of 10**12 ids costs nothing up front
        set(writer.committed_ids().tolist()),
        committer,
        bar,
    )
    try:
        # whatever finished is safe before any error propagates
        with commit_finished_on_error(committer):
            for k in range(workers):
                driver.launch(k)
            while driver.queue or driver.inflight:
                driver.submit()
                done, _ = ray.wait([*driver.inflight, *driver.pings], num_returns=1, timeout=1.0)
                for ref in done:
                    driver.receive(ref)
                now = time.monotonic()
                driver.drop_unscheduled(now)
                driver.watch_deadlines(now)
        committer.flush()
    finally:
        bar.close()
        committer.close()
        for actor in driver.actors.values():
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        if started_ray:
            ray.shutdown()
    return driver.steps


class _Driver:
    """The Ray driver's state: actors by slot, batches in flight, the queue of ids to run."""

    def __init__(
        self,
        new_actor: Callable[[], Any],
        rcfg: RayRunnerConfig,
        cpus: float,
        queue: IdQueue,
        written: set[int],
        committer: Committer,
        bar: Any,
    ) -> None:
        self.new_actor = new_actor
        self.rcfg = rcfg
        self.cpus = cpus
        self.queue = queue
        self.written = written  # ids already written: Ray is at-least-once
        self.committer = committer
        self.bar = bar
        self.timeout = float(rcfg.batch_timeout)
        self.start_limit = max(self.timeout, START_SECONDS)
        self.actors: dict[int, Any] = {}
        # ref of an actor's first call -> (slot, actor): until it answers, the actor's batches
        # have not started, so none of them can count as hung
        self.pings: dict[Any, tuple[int, Any]] = {}
        self.ready: set[int] = set()  # slots whose current actor answered
        self.launched: dict[int, float] = {}  # slot -> when its current actor was asked for
        # ref -> (slot, actor, ids, deadline); the deadline is set when the batch starts
        # running (the actor is up and its earlier batch is done), None before
        self.inflight: dict[Any, tuple[int, Any, list[int], float | None]] = {}
        self.restarts = self.steps = 0
        self.episode_seconds: float | None = None
        self.episode_bytes = 0.0  # compressed, from the shards seen so far
        self.started = time.perf_counter()

    def launch(self, slot: int) -> None:
        """Start an actor in ``slot`` and ask it where it runs (its answer: it is up)."""
        self.actors[slot] = actor = self.new_actor()
        self.ready.discard(slot)
        self.launched[slot] = time.monotonic()
        self.pings[actor.where.remote()] = (slot, actor)

    def replace(self, slot: int, actor: Any, why: str) -> None:
        """Kill ``actor`` and launch another in its slot, up to ``runner.max_restarts``."""
        if self.actors.get(slot) is not actor:
            return  # already replaced (its other batches failing too)
        self.restarts += 1
        if self.restarts > self.rcfg.max_restarts:
            raise CollectionError(
                f"Ray workers failed {self.restarts} times ({why}); committed episodes are "
                "safe, re-run to resume or raise runner.max_restarts"
            )
        log.warning("replacing Ray worker %d: %s", slot, why)
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass
        self.launch(slot)

    def batch_size(self) -> int:
        """Guided self-scheduling: a share of the work left, never under ``batch_seconds``.

        Big batches early mean few shards to repack and few round trips; batches shrink
        toward ``batch_seconds`` as the queue drains, so workers finish together. A batch
        holds at most half a commit window (seconds and bytes) so cadence holds.
        """
        per = self.episode_seconds
        if per is None or per <= 0:
            return 1  # first batches: measure
        target = float(self.rcfg.batch_seconds)
        cadence = self.committer.cadence
        seconds = max(target, len(self.queue) * per / (2 * len(self.actors)))
        if cadence.every_seconds is not None:
            seconds = min(seconds, max(target, cadence.every_seconds / 2))
        size = seconds / per
        if cadence.every_bytes is not None and self.episode_bytes:
            size = min(size, cadence.every_bytes / 2 / len(self.actors) / self.episode_bytes)
        return int(max(1, size))

    def submit(self) -> None:
        """Keep ``IN_FLIGHT_PER_ACTOR`` batches queued on every actor while ids are left."""
        for slot, actor in self.actors.items():
            busy = sum(1 for s, *_ in self.inflight.values() if s == slot)
            while self.queue and busy < IN_FLIGHT_PER_ACTOR:
                take = min(self.batch_size(), len(self.queue), MAX_BATCH_EPISODES)
                ids = [self.queue.popleft() for _ in range(take)]
                self.inflight[actor.run.remote(ids)] = (slot, actor, ids, None)
                busy += 1

    def receive(self, ref: Any) -> None:
        """Handle a finished call: an actor's first answer, or a batch to commit or requeue."""
        if ref in self.pings:
            slot, actor = self.pings.pop(ref)
            try:
                ray.get(ref)
            except RayActorError as e:
                if getattr(e, "actor_init_failed", False):
                    raise _failed_start(e) from None
                self.replace(slot, actor, f"worker died: {type(e).__name__}")
                return
            if self.actors.get(slot) is actor:
                self.ready.add(slot)
            return
        slot, actor, ids, _ = self.inflight.pop(ref)
        try:
            image, table, schema, n_steps, seconds = ray.get(ref)
        except RayActorError as e:
            if getattr(e, "actor_init_failed", False):
                # a worker that cannot build env or policy will never work: stop
                raise _failed_start(e) from None
            self.replace(slot, actor, f"worker died: {type(e).__name__}")
            self.queue.extendleft(reversed(ids))
            return
        except RayTaskError as e:
            cause = e.cause
            if isinstance(cause, HarvestError):
                raise cause from None  # one line, not Ray's remote traceback
            raise CollectionError(f"a Ray worker failed: {type(cause).__name__}: {cause}") from None
        if self.written.intersection(ids):
            return  # at-least-once delivery: these ids are already written
        self.committer.add_image(image, table, schema)  # commits when the cadence is due
        self.written.update(ids)
        self.steps += n_steps
        per = seconds / max(1, len(ids))
        old = self.episode_seconds
        self.episode_seconds = per if old is None else 0.7 * old + 0.3 * per
        self.bar.update(len(ids))
        show_rate(self.bar, self.steps, self.started, f"{len(self.actors)} workers")
        self.episode_bytes = max(self.episode_bytes, len(image) / len(ids))

    def drop_unscheduled(self, now: float) -> None:
        """Give up actors Ray found no room for within ``start_limit``; the others go on."""
        for slot in [
            s
            for s in self.actors
            if s not in self.ready and now - self.launched[s] > self.start_limit
        ]:
            actor = self.actors.pop(slot)  # Ray found no room for it: the others do its work
            log.warning(
                "Ray worker %d was not scheduled in %g s (no room for %g CPU); "
                "going on with %d worker(s)",
                slot,
                self.start_limit,
                self.cpus,
                len(self.actors),
            )
            for ref in [r for r, v in self.inflight.items() if v[1] is actor]:
                self.queue.extendleft(reversed(self.inflight.pop(ref)[2]))
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        if not self.actors:
            raise CollectionError(
                f"no Ray worker started in {self.start_limit:g} s: the cluster has no room for "
                f"{self.rcfg.workers} worker(s) of {self.cpus:g} CPU; free CPUs there or lower "
                "runner.workers or runner.num_cpus_per_worker"
            )

    def watch_deadlines(self, now: float) -> None:
        """Start the clock of each actor's running batch; replace an actor whose batch hung."""
        running: set[int] = set()  # an actor runs its batches in order: the first one runs
        for ref, (slot, actor, ids, deadline) in self.inflight.items():
            if slot in running or self.actors.get(slot) is not actor or slot not in self.ready:
                continue
            running.add(slot)
            if deadline is None:
                self.inflight[ref] = (slot, actor, ids, now + self.timeout)
        for slot, actor, _ids, deadline in list(self.inflight.values()):
            if deadline is not None and now > deadline and self.actors.get(slot) is actor:
                hung = [r for r, v in self.inflight.items() if v[1] is actor]
                self.replace(slot, actor, f"no result for {self.timeout:.0f} s (hung)")
                for r in hung:
                    self.queue.extendleft(reversed(self.inflight.pop(r)[2]))


def _failed_start(e: RayActorError) -> CollectionError:
    return CollectionError(
        f"a Ray worker could not start: {_last_line(str(e))}; check that "
        "the env and the policy import on every node (runner.init can "
        "pass a runtime_env)"
    )


def collect_ray(
    config: CollectConfig,
    writer: storage.DatasetWriter,
    env: Any,
    policy: Policy,
    todo: EpisodePlan,
    entropy: int,
    *,
    progress: Any = None,
) -> int:
    """The ``ray`` runner in the registry's shape: the actors build their own env and policy."""
    del env, policy  # built once per actor from the config
    ckpt = config.checkpoint
    return run_ray(
        config,
        writer,
        todo,
        entropy,
        compression=config.storage.compression,
        every_episodes=ckpt.every_episodes,
        every_seconds=ckpt.every_seconds,
        every_mb=ckpt.every_mb,
        progress=bool(progress),
    )


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


def _init_ray(rcfg: RayRunnerConfig) -> bool:
    """Start (or join) Ray quietly unless it is already up; True when this call started it."""
    if ray.is_initialized():
        return False
    _check_reachable(rcfg.address)
    kwargs: dict[str, Any] = {
        "address": rcfg.address,
        "include_dashboard": False,
        "log_to_driver": rcfg.log_to_driver,
        "logging_level": logging.ERROR,
        **rcfg.init,
    }
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise CollectionError(
            f"cannot reach the Ray cluster at runner.address={rcfg.address!r} ({e}); "
            "start it with `ray start --head` or fix the address"
        ) from e
    return True
