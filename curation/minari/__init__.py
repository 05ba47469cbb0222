"""Minari interoperability: import Minari datasets, export ours in Minari's layout.

- ``from_minari`` imports a Minari dataset (HDF5, Arrow or Parquet) as a harvest dataset;
- ``to_minari`` writes a harvest dataset so that ``minari.load_dataset`` opens it;
- ``open_minari`` (and ``load_dataset(path)``) reads a Minari dataset in place, read-only;
- ``MinariSource`` reads a Minari dataset in place, without the ``minari`` package.
"""

from curation.minari.export import to_minari
from curation.minari.importer import from_minari
from curation.minari.inplace import open_minari
from curation.minari.layout import MINARI_ROOT_ENV, resolve_minari_root
from curation.minari.source import MinariSource

__all__ = ["MINARI_ROOT_ENV", "MinariSource", "from_minari", "open_minari", "resolve_minari_root",
           "to_minari"]  # fmt: skip
