"""The typed ``collect`` config: frozen dataclasses, the schema Hydra composes the YAML onto.

The dataclasses are registered in Hydra's ``ConfigStore`` (``register_schema``, run when the
``conf`` package is imported): ``conf/collect.yaml`` extends ``collect_schema`` and each
``conf/runner/NAME.yaml`` its runner's own schema, so Hydra refuses a key the schema lacks and
a value of the wrong type; the command line says either in one line (``check_overrides``
with ``check_value`` and ``check_runner_keys`` here). The YAML files repeat the dataclasses'
defaults, as documentation (a test holds them equal): a Python dict that leaves a key out
gets what the command line gets.

``CollectConfig.from_dict`` is the one place values are checked (ranges, modes, ids): each bad
value is one ``UsageError`` line naming the key, and an unknown key is refused with a
did-you-mean. Runners and Ray actors receive the frozen ``CollectConfig`` (it pickles),
never a raw dict. The open maps (``env_kwargs``, ``policy``, ``runner.init``, ``metadata``)
stay plain dicts: their keys are the user's own.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from collector import storage
from collector.errors import UsageError

__all__ = [
    "DATA_KEYS",
    "RUNNER_CONFIGS",
    "VECTOR_MODES",
    "check_runner_keys",
    "check_value",
    "check_wrappers",
    "known_keys",
    "CheckpointConfig",
    "CollectConfig",
    "LocalRunnerConfig",
    "RayRunnerConfig",
    "RunnerConfig",
    "StorageConfig",
    "register_schema",
    "schema",
    "to_container",
    "unknown_key_error",
]

#: Keys whose change alters the data; a resumed run must match them (DESIGN.md section 6).
DATA_KEYS = (
    "env",
    "env_kwargs",
    "wrappers",
    "max_episode_steps",
    "policy",
    "seed",
    "record_infos",
)
VECTOR_MODES = ("sync", "async", "vector_entry_point")
#: The author fields ``conf/collect.yaml`` lists (null: left out of metadata.json).
METADATA_KEYS = (
    "author",
    "author_email",
    "algorithm_name",
    "code_permalink",
    "description",
    "requirements",
)
#: Where digests and compression run: ``auto`` in a child process for large windows when
#: two CPUs are usable, ``process`` always there, ``inline`` in the committing thread.
ENCODERS = ("auto", "process", "inline")
#: auto: zstd for images (zstd:5 up to 16 KiB a frame, zstd:3 above: 16x smaller than lzf on
#: Pong), shuffle + zstd:1 for the rest.
DEFAULT_COMPRESSION = "auto"


@dataclass(frozen=True)
class CheckpointConfig:
    """``checkpoint.*``: commit after whichever comes first (None: never by that one)."""

    every_seconds: float | None = 30
    every_episodes: int | None = None
    every_mb: float | None = 32


@dataclass(frozen=True)
class StorageConfig:
    """``storage.*``: compression, the size small shards are repacked into (MiB), the encoder."""

    compression: str = DEFAULT_COMPRESSION
    shard_mb: float = 256
    encoder: str = "auto"


@dataclass(frozen=True)
class LocalRunnerConfig:
    """``runner=local`` (``conf/runner/local.yaml``): episodes run in this process."""

    name: str = "local"
    step_timeout: float | None = None


@dataclass(frozen=True)
class RayRunnerConfig:
    """``runner=ray`` (``conf/runner/ray.yaml``): episodes run on Ray actors; execution-only."""

    name: str = "ray"
    workers: int = 2
    address: str | None = None
    num_cpus_per_worker: float = 1
    max_restarts: int = 3
    episode_retries: int = 2
    batch_seconds: float = 0.2
    batch_timeout: float = 300
    log_to_driver: bool = False
    init: dict[str, Any] = field(default_factory=dict)


#: ``runner.*``: each runner has its own keys (``runner.workers`` needs ``runner=ray``).
RunnerConfig = LocalRunnerConfig | RayRunnerConfig
RUNNER_CONFIGS: dict[str, type[LocalRunnerConfig] | type[RayRunnerConfig]] = {
    "local": LocalRunnerConfig,
    "ray": RayRunnerConfig,
}


@dataclass(frozen=True)
class CollectConfig:
    """A whole, checked ``collect`` config (``conf/collect.yaml``)."""

    env: str = "CartPole-v1"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    #: ``[{_target_: gymnasium.wrappers.AtariPreprocessing, frame_skip: 4}, ...]``: wrapper
    #: classes and their keyword arguments, applied in order after ``gym.make``
    wrappers: list[dict[str, Any]] = field(default_factory=list)
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
    runner: LocalRunnerConfig | RayRunnerConfig = field(default_factory=LocalRunnerConfig)
    progress: bool = True
    #: roll out a random policy and this run's policy at the end (``collector.scores``) and
    #: store ``ref_min_score``/``ref_max_score``; not data-affecting
    score: bool = False
    score_episodes: int = 10
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
        shown = int(value) if isinstance(value, float) and value.is_integer() else value
        raise UsageError(f"{key}={shown!r} must be {kind}" + (" or null" if allow_none else ""))
    return int(value) if integer else value


def _get(section: Mapping[str, Any], key: str, default: Any) -> Any:
    """``section[key]``, or the dataclass default ``default.key`` when it is left out."""
    return section[key] if key in section else getattr(default, key)


_RUNNER_KEY_HINTS = {("ray", "step_timeout"): "use runner.batch_timeout"}


def check_runner_keys(rcfg: Iterable[str], runner: str) -> None:
    """Refuse ``runner.*`` keys unknown to every runner, or known only to another runner.

    Raises:
        UsageError: ``runner.worker`` (with a did-you-mean), or ``runner.workers`` without
            ``runner=ray``.
    """
    every = {k for kind in RUNNER_CONFIGS.values() for k in _keys(kind)}
    own = _keys(RUNNER_CONFIGS[runner])
    for key in rcfg:
        if key not in every:
            raise unknown_key_error(f"runner.{key}", [f"runner.{k}" for k in sorted(every)])
        if key not in own:
            other = next(n for n, kind in RUNNER_CONFIGS.items() if key in _keys(kind))
            hint = _RUNNER_KEY_HINTS.get((runner, key), f"leave runner.{key} out")
            raise UsageError(
                f"runner.{key} is a key of runner={other}, not of runner={runner}; "
                f"add runner={other} or {hint}"
            )


_WRAPPER_EXAMPLE = "wrappers=[{_target_:gymnasium.wrappers.AtariPreprocessing,frame_skip:4}]"


def check_wrappers(wrappers: Any) -> list[dict[str, Any]]:
    """Check the ``wrappers`` list's shape (not its imports) and return it as plain dicts.

    Each entry is a mapping with a dotted ``_target_`` (a wrapper class, or a function
    ``f(env, **kwargs)`` returning the wrapped env) and its keyword arguments; null is ``[]``.

    Raises:
        UsageError: not a list, an entry that is not a mapping, or one without ``_target_``.
    """
    if wrappers is None:
        return []
    if isinstance(wrappers, str | bytes | Mapping) or not isinstance(wrappers, Iterable):
        raise UsageError(f"wrappers must be a list of _target_ mappings, e.g. {_WRAPPER_EXAMPLE}")
    out = []
    for i, entry in enumerate(wrappers):
        if not isinstance(entry, Mapping):
            raise UsageError(
                f"wrappers[{i}]={entry!r} must be a mapping with a _target_, e.g. "
                + _WRAPPER_EXAMPLE
            )
        target = entry.get("_target_")
        if not isinstance(target, str) or not target.strip():
            raise UsageError(
                f"wrappers[{i}] has no _target_ (a wrapper class such as "
                f"gymnasium.wrappers.AtariPreprocessing); got {dict(entry)!r}"
            )
        out.append(dict(entry))
    return out


def _ray_config(rcfg: Mapping[str, Any]) -> RayRunnerConfig:
    """Check ``runner=ray``'s keys (before anything is written) and return them typed."""
    d = RayRunnerConfig()

    def positive(key: str, integer: bool = False) -> Any:
        value = _get(rcfg, key, d)
        return _positive(value, f"runner.{key}", allow_none=False, integer=integer)

    counts = {}
    for key in ("max_restarts", "episode_retries"):
        value = _get(rcfg, key, d)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UsageError(f"runner.{key}={value!r} must be a non-negative integer")
        counts[key] = value
    init = _get(rcfg, "init", d) or {}
    if not isinstance(init, Mapping):
        raise UsageError(f"runner.init={init!r} must be a mapping of ray.init() arguments")
    return RayRunnerConfig(
        workers=positive("workers", integer=True),
        num_cpus_per_worker=positive("num_cpus_per_worker"),
        batch_seconds=positive("batch_seconds"),
        batch_timeout=positive("batch_timeout"),
        init=dict(init),
        address=_get(rcfg, "address", d),
        log_to_driver=bool(_get(rcfg, "log_to_driver", d)),
        **counts,
    )


