"""``collect``: turn a config into a dataset, resuming whatever a previous run left undone.

``collect(cfg)`` is the Python API behind the ``collect`` command (tests call it directly). It
validates the config, builds env and policy once, opens the dataset under its writer lock,
checks that a resumed run has the same data-affecting config, plans the missing episode ids,
runs them on the configured runner with commits at the checkpoint cadence, repacks small
shards at the end and returns a summary.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import logging
import math
import os
import platform
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from collector import storage
from collector.envs import (
    env_package_version,
    env_spec_to_json,
    make_env,
    require_vector_entry_point,
)
from collector.errors import ConfigMismatchError, DiskFullError, UsageError
from collector.plan import EpisodePlan
from collector.policies import Policy, as_policy, locate
from collector.recorder import EpisodeRecorder
from collector.redact import redact
from collector.seeding import draw_entropy
from collector.spaces import check_supported

log = logging.getLogger(__name__)

__all__ = [
    "Cadence",
    "CollectInterrupted",
    "CollectResult",
    "Committer",
    "collect",
    "data_config",
    "default_dataset_id",
    "disk_full_error",
]

#: Keys whose change alters the data; a resumed run must match them (DESIGN.md section 6).
DATA_KEYS = ("env", "env_kwargs", "max_episode_steps", "policy", "seed", "record_infos")
MB = 1024 * 1024
VECTOR_MODES = ("sync", "async", "vector_entry_point")
#: At most this much of a commit window is preallocated for a vector_entry_point recorder.
RESERVE_MB_MAX = 256
#: lzf: reads ~1.7x faster than gzip for ~20% more disk; gzip for data published beyond h5py.
DEFAULT_COMPRESSION = "lzf"


@dataclass(frozen=True)
class CollectResult:
    """What a ``collect`` run did."""

    dataset_id: str
    path: Path
    total_episodes: int
    total_steps: int
    dataset_bytes: int
    new_episodes: int
    new_steps: int
    wall_seconds: float
    fingerprint: str

    @property
    def steps_per_second(self) -> float:
        """New steps recorded per wall-clock second (0 for a no-op run)."""
        return self.new_steps / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def noop(self) -> bool:
        """True when the dataset was already complete."""
        return self.new_episodes == 0


class CollectInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``collect``; the message says what the dataset's last commit holds.

    A ``KeyboardInterrupt``, so code that stops on one still does. ``new_episodes``: episodes
    this run committed; ``total_episodes``: episodes of the last commit (None: no commit).
    """

    def __init__(
        self, message: str = "", *, new_episodes: int = 0, total_episodes: int | None = None
    ) -> None:
        super().__init__(message)
        self.new_episodes = new_episodes
        self.total_episodes = total_episodes


@contextlib.contextmanager
def _interrupt_says_what_is_committed(writer: storage.DatasetWriter) -> Iterator[dict[str, int]]:
    """Turn Ctrl-C into ``CollectInterrupted``, counted from the commit on disk.

    The caller sets ``run["before"]``: the episodes committed when its collection started.
    """
    run: dict[str, int] = {}
    try:
        yield run
    except KeyboardInterrupt as e:
        if isinstance(e, CollectInterrupted):
            raise
        with contextlib.suppress(Exception):  # else the next writer removes it
            writer.remove_uncommitted()  # a shard installed by a commit the interrupt stopped
        try:
            total: int | None = int(storage.read_metadata(writer.path)["total_episodes"])
        except Exception:  # no commit yet, or unreadable: say nothing was committed
            total = None
        new = max(0, (total or 0) - run.get("before", total or 0))
        where = f"dataset {writer.dataset_id!r} at {writer.path}"
        held = "has no commit" if total is None else f"holds {total} episodes (last commit)"
        raise CollectInterrupted(
            f"interrupted: this run committed {new} episodes; {where} {held}; re-run the "
            "same command to resume",
            new_episodes=new,
            total_episodes=total,
        ) from e


