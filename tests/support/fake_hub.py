"""A small stand-in for the Hugging Face Hub on 127.0.0.1, for tests that run the real client.

Stdlib only (http.server, one thread per connection). It serves what hubscan's read path calls
through huggingface_hub 2.x:

    GET       /api/models/{org}/{name}[/revision/{rev}]   model_info: ?blobs=true adds sizes, blob
                                                          ids and LFS info; ?securityStatus=true
                                                          adds securityRepoStatus
    HEAD|GET  /{org}/{name}/resolve/{rev}/{path}          hf_hub_download: X-Repo-Commit, ETag,
                                                          Content-Length (no Xet headers, so the
                                                          client never tries hf_xet)

Errors carry the Hub's `X-Error-Code` header (RepoNotFound, RevisionNotFound, GatedRepo,
EntryNotFound), which is how huggingface_hub picks its typed exceptions. `fail()` scripts a
failure per repo. Every request is logged in `requests`. Routes live in one table, `ROUTES`,
so publishing endpoints (preupload, commit, discussions) can be added beside them.

    with FakeHub() as hub:
        repo = hub.add_repo("acme/tiny-clip", {"open_clip_config.json": b"{}"})
        api.model_info("acme/tiny-clip", ...)  # with endpoint=hub.endpoint
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

Scope = Literal["api", "resolve", "all"]
CLEAN_SCAN: dict[str, Any] = {"scansDone": True, "filesWithIssues": []}


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # URL-decoded, without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names


@dataclass(frozen=True)
class Failure:
    status: int
    error_code: str | None = None  # X-Error-Code, e.g. "GatedRepo"
    error_message: str | None = None  # X-Error-Message
    scope: Scope = "all"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    lfs: frozenset[str]  # paths served as LFS files (sha256 ETag, lfs block in the listing)
    commit: str
    refs: dict[str, str]  # branch or tag -> commit
    security: dict[str, Any]  # the securityRepoStatus body
    failure: Failure | None = None

    def commit_of(self, revision: str) -> str | None:
        if revision == self.commit:
            return self.commit
        return self.refs.get(revision)

    def etag(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if path in self.lfs else git_blob_sha1(data)


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Response:
        body = json.dumps(payload).encode()
        return cls(status, {"Content-Type": "application/json"}, body)

    @classmethod
    def error(cls, status: int, code: str | None, message: str) -> Response:
        response = cls.json({"error": message}, status)
        if code is not None:
            response.headers["X-Error-Code"] = code
        response.headers["X-Error-Message"] = message
        return response


def git_blob_sha1(data: bytes) -> str:
    """What the Hub uses as the ETag (and blob id) of a non-LFS file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _fake_commit(repo_id: str, files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha1(repo_id.encode())
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.hexdigest()


class FakeHub:
    """The server and its state; a context manager that starts and stops it."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- scripting ---------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        lfs: Iterable[str] = (),
        branch: str = "main",
        tags: Iterable[str] = (),
        security: dict[str, Any] | None = None,
    ) -> FakeRepo:
        commit = _fake_commit(repo_id, files)
        repo = FakeRepo(
            repo_id=repo_id,
            files=dict(files),
            lfs=frozenset(lfs),
            commit=commit,
            refs={branch: commit, **dict.fromkeys(tags, commit)},
            security=security
            if security is not None
            else {"scansDone": True, "filesWithIssues": []},
        )
        self.repos[repo_id] = repo
        return repo

    def fail(
        self,
        repo_id: str,
        status: int,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        scope: Scope = "all",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer every request for `repo_id` (in `scope`) with this error from now on."""
        self.repos[repo_id].failure = Failure(
            status, error_code, error_message, scope, dict(headers or {})
        )

    # --- what the client asked -----------------------------------------------------------------

    def api_requests(self) -> list[LoggedRequest]:
        return [r for r in self.requests if r.path.startswith("/api/")]

    def resolve_requests(self) -> list[tuple[str, str, str]]:
        """(method, revision, path) of every file request."""
        out = []
        for request in self.requests:
            match = _RESOLVE.fullmatch(request.path)
            if match is not None:
                out.append((request.method, match["rev"], match["path"]))
        return out

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not running: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeHub:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    # --- dispatch ------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str]) -> Response:
        split = urlsplit(raw_path)
        query = dict(parse_qsl(split.query))
        # Match on the raw path: revisions arrive quoted with safe="" ("refs%2Fpr%2F1").
        logged = LoggedRequest(method, unquote(split.path), query, dict(headers))
        with self._lock:
            self.requests.append(logged)
        for methods, pattern, scope, handler in ROUTES:
            match = pattern.fullmatch(split.path)
            if match is None or method not in methods:
                continue
            groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            repo = self.repos.get(f"{groups['org']}/{groups['name']}")
            if repo is None:
                return Response.error(404, "RepoNotFound", "Repository not found")
            failure = repo.failure
            if failure is not None and failure.scope in (scope, "all"):
                response = Response.error(
                    failure.status, failure.error_code, failure.error_message or "scripted failure"
                )
                response.headers.update(failure.headers)
                return response
            return handler(repo, groups, logged)
        return Response.error(404, None, f"no route for {method} {split.path}")


# --- routes --------------------------------------------------------------------------------------

Handler = Callable[[FakeRepo, dict[str, str], LoggedRequest], Response]


def _model_info(repo: FakeRepo, groups: dict[str, str], request: LoggedRequest) -> Response:
    revision = groups.get("rev") or "main"
    commit = repo.commit_of(revision)
    if commit is None:
        return Response.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    body: dict[str, Any] = {
        "_id": repo.commit[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "sha": commit,
        "private": False,
        "gated": False,
        "disabled": False,
        "library_name": "open_clip",
        "tags": ["open_clip"],
        "siblings": [_sibling(repo, path, _flag(request, "blobs")) for path in sorted(repo.files)],
    }
    if _flag(request, "securityStatus"):
        body["securityRepoStatus"] = repo.security
    return Response.json(body)


def _sibling(repo: FakeRepo, path: str, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": path}
    data = repo.files[path]
    entry: dict[str, Any] = {"rfilename": path, "size": len(data), "blobId": git_blob_sha1(data)}
    if path in repo.lfs:
        sha = hashlib.sha256(data).hexdigest()
        entry["lfs"] = {"size": len(data), "sha256": sha, "pointerSize": 134}
    return entry


def _resolve(repo: FakeRepo, groups: dict[str, str], request: LoggedRequest) -> Response:
    commit = repo.commit_of(groups["rev"])
    if commit is None:
        return Response.error(404, "RevisionNotFound", f"Invalid rev id: {groups['rev']}")
    path = groups["path"]
    if path not in repo.files:
        response = Response.error(404, "EntryNotFound", f"{path} does not exist")
        response.headers["X-Repo-Commit"] = commit
        return response
    headers = {
        "X-Repo-Commit": commit,
        "ETag": f'"{repo.etag(path)}"',
        "Content-Type": "application/octet-stream",
    }
    return Response(200, headers, repo.files[path])


def _flag(request: LoggedRequest, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true")


_SEGMENT = r"[^/]+"
_REPO = rf"/(?P<org>{_SEGMENT})/(?P<name>{_SEGMENT})"
_RESOLVE = re.compile(rf"{_REPO}/resolve/(?P<rev>{_SEGMENT})/(?P<path>.+)")
_MODEL_INFO = re.compile(rf"/api/models{_REPO}(?:/revision/(?P<rev>{_SEGMENT}))?")
ROUTES: list[tuple[frozenset[str], re.Pattern[str], Scope, Handler]] = [
    (frozenset({"GET"}), _MODEL_INFO, "api", _model_info),
    (frozenset({"HEAD", "GET"}), _RESOLVE, "resolve", _resolve),
]


# --- the HTTP plumbing ---------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The client keeps connections alive in its pool: do not wait for them when stopping.
    block_on_close = False
    hub: FakeHub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.server.hub.handle(self.command, self.path, headers)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if send_body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is `FakeHub.requests`
