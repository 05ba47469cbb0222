"""Provenance: the versions and the git commit a dataset records about the code that made it.

Public, so ``collect``, ``DataCollector`` and ``curation`` (save, Minari import) record the
same facts the same way.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata as importlib_metadata

__all__ = ["git_commit", "versions"]


def versions() -> dict[str, str]:
    """Python's version and those of harvest and its main dependencies (those installed)."""
    out = {"python": platform.python_version()}
    for dist in ("harvest", "gymnasium", "numpy", "h5py", "hydra-core", "omegaconf"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The current folder's git ``HEAD`` commit, or None outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
