"""Helpers shared by the benchmarks (run as ``python bench/<name>.py``, so importable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["compose_cfg", "dir_bytes", "pss_kib", "verdict", "vm_hwm_kib"]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def dir_bytes(path: Path) -> int:
    """Sum of file sizes under ``path`` (shards and metadata.json)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def compose_cfg(overrides: list[str]) -> Any:
    """``conf/collect.yaml`` composed with ``overrides``, as the ``collect`` command does."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose("collect", overrides=overrides)


def _proc_kib(path: str, key: str) -> int | None:
    """The ``key:`` line (KiB) of a /proc file, or None where /proc is missing or it is gone."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def vm_hwm_kib(pid: int | str = "self") -> int | None:
    """Peak RSS (``VmHWM``, KiB) of a process, or None where /proc is missing or it is gone.

    Preferred over ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the pre-exec high-water
    mark of the forking parent into the child's ``ru_maxrss``, so a child started from a big
    parent reports the parent's size.
    """
    return _proc_kib(f"/proc/{pid}/status", "VmHWM")


def pss_kib(pid: int | str = "self") -> int | None:
    """Current proportional set size (KiB): shared pages split between their processes."""
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss")
