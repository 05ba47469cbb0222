"""harvest's consuming half: open, read, iterate, curate and ship datasets.

Public API: ``load_dataset``, ``list_local_datasets``, ``delete_dataset``, ``Dataset``,
``EpisodeData`` and the MineRL-style training iterators via ``Dataset.pipeline()``.
"""

from curation.dataset import (
    Dataset,
    DatasetSpec,
    EpisodeData,
    delete_dataset,
    list_local_datasets,
    load_dataset,
)

__all__ = [
    "Dataset",
    "DatasetSpec",
    "EpisodeData",
    "delete_dataset",
    "list_local_datasets",
    "load_dataset",
]