def _runner_config(rcfg: Mapping[str, Any], vector_mode: str) -> RunnerConfig:
    """Check ``runner.*`` (and ``vectorization_mode`` against it) and return it typed."""
    runner = rcfg.get("name", "local")
    if not isinstance(runner, str) or runner not in RUNNER_CONFIGS:
        raise UsageError(f"runner={runner!r} is not a runner; use runner=local or runner=ray")
    check_runner_keys(rcfg, runner)
    if vector_mode not in VECTOR_MODES:
        raise UsageError(
            f"vectorization_mode={vector_mode!r} is not a mode; use one of "
            + ", ".join(VECTOR_MODES)
        )
    if runner == "ray":
        if vector_mode == "vector_entry_point":
            raise UsageError(
                "vectorization_mode=vector_entry_point with runner=ray is not available yet; "
                "use runner=local"
            )
        return _ray_config(rcfg)
    step_timeout = _positive(rcfg.get("step_timeout"), "runner.step_timeout")
    if step_timeout is not None and vector_mode == "vector_entry_point":
        raise UsageError(
            "runner.step_timeout is not available with vectorization_mode=vector_entry_point"
        )
    return LocalRunnerConfig(step_timeout=step_timeout)


def _from_dict(conf: dict[str, Any]) -> CollectConfig:
    """``CollectConfig.from_dict`` on a plain dict: today's checks, in today's order."""
    try:  # it is stored in provenance; fail now, not at the first commit
        storage.dumps_metadata({"config": conf})
    except (TypeError, ValueError) as e:
        raise UsageError(
            f"the config cannot be stored in metadata.json ({e}); use finite numbers and plain "
            "values"
        ) from e
    wrappers = check_wrappers(conf.get("wrappers"))
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
    encoder = _get(storage_, "encoder", storage_d)
    if encoder not in ENCODERS:
        raise UsageError(
            f"storage.encoder={encoder!r} is not valid; use one of {', '.join(ENCODERS)}"
        )
    num_envs = _positive(
        _get(conf, "num_envs", defaults), "num_envs", allow_none=False, integer=True
    )
    vector_mode = str(_get(conf, "vectorization_mode", defaults))
    runner = _runner_config(rcfg, vector_mode)
    if wrappers and vector_mode == "vector_entry_point":
        raise UsageError(
            "wrappers are not available with vectorization_mode=vector_entry_point (the env's "
            "own vector implementation); use vectorization_mode=sync or async"
        )
    seed = _get(conf, "seed", defaults)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise UsageError(f"seed={seed!r} must be a non-negative integer or null")
    env_id = _get(conf, "env", defaults)
    if not isinstance(env_id, str) or not env_id:
        raise UsageError("env is not set; pass env=<Gymnasium id>, e.g. env=CartPole-v1")
    policy = _get(conf, "policy", defaults)
    dataset_id = conf.get("dataset_id") or None  # None: derived from env and policy
    score_episodes = _positive(
        _get(conf, "score_episodes", defaults), "score_episodes", allow_none=False, integer=True
    )
    if score_episodes > 10_000:  # collector.scores.MAX_EPISODES: their seeds are stored
        raise UsageError(f"score_episodes={score_episodes} must be at most 10000")
    if dataset_id is not None:
        storage.parse_dataset_id(dataset_id)
    return CollectConfig(
        env=env_id,
        env_kwargs=dict(conf.get("env_kwargs") or {}),
        wrappers=wrappers,
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
        storage=StorageConfig(compression=compression, shard_mb=shard_mb, encoder=encoder),
        runner=runner,
        progress=bool(_get(conf, "progress", defaults)),
        score=bool(conf.get("score")),
        score_episodes=score_episodes,
        metadata=dict(_get(conf, "metadata", defaults) or {}),
    )


