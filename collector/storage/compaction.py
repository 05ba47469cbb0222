"""Which shards to merge after an append: tiered compaction (issue 18 item 1).

``DataCollector.add_to_dataset`` writes one small shard per call. Merging every shard into
one at each call would re-write the whole dataset each time (O(N) per call); never merging
leaves one shard per call, and a full read then opens a thousand files. Tiered compaction
(Lucene's log-merge policy, LSM trees' size-tiered compaction) sits between: shards are
grouped into tiers by size, each tier ``MERGE_FACTOR`` times the one below, and when a tier
holds ``MERGE_FACTOR`` shards they are merged into one. Above tier 0 a byte is re-written
once per tier it climbs; tier 0 gathers tiny appends, re-writing at most
``TIER_FLOOR_BYTES * MERGE_FACTOR`` every ``MERGE_FACTOR - 1`` calls (a constant per call).
So N appends re-write O(N log N) bytes in all, and the shard count stays O(log N): at most
``MERGE_FACTOR - 1`` per tier. Only small shards (under
``target / SMALL_SHARD_FRACTION``) take part, so one call merges at most a few times
``MERGE_FACTOR`` small shards' worth, whatever the dataset's size, and a dataset of big
shards is never re-written.

The merge runs in line, after the append is committed, not in a background thread: most of
a small merge's time is per-file Python and h5py object work that holds the GIL (h5py lets
it go only inside H5Dread/H5Dwrite, and serializes HDF5 calls behind its own lock), so a
merging thread would mostly take turns with the caller's env stepping rather than overlap
it; it would also hold the writer lock past the call (another writer would be refused), and
its errors would surface on some later call.

What the merge costs is kept small instead: the shards an ``add_to_dataset`` merges were
mostly written by this process moments before, so their decoded batches are kept
(``RecentBatches``, bounded) and the merge is built in memory and written as one image
(``write_merged``): nothing is read back (re-reading each small shard was about half of a
merge's time).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from collector.storage import durable, hdf5
from collector.storage.batch import EpisodeBatch, concat_batches

__all__ = [
    "APPEND_SHARD_BYTES",
    "KEEP_BATCH_BYTES",
    "MEMORY_MERGE_BYTES",
    "MERGE_FACTOR",
    "RECENT",
    "RecentBatches",
    "TIER_FLOOR_BYTES",
    "by_size",
    "first_id",
    "forget_recent_batches",
    "next_merge",
    "shard_tier",
    "write_merged",
]

#: The shard size appends compact toward: ``storage.shard_mb``'s default (256 MB).
APPEND_SHARD_BYTES: Final = 256 << 20
#: Shards of one tier merged at once; also the size ratio between tiers.
MERGE_FACTOR: Final = 4
#: Shards under ``TIER_FLOOR_BYTES * MERGE_FACTOR`` bytes are all tier 0: tiny appends (a few
#: kB of CartPole each) are gathered there into one shard of up to that size, so the shard
#: count does not grow with how small each call is (each shard has a fixed cost on open and
#: on its first read, whatever its size).
TIER_FLOOR_BYTES: Final = 1 << 16


def shard_tier(nbytes: int, floor: int = TIER_FLOOR_BYTES, factor: int = MERGE_FACTOR) -> int:
    """The tier of a shard of ``nbytes``: 0 under ``floor * factor``, +1 per ``factor``."""
    tier, bound = 0, floor * factor
    while nbytes >= bound:
        tier, bound = tier + 1, bound * factor
    return tier


def next_merge(
    shards: Sequence[dict[str, Any]],
    small_bytes: int,
    *,
    linked: bool = False,
    factor: int = MERGE_FACTOR,
    floor: int = TIER_FLOOR_BYTES,
) -> list[dict[str, Any]]:
    """The manifest entries to merge next into one shard, in id order; empty when none.

    Only shards under ``small_bytes`` take part (above it a shard's own cost is a few percent
    of reading it). Shards linked from another dataset (``id_map``) are left shared unless
    ``linked``. The lowest tier holding ``factor`` shards is merged whole: a dataset from
    before this policy, with one tiny shard per call, is gathered in one go.
    """
    tiers: dict[int, list[dict[str, Any]]] = {}
    for e in shards:
        if e["bytes"] < small_bytes and (linked or "id_map" not in e):
            tiers.setdefault(shard_tier(int(e["bytes"]), floor, factor), []).append(e)
    for t in sorted(tiers):
        if len(tiers[t]) >= factor:
            return sorted(tiers[t], key=first_id)
    return []


def by_size(shards: list[dict[str, Any]], target_bytes: int) -> list[list[dict[str, Any]]]:
    """``shards`` (in id order) cut into runs of about ``target_bytes``; runs of one dropped."""
    groups: list[list[dict[str, Any]]] = [[]]
    size = 0
    for e in shards:
        if groups[-1] and size + e["bytes"] > target_bytes:
            groups.append([])
            size = 0
        groups[-1].append(e)
        size += e["bytes"]
    return [g for g in groups if len(g) > 1]


def first_id(entry: dict[str, Any]) -> int:
    """The smallest episode id of a manifest entry (-1 when it lists none)."""
    ranges = entry.get("id_ranges") or [[-1]]
    return int(ranges[0][0])


#: Largest batch ``RECENT`` keeps: the small-shard limit of appends (``APPEND_SHARD_BYTES /
#: writer.SMALL_SHARD_FRACTION``); a larger shard is never merged again.
KEEP_BATCH_BYTES: Final = 4 << 20
#: A merge of at most this many decoded bytes is built in memory (``write_merged``).
MEMORY_MERGE_BYTES: Final = 16 << 20


class RecentBatches:
    """Decoded batches of small shards this process wrote, by the sha256 of the shard file.

    ``add_to_dataset`` every few episodes merges shards it wrote moments before; re-reading
    each one (open, check its layout and table, decode, digest again) was about half of a
    merge's time (issue 18). A batch is kept only by the code that built the file from it,
    so a hit is exactly the file's content: the sha256 names those bytes, in whichever
    dataset lists them. Bounded: ``max_bytes`` in all, least recently kept dropped first.
    """

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: dict[str, tuple[EpisodeBatch, int]] = {}
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes of the batches kept (step data and episode tables)."""
        with self._lock:
            return sum(n for _, n in self._items.values())

    def put(self, sha256: str, batch: EpisodeBatch) -> bool:
        """Keep ``batch`` as the content of the shard file ``sha256``; False if too large.

        A column that is a view (a recorder hands out rows of its buffers) is copied: the
        buffer may be reused for later rows, and a view would keep all of it alive.
        """
        size = batch_bytes(batch)
        if size > min(self.max_bytes, KEEP_BATCH_BYTES):
            return False
        kept = _owned(batch)
        with self._lock:
            self._items.pop(sha256, None)
            self._items[sha256] = (kept, size)
            while sum(n for _, n in self._items.values()) > self.max_bytes:
                self._items.pop(next(iter(self._items)))
        return True

    def get(self, sha256: str) -> EpisodeBatch | None:
        """The batch kept for shard file ``sha256``, or None."""
        with self._lock:
            hit = self._items.get(sha256)
        return None if hit is None else hit[0]

    def discard(self, shas: Iterable[str]) -> None:
        """Forget the batches of ``shas`` (e.g. shards merged away)."""
        with self._lock:
            for sha in shas:
                self._items.pop(sha, None)

    def clear(self) -> None:
        """Forget every batch."""
        with self._lock:
            self._items.clear()


