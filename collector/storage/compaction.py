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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

__all__ = [
    "APPEND_SHARD_BYTES",
    "MERGE_FACTOR",
    "TIER_FLOOR_BYTES",
    "first_id",
    "next_merge",
    "shard_tier",
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


def first_id(entry: dict[str, Any]) -> int:
    """The smallest episode id of a manifest entry (-1 when it lists none)."""
    ranges = entry.get("id_ranges") or [[-1]]
    return int(ranges[0][0])