def _writable(node: DictConfig, sections: Iterable[str] = ()) -> DictConfig:
    """A structured config of a frozen dataclass, made mergeable (Hydra merges into it).

    Each nested frozen dataclass (``sections``) carries its own read-only flag.
    """
    OmegaConf.set_readonly(node, None)
    for key in sections:
        OmegaConf.set_readonly(node[key], None)
    return node


@functools.cache  # one class: schema() runs per override the command line checks
def _open_runner_schema() -> type:
    """``CollectConfig`` with ``runner`` left to the runner group's own schema.

    OmegaConf has no union of structured configs: the ``runner`` group (``runner/local`` or
    ``runner/ray``) fills that key with ``LocalRunnerConfig`` or ``RayRunnerConfig``.
    """
    fields = []
    for f in dataclasses.fields(CollectConfig):
        if f.name == "runner":
            fields.append((f.name, "Any", field(default=MISSING)))
        elif f.default_factory is not dataclasses.MISSING:
            fields.append((f.name, f.type, field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, f.type, field(default=f.default)))
    kind = dataclasses.make_dataclass("CollectSchema", fields)
    kind.__module__ = __name__  # its annotations are strings resolved in this module
    return kind


def schema(runner: str = "local") -> DictConfig:
    """The ``collect`` schema with ``runner``'s keys, as a writable OmegaConf structured config.

    Merging a config into it refuses a key the schema lacks and a value of the wrong type
    (``episodes=abc``), as Hydra does when it composes ``conf/collect.yaml``.
    """
    node = OmegaConf.structured(_open_runner_schema())
    node.runner = OmegaConf.structured(RUNNER_CONFIGS[runner])
    return _writable(node, ("checkpoint", "storage", "runner"))


