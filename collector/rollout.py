"""One episode, the same way in every runner: seeds from the episode id, recorded as it goes.

Runners (local, Ray actors) only decide *which* ids run *where*; what an episode contains is
decided here, from the root entropy and the id alone (DESIGN.md section 5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from collector.errors import CollectionError
from collector.seeding import env_seed, policy_seed

if TYPE_CHECKING:
    import gymnasium as gym

    from collector.policies import Policy
    from collector.recorder import EpisodeRecorder
    from collector.storage import EpisodeBatch

__all__ = ["rollout_episodes", "run_episode"]


def run_episode(
    env: gym.Env, policy: Policy, recorder: EpisodeRecorder, episode_id: int, entropy: int
) -> int:
    """Record episode ``episode_id`` into ``recorder``; returns its number of steps."""
    seed = env_seed(entropy, episode_id)
    policy.reset(policy_seed(entropy, episode_id))
    obs, info = env.reset(seed=seed)
    recorder.begin_episode(episode_id, seed, None, obs, info)

    def failed(action: Any, error: Exception) -> None:  # the action is checked only then
        _check_action(env, action, episode_id, recorder.episode_steps, error)

    recorder.record_steps(policy.act, env.step, obs, failed)
    steps = recorder.episode_steps
    recorder.end_episode()
    return steps


def _check_action(env: gym.Env, action: Any, episode_id: int, step: int, error: Exception) -> None:
    """Name a policy's action outside the action space (envs say ``AssertionError: 5 invalid``).

    Raises:
        CollectionError: ``action`` is not in ``env.action_space``.
    """
    space = env.action_space
    try:
        valid = bool(space.contains(action))
    except Exception:  # a value the space cannot even compare
        valid = False
    if valid:
        return
    text, why = repr(action), " ".join(str(error).split())
    text = text if len(text) <= 80 else text[:77] + "..."
    why = why if len(why) <= 120 else why[:117] + "..."
    raise CollectionError(
        f"episode {episode_id} step {step}: the policy's action {text} is not in the action "
        f"space {space} (the env raised {type(error).__name__}: {why}); fix the policy or its "
        "policy.* arguments"
    ) from error


def rollout_episodes(
    make_env: Callable[[], gym.Env],
    env: gym.Env,
    policy: Policy,
    recorder: EpisodeRecorder,
    episode_ids: Sequence[int],
    entropy: int,
    retries: int = 2,
) -> tuple[EpisodeBatch | None, int, gym.Env]:
    """Record ``episode_ids`` and hand them over as one batch (a Ray worker's unit of work).

    An episode whose env or policy raises is retried on a fresh env up to ``retries`` times;
    then the batch fails with ``CollectionError`` naming the episode and its seed. Returns the
    batch, its steps and the env in use (replaced after a failure).
    """
    steps = 0
    for episode_id in episode_ids:
        for attempt in range(retries + 1):
            try:
                steps += run_episode(env, policy, recorder, int(episode_id), entropy)
                break
            except CollectionError:  # a value refused by the recorder: it would be again
                recorder.discard_episode()
                raise
            except Exception as e:
                recorder.discard_episode()
                if isinstance(e, CollectionError):  # the policy's fault: a retry fails the same
                    raise
                try:
                    env.close()
                except Exception:  # a broken env may fail to close too
                    pass
                env = make_env()
                if attempt == retries:
                    raise CollectionError(
                        f"episode {episode_id} (seed {env_seed(entropy, int(episode_id))}) "
                        f"failed {retries + 1} times: {type(e).__name__}: {e}"
                    ) from e
    return recorder.take(), steps, env
