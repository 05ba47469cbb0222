"""``file:///path``: a folder (e.g. NFS) laid out exactly like a local datasets root."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from collector import storage
from collector.errors import RemoteError, UsageError
from curation.remotes.base import (
    ObjectStoreRemote,
    RemoteFile,
    Upload,
    check_upload,
    copy_at_most,
    read_limit,
)

__all__ = ["FileRemote"]


class FileRemote(ObjectStoreRemote):
    """A shared folder: ``<path>/<id>/metadata.json`` and ``<path>/<id>/data/*.h5``.

    Every file is written to a temporary name, fsynced and renamed, so a present file is
    complete; the folder must exist (a typo in a mount path should not create a new tree).
    """

    scheme = "file"

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UsageError(
                f"remote {uri!r} is not an absolute folder URI; use file:///absolute/path "
                "(three slashes)"
            )
        self.base = Path(unquote(parts.path))

    def _root(self) -> Path:
        if not self.base.is_dir():
            raise RemoteError(
                f"remote folder {self.base} does not exist ({self.uri}); create it or fix the URI"
            )
        return self.base

    def _folder(self, dataset_id: str) -> Path:
        return self._root() / dataset_id

    def _list_ids(self) -> list[str]:
        base = self._root()
        ids = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != storage.DATA_DIR]
            if storage.METADATA_FILE in filenames:
                ids.append(Path(dirpath).relative_to(base).as_posix())
        return ids

    def _source(self, dataset_id: str, rel: str) -> Path:
        """The remote file to read: a regular file inside the remote folder, links resolved.

        A link out of the folder (``/dev/zero``, someone's home) or a FIFO, device or folder
        is refused, so a hostile remote cannot make a pull read forever or read elsewhere.

        Raises:
            FileNotFoundError: no such file.
            RemoteError: it is a link out of the remote folder or not a regular file.
        """
        path = self._folder(dataset_id) / rel
        real = path.resolve()
        if not real.is_relative_to(self._root().resolve()):
            raise RemoteError(
                f"{rel} of {dataset_id} on {self.uri} links to {real}, outside the remote "
                "folder; refusing to read it (replace the link with the file)"
            )
        if not stat.S_ISREG(real.stat().st_mode):
            raise RemoteError(
                f"{rel} of {dataset_id} on {self.uri} is not a regular file; refusing to read it"
            )
        return real

    def _target(self, dataset_id: str, rel: str, *, create: bool) -> Path | None:
        """The remote file to write or delete, with no symlink on the way from the remote root.

        A planted link (``data`` -> someone's folder) must not make a push write, or a delete
        unlink, outside the remote folder. Missing folders are created when ``create`` (else
        None: there is nothing to delete).

        Raises:
            RemoteError: a folder on the way is a symlink or not a folder.
        """
        folder = self._root()
        for part in [*dataset_id.split("/"), *rel.split("/")[:-1]]:
            folder = folder / part
            try:
                mode = os.lstat(folder).st_mode
            except FileNotFoundError:
                if not create:
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder)
                mode = os.lstat(folder).st_mode
            if not stat.S_ISDIR(mode):
                what = "a symlink" if stat.S_ISLNK(mode) else "not a folder"
                raise RemoteError(
                    f"{folder.relative_to(self.base)} on {self.uri} is {what}; refusing to "
                    f"write or delete {dataset_id}/{rel} through it (replace it with a folder)"
                )
        return folder / rel.rsplit("/", 1)[-1]

    def _owns(self, rel: str) -> bool:
        # also the temporary names its writes give its own files (a killed push's)
        folder, _, name = rel.rpartition("/")
        tmp = re.fullmatch(r"\.(.+)\.[0-9a-f]{8}\.tmp", name)
        if tmp is not None:
            rel = f"{folder}/{tmp[1]}" if folder else tmp[1]
        return rel == storage.METADATA_TMP or storage.is_own_file(rel)

    def _read(self, dataset_id: str, rel: str) -> bytes | None:
        try:
            with open(self._source(dataset_id, rel), "rb") as f:
                return f.read(read_limit())
        except FileNotFoundError:
            return None

    def _stat(self, dataset_id: str) -> dict[str, RemoteFile]:
        folder = self._folder(dataset_id)
        found = {}
        for dirpath, _, filenames in os.walk(folder):
            for name in filenames:
                file = Path(dirpath) / name
                found[file.relative_to(folder).as_posix()] = RemoteFile(file.stat().st_size)
        return found

    def _hash(self, dataset_id: str, rel: str) -> str | None:
        return storage.sha256_file(self._source(dataset_id, rel))

    def _get(self, dataset_id: str, rel: str, dest: Path, limit: int) -> None:
        try:
            with (
                open(self._source(dataset_id, rel), "rb") as src,
                storage.storage_errors(dest),
                open(dest, "wb") as out,
            ):
                copy_at_most(src, out, limit)
        except FileNotFoundError as e:
            raise self._missing_file(dataset_id, rel) from e

    def _put(self, dataset_id: str, upload: Upload) -> None:
        dest = self._target(dataset_id, upload.rel, create=True)
        assert dest is not None
        with (
            storage.storage_errors(dest),  # a full remote folder names it (shutil's errors do not)
            self._temporary(dest) as (tmp, fh),
            open(upload.path, "rb") as src,
        ):
            shutil.copyfileobj(src, fh, 1 << 20)
            fh.flush()
            check_upload(upload, tmp, f"copied to {self.uri}")
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), 0o444)
            os.rename(tmp, dest)
        storage.fsync_path(dest.parent)

    def _write(self, dataset_id: str, rel: str, data: bytes) -> None:
        dest = self._target(dataset_id, rel, create=True)
        assert dest is not None
        with storage.storage_errors(dest), self._temporary(dest) as (tmp, fh):
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, dest)
        storage.fsync_path(dest.parent)

    def _remove(self, dataset_id: str, rels: list[str]) -> None:
        folder = self._folder(dataset_id)
        targets = [self._target(dataset_id, rel, create=False) for rel in rels]  # all checked
        for target in targets:
            if target is not None:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
        if folder.is_dir() and not folder.is_symlink():
            storage.fsync_path(folder)
            # prune folders left empty, the dataset's own included (never above it)
            for dirpath, _, _ in sorted(os.walk(folder), key=lambda t: -len(t[0])):
                with contextlib.suppress(OSError):
                    Path(dirpath).rmdir()

    @contextlib.contextmanager
    def _temporary(self, dest: Path) -> Iterator[tuple[Path, BinaryIO]]:
        """A new file next to ``dest``, created exclusively: never opened through a planted link."""
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield tmp, fh
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
