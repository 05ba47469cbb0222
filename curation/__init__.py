"""harvest's consuming half: open, read, iterate, curate and ship datasets.

Public API: ``load_dataset``, ``list_local_datasets``, ``delete_dataset``, ``Dataset``,
``EpisodeData``, the MineRL-style training iterators via ``Dataset.pipeline()``, and curation:
``combine_datasets``, ``split_dataset``, ``Dataset.filter_episodes`` (a callable or an
expression), ``Dataset.save`` and ``run_recipe``; remotes: ``push_dataset``, ``pull_dataset``,
``list_remote_datasets``, ``delete_remote_dataset`` and ``open_remote``; Minari:
``from_minari``, ``to_minari`` and ``open_minari``; ``create_dataset_from_buffers`` (from
``collector``, re-exported so that Minari's three creating and loading names import together).

Importing ``curation`` registers ``open_dataset`` with ``collector.handover``, so
``DataCollector.create_dataset`` and ``create_dataset_from_buffers`` return the opened
``Dataset`` (as Minari's return a ``MinariDataset``) without ``collector`` importing ``curation``.
"""

from collector.buffers import create_dataset_from_buffers
from collector.handover import set_dataset_opener
from curation.api import load_dataset
from curation.catalog import delete_dataset, list_local_datasets
from curation.dataset import Dataset, DatasetSpec, EpisodeData, open_dataset
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
    "create_dataset_from_buffers",
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

set_dataset_opener(open_dataset)
