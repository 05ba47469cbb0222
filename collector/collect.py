"""``collect``: turn a config into a dataset, resuming whatever a previous run left undone.

``collect(cfg)`` is the Python API behind the ``collect`` command (tests call it directly). It
checks the config once (``CollectConfig.from_dict``; the config as given is what provenance
stores), builds env and policy once, opens the dataset under its writer lock,
checks that a resumed run has the same data-affecting config, plans the missing episode ids,
runs them on the configured runner (``collector.runners.get_runner``; each commits through
``collector.committer``) at the checkpoint cadence, repacks small shards at the end and
returns a summary.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from collector import storage
from collector.checkpoints import checkpoint_hashes, checkpoint_identity, pin_policy
from collector.committer import (
    MB,
    CollectInterrupted,
    disk_full_is_one_error,
    interrupt_says_what_is_committed,
)
from collector.config import DATA_KEYS, CollectConfig, to_container
from collector.envs import (
    env_package_version,
    env_spec_to_json,
    make_env,
    recorded_spec,
    require_vector_entry_point,
)
from collector.errors import ConfigMismatchError
from collector.plan import EpisodePlan, segment_episodes
from collector.policies import build_policy
from collector.provenance import git_commit, policy_provenance, versions
from collector.redact import redact
from collector.runners import get_runner
from collector.scores import score_collected
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
    #: ``(ref_min_score, ref_max_score)`` when the dataset has them (``score=true``)
    ref_scores: tuple[float, float] | None = None

    @property
    def steps_per_second(self) -> float:
        """New steps recorded per wall-clock second (0 for a no-op run)."""
        return self.new_steps / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def noop(self) -> bool:
        """True when the dataset was already complete."""
        return self.new_episodes == 0


def _ref_scores(meta: Mapping[str, Any]) -> tuple[float, float] | None:
    low, high = meta.get("ref_min_score"), meta.get("ref_max_score")
    return None if low is None or high is None else (float(low), float(high))


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


def data_config(
    cfg: CollectConfig | Mapping[str, Any],
    env_package: str | None,
    checkpoints: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The data-affecting part of a collect config, as stored in provenance.

    ``checkpoints`` (``checkpoint_hashes``: config key -> sha256 of the file it names) is
    data-affecting too: a changed file behind the same path is a different policy. Left out
    when the policy names no file, as datasets collected before the key existed stored it.
    """
    if isinstance(cfg, CollectConfig):
        cfg = cfg.to_dict()
    out = {key: cfg.get(key) for key in DATA_KEYS}
    # the defaults of conf/collect.yaml, so a Python dict config that leaves them out resumes
    # a CLI run (and the other way round)
    out["env_kwargs"] = dict(out["env_kwargs"] or {})
    out["wrappers"] = [dict(w) for w in out["wrappers"] or []]
    if not out["wrappers"]:  # as datasets collected before the key existed stored it
        del out["wrappers"]
    out["record_infos"] = bool(out["record_infos"])
    out["env_package"] = env_package
    if cfg.get("vectorization_mode") == "vector_entry_point":
        # the layout-dependent tier: the sub-env count and segment size shape the data
        num_envs = int(cfg.get("num_envs") or 1)
        out["vectorization_mode"] = "vector_entry_point"
        out["num_envs"] = num_envs
        out["segment_episodes"] = segment_episodes(num_envs)
    if checkpoints:
        out["checkpoints"] = dict(checkpoints)
    return out


