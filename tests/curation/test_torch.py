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
        np.testing.assert_array_equal(item["observations"].numpy(), ref["observations"][k])
        np.testing.assert_array_equal(
            item["next_observations"].numpy(), ref["next_observations"][k]
        )
        assert int(item["actions"]) == ref["actions"][k]
        assert bool(item["terminations"]) == ref["terminals"][k]
        assert bool(item["truncations"]) == ref["timeouts"][k]
    with pytest.raises(IndexError, match="out of range"):
        tr[len(tr)]


def test_transition_dataset_in_a_shuffled_dataloader_with_worker_processes() -> None:
    ds = load_dataset(cartpole())
    loader = torch.utils.data.DataLoader(
        TransitionDataset(ds), batch_size=64, shuffle=True, num_workers=2,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    total_reward = sum(float(batch["rewards"].sum()) for batch in loader)
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


def _blocks_and_steps(loader: object) -> tuple[list[int], set[tuple[int, int]]]:
    """Each batch's block (all its rows come from one when preload_buffer_size=1) and steps."""
    blocks, steps = [], set()
    for batch in loader:
        ids = batch["episode_id"].reshape(-1).tolist()
        ts = batch["step"].reshape(-1).tolist()
        blocks.append(min(ids) // 10)  # cartpole(): shards of 10 episodes, one block each
        assert max(ids) // 10 == blocks[-1]
        steps.update(zip(ids, ts, strict=True))
    return sorted(blocks), steps


def test_batch_iterable_shards_its_stream_across_dataloader_workers() -> None:
    """Issue 16 item 14: two workers yielded every batch twice (820 instead of 410)."""
    ds = load_dataset(cartpole(), block_rows=10_000)
    make = lambda: BatchIterable(ds, 64, seed=3, preload_buffer_size=1, include_metadata=True)  # noqa: E731
    alone = torch.utils.data.DataLoader(make(), batch_size=None, num_workers=0)
    pair = torch.utils.data.DataLoader(make(), batch_size=None, num_workers=2)
    blocks0, steps0 = _blocks_and_steps(alone)
    blocks2, steps2 = _blocks_and_steps(pair)
    # the same number of batches, drawn from each block as often as one process draws from it
    assert len(blocks2) == len(blocks0) == sum(-(-n // 64) for n in _block_steps(ds))
    assert blocks2 == blocks0
    # every drawn transition is a real one, and the two workers' draws cover the same blocks
    real = {(int(ep.id), t) for ep in ds for t in range(len(ep))}
    assert steps2 <= real and steps0 <= real
    assert {i // 10 for i, _ in steps2} == {i // 10 for i, _ in steps0} == set(range(4))


def _block_steps(ds: object) -> list[int]:
    return [sum(len(ds[i]) for i in range(b * 10, b * 10 + 10)) for b in range(4)]


def test_torch_adapters_use_one_set_of_key_names() -> None:
    ds = load_dataset(cartpole(10, "t/keys-v0"))
    plural = {"observations", "actions", "rewards", "terminations", "truncations"}
    assert plural <= set(EpisodeDataset(ds)[0])
    assert plural | {"next_observations"} <= set(TransitionDataset(ds)[0])
    batch = next(iter(BatchIterable(ds, 8)))
    assert plural | {"next_observations", "mask"} <= set(batch)


def test_old_key_names_still_read_with_a_deprecation_warning() -> None:
    ds = load_dataset(cartpole(10, "t/old-keys-v0"))
    loader = torch.utils.data.DataLoader(TransitionDataset(ds), batch_size=16)
    batch = next(iter(loader))  # the default collate keeps the item's type, so its aliases
    with pytest.warns(DeprecationWarning, match="'reward' is deprecated; use 'rewards'"):
        torch.testing.assert_close(batch["reward"], batch["rewards"])
    first = next(iter(BatchIterable(ds, 8)))
    with pytest.warns(DeprecationWarning, match="'terminated' is deprecated"):
        torch.testing.assert_close(first["terminated"], first["terminations"])
    with pytest.raises(KeyError):
        batch["nonsense"]
