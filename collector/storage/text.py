"""Presentation helpers shared by the storage messages and the CLIs (sizes for people)."""

from __future__ import annotations

__all__ = [
    "human_size",
]


def human_size(n: float) -> str:
    """A byte count in powers of 1000, as the command-line tools print sizes.

    >>> human_size(999), human_size(27_160), human_size(3_400_000_000_000)
    ('999 B', '27.2 kB', '3400.0 GB')
    """
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"
