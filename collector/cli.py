"""The ``collect`` command: a thin Hydra app over ``collector.collect.collect``."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig

from collector import storage
from collector.collect import CollectInterrupted, CollectResult, collect
from collector.config import (
    RUNNER_CONFIGS,
    check_runner_keys,
    check_value,
    check_wrappers,
    known_keys,
    unknown_key_error,
)
from collector.errors import HarvestError, UsageError
from collector.redact import install_log_redaction, redact_hydra_run, redact_text
from collector.yaml_limits import install_yaml_limits

__all__ = ["OPEN_MAPS", "check_overrides", "main"]

#: Maps whose keys are the user's own (``gym.make`` kwargs, policy arguments, ``ray.init``
#: arguments): new keys need no ``+``. ``metadata`` takes the fields in ``storage.AUTHOR_FIELDS``.
OPEN_MAPS = ("env_kwargs", "policy", "runner.init")


def summary(result: CollectResult) -> str:
    """The closing summary line(s) of a run."""
    if result.noop:
        head = f"{result.dataset_id}: already complete, nothing to collect"
    else:
        head = (
            f"{result.dataset_id}: +{result.new_episodes} episodes, +{result.new_steps:,} steps "
            f"in {result.wall_seconds:.1f} s ({result.steps_per_second:,.0f} steps/s)"
        )
    superseded, folder = _superseded(result)
    # what du says: the shards' index files and metadata.json too (~20% of small-episode
    # data such as CartPole's); the shards' sum when the folder cannot be read
    size = f"{storage.human_size(folder or result.dataset_bytes)} on disk"
    if superseded:
        size = (
            f"{storage.human_size(result.dataset_bytes)} of data; the folder holds "
            f"{storage.human_size(folder)} until the next writer removes {superseded} superseded "
            "shard(s),"
        )
    text = (
        f"{head}\n  {result.total_episodes} episodes, {result.total_steps:,} steps, "
        f"{size} at {result.path}\n"
        f"  fingerprint {result.fingerprint[:16]}"
    )
    if result.ref_scores is not None:
        low, high = result.ref_scores
        text += f"\n  reference scores {low:g} (random) to {high:g} (this policy)"
    return text


def _superseded(result: CollectResult) -> tuple[int, int]:
    """Shards in ``data/`` that the last commit no longer names, and the folder's bytes.

    Both 0 when the folder cannot be read. A repack leaves the shards it merged for readers
    that opened the previous commit; the next writer removes them (DESIGN.md section 4), so
    until then ``du`` sees both.
    """
    try:
        named = {e["file"] for e in storage.read_metadata(result.path)["shards"]}
        folder, superseded = 0, 0
        for dirpath, _, files in os.walk(result.path):  # symlinks are not followed
            for name in files:
                folder += os.lstat(os.path.join(dirpath, name)).st_size
                if os.path.basename(dirpath) == storage.DATA_DIR and name not in named:
                    superseded += storage.SHARD_RE.match(name) is not None
    except (OSError, HarvestError, KeyError, TypeError):  # only a summary: never fail on it
        return 0, 0
    return superseded, folder


def _import_from_cwd(cfg: DictConfig) -> None:
    """Let ``env=MODULE:ID`` and the ``_target_`` of the policy or a wrapper name a local module.

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
    wrappers = cfg.get("wrappers")
    for entry in wrappers if isinstance(wrappers, ListConfig) else ():
        target = entry.get("_target_") if isinstance(entry, DictConfig) else None
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
    except (HarvestError, OSError) as e:
        # an OSError here is a full or read-only disk met below the durable I/O layer
        error = storage.user_error(e)
        if error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _exit_with(error)
    except KeyboardInterrupt as e:
        if isinstance(e, CollectInterrupted):  # counted from the commit on disk
            print(f"collect: {e}", file=sys.stderr)
        else:  # before the dataset was opened, or during the count
            print("collect: interrupted; earlier commits are intact", file=sys.stderr)
        sys.exit(130)
    print(summary(result))


