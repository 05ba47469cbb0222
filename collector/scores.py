"""Reference scores: ``ref_min_score``/``ref_max_score`` from seeded rollouts (as D4RL's).

``score_dataset(ID)`` (``curate score ID``) rebuilds a dataset collected by ``collect``: its env
from the stored spec, wrappers included (as ``recover_environment`` makes it, with the same
trust rule) and its policy from ``provenance.data_config.policy``. It rolls out a uniform
random policy (``ref_min_score``) and that policy (``ref_max_score``) for N seeded episodes
and commits both means, with how they were computed (``ref_scores``: policies, episodes,
seeds, env id, ...), as a new commit of the dataset's metadata. ``collect ... score=true``
calls ``score_collected`` at the end of a run. ``DataCollector.create_dataset(expert_policy=)``
uses ``rollout_returns`` too.

Seeds: score episode ``i`` resets the env with ``SeedSequence(seed_entropy, spawn_key=(i, 2))``
and seeds the policy from stream 3 (the dataset's episodes use streams 0 and 1, see
``collector.seeding``); a seed one of the dataset's episodes was reset with is skipped. So the
scores never replay the data, and scoring again gives the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final

import gymnasium as gym
import numpy as np

from collector import storage
from collector.checkpoints import checkpoint_hashes, checkpoint_identity, pin_policy
from collector.config import CollectConfig
from collector.envs import env_spec_from_json, make_env, stored_spec_gate
from collector.errors import (
    CollectionError,
    ConfigMismatchError,
    HarvestError,
    HarvestWarning,
    InvalidValueError,
    MissingExtraError,
    UsageError,
)
from collector.policies import Policy, RandomPolicy, build_policy
from collector.provenance import versions
from collector.redact import redact
from collector.seeding import stream_seed

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EPISODES",
    "MAX_EPISODES",
    "SAFE_POLICY_TARGETS",
    "ReferenceScores",
    "dataset_seeds",
    "reference_scores",
    "rollout_returns",
    "score_collected",
    "score_dataset",
    "score_seeds",
]

#: Episodes per policy when none are given (``curate score --episodes``, ``score_episodes``).
DEFAULT_EPISODES: Final = 10
#: At most this many (their seeds are listed in metadata.json).
MAX_EPISODES: Final = 10_000
#: Policy ``_target_``s a dataset may name that are built without ``trust_remote_code``: they
#: import and load nothing but harvest's own code. A checkpoint loader (SB3 zips hold pickles)
#: or a user's class runs code the dataset names.
SAFE_POLICY_TARGETS: Final = frozenset(
    {
        "collector.policies.RandomPolicy",
        "collector.policies.CartPoleHeuristic",
        "collector.policy_mixture.MixturePolicy",
    }
)
_RANDOM: Final = {"_target_": "collector.policies.RandomPolicy"}
#: ``SeedSequence`` spawn-key streams of score episodes (env reset, policy); 0 and 1 are data.
_ENV_STREAM, _POLICY_STREAM = 2, 3


@dataclasses.dataclass(frozen=True)
class ReferenceScores:
    """Reference scores of a dataset and how they were computed (``metadata.ref_scores``)."""

    ref_min_score: float
    ref_max_score: float
    how: dict[str, Any]

    def fields(self) -> dict[str, Any]:
        """The metadata fields to commit: ``ref_min_score``, ``ref_max_score``, ``ref_scores``."""
        return {
            "ref_min_score": self.ref_min_score,
            "ref_max_score": self.ref_max_score,
            "ref_scores": self.how,
        }


# -- seeds --------------------------------------------------------------------------------------


def score_seeds(
    entropy: int, episodes: int, used: Collection[int] = ()
) -> tuple[list[int], list[int]]:
    """Env reset seeds and policy seeds of ``episodes`` score episodes, none in ``used``.

    >>> score_seeds(0, 2) == score_seeds(0, 2)
    True
    >>> env, _ = score_seeds(0, 2)
    >>> score_seeds(0, 2, used={env[0]})[0] == env[1:] + score_seeds(0, 3)[0][2:]
    True
    """
    env_seeds: list[int] = []
    policy_seeds: list[int] = []
    i = 0
    while len(env_seeds) < episodes:
        seed = stream_seed(entropy, i, _ENV_STREAM)
        if seed not in used:
            env_seeds.append(seed)
            policy_seeds.append(stream_seed(entropy, i, _POLICY_STREAM))
        i += 1
    return env_seeds, policy_seeds


def dataset_seeds(path: Any, meta: Mapping[str, Any]) -> set[int]:
    """The reset seeds of a dataset's episodes (those stored), from its shard tables."""
    out: set[int] = set()
    for entry in meta.get("shards", []):
        table = storage.read_shard_index(path, entry, ("seed", "has_seed"))
        out.update(int(s) for s in table["seed"][table["has_seed"]])
    return out


