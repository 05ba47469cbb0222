"""Hydra configs shipped with harvest (importable so an installed `collect` finds them).

Importing the package registers the typed schemas ``collect.yaml`` and ``runner/*.yaml``
extend (``collector.config``), so the command, ``hydra.compose`` and tests all see them.
"""

from collector.config import register_schema

register_schema()
