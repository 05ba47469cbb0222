"""The ``collect`` command: a thin Hydra app over ``collector.collect.collect``."""

from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from collector import format as fmt
from collector.collect import CollectInterrupted, CollectResult, collect
from collector.errors import HarvestError

__all__ = ["main"]


def summary(result: CollectResult) -> str:
    """The closing summary line(s) of a run."""
    if result.noop:
        head = f"{result.dataset_id}: already complete, nothing to collect"
    else:
        head = (
            f"{result.dataset_id}: +{result.new_episodes} episodes, +{result.new_steps:,} steps "
            f"in {result.wall_seconds:.1f} s ({result.steps_per_second:,.0f} steps/s)"
        )
    return (
        f"{head}\n  {result.total_episodes} episodes, {result.total_steps:,} steps, "
        f"{fmt.human_size(result.dataset_bytes)} on disk at {result.path}\n"
        f"  fingerprint {result.fingerprint[:16]}"
    )


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="collect")
def _app(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    try:
        result = collect(
            cfg,
            overrides=list(hc.overrides.task),
            policy_name=hc.runtime.choices.get("policy"),
            progress=bool(cfg.get("progress", True)) and sys.stderr.isatty(),
        )
    except HarvestError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"collect: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt as e:
        if isinstance(e, CollectInterrupted):  # counted from the commit on disk
            print(f"collect: {e}", file=sys.stderr)
        else:  # before the dataset was opened, or during the count
            print("collect: interrupted; earlier commits are intact", file=sys.stderr)
        sys.exit(130)
    print(summary(result))


def main() -> None:
    """Console entry point."""
    _app()
