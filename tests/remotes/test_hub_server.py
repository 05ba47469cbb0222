"""The real huggingface_hub client against the in-memory HubServer."""

import os

# Must be set before huggingface_hub is imported (the module fixture also patches the constants).
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import hashlib  # noqa: E402
import json  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

huggingface_hub = pytest.importorskip("huggingface_hub")

from huggingface_hub import (  # noqa: E402
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder  # noqa: E402

from remotes.hub_server import HubServer, git_blob_sha1  # noqa: E402

# huggingface_hub 2.4.0 uploads LFS objects with httpx2's deprecated `data=<file>`.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Use 'content=<...>' to upload raw bytes/text content:DeprecationWarning"
)

REPO = "org/ds"
BIG = os.urandom(3 * 1024 * 1024)
SMALL_H5 = os.urandom(4096)
INFO = json.dumps({"env": "CartPole-v1", "episodes": 3}).encode()
README = b"---\nlicense: mit\n---\n# A dataset\n"


@pytest.fixture(scope="module")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    home = tmp_path_factory.mktemp("hf_home")
    with pytest.MonkeyPatch.context() as mp, HubServer() as server:
        mp.setenv("HF_HOME", str(home))
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
            mp.delenv(var, raising=False)
        # Constants are read at import: patch them so a developer's token/cache is never used.
        mp.setattr(constants, "HF_HUB_DISABLE_XET", True)
        mp.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        mp.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        mp.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        mp.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
        yield server


@pytest.fixture
def hub(_server: HubServer) -> Iterator[HubServer]:
    _server.reset()
    yield _server
    assert _server.unhandled == [], "huggingface_hub made requests the fake does not route"


@pytest.fixture
def api(hub: HubServer) -> HfApi:
    return HfApi(endpoint=hub.url)


def _push(api: HfApi, message: str = "add data", **kwargs) -> str:
    """Create the repo and commit a regular + LFS mix in subfolders; return the commit sha."""
    api.create_repo(REPO, repo_type="dataset", exist_ok=True)
    ops = [
        CommitOperationAdd("README.md", README),
        CommitOperationAdd("meta/info.json", INFO),
        CommitOperationAdd("data/train/part-0.h5", BIG),
        CommitOperationAdd("data/train/part-1.h5", SMALL_H5),
    ]
    return api.create_commit(REPO, ops, commit_message=message, repo_type="dataset", **kwargs).oid


def _download(hub: HubServer, filename: str, repo_id: str = REPO, **kwargs) -> bytes:
    """hf_hub_download a dataset file from the fake Hub and return its bytes."""
    path = hf_hub_download(repo_id, filename, repo_type="dataset", endpoint=hub.url, **kwargs)
    return Path(path).read_bytes()


def _puts(hub: HubServer) -> list[str]:
    return [path for method, path in hub.requests if method == "PUT"]


def test_create_repo_info_and_listing(hub: HubServer, api: HfApi) -> None:
    url = api.create_repo(REPO, repo_type="dataset")
    assert url == f"{hub.url}/datasets/{REPO}"
    assert url.repo_id == REPO and url.repo_type == "dataset"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO, repo_type="dataset")
    assert err.value.response.status_code == 409
    assert api.create_repo(REPO, repo_type="dataset", exist_ok=True).repo_id == REPO
    api.create_repo("org/other", repo_type="dataset", private=True)
    api.create_repo("someone/else", repo_type="dataset")

    assert api.repo_exists(REPO, repo_type="dataset")
    assert not api.repo_exists(REPO)  # a model repo of that name does not exist
    info = api.dataset_info(REPO)
    assert info.id == REPO and info.author == "org" and info.private is False
    assert info.sha == hub.commits(REPO)[-1]
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]  # like the Hub
    assert api.repo_info(REPO, repo_type="dataset").sha == info.sha
    listed = {d.id: d for d in api.list_datasets(author="org")}
    assert sorted(listed) == ["org/ds", "org/other"] and listed["org/other"].private is True


