"""Shared fixtures: every test gets its own datasets root (as Minari's suite does)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def datasets_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``$HARVEST_DATASETS`` at a fresh temp folder for every test."""
    root = tmp_path / "datasets"
    monkeypatch.setenv("HARVEST_DATASETS", str(root))
    return root
