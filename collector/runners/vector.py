"""Vector envs on the local runner: ``num_envs`` sub-envs stepped together (sync or async).

The layout-independent tier (DESIGN.md section 5): the vector env runs with
``AutoresetMode.DISABLED``; whenever a sub-env finishes, it takes the next episode id and is
reset alone (``reset_mask``) with that episode's own seed, and each sub-env has its own policy
instance reset with the episode's policy seed. So episode ``i`` is the same whichever sub-env,
vector width or runner produced it, and the fingerprint matches ``runner=local``.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import concatenate, create_empty_array, iterate
from tqdm import tqdm

from collector.errors import CollectionError, UsageError
from collector.seeding import env_seed, policy_seed

if TYPE_CHECKING:
    import gymnasium as gym

    from collector.collect import Committer
    from collector.policies import Policy
    from collector.recorder import EpisodeRecorder

__all__ = ["run_vector", "split_infos"]


def split_infos(infos: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s info dict from a vector env's batched infos (``_key`` masks)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get("_" + key)
        if mask is not None and not mask[i]:
            continue
        out[key] = split_infos(value, i) if isinstance(value, Mapping) else value[i]
    return out


def run_vector(
    make_env: Callable[[], gym.Env],
    make_policy: Callable[[Any], Policy],
    recorders: list[EpisodeRecorder],
    committer: Committer,
    episode_ids: np.ndarray,
    entropy: int,
    mode: str,
    progress: bool | None = None,
) -> int:
    """Run ``episode_ids`` on ``len(recorders)`` sub-envs; returns steps recorded."""
    n = len(recorders)
    if mode == "sync":
        vec: Any = SyncVectorEnv([make_env] * n, autoreset_mode=AutoresetMode.DISABLED)
    elif mode == "async":
        vec = AsyncVectorEnv([make_env] * n, autoreset_mode=AutoresetMode.DISABLED)
    else:
        raise UsageError(f"vectorization_mode={mode!r}: use sync or async here")
    single_obs, single_act = vec.single_observation_space, vec.single_action_space
    spaces_of_one = SimpleNamespace(observation_space=single_obs, action_space=single_act)
    policies = [make_policy(spaces_of_one) for _ in range(n)]  # one per sub-env: own streams
    queue: deque[int] = deque(episode_ids.tolist())
    current: list[int | None] = [None] * n
    actions_buf = create_empty_array(single_act, n)
    steps = 0
    bar = tqdm(
        total=len(episode_ids), unit="ep", disable=None if progress else True, file=sys.stderr
    )
    started = time.perf_counter()

    def assign(mask: np.ndarray) -> tuple[list[int | None], np.ndarray]:
        """Give each masked sub-env its next episode (or none); return the reset seeds."""
        seeds: list[int | None] = [None] * n
        for i in np.flatnonzero(mask).tolist():
            if queue:
                eid = queue.popleft()
                current[i] = eid
                seeds[i] = env_seed(entropy, eid)
                policies[i].reset(policy_seed(entropy, eid))
            else:
                current[i] = None
                seeds[i] = 0  # an idle sub-env: reset so it can be stepped; data discarded
        return seeds, mask

    def begin(
        mask: np.ndarray, seeds: list[int | None], obs: Any, infos: Mapping[str, Any]
    ) -> None:
        for i, o in enumerate(iterate(single_obs, obs)):
            if mask[i] and current[i] is not None:
                recorders[i].begin_episode(current[i], seeds[i], None, o, split_infos(infos, i))

    try:
        seeds, mask = assign(np.ones(n, bool))
        obs, infos = vec.reset(seed=seeds)
        begin(mask, seeds, obs, infos)
        while any(c is not None for c in current):
            per_env_obs = list(iterate(single_obs, obs))
            actions = [
                policies[i].act(per_env_obs[i]) if current[i] is not None else single_act.sample()
                for i in range(n)
            ]
            obs, rewards, terms, truncs, infos = vec.step(
                concatenate(single_act, actions, actions_buf)
            )
            done = np.logical_or(terms, truncs)
            for i, o in enumerate(iterate(single_obs, obs)):
                if current[i] is None:
                    continue
                info = split_infos(infos, i) if infos else {}
                recorders[i].add_step(actions[i], o, rewards[i], terms[i], truncs[i], info)
                if done[i]:
                    steps += recorders[i].episode_steps
                    recorders[i].end_episode()
                    committer.after_episode()
                    bar.update(1)
            if done.any():
                seeds, mask = assign(done)
                # a fresh options dict each time: SyncVectorEnv pops "reset_mask" from it
                obs, infos = vec.reset(seed=seeds, options={"reset_mask": mask})
                begin(mask, seeds, obs, infos)
                if not bar.disable:
                    rate = steps / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix_str(f"{rate:,.0f} steps/s, {n} envs", refresh=False)
    except BaseException as e:
        for rec in recorders:
            rec.discard_episode()
        committer.flush()
        if isinstance(e, (KeyboardInterrupt, CollectionError)) or not isinstance(e, Exception):
            raise
        running = [c for c in current if c is not None]
        raise CollectionError(
            f"vector env failed while running episodes {running}: {type(e).__name__}: {e}; "
            "finished episodes are committed, re-run the same command to resume"
        ) from e
    finally:
        bar.close()
        vec.close()
    committer.flush()
    return steps
