"""Columnar episodes in memory: ``EpisodeBatch``, ``ShardRows`` and the per-episode table."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

__all__ = [
    "EpisodeBatch",
    "STEP_COLUMNS",
    "ShardRows",
    "TABLE_FIELDS",
    "concat_batches",
    "concat_tables",
    "episode_blocks",
    "json_default",
    "make_table",
    "row_ranges",
    "select_episodes",
    "select_table",
    "union_schema",
]


STEP_COLUMNS: Final = ("rewards", "terminations", "truncations")
TABLE_FIELDS: Final = (
    "id",
    "seed",
    "has_seed",
    "length",
    "obs_offset",
    "step_offset",
    "return",
    "terminated",
    "truncated",
    "digest",
    "options",
    "metadata",
)


@dataclass
class EpisodeBatch:
    """Whole episodes, columnar, as a shard holds them.

    ``observations``/``infos`` columns have ``sum(T_i + 1)`` rows, ``actions`` and the step
    columns ``sum(T_i)``. ``table`` holds one entry per episode (see ``TABLE_FIELDS``);
    ``digest`` may be missing until ``digests.episode_digests`` fills it.
    """

    observations: dict[str, np.ndarray]
    actions: dict[str, np.ndarray]
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    table: dict[str, Any]
    infos: dict[str, np.ndarray] | None = None
    info_masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_episodes(self) -> int:
        """Episodes in the batch."""
        return len(self.table["id"])

    @property
    def num_steps(self) -> int:
        """Steps (transitions) in the batch."""
        return len(self.rewards)

    @property
    def nbytes(self) -> int:
        """Bytes of step data held in memory."""
        return _columns_nbytes(self)

    def info_schema(self) -> dict[str, dict[str, Any]] | None:
        """Info columns as ``{name: {"dtype", "shape"}}``, or None when infos are not recorded."""
        if self.infos is None:
            return None
        return {
            k: {"dtype": v.dtype.str, "shape": list(v.shape[1:])} for k, v in self.infos.items()
        }


def _columns_nbytes(rows: EpisodeBatch | ShardRows) -> int:
    """Bytes of every column of a batch or a block of rows."""
    arrays = [*rows.observations.values(), *rows.actions.values()]
    arrays += [rows.rewards, rows.terminations, rows.truncations]
    arrays += [*(rows.infos or {}).values(), *rows.info_masks.values()]
    return sum(a.nbytes for a in arrays)


def make_table(
    ids: Sequence[int],
    seeds: Sequence[int | None],
    lengths: Sequence[int],
    returns: Sequence[float],
    terminated: Sequence[bool],
    truncated: Sequence[bool],
    options: Sequence[Any],
    metadata: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Build an episode table from per-episode values (offsets derived from lengths)."""
    n = len(ids)
    length = np.asarray(lengths, dtype=np.int64).reshape(n)
    obs_offset, step_offset = _offsets(length)
    seeds, options = list(seeds), list(options)
    metadata = [None] * n if metadata is None else list(metadata)
    unseeded = seeds.count(None) == n  # e.g. vector_entry_point: no per-episode loop (ints)
    return {
        "id": np.asarray(ids, dtype=np.int64).reshape(n),
        "seed": np.zeros(n, np.uint64)
        if unseeded
        else np.asarray([0 if s is None else s for s in seeds], dtype=np.uint64).reshape(n),
        "has_seed": np.zeros(n, bool)
        if unseeded
        else np.asarray([s is not None for s in seeds], dtype=bool).reshape(n),
        "length": length,
        "obs_offset": obs_offset,
        "step_offset": step_offset,
        "return": np.asarray(returns, dtype=np.float64).reshape(n),
        "terminated": np.asarray(terminated, dtype=bool).reshape(n),
        "truncated": np.asarray(truncated, dtype=bool).reshape(n),
        "options": _canonical_jsons(options),
        "metadata": _canonical_jsons(metadata),
    }


def _canonical_jsons(values: list[Any]) -> list[str | None]:
    """``_canonical_json`` of each value, None kept as None."""
    if set(map(type, values)) <= {type(None)}:  # not count(None): values may be arrays
        return [None] * len(values)
    return [None if v is None else _canonical_json(v) for v in values]


