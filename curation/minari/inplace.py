"""Open a Minari dataset read-only, in place, as an ordinary ``Dataset`` (no import).

Opening reads every episode's metadata, rewards and last flags (no observations) to build
the episode index; blocks of whole episodes are then decoded on demand, as harvest shards
are. Slower than an imported dataset (Minari's layout is one HDF5 group or one Arrow file
per episode), but nothing is written: try harvest on data you already have, then
``from_minari`` it for speed, a fingerprint, and the operations that write
(``combine``, ``save``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from collector import storage
from curation.dataset import Dataset
from curation.minari import layout
from curation.minari.importer import import_metadata
from curation.minari.source import RESERVED, MinariSource
from curation.snapshot import DEFAULT_BLOCK_ROWS, DEFAULT_MAX_MEMORY, Snapshot

__all__ = ["open_minari"]


class MinariSnapshot(Snapshot):
    """A Minari dataset as a ``Dataset`` snapshot: the same index, blocks read from Minari."""

    native = False

    def __init__(self, data_dir: Path, dataset_id: str | None, block_rows: int) -> None:
        self._args = (data_dir, dataset_id)
        self._source: MinariSource | None = None
        src = self._open()
        minari_ids = np.asarray(src.episode_ids, np.int64)
        n = len(minari_ids)
        cols = {
            "length": np.zeros(n, np.int64),
            "returns": np.zeros(n, np.float64),
            "terminated": np.zeros(n, bool),
            "truncated": np.zeros(n, bool),
            "seed": np.zeros(n, np.uint64),
            "has_seed": np.zeros(n, bool),
        }
        options, extras = [], []
        for i, minari_id in enumerate(minari_ids.tolist()):
            meta, rewards, cols["terminated"][i], cols["truncated"][i] = src.episode_summary(
                minari_id
            )
            cols["length"][i], cols["returns"][i] = len(rewards), rewards.sum()
            seed = meta.get("seed")
            if isinstance(seed, int) and seed >= 0:
                cols["seed"][i], cols["has_seed"][i] = seed, True
            options.append(_json(meta.get("options")))
            extras.append(_json({k: v for k, v in meta.items() if k not in RESERVED} or None))
        self._texts = (np.asarray(options, object), np.asarray(extras, object))
        length = cols["length"]
        ids = np.arange(n, dtype=np.int64)  # numbered 0..N-1, as an import numbers them
        step_offset = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)[:n]
        cols.update(
            ids=ids,
            stored_id=minari_ids,
            shard=np.zeros(n, np.int32),
            step_offset=step_offset,
            obs_offset=step_offset + ids,  # T+1 observation rows per episode
        )
        first = src.read_episode(int(minari_ids[0])) if n else None
        schema = first.info_schema() if first is not None else None
        resolved_id = src.dataset_id or data_dir.parent.name
        meta = import_metadata(src)
        meta.update(
            dataset_id=resolved_id,
            record_infos=bool(schema),
            total_episodes=n,
            total_steps=int(length.sum()),
            fingerprint=None,  # a content hash would mean reading everything: import for one
        )
        super().__init__(
            data_dir.parent,
            resolved_id,
            meta,
            observation_space=src.observation_space,
            action_space=src.action_space,
            files=[data_dir],
            info_schema={
                k: (np.dtype(v["dtype"]), tuple(v["shape"])) for k, v in (schema or {}).items()
            },
            columns=cols,
            block_rows=block_rows,
        )

    def _open(self) -> MinariSource:
        if self._source is None:
            self._source = MinariSource(*self._args)
        return self._source

    def reopen(self, block_rows: int) -> MinariSnapshot:
        """The Minari dataset as it is now on disk."""
        return MinariSnapshot(*self._args, block_rows)

    def read_block(self, block: int, reader: storage.ShardReader) -> storage.ShardRows:
        """Decode one block's episodes from Minari's files."""
        src = self._open()
        batch = storage.concat_batches(
            [
                src.read_episode(int(self.stored_id[p]), int(self.ids[p]))
                for p in np.flatnonzero(self.block == block).tolist()
            ]
        )
        return storage.ShardRows(
            observations=batch.observations,
            actions=batch.actions,
            rewards=batch.rewards,
            terminations=batch.terminations,
            truncations=batch.truncations,
            infos=batch.infos,
            info_masks=batch.info_masks,
        )

    def read_texts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-episode options and metadata JSON, read with the index at open."""
        return self._texts

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_source"] = None  # an open HDF5 file is per process
        return state


def _json(value: Any) -> bytes | None:
    return None if value is None else json.dumps(value, sort_keys=True).encode()


def open_minari(
    path_or_id: str | os.PathLike[str],
    minari_root: str | os.PathLike[str] | None = None,
    *,
    cache_mb: float | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Dataset:
    """Open a Minari dataset (folder, or id under ``minari_root``) read-only, without importing.

    Every reading API works (iterate, sample, filter, ``batch_iter`` in-process); operations
    that write a new dataset from it need ``from_minari`` first. It has no fingerprint.

    Raises:
        DatasetNotFoundError: no Minari dataset there.
        CorruptDatasetError: the Minari files are unreadable or inconsistent.
    """
    data_dir, known_id = layout.find_dataset(path_or_id, minari_root)
    snap = MinariSnapshot(data_dir, known_id, int(block_rows))
    cache = None if cache_mb is None else int(cache_mb * 2**20)
    return Dataset(snap, cache_bytes=cache, block_rows=int(block_rows), max_memory=max_memory)