# -- rollouts -----------------------------------------------------------------------------------


def rollout_returns(
    make_env: Callable[[], gym.Env],
    policy: Policy,
    env_seeds: Sequence[int],
    policy_seeds: Sequence[int],
    num_envs: int = 1,
) -> np.ndarray:
    """Undiscounted return of each seeded episode of ``policy`` (float64, in seed order).

    With ``num_envs == 1`` episode ``k`` is ``policy.reset(policy_seeds[k])`` then
    ``env.reset(seed=env_seeds[k])``, stepped to its end: the policy contract's per-episode
    streams. With ``num_envs > 1`` and a policy with ``act_batch``, episodes run in waves of
    ``num_envs`` envs stepped together, one batched call per step (the policy is reset once a
    wave, with the seed of its first episode): the same numbers for a deterministic policy,
    and for any policy the same numbers for the same ``num_envs``.
    """
    if num_envs > 1 and hasattr(policy, "act_batch") and len(env_seeds) > 1:
        return _batched_returns(make_env, policy, env_seeds, policy_seeds, num_envs)
    env = make_env()
    out = np.zeros(len(env_seeds), np.float64)
    try:
        for k, (seed, pseed) in enumerate(zip(env_seeds, policy_seeds, strict=True)):
            policy.reset(pseed)
            obs, _ = env.reset(seed=int(seed))
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
                total += float(reward)
                done = bool(terminated or truncated)
            out[k] = total
    finally:
        env.close()
    return out


def _batched_returns(
    make_env: Callable[[], gym.Env],
    policy: Any,
    env_seeds: Sequence[int],
    policy_seeds: Sequence[int],
    num_envs: int,
) -> np.ndarray:
    """``rollout_returns`` in waves; only envs whose episode runs are stepped."""
    from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

    envs = [make_env() for _ in range(min(num_envs, len(env_seeds)))]
    space, act_space = envs[0].observation_space, envs[0].action_space
    out = np.zeros(len(env_seeds), np.float64)
    try:
        for start in range(0, len(env_seeds), len(envs)):
            wave = list(range(start, min(start + len(envs), len(env_seeds))))
            policy.reset(policy_seeds[start])
            obs = {k: envs[j].reset(seed=int(env_seeds[k]))[0] for j, k in enumerate(wave)}
            slot = {k: envs[j] for j, k in enumerate(wave)}
            while obs:
                live = list(obs)
                batch = concatenate(
                    space, [obs[k] for k in live], create_empty_array(space, len(live))
                )
                actions = policy.act_batch(batch, len(live))
                rows = iterate(batch_space(act_space, len(live)), actions)
                for k, action in zip(live, rows, strict=True):
                    o, reward, terminated, truncated, _ = slot[k].step(action)
                    out[k] += float(reward)
                    if terminated or truncated:
                        del obs[k]
                    else:
                        obs[k] = o
    finally:
        for env in envs:
            env.close()
    return out