def _offsets(length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets of each episode: observations have T+1 rows, steps T."""
    step_offset = np.zeros(len(length), np.int64)
    np.cumsum(length[:-1], out=step_offset[1:])
    return step_offset + np.arange(len(length), dtype=np.int64), step_offset


def row_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + n)`` for each (s, n), without a Python loop.

    >>> row_ranges(np.array([5, 0]), np.array([2, 3])).tolist()
    [5, 6, 0, 1, 2]
    """
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    firsts = np.repeat(np.asarray(starts, np.int64) - (ends - lengths), lengths)
    return firsts + np.arange(total, dtype=np.int64)


def select_episodes(batch: EpisodeBatch, positions: np.ndarray, ids: np.ndarray) -> EpisodeBatch:
    """The episodes at table ``positions`` of ``batch``, renumbered ``ids``, as a new batch.

    Columnar: one gather per column, not a copy per episode.
    """
    t = batch.table
    pos = np.asarray(positions, np.int64)
    length = t["length"][pos]
    obs_rows = row_ranges(t["obs_offset"][pos], length + 1)
    step_rows = row_ranges(t["step_offset"][pos], length)
    return EpisodeBatch(
        observations={k: v[obs_rows] for k, v in batch.observations.items()},
        actions={k: v[step_rows] for k, v in batch.actions.items()},
        rewards=batch.rewards[step_rows],
        terminations=batch.terminations[step_rows],
        truncations=batch.truncations[step_rows],
        table=select_table(t, pos, ids),
        infos=None if batch.infos is None else {k: v[obs_rows] for k, v in batch.infos.items()},
        info_masks={k: v[obs_rows] for k, v in batch.info_masks.items()},
    )


def select_table(table: dict[str, Any], positions: np.ndarray, ids: np.ndarray) -> dict[str, Any]:
    """The entries at ``positions`` of an episode table, renumbered ``ids``, rows back to back."""
    pos = np.asarray(positions, np.int64)
    out = {
        k: v[pos] if isinstance(v, np.ndarray) else [v[i] for i in pos] for k, v in table.items()
    }
    out["obs_offset"], out["step_offset"] = _offsets(out["length"])
    out["id"] = np.asarray(ids, np.int64)
    return out


def episode_blocks(
    length: np.ndarray, obs_row_bytes: int, step_row_bytes: int, budget: int
) -> Iterator[tuple[int, int]]:
    """Table positions ``(a, b)`` of consecutive blocks of episodes of about ``budget`` bytes.

    An episode has ``T + 1`` observation rows and ``T`` step rows; a block holds at least
    one episode (a longer one goes alone).

    >>> list(episode_blocks(np.array([1, 1, 5, 1]), 1, 0, 4))
    [(0, 2), (2, 3), (3, 4)]
    """
    length = np.asarray(length, np.int64)
    ends = np.cumsum((length + 1) * obs_row_bytes + length * step_row_bytes)
    a = 0
    while a < len(length):
        limit = (int(ends[a - 1]) if a else 0) + budget
        b = max(a + 1, int(np.searchsorted(ends, limit, side="right")))
        yield a, b
        a = b


def union_schema(schemas: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One info schema holding every key of ``schemas`` (dtypes promoted); None if none has."""
    if not any(sc is not None for sc in schemas):
        return None
    union: dict[str, Any] = {}
    for sc in schemas:
        for name, spec in (sc or {}).items():
            old = union.get(name)
            dtype = (
                np.dtype(spec["dtype"])
                if old is None
                else np.result_type(np.dtype(old["dtype"]), np.dtype(spec["dtype"]))
            )
            union[name] = {"dtype": np.dtype(dtype).str, "shape": spec["shape"]}
    return union


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=json_default)


def json_default(value: Any) -> Any:
    """``json.dumps`` hook for numpy values, sets and tuples; anything else is a ``TypeError``."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def concat_batches(batches: Sequence[EpisodeBatch]) -> EpisodeBatch:
    """Concatenate batches (e.g. small shards being repacked), unioning info columns."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]

    def cat(key: str) -> dict[str, np.ndarray]:
        return {
            n: np.concatenate([getattr(b, key)[n] for b in batches]) for n in getattr(first, key)
        }

    table = concat_tables([b.table for b in batches])
    infos, masks = _concat_infos(batches)
    return EpisodeBatch(
        observations=cat("observations"),
        actions=cat("actions"),
        rewards=np.concatenate([b.rewards for b in batches]),
        terminations=np.concatenate([b.terminations for b in batches]),
        truncations=np.concatenate([b.truncations for b in batches]),
        table=table,
        infos=infos,
        info_masks=masks,
    )


def _concat_infos(
    batches: Sequence[EpisodeBatch],
) -> tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray]]:
    if all(b.infos is None for b in batches):
        return None, {}
    names: dict[str, np.ndarray] = {}
    for b in batches:
        for n, col in (b.infos or {}).items():
            proto = names.get(n)
            dtype = col.dtype if proto is None else np.result_type(proto.dtype, col.dtype)
            names[n] = np.empty((0, *col.shape[1:]), dtype)
    infos: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for n, proto in names.items():
        parts, mparts = [], []
        for b in batches:
            rows = int(b.table["length"].sum()) + b.num_episodes
            if b.infos is not None and n in b.infos:
                parts.append(b.infos[n].astype(proto.dtype, copy=False))
                mparts.append(b.info_masks[n])
            else:
                parts.append(np.zeros((rows, *proto.shape[1:]), proto.dtype))
                mparts.append(np.zeros(rows, bool))
        infos[n], masks[n] = np.concatenate(parts), np.concatenate(mparts)
    return infos, masks


def concat_tables(tables: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate episode tables, rebasing ``obs_offset`` and ``step_offset``."""
    out: dict[str, Any] = {}
    for key in tables[0]:
        if key in ("options", "metadata"):
            out[key] = [v for t in tables for v in t[key]]
        else:
            out[key] = np.concatenate([t[key] for t in tables])
    out["obs_offset"], out["step_offset"] = _offsets(out["length"])
    return out


@dataclass
class ShardRows:
    """Contiguous rows of a shard, column by column.

    Observation-like columns have T+1 rows per episode, step columns T; keys are column names
    inside their group, as in ``EpisodeBatch``.
    """

    observations: dict[str, np.ndarray]
    actions: dict[str, np.ndarray]
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    infos: dict[str, np.ndarray] | None
    info_masks: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return _columns_nbytes(self)
