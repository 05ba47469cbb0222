"""``collect``: turn a config into a dataset, resuming whatever a previous run left undone.

``collect(cfg)`` is the Python API behind the ``collect`` command (tests call it directly). It
validates the config, builds env and policy once, opens the dataset under its writer lock,
checks that a resumed run has the same data-affecting config, plans the missing episode ids,
runs them on the configured runner with commits at the checkpoint cadence, repacks small
shards at the end and returns a summary.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from collector import format as fmt
from collector.committer import (
    MB,
    CollectInterrupted,
    disk_full_is_one_error,
    interrupt_says_what_is_committed,
)
from collector.envs import (
    env_package_version,
    env_spec_to_json,
    make_env,
    require_vector_entry_point,
)
from collector.errors import ConfigMismatchError, UsageError
from collector.plan import EpisodePlan, segment_episodes
from collector.policies import build_policy
from collector.provenance import git_commit, versions
from collector.redact import redact
from collector.runners import get_runner
from collector.seeding import draw_entropy
from collector.spaces import check_supported

log = logging.getLogger(__name__)

__all__ = [
    "CollectInterrupted",
    "CollectResult",
    "collect",
    "data_config",
    "default_dataset_id",
]

#: Keys whose change alters the data; a resumed run must match them (DESIGN.md section 6).
DATA_KEYS = ("env", "env_kwargs", "max_episode_steps", "policy", "seed", "record_infos")
VECTOR_MODES = ("sync", "async", "vector_entry_point")
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
        num_envs = int(cfg.get("num_envs") or 1)
        out["vectorization_mode"] = "vector_entry_point"
        out["num_envs"] = num_envs
        out["segment_episodes"] = segment_episodes(num_envs)
    return out


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
        fmt.dumps_metadata({"config": conf})
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
    storage = conf.get("storage") or {}
    every_episodes = _positive(
        ckpt.get("every_episodes"), "checkpoint.every_episodes", integer=True
    )
    every_seconds = _positive(ckpt.get("every_seconds"), "checkpoint.every_seconds")
    every_mb = _positive(ckpt.get("every_mb"), "checkpoint.every_mb")
    shard_mb = _positive(storage.get("shard_mb", 256), "storage.shard_mb", allow_none=False)
    compression = str(storage.get("compression", DEFAULT_COMPRESSION))
    fmt.parse_compression(compression)
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
    fmt.parse_dataset_id(dataset_id)
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
            fmt.DatasetWriter(dataset_id, root) as writer,
            disk_full_is_one_error(writer),
            interrupt_says_what_is_committed(writer) as run,
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
                new_steps = get_runner(runner)(
                    conf,
                    writer,
                    env,
                    policy,
                    todo,
                    entropy,
                    cadence=cadence,
                    compression=compression,
                    progress=progress,
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


def _open_generation(
    writer: fmt.DatasetWriter,
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
        fmt.new_metadata(
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
                "versions": versions(),
                "git_commit": git_commit(),
            },
            **{k: v for k, v in authors.items() if v is not None},
        )
    )
    return entropy
