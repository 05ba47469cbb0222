"""``hf://org[/prefix]``: Hugging Face Hub dataset repos, through huggingface_hub.

Ids map to repos as in Minari: ``A/B/C-vN`` lives in the dataset repo ``org/A`` under
``B/C-vN/`` (``metadata.json`` and ``data/*.h5``). With a prefix, the prefix is put in front of
the id first, so ``hf://org/rl`` keeps every dataset in the one repo ``org/rl``, and ids need no
namespace. A push is one commit (the client pre-uploads the LFS files, then commits data,
``metadata.json`` and the regenerated dataset card together), made against the revision read at
the start, so a concurrent push to the same repo fails instead of interleaving. A pull reads
every file at that one revision. Tokens come from the client's usual places (``HF_TOKEN``,
``hf auth login``); ``HF_ENDPOINT`` points it at another Hub.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from collector import storage
from collector.errors import CorruptDatasetError, MissingExtraError, RemoteError, UsageError
from collector.http import transport_errors
from curation.remotes.base import META, Remote, RemoteFile, Upload, read_limit, split_uri

__all__ = ["HubRemote"]

REPO_TYPE = "dataset"
CARD_FILE = "README.md"


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as e:
        raise MissingExtraError(
            'hf:// remotes need huggingface_hub: pip install "harvest[hf]"'
        ) from e
    return huggingface_hub


class HubRemote(Remote):
    """Dataset repos of one user or organization on the Hub."""

    scheme = "hf"

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        org, prefix = split_uri(uri, "org")
        self.org = org
        self.prefix = prefix
        # repo -> the commit read at the start of the current push/pull/delete (None: no repo)
        self._pinned: dict[str, str | None] = {}
        self._api: Any = None

    @property
    def api(self) -> Any:
        """The ``HfApi`` client (endpoint from ``$HF_ENDPOINT``, token from the usual places)."""
        if self._api is None:
            self._api = _hub().HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
        return self._api

    # -- ids, repos and revisions ---------------------------------------------------------

    def locate(self, dataset_id: str) -> tuple[str, str]:
        """``(repo id, folder in the repo)`` of a dataset id."""
        storage.parse_dataset_id(dataset_id)
        key = f"{self.prefix}/{dataset_id}" if self.prefix else dataset_id
        repo, _, path = key.partition("/")
        if not path:
            raise UsageError(
                f"{dataset_id!r} has no namespace, and {self.uri} maps the namespace to the repo; "
                f"use a namespaced id (e.g. rl/{dataset_id}) or a prefix ({self.uri}/REPO)"
            )
        return f"{self.org}/{repo}", path

    def _dataset_id(self, repo: str, folder: str) -> str | None:
        key = f"{repo.split('/', 1)[1]}/{folder}"
        if self.prefix:
            if not key.startswith(self.prefix + "/"):
                return None
            key = key[len(self.prefix) + 1 :]
        return key

    def _revision(self, repo: str) -> str | None:
        """The pinned commit of ``repo`` inside a session (shared by worker threads), else None."""
        return self._pinned.get(repo)

    def _missing(self, repo: str) -> bool:
        return repo in self._pinned and self._pinned[repo] is None

    @contextlib.contextmanager
    def _session(self, dataset_id: str) -> Iterator[None]:
        """Pin the repo's current commit for every read and as the push's parent commit."""
        repo, _ = self.locate(dataset_id)
        hub = _hub()
        with self._errors(f"reading {repo}"):
            try:
                sha = self.api.repo_info(repo, repo_type=REPO_TYPE).sha
            except hub.errors.RepositoryNotFoundError:
                sha = None
        self._pinned[repo] = sha
        try:
            yield
        finally:
            self._pinned.pop(repo, None)

    @contextlib.contextmanager
    def _client_bars(self, show: bool) -> Iterator[None]:
        utils = _hub().utils
        if show or utils.are_progress_bars_disabled():
            yield
            return
        utils.disable_progress_bars()
        try:
            yield
        finally:
            utils.enable_progress_bars()

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Translate client exceptions into one-line harvest errors."""
        hub = _hub()
        transport = transport_errors()
        try:
            yield
        except (hub.errors.HfHubHTTPError, RuntimeError, *transport) as e:
            # the client wraps failed LFS uploads in RuntimeError("Error while uploading ...")
            cause: BaseException | None = e
            while cause is not None and not isinstance(
                cause, (hub.errors.HfHubHTTPError, *transport)
            ):
                cause = cause.__cause__
            if cause is None:
                raise
            if isinstance(cause, transport):
                raise RemoteError(
                    f"cannot reach the Hub at {self.api.endpoint} while {what} "
                    f"({type(cause).__name__}); check the network or $HF_ENDPOINT"
                ) from e
            status = getattr(getattr(cause, "response", None), "status_code", None)
            reason = str(cause).splitlines()[0][:200]
            if status in (401, 403) or isinstance(cause, hub.errors.RepositoryNotFoundError):
                raise RemoteError(
                    f"{self.uri}: permission denied or not found while {what} ({reason}); log "
                    "in with `hf auth login` or set HF_TOKEN to a token with write access"
                ) from e
            if status in (409, 412):
                raise RemoteError(
                    f"{self.uri}: the repo changed while {what} (another push?); run it again"
                ) from e
            raise RemoteError(f"{self.uri} refused {what} ({reason})") from e

    # -- primitives -----------------------------------------------------------------------

    def _repos(self) -> list[str]:
        if self.prefix:
            repo = f"{self.org}/{self.prefix.split('/', 1)[0]}"
            with self._errors(f"reading {repo}"):  # fails fast; tree listings retry ~23 s
                return [repo] if self.api.repo_exists(repo, repo_type=REPO_TYPE) else []
        with self._errors(f"listing the datasets of {self.org}"):
            return [d.id for d in self.api.list_datasets(author=self.org)]

    def _list_ids(self) -> list[str]:
        return [d for repo in self._repos() for d in self._ids_in(repo)]

    def _ids_in(self, repo: str) -> list[str]:
        """Dataset ids whose ``metadata.json`` is in ``repo`` (at the pinned revision)."""
        hub = _hub()
        with self._errors(f"listing {repo}"):
            try:
                items = list(
                    self.api.list_repo_tree(
                        repo, recursive=True, revision=self._revision(repo), repo_type=REPO_TYPE
                    )
                )
            except (hub.errors.RepositoryNotFoundError, hub.errors.EntryNotFoundError):
                return []
        ids = []
        for item in items:
            folder, _, name = item.path.rpartition("/")
            if name == META and folder and isinstance(item, hub.hf_api.RepoFile):
                dataset_id = self._dataset_id(repo, folder)
                if dataset_id is not None:
                    ids.append(dataset_id)
        return ids

    def _read(self, dataset_id: str, rel: str) -> bytes | None:
        hub = _hub()
        repo, path = self.locate(dataset_id)
        if self._missing(repo):
            return None
        out = io.BytesIO()
        try:
            self._fetch(repo, f"{path}/{rel}", out, read_limit())
        except RemoteError as e:
            cause = e.__cause__
            if isinstance(
                cause, hub.errors.EntryNotFoundError | hub.errors.RepositoryNotFoundError
            ):
                return None
            raise
        return out.getvalue()

    def _fetch(self, repo: str, filename: str, out: BinaryIO, limit: int) -> None:
        """Write at most ``limit`` bytes of a file (at the pinned revision) to ``out``.

        One streamed GET that stops reading at ``limit``, so a file larger than the manifest
        says is not downloaded whole (``hf_hub_download`` reads to the end, then checks).
        """
        hub = _hub()
        url = hub.hf_hub_url(
            repo,
            filename,
            repo_type=REPO_TYPE,
            revision=self._revision(repo),
            endpoint=self.api.endpoint,
        )
        headers = hub.utils.build_hf_headers(token=self.api.token)
        with (
            self._errors(f"downloading {repo}/{filename}"),
            hub.utils.http_stream_backoff("GET", url, headers=headers) as response,
        ):
            hub.utils.hf_raise_for_status(response)
            left = limit
            for chunk in response.iter_bytes(chunk_size=1 << 20):
                out.write(chunk[:left])
                left -= min(len(chunk), left)
                if left == 0:
                    break

    def _stat(self, dataset_id: str) -> dict[str, RemoteFile]:
        hub = _hub()
        repo, path = self.locate(dataset_id)
        if self._missing(repo):
            return {}
        with self._errors(f"listing {repo}/{path}"):
            try:
                items = list(
                    self.api.list_repo_tree(
                        repo,
                        path_in_repo=path,
                        recursive=True,
                        revision=self._revision(repo),
                        repo_type=REPO_TYPE,
                    )
                )
            except (hub.errors.EntryNotFoundError, hub.errors.RepositoryNotFoundError):
                return {}
        return {
            item.path[len(path) + 1 :]: RemoteFile(
                int(item.size), item.lfs.sha256 if item.lfs is not None else None
            )
            for item in items
            if isinstance(item, hub.hf_api.RepoFile)
        }

    def _get(self, dataset_id: str, rel: str, dest: Path, limit: int) -> None:
        repo, path = self.locate(dataset_id)
        with open(dest, "wb") as out:
            self._fetch(repo, f"{path}/{rel}", out, limit)

    def _card(self, repo: str, changed: dict[str, dict[str, Any] | None]) -> bytes | None:
        """The repo's dataset card after ``changed`` (id: new metadata, or None when deleted)."""
        from curation.remotes.card import dataset_card

        metas: dict[str, dict[str, Any]] = {}
        for dataset_id in self._ids_in(repo):
            if dataset_id not in changed:
                metas[dataset_id] = self.metadata(dataset_id)
        metas.update({k: v for k, v in changed.items() if v is not None})
        if not metas:
            return None
        paths = {d: self.locate(d)[1] for d in metas}
        return dataset_card(repo, metas, paths=paths, remote_uri=self.uri).encode()

    def _commit(self, repo: str, operations: list[Any], message: str, what: str) -> None:
        with self._errors(what):
            self.api.create_commit(
                repo,
                operations,
                commit_message=message,
                repo_type=REPO_TYPE,
                parent_commit=self._revision(repo),
            )

    def _publish(
        self,
        dataset_id: str,
        uploads: list[Upload],
        metadata: bytes,
        removals: list[str],
        advance: Callable[[int], object],
    ) -> None:
        hub = _hub()
        repo, path = self.locate(dataset_id)
        if self._revision(repo) is None:
            with self._errors(f"creating {repo}"):
                self.api.create_repo(repo, repo_type=REPO_TYPE, exist_ok=True)
        ops = []
        for upload in uploads:
            op = hub.CommitOperationAdd(f"{path}/{upload.rel}", str(upload.path))
            if op.upload_info.sha256.hex() != upload.sha256:
                raise CorruptDatasetError(
                    f"{upload.rel} of {dataset_id} does not match its sha256 in metadata.json; "
                    "nothing was pushed. Run `curate verify` on the local dataset"
                )
            ops.append(op)
        meta = self._parse(dataset_id, metadata)
        ops.append(hub.CommitOperationAdd(f"{path}/{META}", metadata))
        card = self._card(repo, {dataset_id: meta})
        if card is not None:
            ops.append(hub.CommitOperationAdd(CARD_FILE, card))
        ops += [hub.CommitOperationDelete(f"{path}/{rel}") for rel in removals]
        self._commit(repo, ops, f"harvest: push {dataset_id}", f"pushing {dataset_id}")
        advance(sum(u.size for u in uploads))

    def _delete(self, dataset_id: str) -> None:
        hub = _hub()
        repo, path = self.locate(dataset_id)
        # only its own files: a dataset an older harvest nested below it stays whole
        ops: list[Any] = [
            hub.CommitOperationDelete(f"{path}/{rel}")
            for rel in sorted(self._stat(dataset_id))
            if self._owns(rel)
        ]
        card = self._card(repo, {dataset_id: None})
        if card is not None:
            ops.append(hub.CommitOperationAdd(CARD_FILE, card))
        else:
            with self._errors(f"reading {repo}"):
                if self.api.file_exists(repo, CARD_FILE, repo_type=REPO_TYPE):
                    ops.append(hub.CommitOperationDelete(CARD_FILE))
        self._commit(repo, ops, f"harvest: delete {dataset_id}", f"deleting {dataset_id}")