def test_commit_tree_paths_info_and_download(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    sha = _push(api)
    assert hub.commits(REPO)[-1] == sha and len(hub.commits(REPO)) == 2
    assert len(_puts(hub)) == 2  # both .h5 files went through the LFS batch + PUT
    assert hub.files(REPO)["data/train/part-0.h5"] == BIG

    tree = {e.path: e for e in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)}
    folders = {p for p, e in tree.items() if isinstance(e, RepoFolder)}
    assert folders == {"data", "data/train", "meta"}
    big, info = tree["data/train/part-0.h5"], tree["meta/info.json"]
    assert isinstance(big, RepoFile) and big.size == len(BIG)
    assert big.lfs is not None and big.lfs.sha256 == hashlib.sha256(BIG).hexdigest()
    assert big.lfs.size == len(BIG) and len(big.blob_id) == 40  # blob id of the LFS pointer
    assert isinstance(info, RepoFile) and info.lfs is None
    assert info.size == len(INFO) and info.blob_id == git_blob_sha1(INFO)

    top = [e.path for e in api.list_repo_tree(REPO, repo_type="dataset")]
    assert sorted(top) == [".gitattributes", "README.md", "data", "meta"]
    sub = [e.path for e in api.list_repo_tree(REPO, "data/train", repo_type="dataset")]
    assert sub == ["data/train/part-0.h5", "data/train/part-1.h5"]
    paths = api.get_paths_info(REPO, ["meta/info.json", "data", "nope"], repo_type="dataset")
    assert [(type(p), p.path) for p in paths] == [
        (RepoFile, "meta/info.json"),
        (RepoFolder, "data"),
    ]  # missing paths are left out
    assert api.file_exists(REPO, "data/train/part-1.h5", repo_type="dataset")
    assert not api.file_exists(REPO, "data/train/part-9.h5", repo_type="dataset")

    assert _download(hub, "data/train/part-0.h5", local_dir=tmp_path / "l") == BIG
    assert _download(hub, "meta/info.json", cache_dir=tmp_path / "c") == INFO
    assert (tmp_path / "c/datasets--org--ds/snapshots" / sha / "meta/info.json").is_file()
    snap = snapshot_download(REPO, repo_type="dataset", endpoint=hub.url, cache_dir=tmp_path / "s")
    assert (Path(snap) / "data/train/part-1.h5").read_bytes() == SMALL_H5


