"""Remotes: publish and fetch datasets on a folder, the Hugging Face Hub or Cloud Storage.

The remote is ``$HARVEST_REMOTE`` unless a call (``remote=``) or the command line
(``--remote URI``) names one:

- ``file:///path``: a folder (e.g. NFS), laid out like a local datasets root;
- ``hf://org[/prefix]``: Hub dataset repos; ``A/B/C-vN`` lives in repo ``org/A`` under
  ``B/C-vN/`` as in Minari (with a prefix, the prefix's first segment is the repo);
- ``gcp://bucket[/prefix]``: objects ``<prefix>/<id>/...``.
"""

from __future__ import annotations

import os
from typing import Any

from collector.errors import UsageError
from collector.redact import redact_url
from curation.remotes.base import Remote, TransferReport

__all__ = [
    "REMOTE_ENV",
    "Remote",
    "TransferReport",
    "delete_remote_dataset",
    "list_remote_datasets",
    "open_remote",
    "pull_dataset",
    "push_dataset",
]

REMOTE_ENV = "HARVEST_REMOTE"
_FORMS = "file:///path, hf://org[/prefix] or gcp://bucket[/prefix]"


def open_remote(remote: str | Remote | None = None) -> Remote:
    """The remote named by ``remote``, else by ``$HARVEST_REMOTE``.

    Raises:
        UsageError: none given, or an unknown scheme.
    """
    if isinstance(remote, Remote):
        return remote
    uri = remote or os.environ.get(REMOTE_ENV)
    if not uri:
        raise UsageError(
            f"no remote given: pass --remote URI (remote=URI) or set ${REMOTE_ENV} to {_FORMS}"
        )
    shown = redact_url(uri)
    if shown != uri:  # it would be echoed in errors and stored in provenance (issue 16)
        raise UsageError(
            f"remote {shown!r} has credentials in the URI; remove them and log in instead "
            "(gcp://: Application Default Credentials or GOOGLE_APPLICATION_CREDENTIALS; hf://: "
            "`hf auth login` or HF_TOKEN)"
        )
    scheme, sep, rest = uri.partition("://")
    if not sep or not rest.strip("/"):
        raise UsageError(f"remote {uri!r} is not a URI; use {_FORMS}")
    if scheme == "file":
        from curation.remotes.file import FileRemote

        return FileRemote(uri)
    if scheme == "hf":
        from curation.remotes.hf import HubRemote

        return HubRemote(uri)
    if scheme in ("gcp", "gs"):
        from curation.remotes.gcs import GCSRemote

        return GCSRemote(uri)
    raise UsageError(f"remote {uri!r} has an unknown scheme {scheme!r}; use {_FORMS}")


def push_dataset(
    dataset_id: str,
    remote: str | Remote | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> TransferReport:
    """Publish a local dataset to a remote: data files first, ``metadata.json`` last.

    Idempotent and resumable (files already there with the same sha256 are skipped). A remote
    copy with other content is replaced only with ``overwrite=True``.
    """
    return open_remote(remote).push(dataset_id, root=root, overwrite=overwrite, progress=progress)


def pull_dataset(
    dataset_id: str,
    remote: str | Remote | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> TransferReport:
    """Download a dataset into the local root; every file is checked against its sha256."""
    return open_remote(remote).pull(dataset_id, root=root, overwrite=overwrite, progress=progress)


def list_remote_datasets(remote: str | Remote | None = None) -> dict[str, dict[str, Any]]:
    """Every complete dataset on a remote, as ``{id: metadata}`` (like ``list_local_datasets``)."""
    return open_remote(remote).list()


def delete_remote_dataset(dataset_id: str, remote: str | Remote | None = None) -> None:
    """Remove a dataset from a remote."""
    open_remote(remote).delete(dataset_id)
