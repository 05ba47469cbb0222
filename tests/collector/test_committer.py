"""The one committer: shard images built elsewhere (a Ray worker) commit at the same cadence."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector import storage
from collector.collect import collect
from collector.committer import Committer


def config(dataset_id: str, episodes: int) -> dict:
    return {
        "env": "CartPole-v1",
        "episodes": episodes,
        "seed": 0,
        "dataset_id": dataset_id,
        "progress": False,
        "checkpoint": {"every_seconds": None, "every_mb": None, "every_episodes": None},
    }


def test_worker_images_commit_at_the_cadence_and_match_a_local_run(datasets_root: Path) -> None:
    pytest.importorskip("ray")
    from collector.runners.ray import RolloutWorker

    reference = collect(config("ref/x-v0", 6))
    collect(config("img/x-v0", 1))  # the generation: provenance and seed entropy
    worker = RolloutWorker(config("img/x-v0", 6), 0, "lzf")
    with storage.DatasetWriter("img/x-v0") as writer:
        committer = Committer(
            writer, [], every_episodes=2, every_seconds=None, every_mb=None, compression="lzf",
            background=False,
        )  # fmt: skip
        try:
            for ids in ([1], [2], [3, 4], [5]):
                image, table, schema, _, _ = worker.run(ids)
                committer.add_image(image, table, schema)
            committed = storage.read_metadata(writer.path)["total_episodes"]
            committer.flush()
        finally:
            committer.close()
    assert committed == 5  # 1 + commits after ids 1-2 and 3-4; id 5 waits for the flush
    assert committer.commits == 3 and committer.episodes == 5
    meta = storage.read_metadata(storage.dataset_path("img/x-v0"))
    assert meta["total_episodes"] == 6
    assert meta["fingerprint"] == reference.fingerprint


def test_a_runner_failure_drops_unfinished_episodes_after_reword_and_keeps_its_chaining() -> None:
    from collector.committer import commit_finished_on_error
    from collector.errors import CollectionError

    calls: list[str] = []

    def reword(e: BaseException) -> None:
        calls.append(f"reword {e}")  # before the unfinished episodes are dropped
        if isinstance(e, ValueError):
            raise CollectionError("worded") from None

    def discard() -> None:
        calls.append("discard")

    with pytest.raises(CollectionError, match="^worded$") as worded:
        with commit_finished_on_error(None, discard, reword):
            raise ValueError("boom")
    assert worded.value.__cause__ is None and worded.value.__suppress_context__
    with pytest.raises(KeyError) as kept:
        with commit_finished_on_error(None, discard, reword):
            raise KeyError("as is")
    assert calls == ["reword boom", "discard", "reword 'as is'", "discard"]
    assert kept.value.args == ("as is",)
