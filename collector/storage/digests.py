"""Episode digests and the dataset fingerprint (DESIGN.md section 4).

The bytes hashed here are the format: changing them changes every existing fingerprint.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from collector.storage.batch import EpisodeBatch, row_ranges

__all__ = [
    "episode_digests",
    "fill_digests",
    "fingerprint",
    "is_increasing",
]


def episode_digests(batch: EpisodeBatch) -> np.ndarray:
    """Per-episode sha256 over the episode's data, seed and options, but not its id.

    Shard boundaries, compression and ids do not enter, so the dataset fingerprint depends on
    the data alone. Info columns enter only where present (mask True) and as canonical
    numbers, so an episode's digest does not depend on which other episodes share its shard
    (their keys, or a dtype widened for them). Returns an ``(n, 32)`` uint8 array.

    Episode ``e``'s message is its head (``_episode_heads``: seed and options), then per
    observation column (sorted by name) ``name|dtype|shape`` and its ``T + 1`` rows' bytes,
    the same per action column (sorted) and for rewards, terminations and truncations with
    ``T`` rows, then ``infos:yes|no`` and the info parts (``_info_tails``). The messages of a
    block of episodes, less their info parts, are laid out back to back in one buffer by a
    few numpy scatters per column, then hashed with one ``sha256`` each: a Python loop over
    episodes and columns costs several times the hashing itself. Each episode's info parts
    are built and hashed on after it, one episode at a time, so infos add no more than one
    episode's worth to the working set.
    """
    columns = [
        (group, f"{name}|{arr.dtype.str}|{arr.shape[1:]}".encode(), _row_bytes(arr))
        for group, cols in (
            ("obs", sorted(batch.observations.items())),
            (
                "step",
                [
                    *sorted(batch.actions.items()),
                    ("rewards", batch.rewards),
                    ("terminations", batch.terminations),
                    ("truncations", batch.truncations),
                ],
            ),
        )
        for name, arr in cols
    ]
    n = batch.num_episodes
    out = np.zeros((n, 32), np.uint8)
    length = np.asarray(batch.table["length"], np.int64)
    obs_width = sum(data.shape[1] for group, _, data in columns if group == "obs")
    step_width = sum(data.shape[1] for group, _, data in columns if group == "step")
    body_end = np.cumsum((length + 1) * obs_width + length * step_width)
    lo = 0
    while lo < n:
        budget = (int(body_end[lo - 1]) if lo else 0) + _DIGEST_BYTES
        hi = int(np.searchsorted(body_end, budget, side="right"))
        hi = min(max(hi, lo + 1), lo + _DIGEST_BLOCK, n)
        if (
            hi == lo + 1
            and int(body_end[lo]) - (int(body_end[lo - 1]) if lo else 0) > _DIGEST_BYTES
        ):
            out[lo] = _digest_lone(batch, columns, lo)
        else:
            out[lo:hi] = _digest_block(batch, columns, lo, hi)
        lo = hi
    return out


#: Episodes laid out and hashed at a time by ``episode_digests`` at most, and the bytes of
#: their step data at most (one longer episode goes alone): bound the message buffer (1 MiB)
#: and its row indexes (~2 MiB) whatever the episode count and length; the buffer is then
#: still in cache when it is hashed.
_DIGEST_BLOCK = 4096
_DIGEST_BYTES = 1 << 20


def _row_bytes(arr: np.ndarray) -> np.ndarray:
    """The raw bytes of ``arr``'s rows: a C-contiguous uint8 array ``(rows, row bytes)``."""
    flat = np.ascontiguousarray(arr)
    width = flat.dtype.itemsize * int(np.prod(flat.shape[1:], dtype=np.int64))
    return flat.reshape(-1).view(np.uint8).reshape(len(flat), width)


