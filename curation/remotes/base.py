"""The remote interface and the push/pull logic every backend shares (DESIGN.md section 8).

A backend supplies a handful of file primitives (list ids, read one small file, stat a
dataset's files, download one file, publish a push, delete); ``Remote`` owns everything that
must behave the same on a folder, the Hub and a bucket:

- **push**: data files first, ``metadata.json`` last, so a dataset is listed only once complete.
  Files already on the remote with the same sha256 are skipped, so a push is idempotent and an
  interrupted one resumes. A remote copy with other content is replaced only with ``overwrite``.
  Files the new manifest no longer names are removed after the new ``metadata.json`` is live
  (only the dataset's own: its manifest and shard names directly in ``data/``). A push carries
  exactly the dataset's episodes: a linked shard that also holds others (a split's held-out
  part) is compacted first (``storage.exact_shards``), the fingerprint unchanged.
- **nesting**: a dataset never contains another, on a remote as locally; a push or pull of an
  id inside or around another dataset is refused.
- **pull**: every file lands in ``<root>/.tmp/`` and is checked against the sha256 in
  ``metadata.json``; the folder is renamed into place only when complete, under the dataset's
  writer lock. A failed pull leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from tqdm import tqdm

from collector import storage
from collector.errors import (
    CorruptDatasetError,
    DatasetExistsError,
    DatasetIdError,
    DatasetNotFoundError,
    FormatVersionError,
    HarvestError,
    HarvestWarning,
    RemoteError,
    UsageError,
)
from collector.redact import redact_url

__all__ = [
    "ObjectStoreRemote",
    "Remote",
    "RemoteFile",
    "TransferReport",
    "Upload",
    "check_upload",
    "copy_at_most",
    "read_limit",
    "run_parallel",
    "split_uri",
]

META = storage.METADATA_FILE
#: Files transferred at once (Minari fetches metadata with 10 threads).
MAX_WORKERS = 8


@dataclass(frozen=True)
class RemoteFile:
    """A file under a dataset's remote folder: its size and, when the backend keeps it, sha256."""

    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class Upload:
    """A local file to publish at ``rel`` (relative to the dataset folder)."""

    rel: str
    path: Path
    sha256: str
    size: int


@dataclass
class TransferReport:
    """What a push or pull did: files moved and skipped, bytes, and where the data now is."""

    action: str
    dataset_id: str
    remote: str
    transferred: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes: int = 0
    up_to_date: bool = False
    path: Path | None = None

    def render(self) -> str:
        """One line for the command line."""
        where = self.remote if self.action == "push" else str(self.path)
        if self.up_to_date:
            return f"{self.dataset_id} is up to date at {where}"
        verb = "pushed to" if self.action == "push" else "pulled into"
        extra = f", {len(self.skipped)} already there" if self.skipped else ""
        gone = f", {len(self.removed)} stale removed" if self.removed else ""
        return (
            f"{self.dataset_id} {verb} {where}: {len(self.transferred)} file(s), "
            f"{storage.human_size(self.bytes)}{extra}{gone}"
        )


def _progress_bar(total: int, desc: str, progress: bool | None) -> tqdm:
    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=not show,
        file=sys.stderr,
    )


def run_parallel(jobs: Sequence[Callable[[], None]], workers: int = MAX_WORKERS) -> None:
    """Run ``jobs`` on a thread pool; the first failure cancels what has not started and raises."""
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        futures = [pool.submit(job) for job in jobs]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]


def read_limit() -> int:
    """Most bytes ``_read`` returns: a larger ``metadata.json`` is refused without more."""
    return storage.METADATA_MAX_BYTES + 1


def copy_at_most(src: BinaryIO, dest: BinaryIO, limit: int, chunk: int = 1 << 20) -> int:
    """Copy at most ``limit`` bytes from ``src`` to ``dest``; returns the bytes copied."""
    done = 0
    while done < limit:
        data = src.read(min(chunk, limit - done))
        if not data:
            break
        dest.write(data)
        done += len(data)
    return done


def bump_version(dataset_id: str) -> str:
    """``ns/name-v3`` -> ``ns/name-v4``: the id error messages suggest instead of overwriting."""
    ns, name, version = storage.parse_dataset_id(dataset_id)
    return f"{ns + '/' if ns else ''}{name}-v{version + 1}"


