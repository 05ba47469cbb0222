"""The in-process runner: one env (or a vector env's sub-envs), episodes in id order.

``collect_local`` is the registry's ``local`` entry: it sets up the recorders and the one
``Committer`` and hands them to ``run_local`` (one env) or to ``collector.runners.vector``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from collector.committer import (
    MB,
    Committer,
    commit_finished_on_error,
    progress_bar,
    show_rate,
)
from collector.errors import CollectionError, StorageError
from collector.policies import build_policy
from collector.recorder import EpisodeRecorder
from collector.rollout import run_episode
from collector.runners.watch import StepTimeout, StepWatch
from collector.seeding import env_seed

if TYPE_CHECKING:
    import gymnasium as gym

    from collector import storage
    from collector.config import CollectConfig
    from collector.plan import EpisodePlan
    from collector.policies import Policy

__all__ = ["RESERVE_MB_MAX", "collect_local", "run_local"]

#: At most this much of a commit window is preallocated for a vector_entry_point recorder.
RESERVE_MB_MAX = 256


def run_local(
    env: gym.Env,
    policy: Policy,
    recorder: EpisodeRecorder,
    committer: Committer,
    episode_ids: EpisodePlan,
    entropy: int,
    progress: Callable[[int, int], None] | bool | None = None,
    step_timeout: float | None = None,
) -> int:
    """Run ``episode_ids`` and commit them at the committer's cadence; returns steps recorded.

    Episode ``i`` is reset with ``env_seed(entropy, i)`` and the policy with
    ``policy_seed(entropy, i)``, so its content depends on nothing else. If the env or policy
    raises, a step takes longer than ``step_timeout`` seconds, or the run is interrupted, the
    finished episodes are committed before the error propagates.
    """
    bar = progress_bar(len(episode_ids), progress)
    steps = 0
    episode_id = None
    started = time.perf_counter()
    watch = None
    if step_timeout is not None:
        watch = StepWatch(
            step_timeout,
            lambda: (committer.episodes, recorder.episode_steps, recorder.in_episode),
            lambda: committer.busy,
        ).start()

    def reword(e: BaseException) -> None:
        """Name the episode that failed (or hung) and its seed; storage errors stay as they are."""
        if isinstance(e, StepTimeout):
            step = recorder.episode_steps if recorder.in_episode else None
            where = "its reset" if step is None else f"step {step}"
            raise CollectionError(
                f"episode {episode_id} (seed {env_seed(entropy, episode_id)}) hung: {where} did "
                f"not return within runner.step_timeout={step_timeout:g} s; the episodes "
                "finished before it are committed: fix the env (or raise runner.step_timeout) "
                "and re-run the same command to resume"
            ) from None
        # a storage error is the disk's, not an episode's
        if isinstance(e, (CollectionError, StorageError)) or not isinstance(e, Exception):
            return
        raise CollectionError(
            f"episode {episode_id} (seed {env_seed(entropy, episode_id)}) failed: "
            f"{type(e).__name__}: {e}; finished "
            "episodes are committed, re-run the same command to resume"
        ) from e

    try:
        with commit_finished_on_error(committer, recorder.discard_episode, reword):
            last = len(episode_ids) - 1
            for k, episode_id in enumerate(episode_ids):  # an EpisodePlan: ids come lazily
                steps += run_episode(env, policy, recorder, episode_id, entropy)
                committer.after_episode(last=k == last)
                bar.update(1)
                if bar.n % 64 == 0:
                    show_rate(bar, steps, started, total=True)
    finally:
        if watch is not None:
            watch.stop()
        bar.close()
    committer.flush()
    return steps


def collect_local(
    config: CollectConfig,
    writer: storage.DatasetWriter,
    env: gym.Env,
    policy: Policy,
    todo: EpisodePlan,
    entropy: int,
    *,
    progress: Callable[[int, int], None] | bool | None = None,
) -> int:
    """The ``local`` runner: set up recorders and one ``Committer``, run ``todo`` in-process.

    One env (``run_local``), ``num_envs`` sub-envs of a sync/async vector env
    (``run_vector``) or the env's own vector implementation (``run_vector_entry_point``);
    returns the steps recorded.
    """
    num_envs, mode = config.num_envs, config.vectorization_mode
    record_infos = config.record_infos
    env_args = (config.env, config.env_kwargs, config.max_episode_steps, config.wrappers)
    step_timeout = config.runner.step_timeout
    every_mb = config.checkpoint.every_mb
    spaces = (env.observation_space, env.action_space)
    if mode == "vector_entry_point":
        from collector.vector_recorder import VectorRecorder

        recorders: Any = VectorRecorder(*spaces, num_envs, record_infos)
        if every_mb is not None:  # one commit window, capped: pages come as used
            recorders.reserve(min(every_mb, RESERVE_MB_MAX) * MB)
    elif num_envs > 1:
        recorders = [EpisodeRecorder(*spaces, record_infos) for _ in range(num_envs)]
    else:
        recorders = EpisodeRecorder(*spaces, record_infos)
    committer = Committer.from_config(writer, recorders, config)
    try:
        if mode == "vector_entry_point":
            from collector.envs import make_vector_env
            from collector.runners.vector import run_vector_entry_point

            vec = make_vector_env(env_args[0], num_envs, *env_args[1:3])
            try:
                return run_vector_entry_point(
                    vec,
                    policy,
                    recorders,
                    committer,
                    todo,
                    config.episodes,
                    entropy,
                    bool(progress),
                )
            finally:
                vec.close()
        if num_envs > 1:
            from collector.envs import make_env
            from collector.runners.vector import run_vector

            return run_vector(
                lambda: make_env(*env_args),
                lambda spaces_of_one: build_policy(config.policy, spaces_of_one),
                recorders,
                committer,
                todo,
                entropy,
                mode,
                bool(progress),
                step_timeout,
            )
        return run_local(env, policy, recorders, committer, todo, entropy, progress, step_timeout)
    finally:
        committer.close()
