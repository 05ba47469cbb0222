"""Checkpoint identity: which files a dataset's policy acted from.

A policy config names checkpoint files under the keys ``path`` and ``state_dict`` (in a
mixture, in each of its ``policies`` too, recursively), and a ``policy=hub`` config names a
file of a Hub model repo. ``checkpoint_identity`` hashes each one (sha256 and size, streamed
in bounded memory; a folder hashes its files in sorted order) and, for the Hub, resolves the
revision to a commit. ``collect`` stores the result in provenance and the hashes in the
data-affecting config, so a resume refuses a file that changed behind the same path
(``checkpoint_hashes``). ``pin_policy`` gives the config workers build from: relative paths
made absolute against the driver's working directory, Hub revisions replaced by the commit.

Keys are named as overrides name them: ``policy.path``, ``policy.policies.1.state_dict``,
``policy.filename`` (a Hub file).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Final

from collector.errors import UsageError
from collector.policy_hub import HUB_TARGET, fetch_checkpoint

__all__ = [
    "FILE_KEYS",
    "checkpoint_hashes",
    "checkpoint_identity",
    "file_digest",
    "is_hub_config",
    "pin_policy",
]

#: Policy config keys that name checkpoint files (the issue-20 contract).
FILE_KEYS: Final = ("path", "state_dict")
#: Libraries whose version shapes what a loaded checkpoint does.
_LIBRARIES: Final = ("torch", "stable-baselines3")


def is_hub_config(policy_cfg: Mapping[str, Any]) -> bool:
    """True for a ``policy=hub`` config (``_target_: collector.policy_hub.HubPolicy``)."""
    return policy_cfg.get("_target_") == HUB_TARGET


def _policy_configs(cfg: Mapping[str, Any], key: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(key, config)`` of a policy config and of every policy nested in its ``policies``."""
    yield key, cfg
    subs = cfg.get("policies")
    if isinstance(subs, list | tuple):
        for i, sub in enumerate(subs):
            if isinstance(sub, Mapping):
                yield from _policy_configs(sub, f"{key}.policies.{i}")


def file_digest(path: str | os.PathLike[str]) -> tuple[str, int]:
    """``(sha256 hex, size in bytes)`` of a file.

    A folder (a checkpoint saved as a directory) hashes a sorted listing of its files'
    relative paths, sizes and sha256s; its size is their total.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     file_digest(f.name)[1]
    0
    """
    path = Path(path)
    if not path.is_dir():
        return _file_hex(path)
    listing = hashlib.sha256()
    total = 0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file = Path(root, name)
            sha, size = _file_hex(file)
            rel = file.relative_to(path).as_posix()
            listing.update(f"{rel}\0{size}\0{sha}\n".encode())
            total += size
    return listing.hexdigest(), total


def _file_hex(path: Path) -> tuple[str, int]:
    """``(sha256 hex, bytes read)`` of one file (the standard library's chunked read)."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return digest.hexdigest(), f.tell()


def _local_file(key: str, value: Any) -> Path:
    """The file a ``path``/``state_dict`` value names, resolved against the working directory."""
    if value == "???":  # left as conf/policy/*.yaml has it
        raise UsageError(f"{key} is not set; give the checkpoint file: {key}=FILE")
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise UsageError(f"{key}={value!r} is not a file path; give the checkpoint file's path")
    path = Path(os.path.abspath(os.path.expanduser(value)))
    if not path.exists():
        zipped = path.with_name(path.name + ".zip")  # SB3's save("name") writes name.zip
        hint = f"did you mean {key}={str(value) + '.zip'!r}?" if zipped.is_file() else "check it"
        raise UsageError(
            f"{key}={str(value)!r}: no such file (relative paths resolve against {os.getcwd()}); "
            f"{hint}"
        )
    if not (path.is_file() or path.is_dir()):  # a FIFO or device would never end
        raise UsageError(f"{key}={str(value)!r} is not a regular file; give the checkpoint file")
    return path


def _local_identity(key: str, value: Any) -> dict[str, Any]:
    path = _local_file(key, value)
    try:
        sha, size = file_digest(path)
    except OSError as e:
        reason = e.strerror or e
        raise UsageError(f"{key}={str(value)!r} cannot be read ({reason}); check it") from e
    return {"sha256": sha, "size": size}


def _hub_identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    checkpoint = fetch_checkpoint(
        cfg.get("repo"),  # type: ignore[arg-type]  # checked there
        cfg.get("filename"),  # type: ignore[arg-type]
        cfg.get("revision", "main"),
    )
    sha, size = file_digest(checkpoint.local_path)
    return {**checkpoint.identity(), "sha256": sha, "size": size}


def _versions(hub: bool) -> dict[str, str]:
    out = {}
    for dist in (*_LIBRARIES, *(("huggingface_hub",) if hub else ())):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def checkpoint_identity(policy_cfg: Mapping[str, Any], key: str = "policy") -> dict[str, Any]:
    """The identity of every checkpoint file a policy config names; ``{}`` when there is none.

    Returns ``{"files": {key: {"sha256", "size"}, ...}, "versions": {...}}``; a Hub file's
    entry (key ``<policy>.filename``) adds ``repo``, ``filename``, ``revision`` and the
    ``commit`` it resolved to. ``versions`` holds torch's and stable-baselines3's (those
    installed) and huggingface_hub's for the Hub.

    Args:
        policy_cfg: the ``policy`` config (a mixture's ``policies`` are walked too).
        key: the config key naming it, the prefix of the keys returned.

    Raises:
        UsageError: a file key that is not a path or names no file; a bad Hub reference.
        RemoteError: the Hub cannot be reached.
    """
    files: dict[str, dict[str, Any]] = {}
    hub = False
    for name, cfg in _policy_configs(policy_cfg, key):
        if is_hub_config(cfg):
            hub = True
            files[f"{name}.filename"] = _hub_identity(cfg)
            continue
        for file_key in FILE_KEYS:
            if cfg.get(file_key) is not None:
                files[f"{name}.{file_key}"] = _local_identity(f"{name}.{file_key}", cfg[file_key])
    if not files:
        return {}
    return {"files": files, "versions": _versions(hub)}


def checkpoint_hashes(identity: Mapping[str, Any]) -> dict[str, str]:
    """``{key: sha256}`` of an identity: the data-affecting part (``{}`` for none)."""
    files = identity.get("files") or {}
    return {k: str(v["sha256"]) for k, v in sorted(files.items())}


def pin_policy(
    policy_cfg: Mapping[str, Any], identity: Mapping[str, Any], key: str = "policy"
) -> dict[str, Any]:
    """The config to build the policy from: what ``checkpoint_identity`` checked, pinned.

    A copy of ``policy_cfg`` with each hashed file key made absolute (against this process's
    working directory, so workers elsewhere load the same file) and each Hub config's
    ``revision`` replaced by the commit it resolved to.
    """
    files = identity.get("files") or {}
    out = dict(policy_cfg)
    if is_hub_config(out):
        entry = files.get(f"{key}.filename")
        if entry is not None:
            out["revision"] = entry["commit"]
    else:
        for file_key in FILE_KEYS:
            if f"{key}.{file_key}" in files:
                out[file_key] = os.path.abspath(os.path.expanduser(out[file_key]))
    subs = out.get("policies")
    if isinstance(subs, list | tuple):
        out["policies"] = [
            pin_policy(sub, identity, f"{key}.policies.{i}") if isinstance(sub, Mapping) else sub
            for i, sub in enumerate(subs)
        ]
    return out
