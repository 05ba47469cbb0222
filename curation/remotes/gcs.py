"""``gcp://bucket[/prefix]``: Google Cloud Storage through google-cloud-storage.

Objects mirror the local layout (``<prefix>/<id>/metadata.json``, ``<prefix>/<id>/data/*.h5``),
as Minari's GCP remote does. Each data object carries its sha256 as custom metadata, so a
resumed push skips what is already there without downloading it. Credentials come from the
client's usual places (application default credentials, ``GOOGLE_APPLICATION_CREDENTIALS``);
without any, reads fall back to an anonymous client (public buckets). ``STORAGE_EMULATOR_HOST``
points the client at an emulator.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collector import storage
from collector.errors import CorruptDatasetError, MissingExtraError, RemoteError, UsageError
from curation.remotes.base import (
    ObjectStoreRemote,
    RemoteFile,
    Upload,
    check_upload,
    read_limit,
    split_uri,
)

__all__ = ["GCSRemote", "retry_seconds"]

#: Seconds the client keeps retrying transient failures (google-cloud-storage's default: 120).
RETRY_ENV = "HARVEST_REMOTE_RETRY_SECONDS"


def retry_seconds() -> float:
    """How long transient remote failures are retried (``$HARVEST_REMOTE_RETRY_SECONDS``)."""
    value = os.environ.get(RETRY_ENV, "120")
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"${RETRY_ENV}={value!r} is not a number of seconds") from None


class GCSRemote(ObjectStoreRemote):
    """A bucket, optionally under a prefix."""

    scheme = "gcp"

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        bucket, prefix = split_uri(uri, "bucket")
        self.bucket_name = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self._bucket: Any = None

    # -- client ---------------------------------------------------------------------------

    def _client_bucket(self) -> Any:
        if self._bucket is None:
            try:
                from google.auth.exceptions import DefaultCredentialsError
                from google.cloud import storage
            except ImportError as e:
                raise MissingExtraError(
                    'gcp:// remotes need google-cloud-storage: pip install "harvest[gcs]"'
                ) from e
            try:
                client = storage.Client()
            except DefaultCredentialsError:
                client = storage.Client.create_anonymous_client()
            self._bucket = client.bucket(self.bucket_name)
        return self._bucket

    def _kwargs(self) -> dict[str, Any]:
        from google.cloud.storage.retry import DEFAULT_RETRY

        return {"retry": DEFAULT_RETRY.with_timeout(retry_seconds()), "timeout": 60}

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Translate client exceptions into one-line harvest errors."""
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import GoogleAuthError

        try:
            from google.resumable_media.common import DataCorruption
        except ImportError:  # pragma: no cover - layout of older clients
            DataCorruption = ()  # noqa: N806
        import requests

        where = f"{what} on {self.uri}"
        try:
            yield
        except (gexc.Forbidden, gexc.Unauthorized, GoogleAuthError) as e:
            raise RemoteError(
                f"permission denied {where} ({_reason(e)}); set GOOGLE_APPLICATION_CREDENTIALS "
                "or run `gcloud auth application-default login`"
            ) from e
        except DataCorruption as e:
            raise CorruptDatasetError(
                f"checksum mismatch {where}: the remote object is corrupt; push it again"
            ) from e
        except gexc.NotFound as e:
            raise RemoteError(
                f"bucket {self.bucket_name!r} not found {where} ({_reason(e)}); create it or fix "
                "the URI"
            ) from e
        except (gexc.GoogleAPICallError, gexc.RetryError, requests.RequestException) as e:
            raise RemoteError(
                f"cannot reach {self.uri} {what} ({_reason(e)}); check the bucket, the network "
                "or $STORAGE_EMULATOR_HOST"
            ) from e

    def _name(self, dataset_id: str, rel: str = "") -> str:
        return f"{self.prefix}{dataset_id}/{rel}"

    # -- primitives -----------------------------------------------------------------------

    def _list_ids(self) -> list[str]:
        bucket = self._client_bucket()
        suffix = "/" + storage.METADATA_FILE
        with self._errors("listing datasets"):
            names = [
                b.name
                for b in bucket.client.list_blobs(bucket, prefix=self.prefix, **self._kwargs())
            ]
        return [n[len(self.prefix) : -len(suffix)] for n in names if n.endswith(suffix)]

    def _read(self, dataset_id: str, rel: str) -> bytes | None:
        from google.api_core.exceptions import NotFound, RequestRangeNotSatisfiable

        blob = self._client_bucket().blob(self._name(dataset_id, rel))
        with self._errors(f"reading {dataset_id}/{rel}"):
            try:  # a ranged read: a huge object is not downloaded whole
                return blob.download_as_bytes(start=0, end=read_limit() - 1, **self._kwargs())
            except RequestRangeNotSatisfiable:  # GCS's answer for an empty object
                return b""
            except NotFound:
                if not blob.bucket.exists(**self._kwargs()):
                    raise
                return None

    def _stat(self, dataset_id: str) -> dict[str, RemoteFile]:
        bucket = self._client_bucket()
        start = len(self._name(dataset_id))
        with self._errors(f"listing {dataset_id}"):
            blobs = list(
                bucket.client.list_blobs(bucket, prefix=self._name(dataset_id), **self._kwargs())
            )
        return {
            b.name[start:]: RemoteFile(int(b.size), (b.metadata or {}).get("sha256")) for b in blobs
        }

    def _get(self, dataset_id: str, rel: str, dest: Path, limit: int) -> None:
        from google.api_core.exceptions import NotFound, RequestRangeNotSatisfiable

        blob = self._client_bucket().blob(self._name(dataset_id, rel))
        with self._errors(f"downloading {dataset_id}/{rel}"):
            try:  # bytes 0..limit-1 only (the sha256 check after the pull covers the content)
                blob.download_to_filename(str(dest), start=0, end=limit - 1, **self._kwargs())
            except RequestRangeNotSatisfiable:  # an empty object
                dest.write_bytes(b"")
            except NotFound as e:
                raise self._missing_file(dataset_id, rel) from e

    def _put(self, dataset_id: str, upload: Upload) -> None:
        check_upload(upload, upload.path, "local file")
        blob = self._client_bucket().blob(self._name(dataset_id, upload.rel))
        blob.metadata = {"sha256": upload.sha256}
        with self._errors(f"uploading {dataset_id}/{upload.rel}"):
            # crc32c is checked by the server as the object is written
            blob.upload_from_filename(
                str(upload.path),
                content_type="application/x-hdf5",
                checksum="crc32c",
                **self._kwargs(),
            )

    def _write(self, dataset_id: str, rel: str, data: bytes) -> None:
        blob = self._client_bucket().blob(self._name(dataset_id, rel))
        with self._errors(f"writing {dataset_id}/{rel}"):
            blob.upload_from_string(
                data, content_type="application/json", checksum="crc32c", **self._kwargs()
            )

    def _remove(self, dataset_id: str, rels: list[str]) -> None:
        from google.api_core.exceptions import NotFound

        bucket = self._client_bucket()
        with self._errors(f"deleting files of {dataset_id}"):
            for rel in rels:
                with contextlib.suppress(NotFound):
                    bucket.blob(self._name(dataset_id, rel)).delete(**self._kwargs())


def _reason(e: BaseException) -> str:
    text = str(getattr(e, "message", None) or e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]
