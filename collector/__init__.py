"""harvest's producing half: record environment rollouts into datasets.

Public API: ``DataCollector`` and ``VectorDataCollector`` (record from your own loop),
``create_dataset_from_buffers`` (Minari's: a dataset from episodes already in memory),
``collect`` (the ``collect`` command's Python API) and its typed config ``CollectConfig``,
the policies, and the error family in ``collector.errors``.
"""

from collector.buffers import create_dataset_from_buffers
from collector.collect import CollectResult, collect
from collector.config import CollectConfig
from collector.data_collector import (
    DataCollector,
    DatasetSummary,
    StepDataCallback,
    VectorDataCollector,
)
from collector.errors import HarvestError
from collector.policies import CartPoleHeuristic, RandomPolicy

__all__ = [
    "CartPoleHeuristic",
    "CollectConfig",
    "CollectResult",
    "DataCollector",
    "DatasetSummary",
    "HarvestError",
    "RandomPolicy",
    "StepDataCallback",
    "VectorDataCollector",
    "collect",
    "create_dataset_from_buffers",
]
