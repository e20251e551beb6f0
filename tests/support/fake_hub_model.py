"""The fake Hub's state and the types its routes share (the server is in fake_hub.py).

A repo is a commit graph: `commits` (oid -> FakeCommit, each with its full tree and its parent)
and `refs` (branches, tags and "refs/pr/N" -> oid). Discussions and pull requests share one
numbering, as on the Hub.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tests.support.fake_hub import FakeHub

# Which requests a scripted failure hits: "api" = model_info and discussions, "resolve" = file
# downloads, "write" = preupload + commit + repos/create, "preupload" and "commit" alone.
Scope = Literal["api", "resolve", "write", "preupload", "commit", "all"]
DiscussionStatus = Literal["open", "closed", "merged", "draft"]


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # URL-decoded, without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    raw_path: str = ""  # as sent, still quoted ("refs%2Fpr%2F1")


@dataclass
class Failure:
    status: int
    error_code: str | None = None  # X-Error-Code, e.g. "GatedRepo"
    error_message: str | None = None  # X-Error-Message
    scope: Scope = "all"
    headers: Mapping[str, str] = field(default_factory=dict)
    times: int | None = None  # requests left to fail; None = until fail() is called again


@dataclass
class FakeCommit:
    oid: str
    parent: str | None
    files: dict[str, bytes]  # the full tree at this commit
    summary: str
    description: str = ""
    author: str | None = None  # the token's user; None for commits seeded by add_repo
    added: dict[str, bytes] = field(default_factory=dict)  # what this commit uploaded
    deleted: tuple[str, ...] = ()  # file paths this commit removed


@dataclass
class FakeDiscussion:
    num: int
    title: str
    author: str
    description: str = ""
    status: DiscussionStatus = "open"
    is_pull_request: bool = True
    target_branch: str = "main"
    base_commit: str | None = None  # the commit a pull request started from
    created_at: str = field(default_factory=lambda: _now())

    @property
    def ref(self) -> str | None:
        return f"refs/pr/{self.num}" if self.is_pull_request else None


@dataclass
class FakeRepo:
    repo_id: str
    lfs: frozenset[str]  # paths served as LFS files (sha256 ETag, lfs block in the listing)
    commits: dict[str, FakeCommit]  # oid -> commit, in creation order
    refs: dict[str, str]  # branch, tag or "refs/pr/N" -> commit oid
    security: dict[str, Any]  # the securityRepoStatus body
    default_branch: str = "main"
    discussions: list[FakeDiscussion] = field(default_factory=list)

    @property
    def commit(self) -> str:
        """The head of the default branch."""
        return self.refs[self.default_branch]

    @property
    def files(self) -> dict[str, bytes]:
        """The default branch's tree (live: editing it edits that commit)."""
        return self.commits[self.commit].files

    def commit_of(self, revision: str) -> str | None:
        """A full commit oid, or what a branch, tag or PR ref points to."""
        if revision in self.commits:
            return revision
        return self.refs.get(revision)

    def find_commit(self, oid: str) -> str | None:
        """A full oid or a unique prefix (the Hub takes 7-character shorthands)."""
        matches = [c for c in self.commits if c.startswith(oid.lower())]
        return matches[0] if len(matches) == 1 else None

    def tree(self, revision: str) -> dict[str, bytes] | None:
        commit = self.commit_of(revision)
        return None if commit is None else self.commits[commit].files

    def add_commit(
        self,
        parent: str,
        *,
        summary: str,
        description: str = "",
        author: str | None = None,
        added: Mapping[str, bytes] | None = None,
        deleted: Iterable[str] = (),
    ) -> FakeCommit:
        """A new commit on top of `parent` (moves no ref)."""
        added = dict(added or {})
        deleted = tuple(deleted)
        files = {p: d for p, d in self.commits[parent].files.items() if p not in deleted}
        files.update(added)
        digest = hashlib.sha1(f"{parent}\n{author}\n{len(self.commits)}\n".encode())
        digest.update(f"{summary}\n\n{description}\n".encode())
        _hash_tree(digest, files)
        commit = FakeCommit(
            digest.hexdigest(), parent, files, summary, description, author, added, deleted
        )
        self.commits[commit.oid] = commit
        return commit

    def open_discussion(
        self,
        title: str,
        author: str,
        *,
        head: str | None = None,
        description: str = "",
        status: DiscussionStatus = "open",
        target_branch: str | None = None,
        base_commit: str | None = None,
    ) -> FakeDiscussion:
        """The next discussion; with `head` (a commit oid) a pull request, its refs/pr/N there."""
        discussion = FakeDiscussion(
            len(self.discussions) + 1,  # discussions and pull requests share one numbering
            title,
            author,
            description,
            status,
            is_pull_request=head is not None,
            target_branch=target_branch or self.default_branch,
            base_commit=base_commit,
        )
        self.discussions.append(discussion)
        if discussion.ref is not None and head is not None:
            self.refs[discussion.ref] = head
        return discussion


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
    def error(cls, status: int, code: str | None, message: str, **extra: Any) -> Response:
        response = cls.json({"error": message, **extra}, status)
        if code is not None:
            response.headers["X-Error-Code"] = code
        response.headers["X-Error-Message"] = message
        return response


@dataclass(frozen=True)
class Call:
    """What a route handler gets."""

    hub: FakeHub
    request: LoggedRequest
    groups: dict[str, str]  # URL-decoded path groups
    user: str | None  # the token's user, on routes that need one
    found: FakeRepo | None  # the repo the path names, on repo routes

    @property
    def repo(self) -> FakeRepo:
        if self.found is None:
            raise RuntimeError(f"{self.request.path} names no repo")
        return self.found


Handler = Callable[[Call], Response]


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]  # matched against the raw (still quoted) path
    handler: Handler
    scopes: frozenset[Scope] = frozenset()  # what fail(scope=...) reaches it, besides "all"
    repo: bool = True  # the path names {org}/{name}, which must exist
    auth: bool = False  # needs a Bearer token from FakeHub.tokens


def git_blob_sha1(data: bytes) -> str:
    """What the Hub uses as the ETag (and blob id) of a non-LFS file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _hash_tree(digest: Any, files: Mapping[str, bytes]) -> None:
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())


def fake_commit_oid(repo_id: str, files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha1(repo_id.encode())
    _hash_tree(digest, files)
    return digest.hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


SEGMENT = r"[^/]+"
REPO = rf"/(?P<org>{SEGMENT})/(?P<name>{SEGMENT})"
