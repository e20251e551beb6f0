"""A small stand-in for the Hugging Face Hub on 127.0.0.1, for tests that run the real client.

Stdlib only (http.server, one thread per connection). It serves what hubscan calls through
huggingface_hub 2.x. The read path (this module):

    GET       /api/models/{org}/{name}[/revision/{rev}]   model_info: ?blobs=true adds sizes, blob
                                                          ids and LFS info; ?securityStatus=true
                                                          adds securityRepoStatus
    HEAD|GET  /{org}/{name}/resolve/{rev}/{path}          hf_hub_download: X-Repo-Commit, ETag,
                                                          Content-Length (no Xet headers, so the
                                                          client never tries hf_xet)

The publishing path (`fake_hub_write.py`; * = needs `Authorization: Bearer <token>`):

    POST  /api/models/{org}/{name}/preupload/{rev}      * every file "regular", never ignored,
                                                          oid null: no LFS, no Xet, nothing
                                                          dropped as unchanged
    POST  /api/validate-yaml                              README.md front matter check
    POST  /api/models/{org}/{name}/commit/{rev}         * ndjson commit; ?create_pr=1 opens a PR
                                                          on refs/pr/N from parentCommit
    GET   /api/models/{org}/{name}/discussions            paged list, ?type= ?status= ?author= ?p=
    POST  /api/repos/create                             * a repo holding .gitattributes; 409 if
                                                          it exists
    GET   /api/whoami-v2                                * the token's user

Each repo keeps a commit graph and refs (branches, tags, refs/pr/N; `fake_hub_model.py`); every
read follows it, so `resolve/refs%2Fpr%2F1/...` serves the PR's files. Write routes need a token
from `tokens` (default: FAKE_TOKEN, user FAKE_USER); without one they answer 401. Errors carry
the Hub's `X-Error-Code` header (RepoNotFound, RevisionNotFound, GatedRepo, EntryNotFound), which
is how huggingface_hub picks its typed exceptions. `fail()` scripts a failure per repo and scope
(optionally for the next `times` requests only). Every request is logged in `requests` (with
its body); `commits()`, `history()`, `files()` and `pull_requests()` show what was published.
Not served: LFS/Xet uploads and POST .../discussions, so `upload_folder` (which, with hf_xet
installed, streams through Xet and opens its PR separately) cannot publish here; use
`create_commit` or `upload_file`.

    with FakeHub(tokens={"hf_writer": "alice"}) as hub:
        repo = hub.add_repo("acme/tiny-clip", {"open_clip_config.json": b"{}"})
        HfApi(endpoint=hub.endpoint, token="hf_writer").create_commit(..., create_pr=True)
        (pr,) = hub.pull_requests("acme/tiny-clip")

Retries (huggingface_hub 2.4): only preupload goes through `http_backoff`, which retries 429,
500, 502, 503 and 504 five times, sleeping 1, 2, 4, 8, 8 s (or Retry-After + 1 s each), i.e. 23 s
for a persistent 500. The commit, validate-yaml, discussions, repos/create, whoami and
model_info calls are sent once. Script a server error with scope="commit" to stay fast, or
with `times=` to fail only the first few requests.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.support.fake_hub_model import (
    REPO,
    SEGMENT,
    Call,
    DiscussionStatus,
    Failure,
    FakeCommit,
    FakeDiscussion,
    FakeRepo,
    LoggedRequest,
    Response,
    Route,
    Scope,
    fake_commit_oid,
    git_blob_sha1,
)
from tests.support.fake_hub_write import WRITE_ROUTES

CLEAN_SCAN: dict[str, Any] = {"scansDone": True, "filesWithIssues": []}
FAKE_TOKEN = "hf_fake_write_token"  # valid on a FakeHub() built without `tokens`
FAKE_USER = "hubscan-bot"


class FakeHub:
    """The server and its state; a context manager that starts and stops it."""

    def __init__(self, tokens: Mapping[str, str] | None = None) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[LoggedRequest] = []
        # token -> user name; write routes answer 401 without one of these
        self.tokens: dict[str, str] = (
            dict(tokens) if tokens is not None else {FAKE_TOKEN: FAKE_USER}
        )
        self.failures: dict[str, Failure] = {}  # repo_id -> scripted failure
        self.discussion_page_size = 50  # what the Hub pages discussions by
        self.routes: list[Route] = [*READ_ROUTES, *WRITE_ROUTES]
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
        commit = FakeCommit(fake_commit_oid(repo_id, files), None, dict(files), "initial commit")
        repo = FakeRepo(
            repo_id=repo_id,
            lfs=frozenset(lfs),
            commits={commit.oid: commit},
            refs={branch: commit.oid, **dict.fromkeys(tags, commit.oid)},
            security=security if security is not None else dict(CLEAN_SCAN),
            default_branch=branch,
        )
        self.repos[repo_id] = repo
        return repo

    def add_discussion(
        self,
        repo_id: str,
        title: str,
        *,
        author: str = FAKE_USER,
        is_pull_request: bool = True,
        status: DiscussionStatus = "open",
    ) -> FakeDiscussion:
        """An existing discussion; a pull request's refs/pr/N is the default branch's head."""
        repo = self.repos[repo_id]
        head = repo.commit if is_pull_request else None
        return repo.open_discussion(title, author, head=head, status=status, base_commit=head)

    def fail(
        self,
        repo_id: str,
        status: int,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        scope: Scope = "all",
        headers: Mapping[str, str] | None = None,
        times: int | None = None,
    ) -> None:
        """Answer requests for `repo_id` (in `scope`) with this error: the next `times` of them,
        or all from now on. The repo need not exist yet (scope "write" reaches repos/create)."""
        self.failures[repo_id] = Failure(
            status, error_code, error_message, scope, dict(headers or {}), times
        )

    # --- what the client asked and did -----------------------------------------------------------

    def api_requests(self) -> list[LoggedRequest]:
        return [r for r in self.requests if r.path.startswith("/api/")]

    def resolve_requests(self) -> list[tuple[str, str, str]]:
        """(method, revision, path) of every file request."""
        out = []
        for request in self.requests:
            match = _RESOLVE.fullmatch(request.raw_path)
            if match is not None:
                out.append((request.method, unquote(match["rev"]), unquote(match["path"])))
        return out

    def commits(self, repo_id: str) -> list[FakeCommit]:
        """Every commit of the repo, oldest first, the one add_repo made included."""
        return list(self.repos[repo_id].commits.values())

    def history(self, repo_id: str, revision: str | None = None) -> list[FakeCommit]:
        """The commits reachable from `revision` (a branch, tag, PR ref or oid; default: the
        default branch), oldest first."""
        repo = self.repos[repo_id]
        oid = repo.commit_of(revision or repo.default_branch)
        if oid is None:
            raise KeyError(f"{repo_id} has no revision {revision!r}")
        chain = []
        while oid is not None:
            chain.append(repo.commits[oid])
            oid = repo.commits[oid].parent
        return chain[::-1]

    def pull_requests(self, repo_id: str) -> list[FakeDiscussion]:
        """The repo's pull requests by number; the files are `files(repo_id, pr.ref)`."""
        return [d for d in self.repos[repo_id].discussions if d.is_pull_request]

    def files(self, repo_id: str, revision: str | None = None) -> dict[str, bytes]:
        """A copy of the tree at `revision` (default: the default branch)."""
        repo = self.repos[repo_id]
        tree = repo.tree(revision or repo.default_branch)
        if tree is None:
            raise KeyError(f"{repo_id} has no revision {revision!r}")
        return dict(tree)

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

    def handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Response:
        split = urlsplit(raw_path)
        query = dict(parse_qsl(split.query))
        logged = LoggedRequest(method, unquote(split.path), query, dict(headers), body, split.path)
        with self._lock:  # one request at a time: handlers read and move refs
            self.requests.append(logged)
            for route in self.routes:
                # Match on the raw path: revisions arrive quoted with safe="" ("refs%2Fpr%2F1").
                match = route.pattern.fullmatch(split.path)
                if match is not None and method in route.methods:
                    groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    return self._dispatch(route, logged, groups)
        return Response.error(404, None, f"no route for {method} {split.path}")

    def _dispatch(self, route: Route, request: LoggedRequest, groups: dict[str, str]) -> Response:
        """A scripted failure wins; then the token is checked, then the repo (so a missing
        repo without a token is a 401, as on the Hub)."""
        repo_id = f"{groups['org']}/{groups['name']}" if route.repo else None
        if repo_id is not None and (scripted := self.scripted_failure(repo_id, route.scopes)):
            return scripted
        user = None
        if route.auth:
            user = self.user_of(request.headers)
            if user is None:
                return unauthorized(request.headers)
        found = None
        if repo_id is not None:
            found = self.repos.get(repo_id)
            if found is None:
                return Response.error(404, "RepoNotFound", "Repository not found")
        return route.handler(Call(self, request, groups, user, found))

    def scripted_failure(self, repo_id: str, scopes: Iterable[Scope]) -> Response | None:
        """The error fail() scripted for this repo and one of these scopes, counted down."""
        failure = self.failures.get(repo_id)
        if failure is None or (failure.scope != "all" and failure.scope not in scopes):
            return None
        if failure.times is not None:
            failure.times -= 1
            if failure.times <= 0:
                del self.failures[repo_id]
        message = failure.error_message or "scripted failure"
        response = Response.error(failure.status, failure.error_code, message)
        response.headers.update(failure.headers)
        return response

    def user_of(self, headers: Mapping[str, str]) -> str | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None