def _container(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "x"


def _policy_name(policy_cfg: Mapping[str, Any]) -> str:
    target = str(policy_cfg.get("_target_", "policy")).rsplit(".", 1)[-1]
    return _slug(re.sub(r"(?i)policy$", "", target) or target)


def default_dataset_id(env_id: str, policy_name: str) -> str:
    """A dataset id derived from the env and policy, e.g. ``cartpole-v1/random-v0``.

    >>> default_dataset_id("ALE/Pong-v5", "random")
    'ale/pong-v5/random-v0'
    """
    env_part = "/".join(_slug(seg) for seg in env_id.split(":")[-1].split("/"))
    return f"{env_part}/{_slug(policy_name)}-v0"


def data_config(cfg: Mapping[str, Any], env_package: str | None) -> dict[str, Any]:
    """The data-affecting part of a collect config, as stored in provenance."""
    out = {key: cfg.get(key) for key in DATA_KEYS}
    # the defaults of conf/collect.yaml, so a Python dict config that leaves them out resumes
    # a CLI run (and the other way round)
    out["env_kwargs"] = dict(out["env_kwargs"] or {})
    out["record_infos"] = bool(out["record_infos"])
    out["env_package"] = env_package
    if cfg.get("vectorization_mode") == "vector_entry_point":
        # the layout-dependent tier: the sub-env count and segment size shape the data
        from collector.runners.vector import segment_episodes

        num_envs = int(cfg.get("num_envs") or 1)
        out["vectorization_mode"] = "vector_entry_point"
        out["num_envs"] = num_envs
        out["segment_episodes"] = segment_episodes(num_envs)
    return out


def build_policy(policy_cfg: Mapping[str, Any], env: Any) -> Policy:
    """Instantiate the ``policy`` config once per process (it may hold a model).

    ``_target_`` may name a class or factory (called with the config's other keys, plus
    ``action_space``/``observation_space`` when it accepts them) or a plain ``f(obs)`` function
    (wrapped as it is, with the other keys bound as keyword arguments).

    Raises:
        UsageError: the target cannot be imported or rejects its arguments.
    """
    cfg = dict(policy_cfg)
    target = cfg.pop("_target_", None)
    if not target:
        raise UsageError("policy has no _target_; use policy=random or set policy._target_")
    try:
        obj = locate(str(target))
    except Exception as e:  # the user's module may raise anything while it imports
        cause = str(e).splitlines()[0] if str(e) else ""
        raise UsageError(
            f"policy._target_={target!r} cannot be imported ({type(e).__name__}: {cause}); check "
            "the module path and that its package is installed (or in the current folder)"
        ) from e
    if not callable(obj):
        raise UsageError(f"policy._target_={target!r} is not a class or function")
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        params = {}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    extra = {"action_space": env.action_space, "observation_space": env.observation_space}
    if inspect.isclass(obj) or "action_space" in params or "observation_space" in params:
        kwargs = {**{k: v for k, v in extra.items() if k in params or takes_kwargs}, **cfg}
        try:
            return as_policy(obj(**kwargs))
        except TypeError as e:
            raise UsageError(f"policy._target_={target!r} rejected its arguments: {e}") from e
    if cfg:
        obj = functools.partial(obj, **cfg)
    return as_policy(obj)


class Cadence:
    """When to commit: the checkpoint cadence, shared by every runner.

    A window commits after ``every_episodes`` episodes, ``every_seconds`` seconds or
    ``every_mb`` MiB since the last commit, whichever comes first (None: never by that one).
    """

    def __init__(
        self, every_episodes: int | None, every_seconds: float | None, every_mb: float | None
    ) -> None:
        self.every_episodes = every_episodes
        self.every_seconds = every_seconds
        self.every_bytes = None if every_mb is None else every_mb * MB
        self.restart()

    def restart(self) -> None:
        """Start a new window (after a commit)."""
        self.since = time.monotonic()

    def due(self, episodes: int, nbytes: int) -> bool:
        """True when a window holding ``episodes`` episodes and ``nbytes`` bytes should commit."""
        return (
            (self.every_episodes is not None and episodes >= self.every_episodes)
            or (self.every_bytes is not None and nbytes >= self.every_bytes)
            or (
                self.every_seconds is not None
                and time.monotonic() - self.since >= self.every_seconds
            )
        )


class Committer:
    """Writes the recorders' finished episodes as shards at the checkpoint cadence.

    A commit happens after an episode when ``every_episodes`` episodes, ``every_seconds``
    seconds or ``every_mb`` MiB of data have accumulated since the last one, whichever first.
    ``recorder`` may be a list (one per sub-env of a vector env): a commit then writes one
    shard with all of their finished episodes.

    Commits due during the run are written by one background thread while the next window
    is recorded (h5py releases the GIL while it compresses and writes), at most one at a
    time: memory holds at most two windows, and a crash loses at most the window being
    written and the one being recorded. ``background=False`` commits synchronously.
    ``flush()`` is always synchronous; an error of a background commit is raised by the next
    ``after_episode`` or ``flush``.

    An episode that runs long (or an env that stops answering) does not hold back the
    episodes finished before it: with ``every_seconds`` set, a watch thread commits them when
    the cadence is due and the recording thread has not finished an episode for a while
    (``EpisodeRecorder.peek``, so the recording thread is never paused).
    """

    def __init__(
        self,
        writer: storage.DatasetWriter,
        recorder: Any,
        *,
        every_episodes: int | None,
        every_seconds: float | None,
        every_mb: float | None,
        compression: str,
        background: bool = True,
    ) -> None:
        self.writer = writer
        self.recorders = recorder if isinstance(recorder, list) else [recorder]
        self.cadence = Cadence(every_episodes, every_seconds, every_mb)
        self.compression = compression
        self.commits = 0
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="harvest-commit") if background else None
        )
        self._pending: Future[None] | None = None
        #: episodes finished so far (a step watch reads it as a sign of progress)
        self.episodes = 0
        #: True while the recording thread is inside the committer (not stepping the env)
        self.busy = False
        self._lock = threading.Lock()
        # per recorder: its first finished episodes already committed by the watch thread
        self._early = [0] * len(self.recorders)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        if (
            every_seconds is not None
            and self._pool is not None
            and all(isinstance(r, EpisodeRecorder) for r in self.recorders)
        ):
            self._watch = threading.Thread(
                target=self._commit_while_recording,
                args=(min(1.0, every_seconds / 2),),
                name="harvest-cadence",
                daemon=True,
            )
            self._watch.start()

    def after_episode(self) -> None:
        """Commit (in the background) if the cadence says so."""
        self.episodes += 1
        if self._error is not None or self._pending is not None and self._pending.done():
            with self._lock:
                self._raise_error()
                self._wait()
        recs = self.recorders
        if self.cadence.due(sum(r.num_finished for r in recs), sum(r.nbytes for r in recs)):
            self._commit(wait=False)

    def flush(self) -> None:
        """Write and commit whatever is finished; returns when it is durable."""
        self._commit(wait=True)

    def close(self) -> None:
        """Wait for a background commit and stop the threads (idempotent)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.join()
            self._watch = None
        try:
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _commit_while_recording(self, tick: float) -> None:
        """Watch thread: commit finished episodes when an episode holds the cadence back."""
        seen = -1
        while not self._stop.wait(tick):
            if self.episodes != seen:  # the recording thread finishes episodes: it commits
                seen = self.episodes
                continue
            with self._lock:
                if self._error is not None or self._pool is None:
                    return
                if self._pending is not None and not self._pending.done():
                    continue  # never hold the lock waiting: the recording thread may need it
                recs = self.recorders
                finished = sum(r.num_finished for r in recs) - sum(self._early)
                if finished <= 0 or not self.cadence.due(finished, 0):
                    continue
                batches = []
                for k, rec in enumerate(recs):
                    batch = rec.peek(self._early[k])
                    if batch is not None:
                        batches.append(batch)
                        self._early[k] += batch.num_episodes
                self.cadence.restart()
                try:
                    self._wait()
                    self._pending = self._pool.submit(self._write, batches)
                except BaseException as e:  # the recording thread raises it
                    self._error = e
                    return

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _commit(self, wait: bool) -> None:
        self.busy = True
        try:
            with self._lock:
                self._raise_error()
                batches = [b for b in map(self._take, range(len(self.recorders))) if b is not None]
                self.cadence.restart()
                self._wait()  # one commit at a time, in order; raises a failed one's error
                if not batches:
                    return
                if wait or self._pool is None:
                    self._write(batches)
                else:
                    self._pending = self._pool.submit(self._write, batches)
        finally:
            self.busy = False

    def _take(self, k: int) -> storage.EpisodeBatch | None:
        """Recorder ``k``'s finished episodes, less those the watch thread committed."""
        batch, early = self.recorders[k].take(), self._early[k]
        if batch is None or not early:
            return batch
        self._early[k] = 0
        n = batch.num_episodes
        if early >= n:
            return None
        return storage.select_episodes(batch, np.arange(early, n), batch.table["id"][early:])

    def _write(self, batches: list[storage.EpisodeBatch]) -> None:
        try:
            self.writer.write_shard(storage.concat_batches(batches), self.compression)
            self.writer.commit()
        except OSError as e:
            full = disk_full_error(e, self.writer)
            if full is None:
                raise
            raise full from e
        self.commits += 1


