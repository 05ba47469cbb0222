"""Runners execute an episode plan: ``local`` (in-process) or ``ray`` (parallel actors).

``get_runner(name)`` is the registry ``collect`` dispatches through. Every runner has the same
shape, ``runner(conf, writer, env, policy, todo, entropy, *, cadence, compression, progress)``
returning the steps recorded, and commits through ``collector.committer``; no runner imports
``collector.collect``. A runner's module is imported only when it is asked for (Ray is an
optional extra).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["RUNNERS", "get_runner"]

#: runner name -> "module:function" of its entry point.
RUNNERS: dict[str, str] = {
    "local": "collector.runners.local:collect_local",
    "ray": "collector.runners.ray:collect_ray",
}


def get_runner(name: str) -> Callable[..., int]:
    """The entry point of runner ``name`` (a key of ``RUNNERS``), imported on first use.

    >>> get_runner("local").__name__
    'collect_local'
    """
    module, _, function = RUNNERS[name].partition(":")
    runner: Any = getattr(importlib.import_module(module), function)
    return runner