def register_schema() -> None:
    """Register the schemas ``conf/collect.yaml`` and ``conf/runner/*.yaml`` extend.

    ``collect_schema`` (the root) and ``runner/local_schema``, ``runner/ray_schema``; ``conf``
    registers them when imported, so the command, ``hydra.compose`` and tests see them.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    root = _writable(OmegaConf.structured(_open_runner_schema()), ("checkpoint", "storage"))
    store.store(name="collect_schema", node=root)
    for name, kind in RUNNER_CONFIGS.items():
        store.store(
            group="runner", name=f"{name}_schema", node=_writable(OmegaConf.structured(kind))
        )


_KINDS = {
    "Integer": "an integer",
    "Float": "a number",
    "Boolean": "true or false",
    "bool": "true or false",
}


def check_value(key: str, value: Any, runner: str = "local") -> None:
    """Refuse ``key=value`` (a dotted key of the schema) when its type cannot hold ``value``.

    The command line's one-line form of what Hydra reports in six when it composes the
    config: ``episodes=abc`` -> ``episodes='abc' must be an integer``. Ranges are
    ``CollectConfig.from_dict``'s to check.

    Raises:
        UsageError: ``value`` does not fit ``key``'s type.
    """
    try:
        OmegaConf.update(schema(runner), key, value, merge=True)
    except ValidationError as e:
        found = re.search(r"(?:converted to|is not a valid) (\w+)", str(e))
        kind = _KINDS.get(found.group(1), "a value of another type") if found else None
        if kind is None:
            reason = str(e.msg).splitlines()[0]
            raise UsageError(f"{key}={value!r} does not fit the config ({reason})") from None
        try:
            OmegaConf.update(schema(runner), key, None, merge=True)
            kind += " or null"
        except ValidationError:
            pass
        raise UsageError(f"{key}={value!r} must be {kind}") from None


def known_keys() -> tuple[set[str], set[str]]:
    """The dotted keys of the default config, and every key ``collect`` knows (both runners).

    The author fields of ``metadata`` (``storage.AUTHOR_FIELDS``) count as known.
    """
    default = set(_dotted(OmegaConf.to_container(schema())))
    every = set(default)
    for name in RUNNER_CONFIGS:
        every |= {
            k for k in _dotted(OmegaConf.to_container(schema(name))) if k.startswith("runner")
        }
    every |= {f"metadata.{k}" for k in storage.AUTHOR_FIELDS}
    return default, every


def _dotted(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + str(key)
            yield from _dotted(value, f"{prefix}{key}.")
