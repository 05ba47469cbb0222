"""An in-memory fake of the Hugging Face Hub HTTP API, for offline tests with the real client.

Stdlib only. It speaks the subset of the Hub API that ``huggingface_hub`` 2.4.0 uses to create,
list, push to (classic LFS, so run the client with ``HF_HUB_DISABLE_XET=1``), download from and
delete repos. Every commit keeps a snapshot of its file map, so old revisions still resolve.
Faults can be injected per request (:meth:`HubServer.fail`) and stored bytes can be damaged
without changing their recorded checksums (:meth:`HubServer.corrupt`).

Example:
    >>> with HubServer() as hub:
    ...     hub.url.startswith("http://127.0.0.1:")
    True
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".h5", ".hdf5", ".bin", ".parquet", ".arrow")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_TYPES = "models|datasets|spaces"
_LFS_SPEC = "version https://git-lfs.github.com/spec/v1\n"
_REPO = r"(?P<repo>[^/]+/[^/]+?)"
_RAW_REPO = rf"/(?:(?P<t>datasets|spaces)/)?{_REPO}"  # model repos have no URL prefix


def git_blob_sha1(data: bytes) -> str:
    """Return the git object id of ``data`` stored as a blob (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit: its bytes and the metadata the Hub reports for it."""

    data: bytes
    size: int
    blob_id: str  # git blob sha1; of the LFS pointer file for LFS files, as on the Hub
    sha256: str | None = None  # set for LFS files only
    pointer_size: int = 0

    @classmethod
    def make(cls, data: bytes, lfs: bool) -> StoredFile:
        """Build a regular (git) or LFS file from its content."""
        if not lfs:
            return cls(data, len(data), git_blob_sha1(data))
        sha = hashlib.sha256(data).hexdigest()
        pointer = _LFS_SPEC + f"oid sha256:{sha}\nsize {len(data)}\n"
        return cls(data, len(data), git_blob_sha1(pointer.encode()), sha, len(pointer))

    def entry(self, path: str) -> dict[str, Any]:
        """Return this file as an entry of the tree and paths-info endpoints."""
        out: dict[str, Any] = {"type": "file", "oid": self.blob_id, "size": self.size, "path": path}
        if self.sha256:
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        return out


@dataclass
class Commit:
    """A commit: its id, message and the full file map it produced."""

    sha: str
    title: str
    message: str
    date: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    """A repo and its linear history on ``main`` (oldest commit first)."""

    repo_type: str
    repo_id: str
    private: bool
    commits: list[Commit]

    def at(self, rev: str) -> Commit:
        """Return the commit for ``main`` or a commit sha, or raise RevisionNotFound."""
        if rev == "main":
            return self.commits[-1]
        for commit in self.commits:
            if commit.sha == rev:
                return commit
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")


class HubError(Exception):
    """An error reply: status, message, ``X-Error-Code``, plus ``headers=`` and JSON body keys."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers: dict[str, str] = extra.pop("headers", {})
        self.body: dict[str, Any] = extra  # extra keys of the JSON error body


@dataclass
class _Request:
    params: dict[str, str]  # named groups of the route, percent-decoded
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def flag(self, name: str) -> bool:
        return self.query.get(name, ["false"])[0].lower() in ("1", "true")


@dataclass
class _Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] | None = None
    content_type: str = "application/json"