def _episode_heads(table: Mapping[str, Any], lo: int, hi: int) -> list[bytes]:
    """The first part of the digest message of episodes ``lo:hi``: seed and options."""
    seeds, has_seed = table["seed"][lo:hi].tolist(), table["has_seed"][lo:hi].tolist()
    options = table["options"][lo:hi]
    if all(o is None for o in options):
        if not any(has_seed):  # e.g. vector_entry_point
            return [b"harvest-episode-v1seed:noneoptions:null"] * (hi - lo)
        if all(has_seed):  # e.g. collect: one %-format an episode, ~2.5x the general form
            return [b"harvest-episode-v1seed:%doptions:null" % seed for seed in seeds]
    return [
        b"harvest-episode-v1seed:"
        + (str(seed).encode() if has else b"none")
        + b"options:"
        + (option or "null").encode()
        for seed, has, option in zip(seeds, has_seed, options, strict=True)
    ]


def _info_tails(batch: EpisodeBatch, lo: int, hi: int) -> Iterator[bytes]:
    """The last part of the digest message of episodes ``lo:hi``: the infos flag and parts.

    Per info column (sorted) present in the episode: ``info|name|shape``, the episode's
    presence mask and its present values as ``_canonical_numbers``. Yielded one episode at
    a time: only one episode's info parts are held.
    """
    flag = b"infos:" + (b"yes" if batch.infos is not None else b"no")
    if not batch.infos:
        yield from itertools.repeat(flag, hi - lo)
        return
    t = batch.table
    info_cols = [(n, v, batch.info_masks[n]) for n, v in sorted(batch.infos.items())]
    offsets, lengths = t["obs_offset"][lo:hi].tolist(), t["length"][lo:hi].tolist()
    for o0, length in zip(offsets, lengths, strict=True):
        parts = [flag]
        obs_rows = slice(o0, o0 + length + 1)
        for name, values, mask in info_cols:
            present = mask[obs_rows]
            if present.any():
                parts.append(f"info|{name}|{values.shape[1:]}".encode())
                parts.append(np.ascontiguousarray(present).tobytes())
                parts.append(_canonical_numbers(values[obs_rows][present]))
        yield b"".join(parts)


def _digest_block(
    batch: EpisodeBatch, columns: list[tuple[str, bytes, np.ndarray]], lo: int, hi: int
) -> np.ndarray:
    """``episode_digests`` of the episodes at table positions ``lo:hi`` (``(hi - lo, 32)``).

    ``columns`` holds ``("obs" | "step", header, _row_bytes(column))`` in message order.
    """
    t, n = batch.table, hi - lo
    length = np.asarray(t["length"][lo:hi], np.int64)
    rows = {"obs": length + 1, "step": length}
    first = {
        "obs": np.asarray(t["obs_offset"][lo:hi], np.int64),
        "step": np.asarray(t["step_offset"][lo:hi], np.int64),
    }
    heads = _episode_heads(t, lo, hi)
    # bytes of each piece of each message but its tail: head, (header, rows) per column
    sizes = np.empty((n, 1 + 2 * len(columns)), np.int64)
    sizes[:, 0] = np.fromiter(map(len, heads), np.int64, n)
    for k, (group, header, data) in enumerate(columns):
        sizes[:, 1 + 2 * k] = len(header)
        sizes[:, 2 + 2 * k] = rows[group] * data.shape[1]
    ends = np.cumsum(sizes.reshape(-1)).reshape(sizes.shape)
    starts = ends - sizes
    buf = np.empty(int(ends[-1, -1]) if n else 0, np.uint8)
    buf[row_ranges(starts[:, 0], sizes[:, 0])] = np.frombuffer(b"".join(heads), np.uint8)
    # where each episode's rows sit in the batch, and their position within the episode
    src, within = {}, {}
    for group in ("obs", "step"):
        total = int(rows[group].sum())
        if n and np.array_equal(first[group][1:], first[group][:-1] + rows[group][:-1]):
            src[group] = slice(int(first[group][0]), int(first[group][0]) + total)  # in order
        else:
            src[group] = row_ranges(first[group], rows[group])
        within[group] = row_ranges(np.zeros(n, np.int64), rows[group])
    for k, (group, header, data) in enumerate(columns):
        _put_records(buf, starts[:, 1 + 2 * k], np.frombuffer(header, np.uint8)[None, :])
        width = data.shape[1]
        dest = np.repeat(starts[:, 2 + 2 * k], rows[group]) + within[group] * width
        _put_records(buf, dest, data[src[group]])
    view, sha256 = memoryview(buf), hashlib.sha256
    bounds = zip(
        starts[:, 0].tolist(), ends[:, -1].tolist(), _info_tails(batch, lo, hi), strict=True
    )
    digests = b"".join([_sha256_of(sha256(view[a:b]), tail) for a, b, tail in bounds])
    return np.frombuffer(digests, np.uint8).reshape(n, 32)