def split_uri(uri: str, what: str) -> tuple[str, str]:
    """``scheme://NAME/pre/fix`` -> ``(NAME, "pre/fix")``; ``what`` names NAME in the error."""
    scheme, _, rest = uri.partition("://")
    name, _, prefix = rest.strip("/").partition("/")
    if not name:
        raise UsageError(f"remote {uri!r} names no {what}; use {scheme}://{what}[/prefix]")
    return name, prefix


def _describe(meta: dict[str, Any]) -> str:
    return f"{meta.get('total_episodes')} episodes, fingerprint {str(meta.get('fingerprint'))[:12]}"


def check_upload(upload: Upload, path: Path, where: str) -> None:
    """Refuse to publish a file whose bytes at ``path`` differ from the manifest's sha256."""
    got = storage.sha256_file(path)
    if got != upload.sha256:
        raise CorruptDatasetError(
            f"{upload.rel} ({where}) does not match its sha256 in metadata.json (got {got[:12]}, "
            f"expected {upload.sha256[:12]}); nothing more is published. Run `curate verify` on "
            "the local dataset"
        )


def _exists_error(
    dataset_id: str, where: str, other: tuple[str, dict[str, Any] | None], meta: dict[str, Any]
) -> DatasetExistsError:
    """Refusal to replace ``other`` (remote on push, local on pull) with ``meta``'s content."""
    there, theirs = other
    here = "local" if there == "remote" else "remote"
    described = _describe(theirs) if theirs is not None else "an unreadable or uncommitted copy"
    return DatasetExistsError(
        f"{dataset_id} already exists {where} with other content ({there}: {described}; "
        f"{here}: {_describe(meta)}); pass --overwrite (overwrite=True) to replace it, or "
        f"use a new version such as {bump_version(dataset_id)}",
        dataset_id=dataset_id,
    )


def _same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("fingerprint", "total_episodes", "total_steps")
    return all(a.get(k) == b.get(k) for k in keys)


