"""The Hub's write side: open a pull request (or fill a new repo) with one commit.

Owns the three calls publishing makes through huggingface_hub (listing open pull requests,
creating a repo, one `create_commit`), and the last integrity check before upload: the sha256 the
client itself computes for every file must equal the verified one, or nothing is sent. Errors
become HubscanErrors through hub.hub_errors, like the read side.

Must not decide what is published (publish.py does) nor read release files itself. One commit
per publish, never `upload_folder` (with hf_xet installed it may split an upload into several
commits). Tokens come only from huggingface_hub's own auth and are never logged or returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, get_token

from hubscan.errors import AccessDenied, HubUnavailable, PublishRefused, ReleaseTampered
from hubscan.hub import endpoint_url, hub_errors


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenPr:
    num: int
    title: str
    author: str
    url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Committed:
    commit: str  # the new commit's oid
    url: str  # the pull request's (or the commit's, in a new repo) address
    pr_num: int | None


def require_token() -> None:
    """Fail before any request when no token is configured: writes need one."""
    if get_token() is None:
        raise AccessDenied(
            "publishing needs a Hub token with write access: set HF_TOKEN or run `hf auth login`"
        )


def open_pull_requests(repo_id: str, *, endpoint: str | None = None) -> list[OpenPr]:
    api = HfApi(endpoint=endpoint_url(endpoint))
    with hub_errors(repo_id, None):
        return [
            OpenPr(num=d.num, title=d.title, author=d.author, url=d.url)
            for d in api.get_repo_discussions(
                repo_id, discussion_type="pull_request", discussion_status="open"
            )
        ]


def create_repo(repo_id: str, *, endpoint: str | None = None) -> None:
    api = HfApi(endpoint=endpoint_url(endpoint))
    with hub_errors(repo_id, None):
        if api.repo_exists(repo_id):
            raise HubUnavailable(f"{repo_id} already exists: --new-repo creates a new repo only")
        api.create_repo(repo_id, repo_type="model", exist_ok=False)


def commit(
    repo_id: str,
    files: Sequence[tuple[str, Path]],
    expected: Mapping[str, str],
    *,
    title: str,
    body: str,
    parent_commit: str | None,
    create_pr: bool,
    endpoint: str | None = None,
) -> Committed:
    """One commit adding `files` ((path in repo, local path)); each file's sha256, as the client
    computes it for the upload, must equal `expected[path in repo]`."""
    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in files]
    for op in operations:
        actual = op.upload_info.sha256.hex()
        if actual != expected.get(op.path_in_repo):
            raise ReleaseTampered(
                f"{op.path_in_repo} changed after verification (sha256 {actual[:12]}…): "
                "nothing was uploaded"
            )
    api = HfApi(endpoint=endpoint_url(endpoint))
    with hub_errors(repo_id, parent_commit):
        try:
            info = api.create_commit(
                repo_id,
                operations=operations,
                commit_message=title,
                commit_description=body,
                create_pr=create_pr,
                parent_commit=parent_commit,
            )
        except ValueError as err:  # the client's own checks, e.g. the card's YAML (validate-yaml)
            raise PublishRefused(f"the Hub refused the commit to {repo_id}: {err}") from err
    return Committed(commit=info.oid, url=info.pr_url or info.commit_url, pr_num=info.pr_num)
