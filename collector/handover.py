"""What ``create_dataset`` returns: the hand-over from the producing half to the reading half.

Minari's ``DataCollector.create_dataset`` and ``create_dataset_from_buffers`` return the opened
dataset. harvest's reading API lives in ``curation``, which ``collector`` never imports
(DESIGN.md section 2; ``tests/test_layering.py``), so the dependency is inverted here: importing
``curation`` registers its ``open_dataset`` with ``set_dataset_opener``, and
``open_committed`` hands every new dataset to it. Any import of a ``curation`` module runs
``curation/__init__.py`` first, so code that reads datasets always has it registered. A process
that never imports ``curation`` (a collection-only script) gets the ``DatasetSummary`` instead,
whose fields the opened ``Dataset`` also has (``dataset_id``, ``path``, ``total_episodes``,
``total_steps``, ``fingerprint`` and ``summary``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collector.data_collector import DatasetSummary

__all__ = ["open_committed", "set_dataset_opener"]

#: ``opener(dataset_id, root)``: opens a committed dataset (``curation.dataset.open_dataset``).
_opener: Callable[[str, Path], Any] | None = None


def set_dataset_opener(opener: Callable[[str, Path], Any] | None) -> None:
    """Register what opens a dataset that was just committed (None: hand back the summary).

    ``curation`` calls this when it is imported; nothing else needs to.
    """
    global _opener
    _opener = opener


def open_committed(summary: DatasetSummary, root: Path) -> Any:
    """The opened dataset ``summary`` describes, or ``summary`` when no opener is registered."""
    if _opener is None:
        return summary
    return _opener(summary.dataset_id, root)