class Remote(ABC):
    """Where datasets are published: ``push``, ``pull``, ``list``, ``exists``, ``delete``."""

    scheme: ClassVar[str]

    def __init__(self, uri: str) -> None:
        self.uri = redact_url(uri)  # for messages and cards; subclasses parse their ``uri``

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    # -- public interface -----------------------------------------------------------------

    def list(self) -> dict[str, dict[str, Any]]:
        """Every complete dataset on the remote, as ``{id: metadata}``, sorted by id.

        A folder whose name is not a dataset id, or whose ``metadata.json`` is unreadable, is
        skipped with a warning.
        """
        ids = sorted(set(self._list_ids()))
        found: dict[str, dict[str, Any]] = {}

        def fetch(dataset_id: str) -> None:
            try:
                found[dataset_id] = self.metadata(dataset_id)
            except (
                CorruptDatasetError,
                DatasetNotFoundError,
                DatasetIdError,
                FormatVersionError,
            ) as e:
                warnings.warn(f"skipping {dataset_id} on {self.uri}: {e}", HarvestWarning, 2)

        run_parallel([lambda d=d: fetch(d) for d in ids])
        return {d: found[d] for d in ids if d in found}

    def exists(self, dataset_id: str) -> bool:
        """Whether a complete dataset with this id is on the remote."""
        storage.parse_dataset_id(dataset_id)
        return self._read(dataset_id, META) is not None

    def metadata(self, dataset_id: str) -> dict[str, Any]:
        """The remote dataset's ``metadata.json``.

        Raises:
            DatasetNotFoundError: not on the remote.
            CorruptDatasetError: unreadable, or describing another dataset.
        """
        storage.parse_dataset_id(dataset_id)
        return self._parse(dataset_id, self._require(dataset_id))

    def push(
        self,
        dataset_id: str,
        *,
        root: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        progress: bool | None = None,
    ) -> TransferReport:
        """Publish a local dataset's latest commit; resumable and idempotent.

        Shards that hold episodes the manifest leaves out are compacted in ``<root>/.tmp``
        first, so the remote gets exactly the dataset's episodes.

        Raises:
            UsageError: a remote dataset sits inside or around ``dataset_id``'s folder.
            DatasetNotFoundError: no such local dataset.
            DatasetExistsError: the remote holds this id with other content (pass ``overwrite``).
            CorruptDatasetError: a local file does not match its sha256 (nothing is published).
            RemoteError: the remote is unreachable or refuses.
        """
        path = storage.dataset_path(dataset_id, root)
        data = storage.read_metadata_bytes(path, dataset_id)
        meta = storage.loads_metadata(data, str(path / META), dataset_id)
        staging = storage.datasets_root(root) / storage.TMP_DIR / f"push-{uuid.uuid4().hex[:12]}"
        try:
            # exactly the dataset's episodes: linked shards may hold others (issue 16)
            exact, local = storage.exact_shards(path, meta, staging)
            if exact is not meta:
                meta, data = exact, storage.seal_metadata(exact).encode()  # sealed anew
            return self._push(dataset_id, path, data, meta, local, overwrite, progress)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _push(
        self,
        dataset_id: str,
        path: Path,
        data: bytes,
        meta: dict[str, Any],
        local: dict[str, Path],
        overwrite: bool,
        progress: bool | None,
    ) -> TransferReport:
        # shards and their index files (issue 18)
        files = storage.dataset_files(meta, dataset_id) + storage.index_files(meta, dataset_id)
        report = TransferReport("push", dataset_id, self.uri, path=path)
        with self._session(dataset_id):
            remote_data = self._read(dataset_id, META)
            if remote_data is not None:
                try:
                    remote: dict[str, Any] | None = self._parse(dataset_id, remote_data)
                except HarvestError:
                    remote = None  # an unreadable remote copy is "other content"
                if not (remote is not None and _same_content(meta, remote)) and not overwrite:
                    raise _exists_error(dataset_id, f"on {self.uri}", ("remote", remote), meta)
            existing = self._stat(dataset_id)
            self._check_nesting(dataset_id, existing)
            if remote_data == data and all(rel in existing for rel, _, _ in files):
                report.up_to_date = True
                report.skipped = [rel for rel, _, _ in files]
                return report
            uploads = []
            for rel, sha, size in files:
                have = existing.get(rel)
                if have is not None and have.size == size:
                    remote_sha = have.sha256 or self._hash(dataset_id, rel)
                    if remote_sha == sha:
                        report.skipped.append(rel)
                        continue
                uploads.append(Upload(rel, local[rel], sha, size))
            wanted = {rel for rel, _, _ in files} | {META}
            # only this dataset's own files: never a nested dataset's (issue 16)
            removals = sorted(r for r in existing if r not in wanted and self._owns(r))
            total = sum(u.size for u in uploads)
            with (
                _progress_bar(total, f"push {dataset_id}", progress) as bar,
                self._client_bars(not bar.disable),
            ):
                self._publish(dataset_id, uploads, data, removals, bar.update)
        report.transferred = [u.rel for u in uploads]
        report.removed = removals
        report.bytes = total
        return report

    def pull(
        self,
        dataset_id: str,
        *,
        root: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        progress: bool | None = None,
    ) -> TransferReport:
        """Download a dataset into the local root, every file checked against its sha256.

        Raises:
            DatasetNotFoundError: not on the remote.
            DatasetExistsError: a local dataset with this id and other content (``overwrite``).
            CorruptDatasetError: a pulled file does not match ``metadata.json``; nothing is kept.
            LockHeldError: a local writer is using the id.
            UsageError: a local dataset sits inside or around ``dataset_id``'s folder.
            RemoteError: the remote is unreachable or refuses.
        """
        path = storage.dataset_path(dataset_id, root)
        report = TransferReport("pull", dataset_id, self.uri, path=path)
        with self._session(dataset_id):
            data = self._require(dataset_id)
            meta = self._parse(dataset_id, data)
            label = f"{self.uri} {dataset_id}"
            files = storage.dataset_files(meta, label) + storage.index_files(meta, label)
            with storage.DatasetLock(dataset_id, root):
                storage.check_not_nested(dataset_id, root)
                if path.exists():
                    local = (
                        storage.read_metadata(path, dataset_id) if (path / META).exists() else None
                    )
                    if local is not None and _same_content(local, meta):
                        report.up_to_date = True
                        return report
                    if not overwrite:
                        raise _exists_error(
                            dataset_id, f"locally at {path}", ("local", local), meta
                        )
                # one name per id, so the next pull (under the same lock) clears a killed one's
                staging = (
                    storage.datasets_root(root)
                    / storage.TMP_DIR
                    / f"pull-{dataset_id.replace('/', '~')}"
                )
                shutil.rmtree(staging, ignore_errors=True)
                try:
                    total = sum(size for _, _, size in files)
                    (staging / storage.DATA_DIR).mkdir(parents=True)
                    with (
                        _progress_bar(total, f"pull {dataset_id}", progress) as bar,
                        self._client_bars(not bar.disable),
                    ):
                        jobs = [
                            lambda f=f: self._fetch_checked(dataset_id, staging, *f, bar.update)
                            for f in files
                        ]
                        run_parallel(jobs)
                    storage.fsync_path(staging / storage.DATA_DIR)
                    storage.atomic_write(staging / META, data)
                    _swap_in(staging, path)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        report.transferred = [rel for rel, _, _ in files]
        report.bytes = total
        return report

    def delete(self, dataset_id: str) -> None:
        """Remove a dataset from the remote (its ``metadata.json`` first, so it unlists at once).

        Raises:
            DatasetNotFoundError: not on the remote.
        """
        storage.parse_dataset_id(dataset_id)
        with self._session(dataset_id):
            self._require(dataset_id)
            self._delete(dataset_id)

    # -- shared helpers -------------------------------------------------------------------

    def _check_nesting(self, dataset_id: str, files: dict[str, RemoteFile]) -> None:
        """Refuse ``dataset_id`` if a remote dataset sits inside or around its folder.

        ``files`` is the id's folder listing (``_stat``): a ``metadata.json`` below its own is a
        nested dataset. Each folder prefix that is an id is asked for its ``metadata.json``.

        Raises:
            UsageError: naming both ids and the fix.
        """
        inner = sorted(rel.rpartition("/")[0] for rel in files if rel.endswith("/" + META))
        if inner:
            raise storage.nesting_error(dataset_id, f"{dataset_id}/{inner[0]}", f"on {self.uri}")
        for prefix in storage.id_ancestors(dataset_id):
            try:
                storage.parse_dataset_id(prefix)
                found = self._read(prefix, META) is not None
            except UsageError:  # not an id, or one this remote cannot hold (hf:// namespaces)
                continue
            if found:
                raise storage.nesting_error(dataset_id, prefix, f"on {self.uri}")

    def _require(self, dataset_id: str) -> bytes:
        data = self._read(dataset_id, META)
        if data is None:
            raise DatasetNotFoundError(
                f"no dataset {dataset_id!r} on {self.uri}; `curate list remote --remote "
                f"{self.uri}` shows what is there",
                dataset_id=dataset_id,
            )
        return data

    def _parse(self, dataset_id: str, data: bytes) -> dict[str, Any]:
        source = f"{self.uri} {dataset_id}/{META}"
        meta = storage.loads_metadata(data, source, dataset_id)
        if meta.get("dataset_id", dataset_id) != dataset_id:
            raise CorruptDatasetError(
                f"{source} describes {meta['dataset_id']!r}, not {dataset_id!r}; the remote copy "
                "was moved or renamed by hand: push it again under its own id"
            )
        return meta

    def _fetch_checked(
        self,
        dataset_id: str,
        staging: Path,
        rel: str,
        sha: str,
        size: int,
        advance: Callable[[int], object],
    ) -> None:
        dest = staging / rel
        with storage.storage_errors(dest):  # a full local disk names the file it filled
            self._get(dataset_id, rel, dest, size + 1)  # one byte more tells "larger" apart
        if dest.stat().st_size > size:
            raise CorruptDatasetError(
                f"{rel} of {dataset_id} on {self.uri} is larger than the {size:,} bytes "
                "metadata.json says; the download stopped there and nothing was written "
                "locally. Push the dataset again"
            )
        got = storage.sha256_file(dest)
        if got != sha:
            raise CorruptDatasetError(
                f"{rel} of {dataset_id} pulled from {self.uri} does not match its sha256 in "
                f"metadata.json (got {got[:12]}, expected {sha[:12]}): the remote copy is corrupt "
                "or changed mid-pull; nothing was written locally. Push the dataset again"
            )
        storage.fsync_path(dest)
        os.chmod(dest, 0o444)
        advance(size)

    @contextlib.contextmanager
    def _session(self, dataset_id: str) -> Iterator[None]:
        """Scope of one push/pull/delete (the Hub pins one revision for all its reads)."""
        yield

    @contextlib.contextmanager
    def _client_bars(self, show: bool) -> Iterator[None]:
        """Silence the client library's own progress bars when ours are off."""
        yield

    def _missing_file(self, dataset_id: str, rel: str) -> RemoteError:
        """The error for a listed file that is not there (``_get`` raises it)."""
        return RemoteError(
            f"{rel} of {dataset_id} is missing on {self.uri} although metadata.json lists it "
            "(replaced mid-pull, or a broken push); pull again, or push it again"
        )

    def _owns(self, rel: str) -> bool:
        """Whether a file listed under a dataset's folder is the dataset's own to remove."""
        return storage.is_own_file(rel)

    def _hash(self, dataset_id: str, rel: str) -> str | None:
        """The sha256 of a remote file when the backend can compute it cheaply, else None."""
        return None

    # -- backend primitives ---------------------------------------------------------------

    @abstractmethod
    def _list_ids(self) -> list[str]:
        """Ids of every folder holding a ``metadata.json`` (may include invalid ones)."""

    @abstractmethod
    def _read(self, dataset_id: str, rel: str) -> bytes | None:
        """A small file's bytes (at most ``read_limit()``), or None when it does not exist."""

    @abstractmethod
    def _stat(self, dataset_id: str) -> dict[str, RemoteFile]:
        """Every file under the dataset's folder (including leftovers of a failed push)."""

    @abstractmethod
    def _get(self, dataset_id: str, rel: str, dest: Path, limit: int) -> None:
        """Download one file to ``dest`` (its folder exists), stopping after ``limit`` bytes."""

    @abstractmethod
    def _publish(
        self,
        dataset_id: str,
        uploads: list[Upload],
        metadata: bytes,
        removals: list[str],
        advance: Callable[[int], object],
    ) -> None:
        """Upload data files, then ``metadata.json``, then remove ``removals``."""

    @abstractmethod
    def _delete(self, dataset_id: str) -> None:
        """Remove the dataset's ``metadata.json``, then the rest of its folder."""


