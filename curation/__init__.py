"""harvest's consuming half: open, read, iterate, curate and ship datasets.

Public API: ``load_dataset``, ``list_local_datasets``, ``delete_dataset``, ``Dataset``,
``EpisodeData``, the MineRL-style training iterators via ``Dataset.pipeline()``, and curation:
``combine_datasets``, ``split_dataset``, ``Dataset.filter_episodes`` (a callable or an
expression), ``Dataset.save`` and ``run_recipe``; remotes: ``push_dataset``, ``pull_dataset``,
``list_remote_datasets``, ``delete_remote_dataset`` and ``open_remote``; Minari:
``from_minari``, ``to_minari`` and ``open_minari``.
"""

from curation.api import load_dataset
from curation.catalog import delete_dataset, list_local_datasets
from curation.dataset import Dataset, DatasetSpec, EpisodeData
from curation.minari import from_minari, open_minari, to_minari
from curation.ops import combine_datasets, save_dataset, split_dataset
from curation.recipes import run_recipe
from curation.remotes import (
    delete_remote_dataset,
    list_remote_datasets,
    open_remote,
    pull_dataset,
    push_dataset,
)

__all__ = [
    "Dataset",
    "DatasetSpec",
    "EpisodeData",
    "combine_datasets",
    "delete_dataset",
    "delete_remote_dataset",
    "from_minari",
    "list_local_datasets",
    "list_remote_datasets",
    "load_dataset",
    "open_minari",
    "open_remote",
    "pull_dataset",
    "push_dataset",
    "run_recipe",
    "save_dataset",
    "split_dataset",
    "to_minari",
]
