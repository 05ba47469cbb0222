"""Real servers on 127.0.0.1 for the remote tests: a GCS emulator and a local Hub.

``remote`` is parametrized over the three backends; each yields a ``Backend`` that knows its
URI and how to break its server in the ways the shared suite needs (a corrupt object, an
upload that fails half-way, a server that is down).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from remotes.hub_server import HubServer


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class Backend:
    """One backend under test: its URI plus fault injection for the shared suite."""

    name: str
    uri: str
    corrupt: Callable[[str, str], None]  # (dataset id, rel) -> the remote bytes change
    fail_uploads_after: Callable[[int], contextlib.AbstractContextManager[None]]
    go_down: Callable[[pytest.MonkeyPatch], str]  # make the remote unreachable; returns its URI
    # (dataset id, rel, bytes) -> the remote file now holds these bytes; listings may still
    # report its old size and sha256 (a hostile or broken remote)
    replace: Callable[[str, str, bytes], None]


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[str]:
    """gcp-storage-emulator (pure Python, in memory), in this process."""
    from gcp_storage_emulator.server import create_server

    # it logs every request at INFO and every (expected) 404 as a warning
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{server._api._httpd.server_address[1]}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def hub_server() -> Iterator[HubServer]:
    """The in-test Hub (tests/remotes/hub_server.py)."""
    hub = HubServer()
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HARVEST_REMOTE_RETRY_SECONDS", "2")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@contextlib.contextmanager
def _fail_object_puts(monkeypatch: pytest.MonkeyPatch, cls: type, after: int) -> Iterator[None]:
    """Object stores: the upload after the first ``after`` raises, as a killed push would."""
    calls = {"n": 0}
    real = cls._put

    def put(self, dataset_id, upload):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError("injected: connection lost mid-push")
        return real(self, dataset_id, upload)

    with monkeypatch.context() as m:
        m.setattr(cls, "_put", put)
        yield


@pytest.fixture
def file_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """A folder remote."""
    from curation.remotes.file import FileRemote

    base = tmp_path / "remote-folder"
    base.mkdir()

    def corrupt(dataset_id: str, rel: str) -> None:
        file = base / dataset_id / rel
        file.chmod(0o644)
        data = bytearray(file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        file.write_bytes(bytes(data))

    def go_down(mp: pytest.MonkeyPatch) -> str:
        return f"file://{tmp_path / 'unmounted'}"

    def replace(dataset_id: str, rel: str, data: bytes) -> None:
        file = base / dataset_id / rel
        file.unlink()
        file.write_bytes(data)

    return Backend(
        "file",
        f"file://{base}",
        corrupt,
        lambda n: _fail_object_puts(monkeypatch, FileRemote, n),
        go_down,
        replace,
    )


@pytest.fixture
def gcs_backend(gcs_server: str, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """A fresh bucket (under a prefix) on the emulator."""
    from google.cloud import storage

    from curation.remotes.gcs import GCSRemote

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    bucket_name = f"b-{uuid.uuid4().hex[:12]}"
    client = storage.Client()
    client.create_bucket(bucket_name)

    def corrupt(dataset_id: str, rel: str) -> None:
        blob = client.bucket(bucket_name).get_blob(f"team/{dataset_id}/{rel}")
        data = bytearray(blob.download_as_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.upload_from_string(bytes(data))  # keeps the custom sha256 metadata

    def go_down(mp: pytest.MonkeyPatch) -> str:
        mp.setenv("STORAGE_EMULATOR_HOST", closed_port_url())
        return f"gcp://{bucket_name}/team"

    def replace(dataset_id: str, rel: str, data: bytes) -> None:
        blob = client.bucket(bucket_name).get_blob(f"team/{dataset_id}/{rel}")
        blob.upload_from_string(data)  # keeps the custom sha256 metadata

    return Backend(
        "gcs",
        f"gcp://{bucket_name}/team",
        corrupt,
        lambda n: _fail_object_puts(monkeypatch, GCSRemote, n),
        go_down,
        replace,
    )


@pytest.fixture
def hf_backend(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """A fresh organization on the local Hub."""
    from curation.remotes.hf import HubRemote

    hub_server.reset()  # LFS objects are shared across repos there: start with none
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    org = f"org{uuid.uuid4().hex[:10]}"
    uri = f"hf://{org}"

    def corrupt(dataset_id: str, rel: str) -> None:
        repo, path = HubRemote(uri).locate(dataset_id)
        data = bytearray(hub_server.files(repo)[f"{path}/{rel}"])
        data[len(data) // 2] ^= 0xFF
        hub_server.corrupt(repo, f"{path}/{rel}", bytes(data))

    @contextlib.contextmanager
    def fail_after(n: int) -> Iterator[None]:
        # 507 is not retried by the client (5xx others are, for ~23 s)
        hub_server.fail("PUT", r"/lfs-upload/", 507, times=10_000, after=n)
        try:
            yield
        finally:
            hub_server.fail("PUT", r"/lfs-upload/", 507, times=0)

    def go_down(mp: pytest.MonkeyPatch) -> str:
        mp.setenv("HF_ENDPOINT", closed_port_url())
        # with a prefix, listing reads one repo's tree (no retries) instead of the org's
        # dataset list, which the client retries for ~23 s before giving up
        return f"{uri}/cart"

    def replace(dataset_id: str, rel: str, data: bytes) -> None:
        repo, path = HubRemote(uri).locate(dataset_id)
        hub_server.corrupt(repo, f"{path}/{rel}", data)

    return Backend("hf", uri, corrupt, fail_after, go_down, replace)


@pytest.fixture(params=["file", "gcs", "hf"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend in turn: the shared remote suite runs against all three."""
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A second, empty datasets root (another machine pulling)."""
    root = tmp_path / "elsewhere"
    root.mkdir()
    return root


@pytest.fixture
def hub(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[HubServer]:
    """The local Hub for model repos: the test's own cache and no developer token."""
    from huggingface_hub import constants

    hub_server.reset()
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "hf-home"
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    yield hub_server
    assert hub_server.unhandled == [], "huggingface_hub made requests the fake does not route"


def push(hub: HubServer, repo: str, files: dict[str, bytes]) -> str:
    """Commit ``files`` to the model repo ``repo`` (created if needed); return the commit."""
    import huggingface_hub

    api = huggingface_hub.HfApi(endpoint=hub.url)
    api.create_repo(repo, repo_type="model", exist_ok=True)
    ops = [huggingface_hub.CommitOperationAdd(p, data) for p, data in files.items()]
    api.create_commit(repo, ops, commit_message="add policy", repo_type="model")
    return hub.commits(repo, "model")[-1]
