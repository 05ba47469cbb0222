"""The in-process runner: one env, one policy, episodes in id order."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from collector.errors import CollectionError, StorageError
from collector.rollout import run_episode
from collector.runners.watch import StepTimeout, StepWatch
from collector.seeding import env_seed

if TYPE_CHECKING:
    import gymnasium as gym

    from collector.collect import Committer
    from collector.policies import Policy
    from collector.recorder import EpisodeRecorder

__all__ = ["run_local"]


def run_local(
    env: gym.Env,
    policy: Policy,
    recorder: EpisodeRecorder,
    committer: Committer,
    episode_ids: np.ndarray,
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
    bar = tqdm(
        total=len(episode_ids),
        unit="ep",
        disable=None if progress else True,
        file=sys.stderr,
    )
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
    try:
        for episode_id in episode_ids.tolist():
            steps += run_episode(env, policy, recorder, episode_id, entropy)
            committer.after_episode()
            bar.update(1)
            if not bar.disable and bar.n % 64 == 0:
                rate = steps / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix_str(f"{steps:,} steps, {rate:,.0f} steps/s", refresh=False)
    except StepTimeout:
        step = recorder.episode_steps if recorder.in_episode else None
        _abandon(recorder, committer)
        where = "its reset" if step is None else f"step {step}"
        raise CollectionError(
            f"episode {episode_id} (seed {env_seed(entropy, episode_id)}) hung: {where} did "
            f"not return within runner.step_timeout={step_timeout:g} s; the episodes finished "
            "before it are committed: fix the env (or raise runner.step_timeout) and re-run "
            "the same command to resume"
        ) from None
    except KeyboardInterrupt:
        _abandon(recorder, committer)
        raise
    except (CollectionError, StorageError):  # a storage error is the disk's, not an episode's
        _abandon(recorder, committer)
        raise
    except Exception as e:
        _abandon(recorder, committer)
        raise CollectionError(
            f"episode {episode_id} (seed {env_seed(entropy, episode_id)}) failed: "
            f"{type(e).__name__}: {e}; finished "
            "episodes are committed, re-run the same command to resume"
        ) from e
    finally:
        if watch is not None:
            watch.stop()
        bar.close()
    committer.flush()
    return steps


def _abandon(recorder: EpisodeRecorder, committer: Committer) -> None:
    """Drop the unfinished episode and commit the finished ones."""
    if recorder.in_episode:
        recorder.discard_episode()
    committer.flush()