def reference_scores(
    make_env: Callable[[], gym.Env],
    policy: Policy | None,
    *,
    episodes: int = DEFAULT_EPISODES,
    entropy: int = 0,
    used_seeds: Collection[int] = (),
    num_envs: int = 1,
    about: Mapping[str, Any] | None = None,
    given: Mapping[str, float | None] | None = None,
) -> ReferenceScores:
    """Mean returns of a uniform random policy (min) and ``policy`` (max) on the same seeds.

    Args:
        make_env: makes the env (called once, or ``num_envs`` times for a batched policy).
        policy: the policy whose mean return is ``ref_max_score`` (None when it is given).
        episodes: episodes per policy.
        entropy: root of the seeds (``score_seeds``); a dataset's ``seed_entropy``.
        used_seeds: reset seeds to skip (the dataset's own episodes').
        num_envs: envs stepped together for a policy with ``act_batch`` (the random policy
            always runs one episode at a time, from its own per-episode streams).
        about: more facts for ``how`` (the policy config, the env id, the dataset's
            fingerprint).
        given: ``ref_min_score``/``ref_max_score`` known already: not rolled out, stored.

    Raises:
        InvalidValueError: ``episodes`` is out of range, or both scores are equal (the
            normalized score would divide by zero) or not finite.
    """
    if not 1 <= episodes <= MAX_EPISODES:
        raise InvalidValueError(f"episodes={episodes} must be between 1 and {MAX_EPISODES}")
    given = {k: float(v) for k, v in (given or {}).items() if v is not None}
    env_seeds, policy_seeds = score_seeds(entropy, episodes, used_seeds)
    num_envs = num_envs if hasattr(policy, "act_batch") else 1
    start = time.perf_counter()
    how: dict[str, Any] = {"method": "rollouts", **dict(about or {})}
    means = dict(given)
    for key, runs in (("ref_min_score", "min"), ("ref_max_score", "max")):
        if key in given:
            continue
        if key == "ref_min_score":
            probe = make_env()
            try:
                chosen: Any = RandomPolicy(probe.action_space)
            finally:
                probe.close()
            how["min_policy"] = dict(_RANDOM)
        elif policy is None:
            raise UsageError("reference_scores needs a policy, or ref_max_score given")
        else:
            chosen = policy
        try:
            returns = rollout_returns(
                make_env, chosen, env_seeds, policy_seeds, num_envs if runs == "max" else 1
            )
        except HarvestError:
            raise
        except Exception as e:  # the env's or the policy's own error, mid-episode
            name = "random" if runs == "min" else "dataset's"
            env_id = how.get("env_id") or "the env"
            raise CollectionError(
                f"scoring on {env_id} failed: the {name} policy's rollouts raised "
                f"{type(e).__name__}: "
                f"{' '.join(str(e).split())[:200]}"
            ) from e
        means[key] = float(returns.mean())
        how[f"{runs}_std"] = float(returns.std())
    lo, hi = means["ref_min_score"], means["ref_max_score"]
    _check_scores(lo, hi, episodes)
    how.update(
        episodes=int(episodes),
        num_envs=int(num_envs),
        seed_entropy=int(entropy),
        seeds=env_seeds,
        policy_seeds=policy_seeds,
        seconds=round(time.perf_counter() - start, 3),
        computed=time.time(),
        versions=versions(),
    )
    if given:
        how["given"] = given
    return ReferenceScores(lo, hi, redact(how))