def _json(obj: Any, status: int = 200, **kwargs: Any) -> _Reply:
    return _Reply(status, json.dumps(obj).encode(), **kwargs)


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    after: int
    seen: int = 0


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that stops reading mid-body (a bounded pull) is normal, not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class HubServer:
    """In-memory Hub on ``127.0.0.1``; start it, point ``endpoint=`` at :attr:`url`."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[tuple[str, str]] = []
        self.auth_headers: list[str | None] = []
        self.unhandled: list[tuple[str, str]] = []  # requests that matched no route
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lfs: dict[str, bytes] = {}  # uploaded LFS objects by sha256
        self._pending: dict[str, int] = {}  # sizes announced to the LFS batch endpoint
        self._faults: list[_Fault] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        api, raw, rev = rf"/api/(?P<t>{_TYPES})/{_REPO}", _RAW_REPO, r"(?P<rev>[^/]+)"
        self._routes: list[tuple[str, re.Pattern[str], Callable[[_Request], _Reply]]] = [
            (method, re.compile(regex), fn)
            for method, regex, fn in [
                ("POST", r"/api/repos/create", self._create_repo),
                ("DELETE", r"/api/repos/delete", self._delete_repo),
                ("POST", r"/api/validate-yaml", lambda _: _json({"errors": [], "warnings": []})),
                ("GET", rf"/api/(?P<t>{_TYPES})", self._list_repos),
                ("GET", rf"{api}(?:/revision/{rev})?", self._info),
                ("GET", rf"{api}/tree/{rev}(?:/(?P<path>.+))?", self._tree),
                ("POST", rf"{api}/paths-info/{rev}", self._paths_info),
                ("GET", rf"{api}/commits/{rev}", self._commits),
                ("POST", rf"{api}/preupload/{rev}", self._preupload),
                ("POST", rf"{api}/commit/{rev}", self._commit),
                ("POST", rf"{raw}\.git/info/lfs/objects/batch", self._batch),
                ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self._lfs_upload),
                ("GET", rf"{raw}/resolve/{rev}/(?P<path>.+)", self._resolve),  # and HEAD
            ]
        ]

    # ---------------------------------------------------------------- lifecycle and test helpers

    def start(self) -> str:
        """Serve on a free port in a daemon thread and return the base URL."""
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            assert self._thread is not None
            self._thread.join()
            self._httpd = self._thread = None

    def __enter__(self) -> HubServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Drop all repos, LFS objects, faults and request logs."""
        with self._lock:
            self._repos.clear()
            self._lfs.clear()
            self._pending.clear()
            self._faults.clear()
            self.requests.clear()
            self.auth_headers.clear()
            self.unhandled.clear()

    def files(self, repo_id: str, repo_type: str = "dataset") -> dict[str, bytes]:
        """Return the ``main`` branch contents of a repo, path -> bytes."""
        with self._lock:
            return {p: f.data for p, f in self._repo(repo_type, repo_id).commits[-1].files.items()}

    def commits(self, repo_id: str, repo_type: str = "dataset") -> list[str]:
        """Return the commit shas of a repo, oldest first."""
        with self._lock:
            return [c.sha for c in self._repo(repo_type, repo_id).commits]

    def corrupt(self, repo_id: str, path: str, data: bytes, repo_type: str = "dataset") -> None:
        """Replace a file's bytes on ``main`` but keep its recorded oid, sha256 and size."""
        with self._lock:
            files = self._repo(repo_type, repo_id).commits[-1].files
            files[path] = replace(files[path], data=data)

    def fail(
        self, method: str, path_regex: str, status: int, times: int = 1, after: int = 0
    ) -> None:
        """Answer ``status`` to ``times`` matching requests, after letting ``after`` through.

        A request matches when its method equals ``method`` and ``re.search(path_regex)`` finds
        its path (with query string). ``times=0`` removes the faults set for that method and
        regex. Mind that huggingface_hub retries 408, 429 and 5xx up to 5 times with a 1-8 s
        backoff (about 23 s in all); other statuses (e.g. 403, 507) fail at once.
        """
        with self._lock:
            method = method.upper()
            if times == 0:
                key = (method, path_regex)
                self._faults = [f for f in self._faults if (f.method, f.pattern.pattern) != key]
            else:
                self._faults.append(_Fault(method, re.compile(path_regex), status, times, after))

    # ---------------------------------------------------------------- request plumbing

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        """Log a request, apply injected faults, then route it (called by the handler)."""
        with self._lock:
            self.requests.append((method, target))
            self.auth_headers.append(headers.get("Authorization"))
            for fault in self._faults:
                if fault.method == method and fault.pattern.search(target):
                    fault.seen += 1
                    if fault.after < fault.seen <= fault.after + fault.times:
                        return self._error(HubError(fault.status, f"injected {fault.status}"))
            split = urlsplit(target)
            for route_method, pattern, fn in self._routes:
                if route_method == method or (route_method, method) == ("GET", "HEAD"):
                    match = pattern.fullmatch(split.path)
                    if match:
                        params = {k: unquote(v) for k, v in match.groupdict().items() if v}
                        try:
                            return fn(_Request(params, parse_qs(split.query), headers, body))
                        except HubError as err:
                            return self._error(err)
                        except (AttributeError, KeyError, TypeError, ValueError) as err:
                            return self._error(HubError(400, f"malformed request: {err!r}"))
            self.unhandled.append((method, target))
            return self._error(HubError(404, f"no route for {method} {split.path}"))

    @staticmethod
    def _error(err: HubError) -> _Reply:
        ascii_message = err.message.encode("ascii", "replace").decode()  # headers are latin-1
        headers = {"X-Error-Message": ascii_message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        return _json({"error": err.message, **err.body}, err.status, headers=headers)

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _find(self, req: _Request) -> Repo:
        return self._repo(req.params.get("t", "models").removesuffix("s"), req.params["repo"])

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _new_commit(self, repo: Repo, header: dict[str, str], files: dict[str, StoredFile]) -> str:
        sha = secrets.token_hex(20)
        title, message = header.get("summary", ""), header.get("description", "")
        repo.commits.append(Commit(sha, title, message, _now(), files))
        return sha

    # ---------------------------------------------------------------- repos

    def _create_repo(self, req: _Request) -> _Reply:
        payload = json.loads(req.body)
        if not payload.get("organization"):
            raise HubError(400, "this fake Hub has no users: pass a namespace/name repo id")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self._repos:
            raise HubError(409, f"You already created this {repo_type} repo", url=url)
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        repo = Repo(repo_type, repo_id, private, [])
        attributes = StoredFile.make(GITATTRIBUTES.encode(), lfs=False)
        self._new_commit(repo, {"summary": "initial commit"}, {".gitattributes": attributes})
        self._repos[(repo_type, repo_id)] = repo
        return _json({"url": url, "name": repo_id})

    def _delete_repo(self, req: _Request) -> _Reply:
        payload = json.loads(req.body)
        repo_type = payload.get("type") or "model"
        name = f"{payload['organization']}/{payload['name']}"
        self._repo(repo_type, name)
        del self._repos[(repo_type, name)]
        return _Reply()

    def _summary(self, repo: Repo, commit: Commit) -> dict[str, Any]:
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "createdAt": repo.commits[0].date,
            "lastModified": commit.date,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
        }

    def _list_repos(self, req: _Request) -> _Reply:
        repo_type = req.params["t"].removesuffix("s")
        author, search = req.query.get("author", [None])[0], req.query.get("search", [""])[0]
        return _json(
            [
                self._summary(repo, repo.commits[-1])
                for (kind, repo_id), repo in sorted(self._repos.items())
                if kind == repo_type
                and author in (None, repo_id.split("/")[0])
                and search.lower() in repo_id.lower()
            ]
        )

    def _info(self, req: _Request) -> _Reply:
        repo = self._find(req)
        commit = repo.at(req.params.get("rev", "main"))
        blobs = req.flag("blobs")
        siblings = []
        for path, f in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=f.size, blobId=f.blob_id)
                if f.sha256:
                    lfs = {"size": f.size, "sha256": f.sha256, "pointerSize": f.pointer_size}
                    sibling["lfs"] = lfs
            siblings.append(sibling)
        used = sum(f.size for f in commit.files.values())
        return _json({**self._summary(repo, commit), "siblings": siblings, "usedStorage": used})

    # ---------------------------------------------------------------- listing

    @staticmethod
    def _dir_entry(files: dict[str, StoredFile], path: str) -> dict[str, Any]:
        inner = sorted(f"{p}\0{f.blob_id}" for p, f in files.items() if p.startswith(path + "/"))
        oid = hashlib.sha1("\n".join(inner).encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": path}

    def _tree(self, req: _Request) -> _Reply:
        files = self._find(req).at(req.params["rev"]).files
        base = req.params.get("path", "").strip("/")
        prefix = f"{base}/" if base else ""
        recursive = req.flag("recursive")
        if base and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"{base} does not exist on this revision", "EntryNotFound")
        dirs: set[str] = set()
        leaves: list[str] = []
        for path in sorted(p for p in files if p.startswith(prefix)):
            parts = path[len(prefix) :].split("/")
            depth = len(parts) - 1 if recursive else min(1, len(parts) - 1)
            dirs.update(prefix + "/".join(parts[: i + 1]) for i in range(depth))
            if recursive or len(parts) == 1:
                leaves.append(path)
        entries = [self._dir_entry(files, d) for d in sorted(dirs)]
        return _json(entries + [files[p].entry(p) for p in leaves])

    def _paths_info(self, req: _Request) -> _Reply:
        files = self._find(req).at(req.params["rev"]).files
        try:
            paths = json.loads(req.body)["paths"]
        except ValueError:  # form-encoded, as huggingface_hub sends it
            paths = parse_qs(req.body.decode()).get("paths", [])
        out = []
        for path in (p.strip("/") for p in paths):
            if path in files:
                out.append(files[path].entry(path))
            elif any(p.startswith(path + "/") for p in files):
                out.append(self._dir_entry(files, path))
        return _json(out)  # missing paths are left out, as on the Hub

    def _commits(self, req: _Request) -> _Reply:
        repo = self._find(req)
        head = repo.commits.index(repo.at(req.params["rev"]))
        return _json(
            [
                {"id": c.sha, "title": c.title, "message": c.message, "date": c.date}
                | {"authors": [{"user": "hub-server"}]}
                for c in reversed(repo.commits[: head + 1])
            ]
        )

    # ---------------------------------------------------------------- uploads

    def _preupload(self, req: _Request) -> _Reply:
        files = self._find(req).at(req.params["rev"]).files
        out = []
        for item in json.loads(req.body)["files"]:
            path, size = item["path"], item["size"]
            lfs = path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
            current = files.get(path)
            oid = None if current is None else current.sha256 or current.blob_id
            mode = "lfs" if lfs else "regular"
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return _json({"files": out})

    def _batch(self, req: _Request) -> _Reply:
        self._find(req)
        payload = json.loads(req.body)
        if payload.get("operation") != "upload":
            raise HubError(400, "this fake Hub only supports LFS uploads")
        objects = []
        for obj in payload["objects"]:
            oid, size = obj["oid"], obj["size"]
            if oid in self._lfs and len(self._lfs[oid]) == size:
                objects.append({"oid": oid, "size": size})  # no actions: client skips it
                continue
            self._pending[oid] = size
            actions = {"upload": {"href": f"{self.url}/lfs-upload/{oid}", "header": {}}}
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        reply = {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}
        return _json(reply, content_type="application/vnd.git-lfs+json")

    def _lfs_upload(self, req: _Request) -> _Reply:
        oid = req.params["oid"]
        if hashlib.sha256(req.body).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its sha256 oid")
        if self._pending.get(oid, len(req.body)) != len(req.body):
            raise HubError(400, "uploaded content does not match the announced size")
        self._lfs[oid] = req.body
        return _Reply()

    def _commit(self, req: _Request) -> _Reply:
        repo = self._find(req)
        if req.params["rev"] != "main" or req.query.get("create_pr"):
            raise HubError(400, "this fake Hub only commits to main (no branches or PRs)")
        lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and parent != repo.commits[-1].sha:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[-1].files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"].strip("/")
            if key == "file":
                files[path] = StoredFile.make(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                data = self._lfs.get(value["oid"])
                if data is None or len(data) != value["size"]:
                    raise HubError(422, f"LFS object {value['oid']} of {path} was not uploaded")
                files[path] = StoredFile.make(data, lfs=True)
            elif key in ("deletedFile", "deletedFolder"):
                gone = [p for p in files if p == path or p.startswith(path + "/")]
                if key == "deletedFile":
                    gone = [p for p in gone if p == path]
                if not gone:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                for p in gone:
                    del files[p]
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
        sha = self._new_commit(repo, header, files)
        url = f"{self._repo_url(repo)}/commit/{sha}"
        return _json({"commitUrl": url, "commitOid": sha, "pullRequestUrl": None, "success": True})

    # ---------------------------------------------------------------- downloads

    def _resolve(self, req: _Request) -> _Reply:
        commit = self._find(req).at(req.params["rev"])
        stored = commit.files.get(req.params["path"])
        if stored is None:
            headers = {"X-Repo-Commit": commit.sha}
            raise HubError(404, "Entry not found", "EntryNotFound", headers=headers)
        etag = stored.sha256 or stored.blob_id
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if stored.sha256:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(stored.size)})
        data, status = stored.data, 200
        range_header = req.headers.get("Range") or ""
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
        if range_header and match and match.group(1) + match.group(2):
            first, last = match.groups()
            start = int(first) if first else max(0, len(data) - int(last))
            end = min(int(last), len(data) - 1) if first and last else len(data) - 1
            if start >= len(data) or start > end:
                headers["Content-Range"] = f"bytes */{len(data)}"
                return _Reply(416, b"", headers)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        return _Reply(status, data, headers, "application/octet-stream")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    disable_nagle_algorithm = True  # else small replies wait ~40 ms for a delayed ACK

    def _serve(self) -> None:
        hub: HubServer = self.server.hub  # type: ignore[attr-defined]
        body = self._read_body()
        reply = hub.handle(self.command, self.path, self.headers, body)
        self.send_response(reply.status)
        for name, value in (reply.headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Stay quiet: requests are recorded in :attr:`HubServer.requests`."""