#: errno values of a full disk or an exhausted quota.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(err: OSError, writer: storage.DatasetWriter) -> DiskFullError | None:
    """The one-line ``DiskFullError`` for a write that failed with ENOSPC/EDQUOT, else None."""
    if isinstance(err, DiskFullError):
        return err
    if err.errno not in DISK_FULL:
        return None
    try:
        kept = f"{storage.read_metadata(writer.path)['total_episodes']} episodes"
    except Exception:  # the message must not fail; the commit is intact whatever it says
        kept = "nothing yet"
    what = "disk full" if err.errno == errno.ENOSPC else "disk quota exceeded"
    strerror = err.strerror or os.strerror(err.errno)  # a StorageError carries errno only
    return DiskFullError(
        f"{what} writing dataset {writer.dataset_id!r} at {writer.path} ({strerror}); the "
        f"last commit ({kept}) is intact: free space there and re-run the same command to resume"
    )


def _positive(value: Any, key: str, *, allow_none: bool = True, integer: bool = False) -> Any:
    if value is None and allow_none:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    ok = ok and math.isfinite(value)
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise UsageError(f"{key}={value!r} must be {kind}" + (" or null" if allow_none else ""))
    return int(value) if integer else value


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("harvest", "gymnasium", "numpy", "h5py", "hydra-core", "omegaconf"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def collect(
    cfg: DictConfig | Mapping[str, Any],
    *,
    overrides: list[str] | None = None,
    policy_name: str | None = None,
    progress: Callable[[int, int], None] | bool | None = None,
) -> CollectResult:
    """Collect ``cfg.episodes`` episodes into ``cfg.dataset_id``, resuming a previous run.

    Args:
        cfg: a ``conf/collect.yaml`` config (DictConfig or plain dict).
        overrides: the command-line overrides, stored in provenance.
        policy_name: name used in the default dataset id (default: from ``policy._target_``).
        progress: True for a progress bar, False/None for none.

    Raises:
        UsageError: bad config, unknown env or policy, unsupported space, or a resume whose
            data-affecting config differs (``ConfigMismatchError``).
        LockHeldError: another process is writing the dataset.
        CollectionError: the env or policy raised; finished episodes are committed first.
        DiskFullError: no space left (or a quota hit); the last commit is intact, and a
            re-run after freeing space resumes.
        StorageError: the root is read-only or not writable for this user.
    """
    conf = _container(cfg)
    try:  # it is stored in provenance; fail now, not at the first commit
        storage.dumps_metadata({"config": conf})
    except (TypeError, ValueError) as e:
        raise UsageError(
            f"the config cannot be stored in metadata.json ({e}); use finite numbers and plain "
            "values"
        ) from e
    for key in ("checkpoint", "storage", "runner", "policy", "env_kwargs", "metadata"):
        if not isinstance(conf.get(key) or {}, Mapping):
            raise UsageError(
                f"{key}={conf[key]!r} must be a mapping of keys, e.g. {key}.KEY=VALUE, or null"
            )
    episodes = _positive(conf.get("episodes"), "episodes", allow_none=False, integer=True)
    if episodes >= 2**63:
        raise UsageError(f"episodes={episodes} is beyond the int64 episode ids")
    _positive(conf.get("max_episode_steps"), "max_episode_steps", integer=True)
    ckpt = conf.get("checkpoint") or {}
    storage_ = conf.get("storage") or {}
    every_episodes = _positive(
        ckpt.get("every_episodes"), "checkpoint.every_episodes", integer=True
    )
    every_seconds = _positive(ckpt.get("every_seconds"), "checkpoint.every_seconds")
    every_mb = _positive(ckpt.get("every_mb"), "checkpoint.every_mb")
    shard_mb = _positive(storage_.get("shard_mb", 256), "storage.shard_mb", allow_none=False)
    compression = str(storage_.get("compression", DEFAULT_COMPRESSION))
    storage.parse_compression(compression)
    runner = (conf.get("runner") or {}).get("name", "local")
    if runner not in ("local", "ray"):
        raise UsageError(f"runner={runner!r} is not a runner; use runner=local or runner=ray")
    _positive(conf.get("num_envs", 1), "num_envs", allow_none=False, integer=True)
    vector_mode = str(conf.get("vectorization_mode", "sync"))
    if vector_mode not in VECTOR_MODES:
        raise UsageError(
            f"vectorization_mode={vector_mode!r} is not a mode; use one of "
            + ", ".join(VECTOR_MODES)
        )
    if vector_mode == "vector_entry_point" and runner == "ray":
        raise UsageError(
            "vectorization_mode=vector_entry_point with runner=ray is not available yet; "
            "use runner=local"
        )
    step_timeout = _positive((conf.get("runner") or {}).get("step_timeout"), "runner.step_timeout")
    if step_timeout is not None and (runner != "local" or vector_mode == "vector_entry_point"):
        raise UsageError(
            "runner.step_timeout is for runner=local (sync/async vector envs included); "
            "runner=ray has runner.batch_timeout"
            if runner != "local"
            else "runner.step_timeout is not available with vectorization_mode=vector_entry_point"
        )
    if runner == "ray":  # checked before anything is written
        rcfg = conf.get("runner") or {}
        _positive(rcfg.get("workers", 2), "runner.workers", allow_none=False, integer=True)
        _positive(
            rcfg.get("num_cpus_per_worker", 1), "runner.num_cpus_per_worker", allow_none=False
        )
        _positive(rcfg.get("batch_seconds", 0.2), "runner.batch_seconds", allow_none=False)
        _positive(rcfg.get("batch_timeout", 300), "runner.batch_timeout", allow_none=False)
        for key in ("max_restarts", "episode_retries"):
            value = rcfg.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UsageError(f"runner.{key}={value!r} must be a non-negative integer")
    seed = conf.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise UsageError(f"seed={seed!r} must be a non-negative integer or null")
    env_id = conf.get("env")
    if not isinstance(env_id, str) or not env_id:
        raise UsageError("env is not set; pass env=<Gymnasium id>, e.g. env=CartPole-v1")
    policy_cfg = conf.get("policy") or {}
    dataset_id = conf.get("dataset_id") or default_dataset_id(
        env_id, policy_name or _policy_name(policy_cfg)
    )
    storage.parse_dataset_id(dataset_id)
    root = conf.get("datasets_root")

    env = make_env(env_id, conf.get("env_kwargs"), conf.get("max_episode_steps"))
    try:
        if vector_mode == "vector_entry_point":
            require_vector_entry_point(env_id)
        check_supported(env.observation_space, "observation")
        check_supported(env.action_space, "action")
        policy = build_policy(policy_cfg, env)
        spec = env.spec
        wanted = data_config(conf, env_package_version(spec))
        with (
            storage.DatasetWriter(dataset_id, root) as writer,
            _disk_full_is_one_error(writer),
            _interrupt_says_what_is_committed(writer) as run,
        ):
            entropy = _open_generation(writer, conf, wanted, overrides, spec, env)
            run["before"] = len(writer.committed_ids())
            todo = EpisodePlan(episodes, writer.committed_ids())  # lazily: episodes may be 1e12
            cadence = {
                "every_episodes": every_episodes,
                "every_seconds": every_seconds,
                "every_mb": every_mb,
            }
            start = time.perf_counter()
            if len(todo):
                log.info("collecting %d episode(s) into %s", len(todo), dataset_id)
                new_steps = _run(
                    conf, writer, env, policy, todo, entropy, cadence, compression, progress
                )
            else:
                new_steps = 0
                log.info("%s already has episodes 0..%d; nothing to do", dataset_id, episodes - 1)
            # also with nothing to collect: a run killed in its repack left the small shards
            writer.repack(int(shard_mb * MB), compression)
            wall = time.perf_counter() - start
            meta = writer.meta
            assert meta is not None
            return CollectResult(
                dataset_id=dataset_id,
                path=writer.path,
                total_episodes=meta["total_episodes"],
                total_steps=meta["total_steps"],
                dataset_bytes=meta["dataset_bytes"],
                new_episodes=len(todo),
                new_steps=new_steps,
                wall_seconds=wall,
                fingerprint=meta["fingerprint"],
            )
    finally:
        env.close()


@contextlib.contextmanager
def _disk_full_is_one_error(writer: storage.DatasetWriter) -> Iterator[None]:
    """Raise a full disk met outside a commit window (start, repack) as ``DiskFullError``."""
    try:
        yield
    except OSError as e:
        full = disk_full_error(e, writer)
        if full is None or full is e:
            raise
        raise full from e


def _run(
    conf: dict[str, Any],
    writer: storage.DatasetWriter,
    env: Any,
    policy: Policy,
    todo: EpisodePlan,
    entropy: int,
    cadence: dict[str, Any],
    compression: str,
    progress: Callable[[int, int], None] | bool | None,
) -> int:
    """Collect ``todo`` on the configured runner; returns the steps recorded."""
    runner = (conf.get("runner") or {}).get("name", "local")
    num_envs = int(conf.get("num_envs", 1))
    mode = str(conf.get("vectorization_mode", "sync"))
    record_infos = bool(conf.get("record_infos"))
    env_args = (conf["env"], conf.get("env_kwargs"), conf.get("max_episode_steps"))
    if runner == "ray":
        from collector.runners.ray import run_ray

        return run_ray(
            conf,
            writer,
            todo,
            entropy,
            compression=compression,
            progress=bool(progress),
            **cadence,
        )
    spaces = (env.observation_space, env.action_space)
    if mode == "vector_entry_point":
        from collector.envs import make_vector_env
        from collector.runners.vector import run_vector_entry_point
        from collector.vector_recorder import VectorRecorder

        recorders: Any = VectorRecorder(*spaces, num_envs, record_infos)
        if cadence["every_mb"] is not None:  # one commit window, capped: pages come as used
            recorders.reserve(min(cadence["every_mb"], RESERVE_MB_MAX) * MB)
    elif num_envs > 1:
        recorders = [EpisodeRecorder(*spaces, record_infos) for _ in range(num_envs)]
    else:
        recorders = EpisodeRecorder(*spaces, record_infos)
    committer = Committer(writer, recorders, compression=compression, **cadence)
    try:
        if mode == "vector_entry_point":
            vec = make_vector_env(env_args[0], num_envs, *env_args[1:])
            try:
                return run_vector_entry_point(
                    vec,
                    policy,
                    recorders,
                    committer,
                    todo,
                    int(conf["episodes"]),
                    entropy,
                    bool(progress),
                )
            finally:
                vec.close()
        if num_envs > 1:
            from collector.runners.vector import run_vector

            policy_cfg = conf.get("policy") or {}
            return run_vector(
                lambda: make_env(*env_args),
                lambda spaces_of_one: build_policy(policy_cfg, spaces_of_one),
                recorders,
                committer,
                todo,
                entropy,
                mode,
                bool(progress),
                (conf.get("runner") or {}).get("step_timeout"),
            )
        from collector.runners.local import run_local

        step_timeout = (conf.get("runner") or {}).get("step_timeout")
        return run_local(env, policy, recorders, committer, todo, entropy, progress, step_timeout)
    finally:
        committer.close()


def _open_generation(
    writer: storage.DatasetWriter,
    conf: dict[str, Any],
    wanted: dict[str, Any],
    overrides: list[str] | None,
    spec: Any,
    env: Any,
) -> int:
    """Check a resume against the last commit, or start a new generation; return the entropy."""
    if writer.exists and not conf.get("overwrite"):
        assert writer.meta is not None
        prov = writer.meta.get("provenance") or {}
        stored = prov.get("data_config")
        if stored is None or "seed_entropy" not in prov:
            raise ConfigMismatchError(
                f"dataset {writer.dataset_id!r} was not written by collect; pick another "
                "dataset_id or pass overwrite=true"
            )
        wanted = redact(wanted)  # as it was stored (issue 16 item 10)
        keys = _mismatch(stored, wanted)
        if keys:
            detail = ", ".join(f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in keys)
            raise ConfigMismatchError(
                f"dataset {writer.dataset_id!r} was collected with different data-affecting "
                f"config ({detail}); use another dataset_id or pass overwrite=true",
                keys=tuple(keys),
            )
        return int(prov["seed_entropy"])
    seed = conf.get("seed")
    entropy = int(seed) if seed is not None else draw_entropy()
    authors = conf.get("metadata") or {}
    writer.start(
        storage.new_metadata(
            env.observation_space,
            env.action_space,
            env_spec_to_json(spec),
            record_infos=bool(conf.get("record_infos")),
            provenance={
                "command": "collect",
                "config": conf,
                "overrides": list(overrides or []),
                "data_config": wanted,
                "seed_entropy": entropy,
                "versions": _versions(),
                "git_commit": _git_commit(),
            },
            **{k: v for k, v in authors.items() if v is not None},
        )
    )
    return entropy
