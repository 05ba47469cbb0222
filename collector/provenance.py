"""Provenance: the versions and the git commit a dataset records about the code that made it.

Public, so ``collect``, ``DataCollector`` and ``curation`` (save, Minari import) record the
same facts the same way; ``policy_provenance`` adds what made the actions (the checkpoint
identity of ``collector.checkpoints`` and the policy's own ``provenance()``).
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from typing import Any

__all__ = ["git_commit", "policy_provenance", "versions"]


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
