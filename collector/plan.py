"""The episode ids a run still has to collect, planned lazily.

A run of ``episodes`` plans ids ``0..episodes-1`` minus those already committed (DESIGN.md
section 6). ``EpisodePlan`` holds only the committed ids (sorted) and yields the missing ones
as it goes, so ``episodes=10**12`` costs what the dataset holds, not 7 TiB of ids up front.
``IdQueue`` hands the plan's ids out one at a time and takes ids back (a Ray batch requeued).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

__all__ = ["SEGMENT_EPISODES_PER_ENV", "EpisodePlan", "IdQueue", "segment_episodes"]

#: Episodes per reseeded segment, per sub-env, under ``vector_entry_point`` (data-affecting).
SEGMENT_EPISODES_PER_ENV = 64


def segment_episodes(num_envs: int) -> int:
    """Episode ids per reseeded segment for a ``vector_entry_point`` env of ``num_envs``.

    >>> segment_episodes(4)
    256
    """
    return SEGMENT_EPISODES_PER_ENV * int(num_envs)


class EpisodePlan:
    """Ids ``0..episodes-1`` not in ``committed``, in increasing order, produced lazily.

    >>> plan = EpisodePlan(6, np.array([1, 2, 4]))
    >>> len(plan), list(plan), list(plan.ranges())
    (3, [0, 3, 5], [(0, 1), (3, 4), (5, 6)])
    """

    def __init__(self, episodes: int, committed: np.ndarray) -> None:
        self.episodes = int(episodes)
        ids = np.asarray(committed, np.int64)
        ids = ids[(ids >= 0) & (ids < self.episodes)]
        if not (ids[1:] > ids[:-1]).all():  # a writer's ids are sorted and unique already
            ids = np.sort(ids)  # not np.unique: it imports numpy.ma, ~20 ms of every run
            ids = ids[np.concatenate(([True], ids[1:] != ids[:-1]))]
        self._done = ids
        # positions in _done where a run of consecutive ids ends (the last run excepted)
        self._run_ends = np.flatnonzero(np.diff(self._done) != 1)

    def __len__(self) -> int:
        return self.episodes - len(self._done)

    def __bool__(self) -> bool:
        return len(self) > 0

    def ranges(self) -> Iterator[tuple[int, int]]:
        """The missing ids as half-open ranges ``(lo, hi)``, in order."""
        lo = 0
        for done in self._done.tolist():
            if done > lo:
                yield lo, done
            lo = done + 1
        if lo < self.episodes:
            yield lo, self.episodes

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.ranges():
            yield from range(lo, hi)

    def next_missing(self, start: int) -> int | None:
        """The smallest missing id at or after ``start`` (None when there is none)."""
        i = max(int(start), 0)
        k = int(np.searchsorted(self._done, i))
        if k < len(self._done) and self._done[k] == i:  # i is committed: skip its run
            j = int(np.searchsorted(self._run_ends, k))
            end = int(self._run_ends[j]) if j < len(self._run_ends) else len(self._done) - 1
            i = int(self._done[end]) + 1
        return i if i < self.episodes else None

    def segments(self, size: int) -> Iterator[int]:
        """Indices ``k`` of the segments ``[k * size, (k + 1) * size)`` with a missing id."""
        i = self.next_missing(0)
        while i is not None:
            k = i // size
            yield k
            i = self.next_missing((k + 1) * size)

    def wanted(self, lo: int, hi: int) -> np.ndarray:
        """Boolean mask over ids ``lo..hi-1``: True where the id is missing."""
        hi = min(hi, self.episodes)
        mask = np.ones(max(hi - lo, 0), bool)
        done = self._done[np.searchsorted(self._done, lo) : np.searchsorted(self._done, hi)]
        mask[done - lo] = False
        return mask


class IdQueue:
    """The ids of a plan (or any sized iterable of ids), handed out one at a time.

    ``extendleft`` puts ids back at the front, as ``collections.deque`` does (so
    ``extendleft(reversed(ids))`` restores their order). Only those are held in memory.
    """

    def __init__(self, ids: Iterable[int]) -> None:
        self._front: deque[int] = deque()
        self._left = len(ids)  # type: ignore[arg-type]
        self._rest = iter(ids)

    def __len__(self) -> int:
        return len(self._front) + self._left

    def __bool__(self) -> bool:
        return len(self) > 0

    def popleft(self) -> int:
        """The next id (IndexError when none is left)."""
        if self._front:
            return self._front.popleft()
        if self._left <= 0:
            raise IndexError("pop from an empty IdQueue")
        self._left -= 1
        return int(next(self._rest))

    def extendleft(self, ids: Iterable[int]) -> None:
        """Put ``ids`` back at the front, each in turn (the last one ends up first)."""
        for i in ids:
            self._front.appendleft(int(i))