#: This process's ``RecentBatches``.
RECENT: Final = RecentBatches()


def forget_recent_batches() -> None:
    """Empty ``RECENT`` (tests: act as a process that wrote none of a dataset's shards)."""
    RECENT.clear()


def _owned(batch: EpisodeBatch) -> EpisodeBatch:
    """``batch`` with every array that is a view of another copied (the rest shared)."""

    def own(a: Any) -> Any:
        return a.copy() if isinstance(a, np.ndarray) and a.base is not None else a

    def cols(d: dict[str, Any] | None) -> Any:
        return None if d is None else {k: own(v) for k, v in d.items()}

    return EpisodeBatch(
        observations=cols(batch.observations),
        actions=cols(batch.actions),
        rewards=own(batch.rewards),
        terminations=own(batch.terminations),
        truncations=own(batch.truncations),
        table=cols(batch.table),
        infos=cols(batch.infos),
        info_masks=cols(batch.info_masks),
    )


def batch_bytes(batch: EpisodeBatch) -> int:
    """Bytes ``batch`` holds: its columns and the arrays of its episode table."""
    table = sum(v.nbytes for v in batch.table.values() if isinstance(v, np.ndarray))
    return batch.nbytes + table


def write_merged(
    data_dir: Path,
    group: Sequence[dict[str, Any]],
    decoded: int,
    dest: Path,
    compression: str | None,
) -> tuple[dict[str, Any], Any, EpisodeBatch | None]:
    """Write the episodes of ``group`` (manifest entries, in id order) as one shard at ``dest``.

    When this process wrote some of the sources (``RECENT``) and the group is under
    ``MEMORY_MERGE_BYTES`` decoded (``decoded``: the group's sum), the merged batch is built in
    memory, each other source read and checked against its digests, and written as one file
    image (``hdf5.build_shard_bytes``). Otherwise (e.g. the repack ending a ``collect`` run,
    whose shards were built elsewhere) the group streams through ``hdf5.merge_shards``, one
    source in memory at a time. Either way each source keeps only the episodes its entry
    maps, under dataset ids.

    Returns:
        ``(episode table, info schema, the merged batch or None when streamed)``.

    Raises:
        CorruptDatasetError: a source read from disk does not match its own digests.
    """
    kept = [RECENT.get(str(e["sha256"])) for e in group]
    if decoded > MEMORY_MERGE_BYTES or all(b is None for b in kept):
        paths = [data_dir / e["file"] for e in group]
        table, schema = hdf5.merge_shards(paths, dest, compression, entries=group)
        return table, schema, None
    parts = []
    for entry, batch in zip(group, kept, strict=True):
        if batch is None:
            batch = hdf5.read_checked_shard(data_dir / entry["file"])
        parts.append(hdf5.dataset_episodes(batch, entry))
    merged = concat_batches(parts)
    durable.write_new_file(dest, hdf5.build_shard_bytes(merged, compression))
    return merged.table, merged.info_schema(), merged