def _groups(config_dir: str | None) -> set[str]:
    """The config groups (folders of ``conf`` and of ``--config-dir``), recipes excepted."""
    folders: list[Any] = [resources.files("conf"), *([Path(config_dir)] if config_dir else [])]
    return {
        p.name
        for folder in folders
        if folder.is_dir()
        for p in folder.iterdir()
        if p.is_dir() and p.name not in ("recipe", "__pycache__")  # recipes belong to curate
    }


def _runner_choice(overrides: list[Any]) -> str | None:
    """The runner the overrides select (``local`` by default); None when it is not known here."""
    from hydra.core.override_parser.types import OverrideType

    choice: Any = "local"
    for override in overrides:
        group = override.key_or_group.split("/")[0]
        if group == "experiment" or (group == "runner" and override.is_sweep_override()):
            return None  # an experiment may pick the runner; a sweep picks several
        if group == "runner" and override.type is not OverrideType.DEL:
            choice = override.value()
    return choice if choice in RUNNER_CONFIGS else None


def check_overrides(argv: list[str]) -> list[str]:
    """Refuse unknown config keys with a suggestion; let open maps take new keys without ``+``.

    Hydra refuses ``epsiodes=10`` in six lines and suggests ``+epsiodes=10``, which then adds
    a key nothing reads (issue 16 item 21). Keys under ``OPEN_MAPS`` are the user's own, so
    ``env_kwargs.map_name=8x8`` becomes ``++env_kwargs.map_name=8x8`` (add or replace), as do
    the author fields the YAML leaves out (``metadata.ref_min_score``) and a listed wrapper's
    arguments (``wrappers.0.noop_max=0``).

    Args:
        argv: the command-line arguments after the program name.

    Returns:
        ``argv`` with the open maps' plain overrides turned into ``++`` ones.

    Raises:
        UsageError: a key, plain or added with ``+``/``++``, that collect does not know.
    """
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    parser = get_args_parser()

    def refuse(message: str) -> None:
        raise ValueError(message)

    parser.error = refuse  # type: ignore[method-assign]
    try:
        args = parser.parse_args(argv)
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except Exception:  # Hydra reports bad flags and override syntax itself
        return argv
    if args.config_name not in (None, "collect") or args.config_path:
        return argv  # another primary config: its keys are not ours to know
    in_yaml, keys = known_keys()
    groups = _groups(args.config_dir)
    runner = _runner_choice(overrides)
    plain: set[str] = set()
    for text, override in zip(args.overrides, overrides, strict=True):
        key = override.key_or_group
        if key.split(".")[0] == "hydra" or "/" in key or key in groups or override.package:
            continue
        if override.type is OverrideType.DEL:
            continue
        is_open = any(key == m or key.startswith(m + ".") for m in OPEN_MAPS)
        is_open = is_open or key.startswith("wrappers.")  # wrappers.0.frame_skip=2
        if is_open or key in keys:
            addable = is_open or key.startswith("metadata.")
            if addable and override.type is OverrideType.CHANGE and key not in in_yaml:
                plain.add(text)
            if not addable and runner is not None and not override.is_sweep_override():
                _check_typed(key, override.value(), runner)
            continue
        raise unknown_key_error(key, keys)
    return [f"++{a}" if a in plain else a for a in argv]


def _check_typed(key: str, value: Any, runner: str) -> None:
    """Refuse a value of the wrong type, or a key of the runner not selected, in one line."""
    if key.startswith("runner."):
        check_runner_keys([key.split(".")[1]], runner)
    if key == "wrappers":  # before the schema's "Cannot assign str to Dict[str, Any]"
        check_wrappers(value)
    check_value(key, value, runner)


def _exit_with(err: HarvestError) -> NoReturn:
    """Print ``err`` as the one ``collect: error:`` line (secrets masked) and exit with its code."""
    print(f"collect: error: {redact_text(str(err))}", file=sys.stderr)
    sys.exit(err.exit_code)  # SystemExit passes through Hydra's error report


def main() -> None:
    """Console entry point."""
    install_yaml_limits(_exit_with)  # no config may expand into a huge one (issue 16)
    install_log_redaction()  # no secret in a log line, Hydra's included (issue 16 item 10)
    try:
        sys.argv[1:] = check_overrides(sys.argv[1:])
    except UsageError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _exit_with(e)
    _app()