class ObjectStoreRemote(Remote):
    """A remote of independent objects (a folder, a bucket): files go up one by one, in order."""

    def _publish(
        self,
        dataset_id: str,
        uploads: list[Upload],
        metadata: bytes,
        removals: list[str],
        advance: Callable[[int], object],
    ) -> None:
        def put(upload: Upload) -> None:
            self._put(dataset_id, upload)
            advance(upload.size)

        run_parallel([lambda u=u: put(u) for u in uploads])
        self._write(dataset_id, META, metadata)
        if removals:
            self._remove(dataset_id, removals)

    def _delete(self, dataset_id: str) -> None:
        self._remove(dataset_id, [META])
        # only its own files: a dataset an older harvest nested below it stays whole
        self._remove(dataset_id, sorted(r for r in self._stat(dataset_id) if self._owns(r)))

    @abstractmethod
    def _put(self, dataset_id: str, upload: Upload) -> None:
        """Upload one data file, checking it against ``upload.sha256`` on the way."""

    @abstractmethod
    def _write(self, dataset_id: str, rel: str, data: bytes) -> None:
        """Atomically create or replace a small file."""

    @abstractmethod
    def _remove(self, dataset_id: str, rels: list[str]) -> None:
        """Delete files (missing ones are fine)."""


def _swap_in(staging: Path, path: Path) -> None:
    """Rename a complete pulled folder into place, moving any previous copy aside first."""
    for link in (path, path / storage.DATA_DIR):  # issue 16 item 4: never remove through a link
        if link.is_symlink():
            raise UsageError(
                f"not replacing the local dataset at {path}: {link} is a symbolic link (to "
                f"{os.readlink(link)}); remove the link, or pull into another root"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if path.exists():
        old = staging.with_name(staging.name + "-old")
        # the commit point goes first, so a crash here leaves no half dataset that opens
        with contextlib.suppress(FileNotFoundError):
            (path / META).unlink()
        os.rename(path, old)
    os.rename(staging, path)
    storage.fsync_path(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
