"""harvest's consuming half: open, read, iterate, curate and ship datasets.

Public API: ``load_dataset``, ``list_local_datasets``, ``delete_dataset``, ``Dataset``,
``EpisodeData``, the MineRL-style training iterators via ``Dataset.pipeline()``, and curation:
``combine_datasets``, ``split_dataset``, ``Dataset.filter_episodes`` (a callable or an
expression), ``Dataset.save`` and ``run_recipe``.
"""

from curation.dataset import (
    Dataset,
    DatasetSpec,
    EpisodeData,
    delete_dataset,
    list_local_datasets,
    load_dataset,
)
from curation.ops import combine_datasets, save_dataset, split_dataset
from curation.recipes import run_recipe

__all__ = [
    "Dataset",
    "DatasetSpec",
    "EpisodeData",
    "combine_datasets",
    "delete_dataset",
    "list_local_datasets",
    "load_dataset",
    "run_recipe",
    "save_dataset",
    "split_dataset",
]