def _check_scores(lo: float, hi: float, episodes: int | None = None) -> None:
    """Refuse scores a normalized score cannot divide by."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InvalidValueError(f"reference scores {lo!r} and {hi!r} must be finite")
    if lo == hi:
        where = "" if episodes is None else f" (both average {lo:g} over {episodes} episodes)"
        raise InvalidValueError(
            f"ref_min_score and ref_max_score are equal{where}, so normalized scores would "
            "divide by zero; pass other reference scores explicitly (curate score ID --min X "
            "--max Y)"
        )


# -- datasets -----------------------------------------------------------------------------------


def _policy_targets(cfg: Any) -> list[str]:
    """Every ``_target_`` in a policy config, nested ones (a mixture's) included."""
    if isinstance(cfg, Mapping):
        own = [str(cfg["_target_"])] if "_target_" in cfg else []
        return own + [t for v in cfg.values() for t in _policy_targets(v)]
    if isinstance(cfg, list):
        return [t for v in cfg for t in _policy_targets(v)]
    return []


def _recorded_policy(meta: Mapping[str, Any], dataset_id: str) -> tuple[dict[str, Any], int]:
    """The policy config and seed entropy ``collect`` stored in the dataset's provenance.

    Raises:
        UsageError: the dataset was not made by ``collect`` (no policy config to rebuild).
    """
    prov = meta.get("provenance") or {}
    data = prov.get("data_config") if isinstance(prov.get("data_config"), Mapping) else {}
    policy = data.get("policy")
    entropy = prov.get("seed_entropy")
    if (
        not isinstance(policy, Mapping)
        or not isinstance(policy.get("_target_"), str)
        or type(entropy) is not int
        or entropy < 0
    ):
        made_by = prov.get("created_by") or prov.get("command") or "something other than collect"
        raise UsageError(
            f"dataset {dataset_id!r} has no policy to rebuild (made by {str(made_by)[:60]}, not "
            "collect); pass the reference scores explicitly: curate score ID --min X --max Y, "
            "or ref_min_score/ref_max_score to create_dataset"
        )
    return dict(policy), entropy


def _recorded_checkpoints(
    policy_cfg: dict[str, Any], meta: Mapping[str, Any], dataset_id: str
) -> dict[str, Any]:
    """``policy_cfg`` pinned to the checkpoints the dataset was collected with.

    A Hub file is taken at the commit recorded in ``provenance.checkpoints`` (a branch may
    have moved on); every file must hash as ``data_config.checkpoints`` recorded (a dataset
    from before checkpoint hashes records none: nothing to check).

    Raises:
        ConfigMismatchError: a file now differs from the one the data was collected with.
    """
    prov = meta.get("provenance") if isinstance(meta.get("provenance"), Mapping) else {}
    recorded = prov.get("checkpoints") if isinstance(prov.get("checkpoints"), Mapping) else {}
    files = recorded.get("files") if isinstance(recorded.get("files"), Mapping) else {}
    commits = {  # hostile input: only well-formed commits pin (the Hub loader checks them too)
        k: {"commit": v["commit"]}
        for k, v in files.items()
        if isinstance(v, Mapping) and isinstance(v.get("commit"), str)
    }
    policy_cfg = pin_policy(policy_cfg, {"files": commits}) if commits else policy_cfg
    identity = checkpoint_identity(policy_cfg)
    data = prov.get("data_config") if isinstance(prov.get("data_config"), Mapping) else {}
    stored = data.get("checkpoints")
    now = checkpoint_hashes(identity)
    if isinstance(stored, Mapping) and dict(stored) != now:
        keys = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
        first = keys[0]
        raise ConfigMismatchError(
            f"dataset {dataset_id!r} was collected with another checkpoint: {first} sha256: "
            f"recorded {str(stored.get(first))[:64]}, now {now.get(first)}; put back the file "
            "it was collected with, or give the scores (--min X --max Y)",
            keys=tuple(f"{k} sha256" for k in keys),
        )
    return pin_policy(policy_cfg, identity)


def _env_maker(meta: Mapping[str, Any], dataset_id: str, trust: bool) -> Callable[[], gym.Env]:
    """``gym.make`` of the dataset's stored env spec, checked as ``recover_environment`` does.

    Raises:
        UsageError: no env spec, or one naming code Gymnasium does not register (without
            ``trust``).
        MissingExtraError: the env's package is not installed.
    """
    source = f"dataset {dataset_id!r}"
    data = meta.get("env_spec")
    if not isinstance(data, Mapping):
        raise UsageError(f"{source} has no env_spec to make its environment from")
    spec = env_spec_from_json(dict(data))
    assert spec is not None
    stored_spec_gate(spec, source, trust)

    def make() -> gym.Env:
        try:
            return gym.make(spec)
        except gym.error.DependencyNotInstalled as e:
            raise MissingExtraError(
                f"{source}: env {spec.id!r} needs a package that is not installed "
                f"({str(e).splitlines()[0][:160]}); install it, then score again"
            ) from e
        except HarvestError:
            raise
        except Exception as e:  # whatever the env's own constructor raises
            raise UsageError(
                f"{source}: env {spec.id!r} cannot be made here ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160] if str(e) else ''})"
            ) from e

    make().close()  # fail here, in one line, before any rollout
    return make


def score_dataset(
    dataset_id: str,
    *,
    episodes: int = DEFAULT_EPISODES,
    num_envs: int = 1,
    root: Any = None,
    trust_remote_code: bool = False,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
) -> ReferenceScores:
    """Compute a dataset's reference scores and commit them to its metadata.

    The env is made from the dataset's stored spec (wrappers included) and the policy from
    the config ``collect`` stored; a dataset made otherwise (``DataCollector`` over your own
    loop) has no policy to rebuild: give ``ref_max_score`` (and ``ref_min_score``, or let the
    random policy's rollouts give it). Scores given are stored as they are.

    Args:
        dataset_id: the dataset.
        episodes: seeded episodes per policy (seeds none of the dataset's episodes used).
        num_envs: envs stepped together for a policy with ``act_batch``.
        root: datasets root (default ``$HARVEST_DATASETS``).
        trust_remote_code: build a policy or env the dataset names that runs other code
            than harvest's and Gymnasium's own (a checkpoint loader, your own class).
        ref_min_score: store this instead of the random policy's mean return.
        ref_max_score: store this instead of the dataset's policy's mean return.

    Raises:
        DatasetNotFoundError: no such dataset.
        UsageError: no policy to rebuild, an untrusted policy or env, or an env or policy
            that cannot be built here (``MissingExtraError`` when a package is missing).
        InvalidValueError: bad ``episodes``/``num_envs``, or equal scores.
        LockHeldError: another process is writing the dataset.
    """
    storage.parse_dataset_id(dataset_id)
    if num_envs < 1:
        raise InvalidValueError(f"num_envs={num_envs} must be at least 1")
    path = storage.dataset_path(dataset_id, root)
    meta = storage.read_metadata(path, dataset_id)
    given = {"ref_min_score": ref_min_score, "ref_max_score": ref_max_score}
    if ref_min_score is not None and ref_max_score is not None:
        _check_scores(float(ref_min_score), float(ref_max_score))
        scores = ReferenceScores(float(ref_min_score), float(ref_max_score), {"method": "given"})
    else:
        scores = _rollout_dataset(
            dataset_id, meta, path, episodes, num_envs, trust_remote_code, given
        )
    with storage.DatasetWriter(dataset_id, root) as writer:
        if writer.meta is None or writer.meta.get("generation") != meta.get("generation"):
            raise UsageError(
                f"dataset {dataset_id!r} was replaced while it was being scored; score it again"
            )
        writer.commit(**scores.fields())
    return scores


def _rollout_dataset(
    dataset_id: str,
    meta: Mapping[str, Any],
    path: Any,
    episodes: int,
    num_envs: int,
    trust: bool,
    given: Mapping[str, float | None],
) -> ReferenceScores:
    """``score_dataset``'s rollouts: rebuild env and policy, roll out what is not given."""
    policy = None
    if given["ref_max_score"] is None:
        policy_cfg, entropy = _recorded_policy(meta, dataset_id)
        untrusted = [t for t in _policy_targets(policy_cfg) if t not in SAFE_POLICY_TARGETS]
        if untrusted and not trust:
            raise UsageError(
                f"dataset {dataset_id!r}: its policy names {untrusted[0]!r}, code that may run "
                "anything (a checkpoint loads pickles); pass --trust-remote-code "
                "(trust_remote_code=True) if you trust this dataset's source"
            )
        # as collect ... score=true records it: the config the policy is built from
        policy_cfg = _recorded_checkpoints(policy_cfg, meta, dataset_id)
    else:  # only the random policy runs: nothing the dataset names is built
        prov = meta.get("provenance") or {}
        entropy = prov.get("seed_entropy") if type(prov.get("seed_entropy")) is int else 0
    make = _env_maker(meta, dataset_id, trust)
    if given["ref_max_score"] is None:
        probe = make()
        try:
            policy = build_policy(policy_cfg, probe)
        finally:
            probe.close()
    about = {
        "env_id": str(meta["env_spec"]["id"]),
        "max_policy": policy_cfg if policy is not None else "given",
        "fingerprint": meta.get("fingerprint"),
    }
    return reference_scores(
        make,
        policy,
        episodes=episodes,
        entropy=max(int(entropy), 0),
        used_seeds=dataset_seeds(path, meta),
        num_envs=num_envs,
        about=about,
        given=given,
    )


def score_collected(
    writer: storage.DatasetWriter, config: CollectConfig, policy: Policy, entropy: int
) -> ReferenceScores | None:
    """``collect ... score=true``: score the run's dataset with its own env and policy, commit.

    ``config.score_episodes`` episodes each, ``config.num_envs`` envs for a batched policy:
    the numbers ``score_dataset`` gives later with the same ``episodes`` and ``num_envs``
    (same seeds, env and policy). Skipped (None) when the last commit already holds scores
    of the same data, episodes and ``num_envs``: a re-run that collected nothing does not
    roll out again. Equal scores (a random policy's run) are not stored: a ``HarvestWarning``
    says so, and the run's data stays committed.
    """
    meta = writer.meta
    if meta is None:
        raise UsageError("score_collected needs a committed dataset")
    old = meta.get("ref_scores") if isinstance(meta.get("ref_scores"), Mapping) else {}
    episodes = config.score_episodes
    num_envs = config.num_envs if hasattr(policy, "act_batch") else 1
    if (old.get("fingerprint"), old.get("episodes"), old.get("num_envs")) == (
        meta.get("fingerprint"),
        episodes,
        num_envs,
    ):
        return None
    make = functools.partial(
        make_env, config.env, config.env_kwargs, config.max_episode_steps, config.wrappers
    )
    try:
        scores = reference_scores(
            make,
            policy,
            episodes=episodes,
            entropy=entropy,
            used_seeds=dataset_seeds(writer.path, meta),
            num_envs=num_envs,
            about={
                "env_id": (meta.get("env_spec") or {}).get("id", config.env),
                "max_policy": dict(config.policy),
                "fingerprint": meta.get("fingerprint"),
            },
        )
    except InvalidValueError as e:  # equal scores (a random policy): the data stays, unscored
        warnings.warn(f"{writer.dataset_id}: not scored: {e}", HarvestWarning, stacklevel=2)
        return None
    writer.commit(**scores.fields())
    log.info(
        "%s: ref_min_score %g (random), ref_max_score %g (its policy), %d episodes each",
        writer.dataset_id, scores.ref_min_score, scores.ref_max_score, episodes,
    )  # fmt: skip
    return scores