def _mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` per differing key; a checkpoint as ``policy.path sha256``."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if k == "checkpoints" and isinstance(a, Mapping) and isinstance(b, Mapping):
            files = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
            out += [(f"{f} sha256", a.get(f), b.get(f)) for f in files]
        else:
            out.append((k, a, b))
    return out


def collect(
    cfg: DictConfig | Mapping[str, Any],
    *,
    overrides: list[str] | None = None,
    policy_name: str | None = None,
    progress: Callable[[int, int], None] | bool | None = None,
) -> CollectResult:
    """Collect ``cfg.episodes`` episodes into ``cfg.dataset_id``, resuming a previous run.

    Args:
        cfg: a ``conf/collect.yaml`` config (DictConfig or plain dict); keys left out take
            the YAML's defaults, unknown keys are refused.
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
    conf = to_container(cfg)
    config = CollectConfig.from_dict(conf)  # the one place a config is checked
    dataset_id = config.dataset_id or default_dataset_id(
        config.env, policy_name or _policy_name(config.policy)
    )
    storage.parse_dataset_id(dataset_id)
    compression = config.storage.compression

    env = make_env(config.env, config.env_kwargs, config.max_episode_steps, config.wrappers)
    try:
        if config.vectorization_mode == "vector_entry_point":
            require_vector_entry_point(config.env)
        check_supported(env.observation_space, "observation")
        check_supported(env.action_space, "action")
        # hash the checkpoints (and resolve a Hub revision) once, here on the driver; every
        # worker builds from the pinned config, so all load the bytes that were hashed
        identity = checkpoint_identity(config.policy)
        pinned = pin_policy(config.policy, identity) if identity else config.policy
        policy = build_policy(pinned, env)
        spec = recorded_spec(env, config.wrappers)
        wanted = data_config(config, env_package_version(spec), checkpoint_hashes(identity))
        facts = policy_provenance(identity, policy)
        config = dataclasses.replace(config, policy=pinned)
        with (
            storage.DatasetWriter(dataset_id, config.datasets_root) as writer,
            disk_full_is_one_error(writer),
            interrupt_says_what_is_committed(writer) as run,
        ):
            entropy = _open_generation(writer, conf, config, wanted, overrides, spec, env, facts)
            run["before"] = len(writer.committed_ids())
            todo = EpisodePlan(config.episodes, writer.committed_ids())  # lazily: may be 1e12
            start = time.perf_counter()
            if len(todo):
                log.info("collecting %d episode(s) into %s", len(todo), dataset_id)
                runner = get_runner(config.runner.name)
                new_steps = runner(config, writer, env, policy, todo, entropy, progress=progress)
            else:
                new_steps = 0
                log.info(
                    "%s already has episodes 0..%d; nothing to do", dataset_id, config.episodes - 1
                )
            # also with nothing to collect: a run killed in its repack left the small shards
            if writer.repack(int(config.storage.shard_mb * MB), compression):
                # the merged shards go now, not at the next run, unless a reader has the
                # dataset open: a finished run leaves its dataset, not twice it (issue 19)
                writer.remove_superseded()
            wall = time.perf_counter() - start
            if config.score:  # reference scores of this env and policy (issue 20 item 4)
                score_collected(writer, config, policy, entropy)
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
                ref_scores=_ref_scores(meta),
            )
    finally:
        env.close()


def _open_generation(
    writer: storage.DatasetWriter,
    conf: dict[str, Any],
    config: CollectConfig,
    wanted: dict[str, Any],
    overrides: list[str] | None,
    spec: Any,
    env: Any,
    facts: dict[str, Any],
) -> int:
    """Check a resume against the last commit, or start a new generation; return the entropy."""
    if writer.exists and not config.overwrite:
        assert writer.meta is not None
        prov = writer.meta.get("provenance") or {}
        stored = prov.get("data_config")
        if stored is None or "seed_entropy" not in prov:
            raise ConfigMismatchError(
                f"dataset {writer.dataset_id!r} was not written by collect; pick another "
                "dataset_id or pass overwrite=true"
            )
        wanted = redact(wanted)  # as it was stored (issue 16 item 10)
        if "checkpoints" in wanted and "checkpoints" not in stored:
            log.warning(
                "%s was collected before harvest recorded checkpoint hashes: the policy's "
                "files cannot be checked against it",
                writer.dataset_id,
            )
            wanted = {k: v for k, v in wanted.items() if k != "checkpoints"}
        diffs = _mismatch(stored, wanted)
        if diffs:
            detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs)
            raise ConfigMismatchError(
                f"dataset {writer.dataset_id!r} was collected with different data-affecting "
                f"config ({detail}); use another dataset_id or pass overwrite=true",
                keys=tuple(k for k, _, _ in diffs),
            )
        return int(prov["seed_entropy"])
    seed = config.seed
    entropy = int(seed) if seed is not None else draw_entropy()
    authors = config.metadata
    writer.start(
        storage.new_metadata(
            env.observation_space,
            env.action_space,
            env_spec_to_json(spec),
            record_infos=config.record_infos,
            provenance={
                "command": "collect",
                "config": conf,
                "overrides": list(overrides or []),
                "data_config": wanted,
                "seed_entropy": entropy,
                "versions": versions(),
                "git_commit": git_commit(),
                **facts,
            },
            **{k: v for k, v in authors.items() if v is not None},
        )
    )
    return entropy
