"""The ``collect`` command: a thin Hydra app over ``collector.collect.collect``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from collector import format as fmt
from collector.collect import CollectResult, collect
from collector.errors import HarvestError
from collector.redact import install_log_redaction, redact_hydra_run, redact_text
from collector.yaml_limits import install_yaml_limits

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


def _import_from_cwd(cfg: DictConfig) -> None:
    """Let ``env=MODULE:ID`` and ``policy._target_`` name a module in the current folder.

    ``python -m``, ``python script.py`` and Hydra apps run that way see the current folder;
    the installed ``collect`` script does not. It is added (last, so nothing installed is
    shadowed, and also to ``PYTHONPATH`` for Ray workers and sub-env processes) only when a
    module the config names is there.
    """
    cwd = Path.cwd()
    if str(cwd) in sys.path or "" in sys.path:
        return
    env, policy = cfg.get("env"), cfg.get("policy")
    names = {env.split(":")[0]} if isinstance(env, str) and ":" in env else set()
    target = policy.get("_target_") if isinstance(policy, DictConfig) else None
    if isinstance(target, str):
        names.add(target)
    tops = {name.split(".")[0] for name in names} - {""}
    if any((cwd / f"{top}.py").is_file() or (cwd / top).is_dir() for top in tops):
        sys.path.append(str(cwd))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.environ.get("PYTHONPATH"), str(cwd)) if p
        )


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="collect")
def _app(cfg: DictConfig) -> None:
    redact_hydra_run()  # no secret stays in Hydra's run files (issue 16 item 10)
    _import_from_cwd(cfg)  # issue 16 item 20
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
        print(f"collect: error: {redact_text(str(e))}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("collect: interrupted; finished episodes are committed", file=sys.stderr)
        sys.exit(130)
    print(summary(result))


def _refuse_config(err: HarvestError) -> NoReturn:
    print(f"collect: error: {redact_text(str(err))}", file=sys.stderr)
    sys.exit(err.exit_code)  # SystemExit passes through Hydra's error report


def main() -> None:
    """Console entry point."""
    install_yaml_limits(_refuse_config)  # no config may expand into a huge one (issue 16)
    install_log_redaction()  # no secret in a log line, Hydra's included (issue 16 item 10)
    _app()