def test_old_revisions_still_resolve(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    first = _push(api)
    new = b'{"episodes": 4}'
    api.upload_file(
        path_or_fileobj=new, path_in_repo="meta/info.json", repo_id=REPO, repo_type="dataset"
    )
    history = api.list_repo_commits(REPO, repo_type="dataset")
    assert [c.commit_id for c in history] == hub.commits(REPO)[::-1]  # newest first
    assert _download(hub, "meta/info.json", revision=first, cache_dir=tmp_path) == INFO
    assert _download(hub, "meta/info.json", cache_dir=tmp_path) == new
    assert _download(hub, "meta/info.json", revision=first, local_dir=tmp_path / "l") == INFO
    assert api.dataset_info(REPO, revision=first).sha == first
    assert "meta/info.json" in api.list_repo_files(REPO, repo_type="dataset", revision=first)


def test_range_reads(hub: HubServer, api: HfApi) -> None:
    _push(api)
    fs = HfFileSystem(endpoint=hub.url, skip_instance_cache=True)
    with fs.open(f"datasets/{REPO}/data/train/part-0.h5", "rb", block_size=1024) as f:
        f.seek(1_000_000)
        assert f.read(100) == BIG[1_000_000:1_000_100]
    ranged = [h for m, h in hub.requests if m == "GET" and "/resolve/" in h]
    assert ranged, "HfFileSystem should read through /resolve/ with a Range header"

    url = f"{hub.url}/datasets/{REPO}/resolve/main/data/train/part-0.h5"
    request = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(request) as resp:
        assert resp.status == 206 and resp.read() == BIG[10:20]
        assert resp.headers["Content-Range"] == f"bytes 10-19/{len(BIG)}"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=-5"})) as resp:
        assert resp.read() == BIG[-5:]


def test_recommitting_identical_files_uploads_nothing(hub: HubServer, api: HfApi) -> None:
    _push(api)
    commits, puts = hub.commits(REPO), len(_puts(hub))
    _push(api, message="again")  # same content: client skips the no-op commit entirely
    assert hub.commits(REPO) == commits and len(_puts(hub)) == puts
    # Same LFS bytes under a new path: the batch endpoint says "stored", so no PUT either.
    api.upload_file(path_or_fileobj=BIG, path_in_repo="copy.h5", repo_id=REPO, repo_type="dataset")
    assert len(hub.commits(REPO)) == len(commits) + 1 and len(_puts(hub)) == puts
    assert hub.files(REPO)["copy.h5"] == BIG


def test_delete_folder_and_file(hub: HubServer, api: HfApi) -> None:
    before = _push(api)
    api.create_commit(
        REPO,
        [CommitOperationDelete("data/", is_folder=True), CommitOperationDelete("README.md")],
        commit_message="drop data",
        repo_type="dataset",
    )
    assert sorted(hub.files(REPO)) == [".gitattributes", "meta/info.json"]
    old = api.list_repo_files(REPO, repo_type="dataset", revision=before)
    assert "data/train/part-0.h5" in old
    with pytest.raises(EntryNotFoundError):
        api.delete_file("missing.txt", REPO, repo_type="dataset")


def test_stale_parent_commit_is_refused(hub: HubServer, api: HfApi) -> None:
    first = _push(api)
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO, repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(
            REPO,
            [CommitOperationAdd("y.txt", b"y")],
            commit_message="late",
            repo_type="dataset",
            parent_commit=first,
        )
    assert err.value.response.status_code == 412 and "y.txt" not in hub.files(REPO)


def test_delete_repo(hub: HubServer, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    api.delete_repo(REPO, repo_type="dataset")
    assert not api.repo_exists(REPO, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(REPO, repo_type="dataset")
    api.delete_repo(REPO, repo_type="dataset", missing_ok=True)


def test_not_found_errors(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("org/missing")
    with pytest.raises(RepositoryNotFoundError):
        _download(hub, "a.txt", "org/missing", cache_dir=tmp_path)
    _push(api)
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(REPO, revision="0" * 40)
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(REPO, repo_type="dataset", revision="v9")
    with pytest.raises(EntryNotFoundError):
        _download(hub, "nope.txt", cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        next(iter(api.list_repo_tree(REPO, "nope", repo_type="dataset")))
    assert not api.revision_exists(REPO, "0" * 40, repo_type="dataset")


def test_injected_faults(hub: HubServer, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    hub.fail("GET", rf"^/api/datasets/{REPO}$", 403)
    with pytest.raises(HfHubHTTPError) as err:
        api.dataset_info(REPO)
    assert err.value.response.status_code == 403
    assert api.dataset_info(REPO).id == REPO  # the fault was used up
    hub.fail("GET", r"/tree/", 403, times=1000)
    hub.fail("GET", r"/tree/", 403, times=0)  # times=0 clears that fault
    assert api.list_repo_files(REPO, repo_type="dataset") == [".gitattributes"]

    # An interrupted push: the 2nd LFS upload fails (507 is not retried by the client); the
    # client still tries the others, then raises before committing.
    hub.fail("PUT", r"/lfs-upload/", 507, after=1)
    ops = [CommitOperationAdd(f"shard-{i}.h5", os.urandom(2048)) for i in range(3)]
    with pytest.raises(RuntimeError, match="shard-1.h5") as failed:  # wraps the HTTP error
        api.create_commit(REPO, ops, commit_message="push", repo_type="dataset", num_threads=1)
    assert isinstance(failed.value.__cause__, HfHubHTTPError)
    assert failed.value.__cause__.response.status_code == 507
    assert len(hub.commits(REPO)) == 1 and len(_puts(hub)) == 3  # no commit was made
    retry = [CommitOperationAdd(op.path_in_repo, op.path_or_fileobj) for op in ops]
    api.create_commit(REPO, retry, commit_message="push", repo_type="dataset", num_threads=1)
    assert len(_puts(hub)) == 4  # the stored shard was not uploaded again
    assert sorted(hub.files(REPO)) == [".gitattributes", "shard-0.h5", "shard-1.h5", "shard-2.h5"]


def test_transient_error_is_retried_by_client(hub: HubServer, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    hub.fail("POST", r"/preupload/", 503)  # the client backs off ~1 s and retries
    api.upload_file(path_or_fileobj=b"a", path_in_repo="a.txt", repo_id=REPO, repo_type="dataset")
    assert hub.files(REPO)["a.txt"] == b"a"
    assert [m for m, p in hub.requests if "/preupload/" in p] == ["POST", "POST"]


def test_corrupt_changes_bytes_not_listing(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    _push(api)
    path = "data/train/part-1.h5"
    listed = {e.path: e for e in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)}
    bad = bytes(b ^ 0xFF for b in SMALL_H5)
    hub.corrupt(REPO, path, bad)
    again = {e.path: e for e in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)}
    assert again[path].lfs == listed[path].lfs and again[path].blob_id == listed[path].blob_id
    local = tmp_path / "local"
    data = _download(hub, path, local_dir=local)
    assert data == bad and hashlib.sha256(data).hexdigest() != listed[path].lfs.sha256
    report = api.verify_repo_checksums(REPO, repo_type="dataset", local_dir=local)
    assert [(m["path"], m["algorithm"]) for m in report.mismatches] == [(path, "sha256")]


def test_token_is_sent_only_when_given(hub: HubServer) -> None:
    HfApi(endpoint=hub.url, token="hf_dummy").create_repo(REPO, repo_type="dataset")
    HfApi(endpoint=hub.url).dataset_info(REPO)
    assert hub.auth_headers == ["Bearer hf_dummy", None]


def test_model_repo_and_unknown_route(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    api.create_repo("org/model")
    api.upload_file(path_or_fileobj=b"w" * 100, path_in_repo="w.bin", repo_id="org/model")
    got = hf_hub_download("org/model", "w.bin", endpoint=hub.url, cache_dir=tmp_path)
    assert Path(got).read_bytes() == b"w" * 100
    assert hub.files("org/model", repo_type="model")["w.bin"] == b"w" * 100

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{hub.url}/api/nope")
    assert err.value.code == 404 and "error" in json.loads(err.value.read())
    err.value.close()
    assert hub.unhandled == [("GET", "/api/nope")]
    hub.unhandled.clear()


def test_quoted_paths_and_malformed_requests(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    api.create_repo(REPO, repo_type="dataset")
    name = "with space/é #1.json"
    api.upload_file(path_or_fileobj=b"{}", path_in_repo=name, repo_id=REPO, repo_type="dataset")
    assert [e.path for e in api.list_repo_tree(REPO, "with space", repo_type="dataset")] == [name]
    assert _download(hub, name, cache_dir=tmp_path) == b"{}"
    with pytest.raises(EntryNotFoundError):
        next(iter(api.list_repo_tree(REPO, "with space/é", repo_type="dataset")))

    request = urllib.request.Request(f"{hub.url}/api/repos/create", data=b"not json")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request)
    assert err.value.code == 400 and "malformed" in err.value.headers["X-Error-Message"]
    err.value.close()
