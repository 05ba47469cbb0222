"""Curation operations: combine datasets, split views, save views as datasets.

Filters and splits make views (episode-id lists over one commit) and copy nothing. Saving a
view and combining datasets write a new dataset of the sources' linked shards with a
``lineage`` (``curation.write``, which this module re-exports, says how).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from collector.errors import UsageError
from curation import write
from curation.api import load_dataset
from curation.dataset import Dataset, open_dataset
from curation.write import compare_datasets, new_dataset_writer

__all__ = [
    "combine_datasets",
    "compare_datasets",
    "new_dataset_writer",
    "save_dataset",
    "split_dataset",
    "split_sizes",
    "write_views",
]


def write_views(
    parts: Sequence[Dataset],
    new_dataset_id: str,
    *,
    operation: Mapping[str, Any],
    root: str | Path | None = None,
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Dataset:
    """``curation.write.write_views``, then the new dataset opened (see there).

    Raises:
        IncompatibleDatasetsError: the parts differ; the message lists every difference.
        DatasetExistsError: ``new_dataset_id`` exists and ``overwrite`` is false.
        LockHeldError: another writer holds ``new_dataset_id``.
    """
    write.write_views(
        parts,
        new_dataset_id,
        operation=operation,
        root=root,
        overwrite=overwrite,
        metadata=metadata,
        provenance=provenance,
    )
    return open_dataset(new_dataset_id, root)


def save_dataset(
    dataset: Dataset,
    new_dataset_id: str,
    *,
    root: str | Path | None = None,
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Dataset:
    """Write a dataset or view as a new dataset, episodes renumbered 0..N-1 in id order.

    Copy-free (see ``curation.write``). The new metadata keeps the source's spaces, env
    spec and author fields (``metadata`` overrides them) and records ``lineage``: the
    source's id and fingerprint, which of its episodes were kept, and by what steps.
    The same as ``dataset.save(...)``.

    Raises:
        DatasetExistsError: ``new_dataset_id`` exists and ``overwrite`` is false.
        LockHeldError: another writer holds ``new_dataset_id``.
    """
    return dataset.save(new_dataset_id, root=root, overwrite=overwrite, metadata=metadata)


def combine_datasets(
    datasets: Sequence[Dataset | str],
    new_dataset_id: str,
    *,
    root: str | Path | None = None,
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Dataset:
    """Combine datasets (or views) into a new dataset, episodes renumbered 0..N-1 in order.

    Unlike Minari's ``combine_datasets``, spaces are compared too, a mismatch is explained
    field by field, and per-episode seeds, options and statistics are kept. The env spec's
    ``max_episode_steps`` is the largest of the sources' (None if any is None), as in Minari.
    ``dataset.episode_sources()`` maps each new episode back to its source and original id.

    Raises:
        IncompatibleDatasetsError: the datasets differ; the message lists every difference.
        DatasetExistsError: ``new_dataset_id`` exists and ``overwrite`` is false.
        UsageError: fewer than 2 datasets, or a Minari dataset read in place (import it first).
    """
    # the front door, so that a Minari folder opens in place and is refused as such below
    loaded = [load_dataset(d, root=root) if isinstance(d, str) else d for d in datasets]
    if len(loaded) < 2:
        raise UsageError(f"combine needs at least 2 datasets, got {len(loaded)}")
    return write_views(
        loaded,
        new_dataset_id,
        operation={"name": "combine"},
        root=root,
        overwrite=overwrite,
        metadata=metadata,
    )


# -- splitting ------------------------------------------------------------------------------------


def split_sizes(sizes: Iterable[int | float], total: int) -> list[int]:
    """Episode counts for ``sizes`` given as counts or as fractions of ``total``.

    Fractions are rounded down and the remainder goes to the largest remainders first, so
    fractions summing to 1 use every episode.

    >>> split_sizes([0.8, 0.1, 0.1], 25)
    [20, 3, 2]
    >>> split_sizes([3, 2], 10)
    [3, 2]
    """
    sizes = list(sizes)
    if not sizes or any(
        isinstance(s, bool) or not isinstance(s, int | float | np.number) or s < 0 for s in sizes
    ):
        raise UsageError(f"split sizes must be non-negative counts or fractions, got {sizes}")
    if all(isinstance(s, int | np.integer) for s in sizes):
        counts = [int(s) for s in sizes]
        if sum(counts) > total:
            raise UsageError(
                f"split sizes {counts} add up to {sum(counts)} episodes; the dataset has {total}"
            )
        return counts
    fractions = [float(s) for s in sizes]
    if sum(fractions) > 1 + 1e-9:
        raise UsageError(f"split fractions {fractions} add up to {sum(fractions):g}, over 1")
    exact = [f * total for f in fractions]
    counts = [math.floor(x + 1e-9) for x in exact]
    if math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        order = sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])
        for i in order[: total - sum(counts)]:
            counts[i] += 1
    return counts


def draw_seed() -> int:
    """A fresh random seed (32 bits: short enough to print and type back)."""
    return int(np.random.SeedSequence().generate_state(1, np.uint32)[0])


def split_dataset(
    dataset: Dataset, sizes: Sequence[int | float], seed: int | None = None
) -> list[Dataset]:
    """Split into disjoint random views of the given sizes (counts, or fractions of the total).

    As Minari's ``split_dataset``: a seeded permutation of the episode ids cut into
    consecutive parts. Views copy nothing; ``save`` one to write it as a dataset. Without a
    ``seed`` one is drawn (``draw_seed``) and recorded in each part's lineage, so that the
    split can be repeated.
    """
    if seed is None:
        seed = draw_seed()
    counts = split_sizes(sizes, dataset.total_episodes)
    order = np.random.default_rng(seed).permutation(dataset.episode_indices)
    out, at = [], 0
    for i, n in enumerate(counts):
        step = {"name": "split", "sizes": list(sizes), "seed": seed, "part": i}
        out.append(dataset.view(order[at : at + n], step))
        at += n
    return out
