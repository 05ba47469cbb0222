"""Hydra configs shipped with harvest (importable so an installed `collect` finds them)."""