def _digest_lone(
    batch: EpisodeBatch, columns: list[tuple[str, bytes, np.ndarray]], e: int
) -> np.ndarray:
    """``episode_digests`` of the one episode at table position ``e``, hashed piece by piece.

    The same message as ``_digest_block``'s, but each column's rows are hashed where they
    lie: an episode over ``_DIGEST_BYTES`` (a Pong episode is ~90 MB of frames) would cost a
    fresh buffer of its size, whose page faults take longer than the hashing (issue 19).
    """
    t = batch.table
    length = int(t["length"][e])
    first = {"obs": int(t["obs_offset"][e]), "step": int(t["step_offset"][e])}
    rows = {"obs": length + 1, "step": length}
    h = hashlib.sha256(_episode_heads(t, e, e + 1)[0])
    for group, header, data in columns:
        h.update(header)
        h.update(memoryview(data[first[group] : first[group] + rows[group]]))
    h.update(next(_info_tails(batch, e, e + 1)))
    return np.frombuffer(h.digest(), np.uint8)


def _sha256_of(head: Any, tail: bytes) -> bytes:
    """The digest of ``head`` (a ``sha256`` of a message's first part) once ``tail`` follows."""
    head.update(tail)
    return head.digest()


def _put_records(buf: np.ndarray, at: np.ndarray, records: np.ndarray) -> None:
    """Copy row ``i`` of the uint8 array ``records`` to ``buf[at[i]:]`` (one row: to all).

    ``buf`` is seen as one fixed-size void record at every byte offset (stride 1), so a
    whole column of unaligned rows moves with a single fancy-index assignment.
    """
    width = records.shape[1]
    if width == 0 or len(at) == 0:
        return
    slots = np.ndarray((len(buf) - width + 1,), f"V{width}", buf, strides=(1,))
    slots[at] = np.ascontiguousarray(records).view(f"V{width}")[:, 0]


def _canonical_numbers(values: np.ndarray) -> bytes:
    """Bytes that are the same for equal numbers whatever the dtype (int 3 == float 3.0).

    Integral values hash as int64 (uint64 when too large), others as float64: exact for every
    integer and float, and unchanged when a column's dtype is widened to hold another episode.
    """
    if values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            integral = bool(
                np.all(np.isfinite(values))
                and np.all(values == np.trunc(values))
                and np.all(np.abs(values) < 2.0**63)
            )
            if not integral:  # (a signaling NaN raises "invalid" when widened)
                return b"f" + np.ascontiguousarray(values, np.float64).tobytes()
    elif values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
        return b"u" + np.ascontiguousarray(values, np.uint64).tobytes()
    return b"i" + np.ascontiguousarray(values, np.int64).tobytes()


def fill_digests(batch: EpisodeBatch) -> EpisodeBatch:
    """Fill ``batch.table["digest"]`` from the batch's data and return ``batch``.

    The one place an episode's digest is filled: the writer's shards, a Ray worker's shard
    image and a ``DataCollector`` spill all come through here.
    """
    batch.table["digest"] = episode_digests(batch)
    return batch


def fingerprint(ids: np.ndarray, digests: np.ndarray) -> str:
    """Dataset fingerprint: sha256 of per-episode digests in episode-id order.

    Ids already in increasing order (a writer keeps its index so) are hashed as they are:
    O(N) with no sort, for a commit that adds a few episodes to a large dataset.
    """
    if not is_increasing(ids):
        digests = digests[np.argsort(ids, kind="stable")]
    return hashlib.sha256(np.ascontiguousarray(digests).data).hexdigest()


def is_increasing(ids: np.ndarray) -> bool:
    """True when ``ids`` are strictly increasing (so also free of duplicates)."""
    return bool(len(ids) < 2 or (ids[1:] > ids[:-1]).all())
