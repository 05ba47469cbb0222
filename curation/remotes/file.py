"""``file:///path``: a folder (e.g. NFS) laid out exactly like a local datasets root."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from collector import format as fmt
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
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != fmt.DATA_DIR]
            if fmt.METADATA_FILE in filenames:
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
        return fmt.sha256_file(self._source(dataset_id, rel))

    def _get(self, dataset_id: str, rel: str, dest: Path, limit: int) -> None:
        try:
            with open(self._source(dataset_id, rel), "rb") as src, open(dest, "wb") as out:
                copy_at_most(src, out, limit)
        except FileNotFoundError as e:
            raise self._missing_file(dataset_id, rel) from e

    def _put(self, dataset_id: str, upload: Upload) -> None:
        dest = self._folder(dataset_id) / upload.rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._temporary(dest) as tmp:
            shutil.copyfile(upload.path, tmp)
            check_upload(upload, tmp, f"copied to {self.uri}")
            fmt.fsync_path(tmp)
            os.chmod(tmp, 0o444)
            os.rename(tmp, dest)
        fmt.fsync_path(dest.parent)

    def _write(self, dataset_id: str, rel: str, data: bytes) -> None:
        dest = self._folder(dataset_id) / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        fmt.atomic_write(dest, data)

    def _remove(self, dataset_id: str, rels: list[str]) -> None:
        folder = self._folder(dataset_id)
        for rel in rels:
            with contextlib.suppress(FileNotFoundError):
                (folder / rel).unlink()
        if folder.is_dir():
            fmt.fsync_path(folder)
            # prune folders left empty, the dataset's own included (never above it)
            for dirpath, _, _ in sorted(os.walk(folder), key=lambda t: -len(t[0])):
                with contextlib.suppress(OSError):
                    Path(dirpath).rmdir()

    @contextlib.contextmanager
    def _temporary(self, dest: Path) -> Iterator[Path]:
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            yield tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
