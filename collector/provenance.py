"""Provenance: the versions and the git commit a dataset records about the code that made it.

Public, so ``collect``, ``DataCollector`` and ``curation`` (save, Minari import) record the
same facts the same way; ``policy_provenance`` adds what made the actions (the checkpoint
identity of ``collector.checkpoints`` and the policy's own ``provenance()``).
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from typing import Any

__all__ = ["git_commit", "policy_provenance", "versions"]


#: distribution -> the module whose ``__version__`` it sets (read once the module is imported)
_MODULES = {
    "gymnasium": "gymnasium",
    "numpy": "numpy",
    "h5py": "h5py",
    "hydra-core": "hydra",
    "omegaconf": "omegaconf",
}


def versions() -> dict[str, str]:
    """Python's version and those of harvest and its main dependencies (those installed).

    An imported module's ``__version__`` is the version running: reading it costs nothing,
    where parsing a distribution's metadata costs ~0.5 ms (a fixed cost of every ``collect``).
    """
    out = {"python": platform.python_version(), "harvest": _distribution_version("harvest")}
    for dist, module in _MODULES.items():
        version = getattr(sys.modules.get(module), "__version__", None)
        out[dist] = version if isinstance(version, str) else _distribution_version(dist)
    return {k: v for k, v in out.items() if v is not None}


@functools.cache
def _distribution_version(dist: str) -> str | None:
    """An installed distribution's version (None: not installed); read once per process."""
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The current folder's git ``HEAD`` commit, or None outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def policy_provenance(identity: Mapping[str, Any], policy: Any) -> dict[str, Any]:
    """Provenance entries about a policy: ``checkpoints`` and the policy's ``provenance()``.

    Args:
        identity: ``collector.checkpoints.checkpoint_identity`` of its config (``{}``: no
            entry, as datasets of file-less policies always stored it).
        policy: the built policy; a loader's ``provenance()`` (versions, device, algorithm)
            is stored under ``policy`` as JSON (values JSON cannot hold as their ``str``).
    """
    out: dict[str, Any] = {"checkpoints": dict(identity)} if identity else {}
    own = getattr(policy, "provenance", None)
    if callable(own):
        out["policy"] = json.loads(json.dumps(own(), default=str))
    return out
