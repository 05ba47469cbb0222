"""The torch adapters: map-style episodes and transitions, iterable batches, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import collect_cartpole

torch = pytest.importorskip("torch")

from curation import load_dataset  # noqa: E402
from curation.torch import BatchIterable, EpisodeDataset, TransitionDataset  # noqa: E402


def cartpole(episodes: int = 40, dataset_id: str = "t/cartpole-v0") -> str:
    return collect_cartpole(dataset_id, episodes, shard_every=10)


def test_episode_dataset_items_are_tensors_matching_the_episodes() -> None:
    ds = load_dataset(cartpole(), block_rows=100)
    eps = EpisodeDataset(ds)
    assert len(eps) == len(ds)
    for i in (0, 7, len(ds) - 1):
        item, ep = eps[i], ds[i]
        assert item["id"] == ep.id
        assert item["observations"].dtype == torch.float32
        assert tuple(item["observations"].shape) == (len(ep) + 1, 4)
        np.testing.assert_array_equal(item["actions"].numpy(), ep.actions)
        np.testing.assert_array_equal(item["rewards"].numpy(), ep.rewards)


def test_transition_dataset_covers_every_step_in_order() -> None:
    ds = load_dataset(cartpole(), block_rows=100)
    tr = TransitionDataset(ds)
    ref = ds.to_transitions()
    assert len(tr) == ds.total_steps == len(ref["rewards"])
    for k in (0, 1, 57, len(tr) - 1, -1):
        item = tr[k]
        np.testing.assert_array_equal(item["observation"].numpy(), ref["observations"][k])
        np.testing.assert_array_equal(item["next_observation"].numpy(), ref["next_observations"][k])
        assert int(item["action"]) == ref["actions"][k]
        assert bool(item["terminated"]) == ref["terminals"][k]
        assert bool(item["truncated"]) == ref["timeouts"][k]
    with pytest.raises(IndexError, match="out of range"):
        tr[len(tr)]


def test_transition_dataset_in_a_shuffled_dataloader_with_worker_processes() -> None:
    ds = load_dataset(cartpole())
    loader = torch.utils.data.DataLoader(
        TransitionDataset(ds), batch_size=64, shuffle=True, num_workers=2,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    total_reward = sum(float(batch["reward"].sum()) for batch in loader)
    assert total_reward == pytest.approx(ds.to_transitions()["rewards"].sum())


def test_batch_iterable_yields_tensor_batches_and_is_seeded() -> None:
    ds = load_dataset(cartpole(), block_rows=200)
    first = list(
        torch.utils.data.DataLoader(BatchIterable(ds, 32, seq_len=2, seed=5), batch_size=None)
    )
    again = list(
        torch.utils.data.DataLoader(BatchIterable(ds, 32, seq_len=2, seed=5), batch_size=None)
    )
    assert first and len(first) == len(again)
    for a, b in zip(first, again, strict=True):
        assert tuple(a["observations"].shape) == (32, 2, 4)
        assert a["mask"].dtype == torch.bool
        torch.testing.assert_close(a["observations"], b["observations"])
