"""The fake Hub's publishing path: what `HfApi.create_commit`, `get_repo_discussions`,
`create_repo` and `whoami` send, as huggingface_hub 2.4 sends it (routes listed in fake_hub.py).

Protocol notes, from hf_api.py and _commit_api.py:

- create_commit posts to preupload first (through http_backoff: retried on 429/5xx), then, when
  README.md is among the files, to validate-yaml (its front matter), then the ndjson commit (sent
  once). Preupload answering "regular" makes every file travel base64-encoded in the commit body;
  an `oid` equal to the local file's would make the client drop that file as unchanged.
- The commit body is one JSON object per line: {"key": "header", "value": {"summary",
  "description", "parentCommit"?}}, then "file" ({"path", "content", "encoding": "base64"}),
  "deletedFile" / "deletedFolder" ({"path"}) or "lfsFile" lines, in the caller's order.
- The answer's `pullRequestUrl` must end in /discussions/N: CommitInfo derives pr_num and
  pr_revision ("refs/pr/N") from it; `commitUrl` must contain /commit/ (repo_url is what
  precedes it).
- create_repo(exist_ok=True) swallows a 409 and then reads "url" from the 409's JSON body.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from tests.support.fake_hub_model import (
    REPO,
    SEGMENT,
    Call,
    FakeDiscussion,
    FakeRepo,
    Response,
    Route,
)

CONFLICT = "A commit has happened since. Please refresh and try again."
GITATTRIBUTES = b"""*.bin filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
"""
_OPEN = ("open", "draft")
_CLOSED = ("closed", "merged")


@dataclass
class _CommitBody:
    summary: str
    description: str
    parent: str | None
    operations: list[tuple[str, str, bytes]] = field(default_factory=list)  # (key, path, data)


# --- preupload, validate-yaml ---------------------------------------------------------------------


def _preupload(call: Call) -> Response:
    revision = call.groups["rev"]
    if revision not in call.repo.refs:
        return Response.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    try:
        files = _json_object(call.request.body)["files"]
        paths = [str(f["path"]) for f in files]
    except (ValueError, KeyError, TypeError) as err:
        return Response.error(400, None, f"Invalid preupload payload: {err}")
    modes = [
        {"path": p, "uploadMode": "regular", "shouldIgnore": False, "oid": None} for p in paths
    ]
    return Response.json({"files": modes, "commitOid": call.repo.refs[revision]})


def _validate_yaml(call: Call) -> Response:
    try:
        content = str(_json_object(call.request.body).get("content", ""))
    except ValueError as err:
        return Response.error(400, None, f"Invalid payload: {err}")
    errors = _front_matter_errors(content)
    body = {"errors": [{"message": m} for m in errors], "warnings": []}
    return Response.json(body, 400 if errors else 200)


def _front_matter_errors(content: str) -> list[str]:
    lines = content.splitlines()
    if not lines or lines[0].strip() != "---":
        return []
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
    except StopIteration:
        return ["the metadata block opened by --- is never closed"]
    try:
        metadata = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as err:
        return [f"invalid YAML: {err}"]
    if metadata is not None and not isinstance(metadata, dict):
        return ["the metadata must be a YAML mapping"]
    return []


# --- commit ---------------------------------------------------------------------------------------


def _commit(call: Call) -> Response:
    request, repo = call.request, call.repo
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-ndjson":
        return Response.error(400, None, "the commit body must be application/x-ndjson")
    try:
        body = _parse_commit(request.body)
    except (ValueError, KeyError, TypeError, binascii.Error) as err:
        return Response.error(400, None, f"Invalid commit payload: {err}")
    revision = call.groups["rev"]
    head = repo.refs.get(revision)
    if head is None:
        return Response.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    create_pr = request.query.get("create_pr") == "1"
    base = head
    if create_pr and body.parent is not None:
        # Assumed, not observed: an unknown parent is an unknown revision.
        found = repo.find_commit(body.parent)
        if found is None:
            return Response.error(404, "RevisionNotFound", f"Invalid rev id: {body.parent}")
        base = found
    elif body.parent is not None and not head.startswith(body.parent.lower()):
        return Response.error(412, None, CONFLICT)

    files = dict(repo.commits[base].files)
    added: dict[str, bytes] = {}
    deleted: set[str] = set()
    for key, path, data in body.operations:
        if key == "file":
            files[path] = added[path] = data
            deleted.discard(path)
            continue
        prefix = path.rstrip("/") + "/"
        gone = [p for p in files if (p.startswith(prefix) if key == "deletedFolder" else p == path)]
        if not gone:
            return Response.error(
                404, "EntryNotFound", f"A file with this name doesn't exist: {path}"
            )
        for p in gone:
            del files[p]
            added.pop(p, None)
            if p in repo.commits[base].files:
                deleted.add(p)

    commit = repo.add_commit(
        base,
        summary=body.summary,
        description=body.description,
        author=call.user,
        added=added,
        deleted=sorted(deleted),
    )
    url = f"{call.hub.endpoint}/{repo.repo_id}"
    answer = {"success": True, "commitOid": commit.oid, "commitUrl": f"{url}/commit/{commit.oid}"}
    if create_pr:
        pr = repo.open_discussion(
            body.summary,
            call.user or "",
            head=commit.oid,
            description=body.description,
            target_branch=revision,
            base_commit=base,
        )
        answer["pullRequestUrl"] = f"{url}/discussions/{pr.num}"
    else:
        repo.refs[revision] = commit.oid
    return Response.json(answer)


def _parse_commit(raw: bytes) -> _CommitBody:
    lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    if not lines or lines[0].get("key") != "header":
        raise ValueError("the first line must be the header")
    header = lines[0]["value"]
    body = _CommitBody(
        str(header["summary"]), str(header.get("description") or ""), header.get("parentCommit")
    )
    for line in lines[1:]:
        key, value = line["key"], line["value"]
        if key == "file":
            if value.get("encoding") != "base64":
                raise ValueError(f"{value['path']}: encoding {value.get('encoding')!r}")
            data = base64.b64decode(value["content"], validate=True)
            body.operations.append(("file", str(value["path"]), data))
        elif key in ("deletedFile", "deletedFolder"):
            body.operations.append((key, str(value["path"]), b""))
        elif key == "lfsFile":
            raise ValueError(f"{value['path']}: preupload said regular, not LFS")
        else:
            raise ValueError(f"unknown line key {key!r}")
    return body


# --- discussions ----------------------------------------------------------------------------------


def _discussions(call: Call) -> Response:
    query, repo = call.request.query, call.repo
    kind, status = query.get("type", "all"), query.get("status", "all")
    if kind not in ("all", "discussion", "pull_request") or status not in ("all", "open", "closed"):
        return Response.error(400, None, f"Invalid type or status: {kind!r}, {status!r}")
    author = query.get("author")
    chosen = [
        d
        for d in reversed(repo.discussions)  # newest first, as the Hub lists them
        if (kind == "all" or d.is_pull_request == (kind == "pull_request"))
        and (status == "all" or d.status in (_OPEN if status == "open" else _CLOSED))
        and (author is None or d.author == author)
    ]
    size = call.hub.discussion_page_size
    start = int(query.get("p", "0")) * size
    return Response.json(
        {
            "discussions": [_discussion_json(repo, d) for d in chosen[start : start + size]],
            "count": len(chosen),
            "start": start,
            "numClosedDiscussions": sum(d.status in _CLOSED for d in repo.discussions),
        }
    )


def _discussion_json(repo: FakeRepo, discussion: FakeDiscussion) -> dict[str, Any]:
    return {
        "num": discussion.num,
        "title": discussion.title,
        "status": discussion.status,
        "createdAt": discussion.created_at,
        "isPullRequest": discussion.is_pull_request,
        "author": {"name": discussion.author, "type": "user"},
        "repo": {"name": repo.repo_id, "type": "model"},
        "numComments": 1,
        "pinned": False,
        "topReactions": [],
    }


# --- repos/create, whoami -------------------------------------------------------------------------


def _create_repo(call: Call) -> Response:
    try:
        payload = _json_object(call.request.body)
        name = str(payload["name"])
    except (ValueError, KeyError) as err:
        return Response.error(400, None, f"Invalid payload: {err}")
    if payload.get("type", "model") not in (None, "model"):
        return Response.error(400, None, "this fake Hub serves model repos only")
    repo_id = f"{payload.get('organization') or call.user}/{name}"
    if scripted := call.hub.scripted_failure(repo_id, ("write",)):
        return scripted
    url = f"{call.hub.endpoint}/{repo_id}"
    if repo_id in call.hub.repos:
        return Response.error(409, None, "You already created this model repo", url=url)
    call.hub.add_repo(repo_id, {".gitattributes": GITATTRIBUTES})
    return Response.json({"url": url, "name": repo_id})


def _whoami(call: Call) -> Response:
    token = {"displayName": "fake", "role": "write"}
    return Response.json(
        {
            "type": "user",
            "name": call.user,
            "fullname": call.user,
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": token},
        }
    )


def _json_object(raw: bytes) -> dict[str, Any]:
    payload = json.loads(raw or b"null")
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object")
    return payload


_POST, _GET = frozenset({"POST"}), frozenset({"GET"})
WRITE_ROUTES: list[Route] = [
    Route(
        _POST,
        re.compile(rf"/api/models{REPO}/preupload/(?P<rev>{SEGMENT})"),
        _preupload,
        frozenset({"write", "preupload"}),
        auth=True,
    ),
    Route(_POST, re.compile(r"/api/validate-yaml"), _validate_yaml, repo=False),
    Route(
        _POST,
        re.compile(rf"/api/models{REPO}/commit/(?P<rev>{SEGMENT})"),
        _commit,
        frozenset({"write", "commit"}),
        auth=True,
    ),
    Route(_GET, re.compile(rf"/api/models{REPO}/discussions"), _discussions, frozenset({"api"})),
    Route(_POST, re.compile(r"/api/repos/create"), _create_repo, repo=False, auth=True),
    Route(_GET, re.compile(r"/api/whoami-v2"), _whoami, repo=False, auth=True),
]
