"""``policy=hub``: a policy checkpoint fetched from a Hugging Face model repo.

``HubPolicy(repo, filename, revision, loader, **loader_kwargs)`` resolves ``revision`` (a
branch, tag or commit) to a commit sha, downloads ``filename`` at that commit through
huggingface_hub's cache (``hf_hub_download``; a cached file at a commit sha costs no request)
and builds the loader (``sb3``: ``collector.policy_loaders.SB3Policy``, ``torch``:
``collector.policy_loaders.TorchPolicy``, or any dotted class path) with the local file as its
``path`` (its ``state_dict`` when a ``module`` is given, the CleanRL shape).

``collect`` resolves the revision once on the driver (``collector.checkpoints``), records the
commit and the file's sha256 in provenance and hands workers the config pinned to the commit,
so every worker loads the same bytes. Everything the Hub says is hostile: repo, filename and
revision are checked before any request, the commit sha it answers must look like one, and a
file larger than ``$HARVEST_HUB_MAX_MB`` (default 4096) is refused before it is downloaded.
``HF_ENDPOINT`` points at another Hub; tokens come from huggingface_hub's usual places.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

from collector.errors import HarvestError, MissingExtraError, RemoteError, UsageError
from collector.http import transport_errors

log = logging.getLogger(__name__)

__all__ = [
    "HUB_TARGET",
    "LOADERS",
    "HubCheckpoint",
    "HubPolicy",
    "check_reference",
    "fetch_checkpoint",
    "file_key",
    "loader_target",
    "max_download_bytes",
]

HUB_TARGET: Final = "collector.policy_hub.HubPolicy"
#: ``policy.loader`` short names and the classes they build.
LOADERS: Final = {
    "sb3": "collector.policy_loaders.SB3Policy",
    "torch": "collector.policy_loaders.TorchPolicy",
}
REPO_TYPE: Final = "model"
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_REPO_RE: Final = re.compile(rf"{_NAME}/{_NAME}")
_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9_+=@,-][A-Za-z0-9._+=@,-]*")
_REVISION_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}")
_COMMIT_RE: Final = re.compile(r"[0-9a-f]{40}")
_DOTTED_RE: Final = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_DEFAULT_MAX_MB: Final = 4096


def max_download_bytes() -> int:
    """Largest checkpoint downloaded from the Hub: ``$HARVEST_HUB_MAX_MB`` MB (default 4096)."""
    text = os.environ.get("HARVEST_HUB_MAX_MB", "").strip()
    try:
        mb = float(text) if text else _DEFAULT_MAX_MB
    except ValueError:
        raise UsageError(
            f"HARVEST_HUB_MAX_MB={text!r} is not a number; set it to a size in MB"
        ) from None
    if not mb > 0:
        raise UsageError(f"HARVEST_HUB_MAX_MB={text!r} must be > 0")
    return int(mb * 1024 * 1024)


def check_reference(repo: Any, filename: Any, revision: Any) -> None:
    """Refuse a repo id, file name or revision that is malformed or escapes the repo.

    Raises:
        UsageError: naming the key (``policy.repo``, ``policy.filename``, ``policy.revision``).
    """
    for key, value, example in (("repo", repo, "ORG/NAME"), ("filename", filename, "model.zip")):
        if value in (None, "???"):  # left as conf/policy/hub.yaml has it
            raise UsageError(f"policy=hub needs policy.{key}; set e.g. policy.{key}={example}")
    if not isinstance(repo, str) or not _REPO_RE.fullmatch(repo) or ".." in repo:
        raise UsageError(
            f"policy.repo={repo!r} is not a Hub model repo id; use ORG/NAME "
            "(letters, digits, '.', '_', '-')"
        )
    parts = filename.split("/") if isinstance(filename, str) else [""]
    if (
        not isinstance(filename, str)
        or len(filename) > 1000
        or not all(_SEGMENT_RE.fullmatch(p) and p not in (".", "..") for p in parts)
    ):
        raise UsageError(
            f"policy.filename={filename!r} is not a file path inside the repo; use a relative "
            "path such as model.zip or ppo/CartPole-v1.zip (no '..', no leading '/')"
        )
    if (
        not isinstance(revision, str)
        or not _REVISION_RE.fullmatch(revision)
        or ".." in revision
        or revision.endswith("/")
    ):
        raise UsageError(
            f"policy.revision={revision!r} is not a branch, tag or commit sha; use e.g. main"
        )


def _hub() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors  # submodules the package does not import lazily
    except ImportError as e:
        raise MissingExtraError(
            "policy=hub needs huggingface_hub: pip install 'harvest[hf]'"
        ) from e
    return huggingface_hub


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


@contextlib.contextmanager
def _errors(repo: str, filename: str, revision: str) -> Iterator[None]:
    """Translate client exceptions into one-line harvest errors."""
    errors = _hub().errors
    where = f"{_endpoint() or 'the Hub'}"
    try:
        yield
    except HarvestError:
        raise
    except errors.RepositoryNotFoundError as e:
        raise UsageError(
            f"policy.repo={repo!r}: no such model repo on {where} (or it is private or gated: "
            "log in with `hf auth login` or set HF_TOKEN)"
        ) from e
    except errors.RevisionNotFoundError as e:
        raise UsageError(
            f"policy.revision={revision!r}: no such branch, tag or commit in {repo!r}"
        ) from e
    except errors.LocalEntryNotFoundError as e:
        raise RemoteError(
            f"{repo}/{filename}@{revision} is not in the local Hub cache and cannot be "
            f"downloaded ({type(e).__name__}); check the network, $HF_ENDPOINT or HF_HUB_OFFLINE"
        ) from e
    except errors.EntryNotFoundError as e:
        raise UsageError(
            f"policy.filename={filename!r}: no such file in {repo!r} at revision {revision!r}"
        ) from e
    except (errors.HfHubHTTPError, OSError, *transport_errors()) as e:
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RemoteError(
            f"cannot download {repo}/{filename}@{revision} from {where} ({cause}); check the "
            "network or $HF_ENDPOINT"
        ) from e


@dataclass(frozen=True)
class HubCheckpoint:
    """A Hub file pinned to a commit, and where its bytes are in the local cache."""

    repo: str
    filename: str
    revision: str  # as asked for (a branch, tag or commit)
    commit: str  # the commit sha it resolved to
    local_path: Path

    def identity(self) -> dict[str, str]:
        """The JSON facts provenance records (not the local path: it is machine-specific)."""
        return {
            "repo": self.repo,
            "filename": self.filename,
            "revision": self.revision,
            "commit": self.commit,
        }


def _too_big(repo: str, filename: str, size: int | None, limit: int) -> UsageError | None:
    if size is not None and 0 <= size <= limit:
        return None
    said = "no size" if size is None else f"{size} bytes"
    return UsageError(
        f"{repo}/{filename} is {said}, over the {limit} bytes a policy checkpoint may be; "
        "raise HARVEST_HUB_MAX_MB if you trust it"
    )


def fetch_checkpoint(repo: str, filename: str, revision: str = "main") -> HubCheckpoint:
    """Resolve ``revision`` to a commit and bring ``repo/filename`` at it into the cache.

    A commit sha whose file is already cached makes no request, nor does any cached revision
    with ``HF_HUB_OFFLINE=1`` (a branch then means the commit the cache last saw it at).
    Otherwise one HEAD request resolves the revision and reads the size (refused over
    ``max_download_bytes()``), then ``hf_hub_download`` fetches the file at the commit.

    Raises:
        UsageError: a malformed or unknown repo, filename or revision, or a file too large.
        RemoteError: the Hub cannot be reached or answers nonsense.
        MissingExtraError: huggingface_hub is not installed.
    """
    check_reference(repo, filename, revision)
    hub = _hub()
    limit = max_download_bytes()
    offline = hub.constants.is_offline_mode()
    if _COMMIT_RE.fullmatch(revision) or offline:
        cached = hub.try_to_load_from_cache(repo, filename, revision=revision, repo_type=REPO_TYPE)
        if isinstance(cached, str):
            # <cache>/models--org--name/snapshots/<commit>/<filename>
            commit = Path(cached).parents[filename.count("/")].name
            if _COMMIT_RE.fullmatch(commit):
                checkpoint = HubCheckpoint(repo, filename, revision, commit, Path(cached))
                return _checked(checkpoint, limit)
    if offline:
        raise RemoteError(
            f"{repo}/{filename}@{revision} is not in the local Hub cache and HF_HUB_OFFLINE is "
            "set; run once online (or unset HF_HUB_OFFLINE)"
        )
    endpoint = _endpoint()
    with _errors(repo, filename, revision):
        url = hub.hf_hub_url(
            repo, filename, repo_type=REPO_TYPE, revision=revision, endpoint=endpoint
        )
        meta = hub.get_hf_file_metadata(url)
        commit = str(meta.commit_hash or "")
        if not _COMMIT_RE.fullmatch(commit):
            raise RemoteError(
                f"{endpoint or 'the Hub'} resolved {repo}@{revision} to {commit[:80]!r}, not a "
                "commit sha; check $HF_ENDPOINT"
            )
        error = _too_big(repo, filename, meta.size, limit)
        if error is not None:
            raise error
        local = hub.hf_hub_download(
            repo, filename, repo_type=REPO_TYPE, revision=commit, endpoint=endpoint
        )
    if revision != commit:
        _remember_ref(Path(local).parents[filename.count("/") + 2], revision, commit)
    return _checked(HubCheckpoint(repo, filename, revision, commit, Path(local)), limit)


def _remember_ref(repo_folder: Path, revision: str, commit: str) -> None:
    """Record ``revision -> commit`` in the cache's ``refs/`` as ``hf_hub_download`` does.

    Downloading at the commit (so every file is the resolved one) leaves the branch unknown
    to the cache; with the ref, an ``HF_HUB_OFFLINE=1`` run resolves it. Best effort: a
    read-only cache only loses that.
    """
    ref = repo_folder / "refs" / revision
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=ref.parent, prefix=f".{ref.name}-")
        with os.fdopen(fd, "w") as f:
            f.write(commit)
        os.replace(tmp, ref)
    except OSError:
        log.debug("cannot record %s -> %s in the Hub cache", revision, commit, exc_info=True)


def _checked(checkpoint: HubCheckpoint, limit: int) -> HubCheckpoint:
    """Refuse a cached file over the limit (the cache may be shared or older than the limit)."""
    size = checkpoint.local_path.stat().st_size
    error = _too_big(checkpoint.repo, checkpoint.filename, size, limit)
    if error is not None:
        raise error
    return checkpoint


def loader_target(loader: Any) -> str:
    """The dotted class path ``policy.loader`` names (``sb3``, ``torch`` or a dotted path).

    Raises:
        UsageError: neither a short name nor a dotted path.
    """
    if isinstance(loader, str) and loader in LOADERS:
        return LOADERS[loader]
    if isinstance(loader, str) and _DOTTED_RE.fullmatch(loader):
        return loader
    raise UsageError(
        f"policy.loader={loader!r} is not a loader; use sb3, torch or a dotted class path "
        "(pkg.module.Class)"
    )


def file_key(loader_kwargs: dict[str, Any]) -> str:
    """The loader key the downloaded file fills: ``state_dict`` with a ``module``, else ``path``."""
    return "state_dict" if loader_kwargs.get("module") is not None else "path"


class HubPolicy:
    """A policy whose checkpoint is a file of a Hugging Face model repo (``policy=hub``).

    Args:
        repo: the model repo, ``ORG/NAME``.
        filename: the checkpoint's path inside the repo.
        revision: branch, tag or commit sha (default ``main``); resolved to a commit once.
        loader: ``sb3``, ``torch`` or the dotted path of a loader class taking ``path`` (or
            ``state_dict`` with ``module``).
        action_space: passed on to the loader when it takes one.
        observation_space: likewise.
        **loader_kwargs: the loader's own keys (``deterministic``, ``device``, ``module``...).

    Raises:
        UsageError: a bad repo, filename, revision or loader, or ``path``/``state_dict`` given
            (the downloaded file fills it).
        RemoteError: the Hub cannot be reached.
    """

    def __init__(
        self,
        repo: str,
        filename: str,
        revision: str = "main",
        loader: str = "sb3",
        action_space: Any = None,
        observation_space: Any = None,
        **loader_kwargs: Any,
    ) -> None:
        from collector.policies import build_policy, has_rows

        target = loader_target(loader)
        key = file_key(loader_kwargs)
        if loader_kwargs.get(key) is not None:
            raise UsageError(
                f"policy.{key} is set by policy=hub from policy.repo and policy.filename; "
                f"drop policy.{key}"
            )
        checkpoint = fetch_checkpoint(repo, filename, revision)
        spaces = SimpleNamespace(action_space=action_space, observation_space=observation_space)
        cfg = {**loader_kwargs, "_target_": target, key: str(checkpoint.local_path)}
        self.checkpoint = checkpoint
        self.policy = build_policy(cfg, spaces)
        # the loader's own methods, so a step costs no extra call through this wrapper
        self.reset = self.policy.reset
        self.act = self.policy.act
        if hasattr(self.policy, "act_batch"):
            self.act_batch = self.policy.act_batch
        if has_rows(self.policy):  # batched per-row inference in vector runs
            self.reset_row, self.act_rows = self.policy.reset_row, self.policy.act_rows

    def provenance(self) -> dict[str, Any]:
        """The loader's provenance (versions, device...) plus the repo and pinned commit."""
        inner = getattr(self.policy, "provenance", None)
        out = dict(inner()) if callable(inner) else {}
        out["hub"] = self.checkpoint.identity()
        return out