def unauthorized(headers: Mapping[str, str]) -> Response:
    """The Hub's 401: an unknown token is "Invalid credentials in Authorization header"."""
    if "authorization" in headers:
        return Response.error(401, None, "Invalid credentials in Authorization header")
    return Response.error(401, None, "You must be authenticated to access this resource")


# --- read routes ---------------------------------------------------------------------------------


def _model_info(call: Call) -> Response:
    repo = call.repo
    revision = call.groups.get("rev") or repo.default_branch
    commit = repo.commit_of(revision)
    if commit is None:
        return Response.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    files = repo.commits[commit].files
    blobs = _flag(call.request, "blobs")
    body: dict[str, Any] = {
        "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "sha": commit,
        "private": False,
        "gated": False,
        "disabled": False,
        "library_name": "open_clip",
        "tags": ["open_clip"],
        "siblings": [_sibling(repo, path, files[path], blobs) for path in sorted(files)],
    }
    if _flag(call.request, "securityStatus"):
        body["securityRepoStatus"] = repo.security
    return Response.json(body)


def _sibling(repo: FakeRepo, path: str, data: bytes, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": path}
    entry: dict[str, Any] = {"rfilename": path, "size": len(data), "blobId": git_blob_sha1(data)}
    if path in repo.lfs:
        sha = hashlib.sha256(data).hexdigest()
        entry["lfs"] = {"size": len(data), "sha256": sha, "pointerSize": 134}
    return entry


def _resolve(call: Call) -> Response:
    repo, revision, path = call.repo, call.groups["rev"], call.groups["path"]
    commit = repo.commit_of(revision)
    if commit is None:
        return Response.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    files = repo.commits[commit].files
    if path not in files:
        response = Response.error(404, "EntryNotFound", f"{path} does not exist")
        response.headers["X-Repo-Commit"] = commit
        return response
    data = files[path]
    etag = hashlib.sha256(data).hexdigest() if path in repo.lfs else git_blob_sha1(data)
    headers = {
        "X-Repo-Commit": commit,
        "ETag": f'"{etag}"',
        "Content-Type": "application/octet-stream",
    }
    return Response(200, headers, data)


def _flag(request: LoggedRequest, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true")


_RESOLVE = re.compile(rf"{REPO}/resolve/(?P<rev>{SEGMENT})/(?P<path>.+)")
_MODEL_INFO = re.compile(rf"/api/models{REPO}(?:/revision/(?P<rev>{SEGMENT}))?")
READ_ROUTES: list[Route] = [
    Route(frozenset({"GET"}), _MODEL_INFO, _model_info, frozenset({"api"})),
    Route(frozenset({"HEAD", "GET"}), _RESOLVE, _resolve, frozenset({"resolve"})),
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

    def do_POST(self) -> None:
        self._answer(send_body=True)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
            while self.rfile.readline().strip():  # trailers, then the blank line
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, *, send_body: bool) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = self._read_body()
        response = self.server.hub.handle(self.command, self.path, headers, body)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if send_body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is `FakeHub.requests`
