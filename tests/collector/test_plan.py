"""Episode ids are planned lazily (issue 16, item 16).

``episodes=10**12`` used to allocate 7 TiB (``np.arange``) after committing an empty dataset,
and ``10**9`` 7.45 GiB before the first step. A run of any size now starts at once, on every
runner, and holds memory for the committed ids only.
"""

from __future__ import annotations

import re
import tracemalloc
from typing import Any

import numpy as np
import pytest
from helpers import read_episodes
from misbehaving_envs import ENV_ID

from collector import storage
from collector.collect import collect
from collector.errors import CollectionError, UsageError
from collector.plan import EpisodePlan, IdQueue

HUGE = 10**12


def test_a_plan_holds_the_committed_ids_only() -> None:
    committed = np.array([0, 1, 5, 6, 7, 12, 10**9 - 1], np.int64)
    tracemalloc.start()
    try:
        plan = EpisodePlan(10**9, committed)
        first = [next(iter(plan)) for _ in range(2)]
        ids = []
        for i in plan:
            ids.append(i)
            if len(ids) == 8:
                break
        queue = IdQueue(plan)
        popped = [queue.popleft() for _ in range(3)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # the ids themselves would take 7.45 GiB
    assert len(plan) == 10**9 - len(committed)
    assert first == [2, 2]
    assert ids == [2, 3, 4, 8, 9, 10, 11, 13]
    assert popped == [2, 3, 4] and len(queue) == len(plan) - 3
    queue.extendleft(reversed(popped))  # a requeue (e.g. a dead Ray actor's batch)
    assert [queue.popleft() for _ in range(5)] == [2, 3, 4, 8, 9]


def test_plan_segments_and_masks() -> None:
    plan = EpisodePlan(25, np.arange(0, 12))  # segments of 5: 0 and 1 done, 2 partly
    assert list(plan.segments(5)) == [2, 3, 4]
    assert plan.wanted(10, 15).tolist() == [False, False, True, True, True]
    assert next(EpisodePlan(HUGE, np.zeros(0, np.int64)).segments(64)) == 0
    seg = EpisodePlan(HUGE, np.arange(130)).segments(64)
    assert [next(seg), next(seg)] == [2, 3]


def run(dataset_id: str, **overrides: Any) -> Any:
    cfg: dict[str, Any] = {
        "env": f"misbehaving_envs:{ENV_ID}",
        "env_kwargs": {"kind": "short", "bad_episode": 2},
        "episodes": HUGE,
        "seed": 0,
        "dataset_id": dataset_id,
        "policy": {"_target_": "collector.policies.RandomPolicy"},
        "checkpoint": {"every_episodes": 1},
        **overrides,
    }
    return collect(cfg)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "num_envs": 2,
            "vectorization_mode": "sync",
            "env_kwargs": {"kind": "short", "bad_episode": 1},
        },
        {
            "num_envs": 2,
            "vectorization_mode": "vector_entry_point",
            "env_kwargs": {"kind": "short", "bad_episode": 1},
        },
    ],
    ids=["local", "sync", "vector_entry_point"],
)
def test_a_trillion_episodes_start_at_once(overrides: dict[str, Any]) -> None:
    # the env misbehaves in episode 2: the run stops there, with 0 and 1 committed
    with pytest.raises(CollectionError, match=re.escape("episode 2 step 3: ")):
        run("plan/huge-v0", **overrides)
    assert [ep["id"] for ep in read_episodes("plan/huge-v0")] == [0, 1]


@pytest.mark.parametrize("episodes", [2**63, 10**30])
def test_an_absurd_count_is_refused_before_anything_is_written(
    episodes: int, datasets_root: Any
) -> None:
    with pytest.raises(UsageError, match="episodes="):
        run("plan/absurd-v0", episodes=episodes)
    assert not storage.dataset_path("plan/absurd-v0").exists()
