"""The dataset report: episode-return and episode-length histograms as a PNG (``curate report``).

Needs the ``plot`` extra (matplotlib, drawn without pyplot's global state).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from collector import storage
from collector.errors import MissingExtraError, UsageError

if TYPE_CHECKING:
    from curation.dataset import Dataset

__all__ = ["plot_report"]


def _groups(
    ds: Dataset, by: str = "source", splits: Mapping[str, Dataset] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Episode ``return`` and ``length`` per legend label, in legend order."""
    if by == "split":
        if not splits:
            raise UsageError(
                "plot_report(by='split') needs splits={'train': view, ...}; pass the named "
                "views or datasets to compare"
            )
        return {name: _columns(view.episodes()) for name, view in splits.items()}
    if by != "source":
        raise UsageError(f"by={by!r} is not a grouping; use by='source' or by='split'")
    if splits is not None:
        raise UsageError("splits=... are plotted with by='split'; pass by='split'")
    episodes, source = ds.episodes(), ds.episode_sources()["source"]
    names = list(dict.fromkeys(source.tolist())) or [ds.id]
    return {name: _columns(episodes, source == name) for name in names}


def _columns(episodes: Mapping[str, np.ndarray], mask: Any = slice(None)) -> dict[str, Any]:
    return {"return": episodes["return"][mask], "length": episodes["length"][mask]}


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingExtraError(
            f'plot_report needs matplotlib ({e}); pip install "harvest[plot]"'
        ) from e
    return Figure, FigureCanvasAgg


def plot_report(
    ds: Dataset,
    out: str | os.PathLike[str],
    by: Literal["source", "split"] = "source",
    bins: int = 30,
    *,
    splits: Mapping[str, Dataset] | None = None,
) -> Path:
    """Write a PNG of episode-return and episode-length histograms, one colour per group.

    Args:
        ds: the dataset (or view) to plot.
        out: the PNG path; its folder is created, and the file replaced atomically.
        by: ``"source"``: one colour per source dataset of a combined or saved dataset (a
            collected dataset is one group). ``"split"``: one colour per entry of ``splits``.
        bins: histogram bins, shared by all groups.
        splits: named views or datasets, e.g. ``{"train": train, "val": val}`` (``by="split"``).

    Returns:
        The path written.

    Raises:
        MissingExtraError: matplotlib is not installed.
        UsageError: an unknown ``by``, or ``splits`` without ``by="split"`` (or the reverse).
    """
    groups = _groups(ds, by, splits)
    figure_class, canvas_class = _matplotlib()
    fig = figure_class(figsize=(12, 4.5), dpi=100, layout="constrained")
    canvas_class(fig)
    axes = fig.subplots(1, 2)
    for ax, field, label in zip(
        axes, ("return", "length"), ("episode return", "episode length (steps)"), strict=True
    ):
        values = [g[field].astype(np.float64) for g in groups.values()]
        edges = np.histogram_bin_edges(np.concatenate(values), bins=bins)
        for name, v in zip(groups, values, strict=True):
            ax.hist(v, bins=edges, alpha=0.55, label=f"{name} ({len(v)})")
        ax.set_xlabel(label)
        ax.set_ylabel("episodes")
        ax.yaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, title=by, loc="outside right upper", fontsize="small")
    fig.suptitle(f"{ds.id}: {ds.total_episodes:,} episodes, {ds.total_steps:,} steps")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    storage.atomic_write(path, buffer.getvalue())
    return path
