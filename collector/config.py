"""The typed ``collect`` config: frozen dataclasses, validated once by ``CollectConfig.from_dict``.

``conf/collect.yaml`` (with ``conf/runner/*.yaml``) holds the one default of every key; the
dataclasses below carry the same values (a test holds them equal), so a Python dict that leaves
a key out gets what the command line gets. ``from_dict`` is the only place a config is checked:
each bad value is one ``UsageError`` line naming the key, and an unknown key is refused with a
did-you-mean, as the command line's ``check_overrides`` does. Runners and Ray actors receive the
frozen ``CollectConfig`` (it pickles), never a raw dict. The open maps (``env_kwargs``,
``policy``, ``runner.init``, ``metadata``) stay plain dicts: their keys are the user's own.

The schema is registered in Hydra's ``ConfigStore`` as ``collect_schema`` (``register_schema``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from collector import storage
from collector.errors import UsageError

__all__ = [
    "DATA_KEYS",
    "RUNNER_NAMES",
    "VECTOR_MODES",
    "CheckpointConfig",
    "CollectConfig",
    "RunnerConfig",
    "StorageConfig",
    "register_schema",
    "schema",
    "to_container",
    "unknown_key_error",
]

#: Keys whose change alters the data; a resumed run must match them (DESIGN.md section 6).
DATA_KEYS = ("env", "env_kwargs", "max_episode_steps", "policy", "seed", "record_infos")
VECTOR_MODES = ("sync", "async", "vector_entry_point")
RUNNER_NAMES = ("local", "ray")
#: The author fields ``conf/collect.yaml`` lists (null: left out of metadata.json).
METADATA_KEYS = (
    "author",
    "author_email",
    "algorithm_name",
    "code_permalink",
    "description",
    "requirements",
)
#: lzf: reads ~1.7x faster than gzip for ~20% more disk; gzip for data published beyond h5py.
DEFAULT_COMPRESSION = "lzf"


@dataclass(frozen=True)
class CheckpointConfig:
    """``checkpoint.*``: commit after whichever comes first (None: never by that one)."""

    every_seconds: float | None = 30
    every_episodes: int | None = None
    every_mb: float | None = 32


@dataclass(frozen=True)
class StorageConfig:
    """``storage.*``: shard compression and the size small shards are repacked into (MiB)."""

    compression: str = DEFAULT_COMPRESSION
    shard_mb: float = 256


@dataclass(frozen=True)
class RunnerConfig:
    """``runner.*``: which runner, and its execution-only settings (``conf/runner/*.yaml``).

    ``step_timeout`` is the local runner's; the others are the Ray runner's.
    """

    name: str = "local"
    step_timeout: float | None = None
    workers: int = 2
    address: str | None = None
    num_cpus_per_worker: float = 1
    max_restarts: int = 3
    episode_retries: int = 2
    batch_seconds: float = 0.2
    batch_timeout: float = 300
    log_to_driver: bool = False
    init: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectConfig:
    """A whole, checked ``collect`` config (``conf/collect.yaml``)."""

    env: str = "CartPole-v1"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None
    episodes: int = 100
    seed: int | None = 0
    record_infos: bool = False
    num_envs: int = 1
    vectorization_mode: str = "sync"
    policy: dict[str, Any] = field(
        default_factory=lambda: {"_target_": "collector.policies.RandomPolicy"}
    )
    dataset_id: str | None = None
    datasets_root: Any = None  # a str or os.PathLike; None: $HARVEST_DATASETS
    overwrite: bool = False
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    progress: bool = True
    metadata: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(METADATA_KEYS))

    @classmethod
    def from_dict(cls, cfg: DictConfig | Mapping[str, Any]) -> CollectConfig:
        """Check a config (DictConfig or plain dict) once and return it typed.

        Keys left out take the defaults of ``conf/collect.yaml``.

        Raises:
            UsageError: a value out of range, a wrong kind, or an unknown key (with a
                did-you-mean), in one line naming the key.
        """
        return _from_dict(to_container(cfg))

    def to_dict(self) -> dict[str, Any]:
        """The config as plain values (the shape of ``conf/collect.yaml``)."""
        return dataclasses.asdict(self)


def to_container(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A config as a plain dict (a DictConfig resolved)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def _keys(kind: type) -> list[str]:
    return [f.name for f in dataclasses.fields(kind)]


def unknown_key_error(name: str, known: Iterable[str]) -> UsageError:
    """The one line refusing config key ``name``, with the closest of ``known`` suggested.

    >>> str(unknown_key_error("epsiodes", ["episodes", "seed"]))
    "unknown config key 'epsiodes'; did you mean 'episodes'? (collect --help lists the keys)"
    """
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UsageError(f"unknown config key {name!r}{hint} (collect --help lists the keys)")


def _refuse_unknown(section: Mapping[str, Any], kind: type, prefix: str = "") -> None:
    known = _keys(kind)
    for key in section:
        if key in known or (not prefix and key == "hydra"):
            continue
        raise unknown_key_error(f"{prefix}{key}", [prefix + k for k in known])


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


def _get(section: Mapping[str, Any], key: str, default: Any) -> Any:
    """``section[key]``, or the dataclass default ``default.key`` when it is left out."""
    return section[key] if key in section else getattr(default, key)


def _runner_config(rcfg: Mapping[str, Any], vector_mode: str) -> RunnerConfig:
    """Check ``runner.*`` (and ``vectorization_mode`` against it) and return it typed."""
    runner_d = RunnerConfig()
    runner = _get(rcfg, "name", runner_d)
    if runner not in RUNNER_NAMES:
        raise UsageError(f"runner={runner!r} is not a runner; use runner=local or runner=ray")
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
    step_timeout = _positive(_get(rcfg, "step_timeout", runner_d), "runner.step_timeout")
    if step_timeout is not None and (runner != "local" or vector_mode == "vector_entry_point"):
        raise UsageError(
            "runner.step_timeout is for runner=local (sync/async vector envs included); "
            "runner=ray has runner.batch_timeout"
            if runner != "local"
            else "runner.step_timeout is not available with vectorization_mode=vector_entry_point"
        )
    ray_keys: dict[str, Any] = {}
    if runner == "ray":  # checked before anything is written
        ray_keys = {
            "workers": _positive(
                _get(rcfg, "workers", runner_d), "runner.workers", allow_none=False, integer=True
            ),
            "num_cpus_per_worker": _positive(
                _get(rcfg, "num_cpus_per_worker", runner_d),
                "runner.num_cpus_per_worker",
                allow_none=False,
            ),
            "batch_seconds": _positive(
                _get(rcfg, "batch_seconds", runner_d), "runner.batch_seconds", allow_none=False
            ),
            "batch_timeout": _positive(
                _get(rcfg, "batch_timeout", runner_d), "runner.batch_timeout", allow_none=False
            ),
        }
        for key in ("max_restarts", "episode_retries"):
            value = _get(rcfg, key, runner_d)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UsageError(f"runner.{key}={value!r} must be a non-negative integer")
            ray_keys[key] = value
        init = rcfg.get("init") or {}
        if not isinstance(init, Mapping):
            raise UsageError(f"runner.init={init!r} must be a mapping of ray.init() arguments")
        ray_keys["init"] = dict(init)
        ray_keys["address"] = rcfg.get("address")
        ray_keys["log_to_driver"] = bool(rcfg.get("log_to_driver", False))
    return RunnerConfig(name=runner, step_timeout=step_timeout, **ray_keys)


def _from_dict(conf: dict[str, Any]) -> CollectConfig:
    """``CollectConfig.from_dict`` on a plain dict: today's checks, in today's order."""
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
    _refuse_unknown(conf, CollectConfig)
    ckpt = dict(conf.get("checkpoint") or {})
    storage_ = dict(conf.get("storage") or {})
    rcfg = dict(conf.get("runner") or {})
    _refuse_unknown(ckpt, CheckpointConfig, "checkpoint.")
    _refuse_unknown(storage_, StorageConfig, "storage.")
    _refuse_unknown(rcfg, RunnerConfig, "runner.")
    ckpt_d, storage_d = CheckpointConfig(), StorageConfig()
    defaults = CollectConfig()
    episodes = _positive(
        _get(conf, "episodes", defaults), "episodes", allow_none=False, integer=True
    )
    if episodes >= 2**63:
        raise UsageError(f"episodes={episodes} is beyond the int64 episode ids")
    max_steps = _positive(
        _get(conf, "max_episode_steps", defaults), "max_episode_steps", integer=True
    )
    checkpoint = CheckpointConfig(
        every_episodes=_positive(
            _get(ckpt, "every_episodes", ckpt_d), "checkpoint.every_episodes", integer=True
        ),
        every_seconds=_positive(_get(ckpt, "every_seconds", ckpt_d), "checkpoint.every_seconds"),
        every_mb=_positive(_get(ckpt, "every_mb", ckpt_d), "checkpoint.every_mb"),
    )
    shard_mb = _positive(
        _get(storage_, "shard_mb", storage_d), "storage.shard_mb", allow_none=False
    )
    compression = str(_get(storage_, "compression", storage_d))
    storage.parse_compression(compression)
    num_envs = _positive(
        _get(conf, "num_envs", defaults), "num_envs", allow_none=False, integer=True
    )
    vector_mode = str(_get(conf, "vectorization_mode", defaults))
    runner = _runner_config(rcfg, vector_mode)
    seed = _get(conf, "seed", defaults)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise UsageError(f"seed={seed!r} must be a non-negative integer or null")
    env_id = _get(conf, "env", defaults)
    if not isinstance(env_id, str) or not env_id:
        raise UsageError("env is not set; pass env=<Gymnasium id>, e.g. env=CartPole-v1")
    policy = _get(conf, "policy", defaults)
    dataset_id = conf.get("dataset_id") or None  # None: derived from env and policy
    if dataset_id is not None:
        storage.parse_dataset_id(dataset_id)
    return CollectConfig(
        env=env_id,
        env_kwargs=dict(conf.get("env_kwargs") or {}),
        max_episode_steps=max_steps,
        episodes=episodes,
        seed=seed,
        record_infos=bool(conf.get("record_infos")),
        num_envs=num_envs,
        vectorization_mode=vector_mode,
        policy=dict(policy or {}),
        dataset_id=dataset_id,
        datasets_root=conf.get("datasets_root"),
        overwrite=bool(conf.get("overwrite")),
        checkpoint=checkpoint,
        storage=StorageConfig(compression=compression, shard_mb=shard_mb),
        runner=runner,
        progress=bool(_get(conf, "progress", defaults)),
        metadata=dict(_get(conf, "metadata", defaults) or {}),
    )


def schema() -> DictConfig:
    """``CollectConfig`` as an OmegaConf structured config, writable (the dataclass is frozen).

    Merging a config into it refuses a key the schema lacks and a value of the wrong type.
    """
    node = OmegaConf.structured(CollectConfig)
    OmegaConf.set_readonly(node, False)
    for key in ("checkpoint", "storage", "runner"):  # each frozen dataclass set its own flag
        OmegaConf.set_readonly(node[key], None)
    return node


def register_schema(name: str = "collect_schema") -> None:
    """Register the ``collect`` schema in Hydra's ``ConfigStore`` under ``name``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=name, node=schema())
