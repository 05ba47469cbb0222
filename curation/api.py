"""The front door: ``load_dataset`` opens a local id, a Minari folder, or downloads first.

It sits above ``curation.minari`` and ``curation.remotes`` so that ``curation.dataset`` (the
reading API they build on) never imports upward.
"""

from __future__ import annotations

import os
from pathlib import Path

from collector import storage
from collector.errors import HarvestError
from curation.dataset import Dataset, open_dataset
from curation.minari import layout, open_minari
from curation.remotes import pull_dataset
from curation.snapshot import DEFAULT_BLOCK_ROWS, DEFAULT_MAX_MEMORY

__all__ = ["is_minari_path", "load_dataset"]


def is_minari_path(dataset_id: str | os.PathLike[str]) -> bool:
    """A folder path (not a dataset id) holding a Minari dataset's ``data/metadata.json``."""
    if not isinstance(dataset_id, os.PathLike):
        try:
            storage.parse_dataset_id(dataset_id)
            return False  # ids win over relative paths that happen to exist
        except HarvestError:
            pass
    try:
        path = Path(dataset_id).expanduser()
    except RuntimeError:  # "~name" of no user: not a path either
        return False
    return (path / layout.DATA_DIR / layout.METADATA_FILE).is_file() or (
        path.name == layout.DATA_DIR and (path / layout.METADATA_FILE).is_file()
    )


def load_dataset(
    dataset_id: str | os.PathLike[str],
    download: bool = False,
    *,
    root: str | Path | None = None,
    remote: str | None = None,
    cache_mb: float | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Dataset:
    """Open a local dataset at its latest commit, or a Minari dataset folder read-only.

    A path to a Minari dataset (the folder holding ``data/metadata.json``) opens it in place
    without importing it (``curation.minari.open_minari``).

    Args:
        dataset_id: ``[namespace/...]name-vN``, or a Minari dataset folder.
        download: pull it from the remote first when it is not here (a local copy wins).
        root: datasets root (default ``$HARVEST_DATASETS`` or ``~/.harvest/datasets``).
        remote: the remote to download from (default ``$HARVEST_REMOTE``).
        cache_mb: MiB of decompressed blocks kept in memory (default: half of ``max_memory``).
        block_rows: at most the episodes starting in this many steps make one block.
        max_memory: the memory budget of every reader of the dataset, in bytes (default
            512 MiB): blocks hold at most ``max_memory / 8`` (at most 32 MiB) decompressed
            bytes, and ``batch_iter``, ``sarsd_iter``, ``iterate_episodes``,
            ``sample_episodes`` and the torch adapters stay within it whatever the frame
            size. An episode larger than the budget is read alone, with a warning.

    Raises:
        DatasetIdError: a malformed id.
        DatasetNotFoundError: no such dataset locally (nor, with ``download``, remotely).
        CorruptDatasetError: unreadable metadata or shard tables.
    """
    if is_minari_path(dataset_id):
        return open_minari(
            dataset_id, cache_mb=cache_mb, block_rows=block_rows, max_memory=max_memory
        )
    dataset_id = str(dataset_id)
    if download and not (storage.dataset_path(dataset_id, root) / storage.METADATA_FILE).exists():
        pull_dataset(dataset_id, remote, root=root)
    return open_dataset(
        dataset_id, root, cache_mb=cache_mb, block_rows=block_rows, max_memory=max_memory
    )
