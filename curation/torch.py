"""``torch.utils.data`` adapters (extra ``torch``: ``pip install "harvest[torch]"``).

- ``EpisodeDataset``: map-style, one episode per item (a dict of tensors).
- ``TransitionDataset``: map-style, one transition per item, for ``DataLoader(shuffle=True)``.
- ``BatchIterable``: iterable, ready batches from ``batch_iter`` (use ``batch_size=None``).

All of them re-open HDF5 handles per process, so ``DataLoader(num_workers>0)`` works, and
read within the dataset's ``max_memory`` (``load_dataset``), per process, whatever the frame
size. Text leaves stay ``str`` (tensors cannot hold them).

Keys are the plural names of ``EpisodeData`` and ``to_transitions``: ``observations``,
``actions``, ``rewards``, ``next_observations``, ``terminations``, ``truncations``. The
names used before (``observation``, ``action``, ``reward``, ``next_observation``,
``terminated``, ``truncated``) still read, with a ``DeprecationWarning``, for one release.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from collector.errors import MissingExtraError
from curation.dataset import Dataset

try:
    import torch
    from torch.utils.data import Dataset as _TorchDataset
    from torch.utils.data import IterableDataset as _TorchIterable
    from torch.utils.data import get_worker_info
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError('curation.torch needs PyTorch: pip install "harvest[torch]"') from e

__all__ = ["BatchIterable", "EpisodeDataset", "TransitionDataset", "to_tensors"]


# TODO(#16): drop these aliases in the release after the one that renamed the keys
_OLD_KEYS = {
    "observation": "observations",
    "action": "actions",
    "reward": "rewards",
    "next_observation": "next_observations",
    "terminated": "terminations",
    "truncated": "truncations",
}


class _Item(dict):
    """A batch or item dict that still answers the old key names, with a warning."""

    def __missing__(self, key: str) -> Any:
        new = _OLD_KEYS.get(key)
        if new is None or new not in self:
            raise KeyError(key)
        warnings.warn(
            f"key {key!r} is deprecated; use {new!r} (curation.torch keys are plural now)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self[new]


def to_tensors(value: Any) -> Any:
    """Nested numpy values to tensors (dicts, tuples and lists of str kept as they are)."""
    if isinstance(value, dict):
        return {k: to_tensors(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_tensors(v) for v in value)
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        # torch cannot share read-only memory (e.g. batch_iter's shared all-valid mask)
        return torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if isinstance(value, np.generic):
        return torch.as_tensor(value.item())
    return value


class EpisodeDataset(_TorchDataset):
    """One episode per item, as a dict of tensors.

    Keys: ``id``, ``observations``, ``actions``, ``rewards``, ``terminations``, ``truncations``.
    Episodes differ in length: use ``batch_size=None`` or your own ``collate_fn``.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ep = self.dataset[index]
        return _Item(
            id=ep.id,
            observations=to_tensors(ep.observations),
            actions=to_tensors(ep.actions),
            rewards=to_tensors(ep.rewards),
            terminations=to_tensors(ep.terminations),
            truncations=to_tensors(ep.truncations),
        )


class TransitionDataset(_TorchDataset):
    """One transition per item, over every step of the dataset or view.

    Items are ``{"observations", "actions", "rewards", "next_observations", "terminations",
    "truncations"}`` (one step each); the default collate stacks them into batches. Reads go
    through the dataset's block cache, so a shuffled ``DataLoader`` is fast once blocks are
    cached.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        lengths = dataset.snapshot.length[dataset.positions]
        self._ends = np.cumsum(lengths)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"transition {index} out of range for {n}")
        index %= n
        i = int(np.searchsorted(self._ends, index, side="right"))
        t = index - (int(self._ends[i - 1]) if i else 0)
        step = self.dataset.transition(i, t)
        return _Item({_OLD_KEYS[k]: to_tensors(v) for k, v in step.items()})


class BatchIterable(_TorchIterable):
    """Batches from ``Pipeline.batch_iter`` as tensors; use ``DataLoader(..., batch_size=None)``.

    The DataLoader's workers share one stream: each takes every k-th block of the seeded block
    order (``batch_iter(shard=...)``) with its own draws and an in-process reader, so the union
    of their batches is one stream's epoch, whatever ``num_workers`` (not k copies of it).
    ``include_metadata`` adds ``episode_id`` and ``step`` (``[batch, seq_len]`` tensors);
    ``frame_stack=k`` gives each step its last ``k`` observations (``batch_iter``).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seq_len: int = 1,
        num_epochs: int = 1,
        seed: int = 0,
        preload_buffer_size: int = 2,
        include_metadata: bool = False,
        frame_stack: int = 1,
    ) -> None:
        self.dataset = dataset
        self.kwargs = {
            "batch_size": batch_size,
            "seq_len": seq_len,
            "num_epochs": num_epochs,
            "preload_buffer_size": preload_buffer_size,
            "include_metadata": include_metadata,
            "frame_stack": frame_stack,
        }
        self.seed = seed

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        shard = None if info is None else (info.id, info.num_workers)
        pipe = self.dataset.pipeline(num_workers=0)
        for batch in pipe.batch_iter(seed=self.seed, shard=shard, **self.kwargs):
            obs, act, rew, nxt, _ = batch
            item = _Item(
                observations=to_tensors(obs),
                actions=to_tensors(act),
                rewards=to_tensors(rew),
                next_observations=to_tensors(nxt),
                terminations=to_tensors(batch.terminated),
                truncations=to_tensors(batch.truncated),
                mask=to_tensors(batch.mask),
            )
            if batch.metadata is not None:
                item["episode_id"] = to_tensors(batch.metadata["episode_id"])
                item["step"] = to_tensors(batch.metadata["step"])
            yield item
