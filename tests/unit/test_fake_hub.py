"""The fake Hub's publishing path, driven by the real huggingface_hub client (nothing patched)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitInfo,
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.support.fake_hub import FakeHub
from tests.support.fake_hub_write import CONFLICT, GITATTRIBUTES

TOKEN, USER = "hf_fake_alice", "alice"
REPO = "acme/tiny-clip"
FILES = {
    "open_clip_config.json": b'{"model_cfg": {}}',
    "open_clip_model.safetensors": b"\x08" + bytes(99),
    "README.md": b"# tiny clip\n",
}
PATCH = {"patched/open_clip_model.safetensors": b"\x09" + bytes(99), "hubscan/report.json": b"{}"}
CARD = b"---\nlicense: mit\ntags: [open_clip, hubscan-patched]\n---\n# tiny clip, patched\n"


@pytest.fixture
def hub(online: None) -> Iterator[FakeHub]:
    with FakeHub(tokens={TOKEN: USER}) as server:
        server.add_repo(REPO, FILES, lfs=["open_clip_model.safetensors"])
        yield server


@pytest.fixture
def api(hub: FakeHub) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=TOKEN)


def _adds(files: dict[str, bytes]) -> list[CommitOperationAdd]:
    return [CommitOperationAdd(path, data) for path, data in files.items()]


def _open_pr(
    api: HfApi, parent: str, files: dict[str, bytes], title: str = "hubscan: patch"
) -> CommitInfo:
    return api.create_commit(
        REPO,
        _adds(files),
        commit_message=title,
        commit_description="TBAR removed a backdoor.",
        create_pr=True,
        parent_commit=parent,
    )


# --- pull requests -------------------------------------------------------------------------------


def test_pull_request_from_parent_lands_on_refs_pr_1_with_parent_files_plus_upload(
    hub: FakeHub, api: HfApi
) -> None:
    seed = hub.repos[REPO].commit

    info = _open_pr(api, seed, PATCH)

    assert (info.pr_num, info.pr_revision) == (1, "refs/pr/1")
    assert info.pr_url == f"{hub.endpoint}/{REPO}/discussions/1"
    assert info.repo_url.repo_id == REPO
    assert hub.files(REPO, "refs/pr/1") == {**FILES, **PATCH}
    assert hub.files(REPO, "main") == FILES
    assert hub.repos[REPO].commit == seed
    commit = hub.history(REPO, "refs/pr/1")[-1]
    assert (commit.oid, commit.parent, commit.author) == (info.oid, seed, USER)
    assert (commit.summary, commit.description) == ("hubscan: patch", "TBAR removed a backdoor.")
    assert commit.added == PATCH
    assert commit.deleted == ()
    (pr,) = hub.pull_requests(REPO)
    assert (pr.num, pr.ref, pr.status, pr.author) == (1, "refs/pr/1", "open", USER)
    assert (pr.title, pr.description) == ("hubscan: patch", "TBAR removed a backdoor.")
    assert (pr.base_commit, pr.target_branch) == (seed, "main")


def test_pull_request_files_are_what_model_info_and_resolve_serve(
    hub: FakeHub, api: HfApi, tmp_path: Path
) -> None:
    seed = hub.repos[REPO].commit
    info = _open_pr(api, seed, {"README.md": CARD})

    pr_info = api.model_info(REPO, revision="refs/pr/1")
    main_info = api.model_info(REPO)
    at_pr = hf_hub_download(
        REPO, "README.md", revision="refs/pr/1", endpoint=hub.endpoint, cache_dir=tmp_path
    )
    at_main = hf_hub_download(REPO, "README.md", endpoint=hub.endpoint, cache_dir=tmp_path)

    assert pr_info.sha == info.oid
    assert main_info.sha == seed
    assert Path(at_pr).read_bytes() == CARD
    assert Path(at_main).read_bytes() == FILES["README.md"]
    assert ("GET", "refs/pr/1", "README.md") in hub.resolve_requests()


def test_pull_request_starts_from_the_parent_not_the_moved_branch_head(
    hub: FakeHub, api: HfApi
) -> None:
    audited = hub.repos[REPO].commit
    api.create_commit(REPO, _adds({"later.txt": b"x"}), commit_message="meanwhile")

    _open_pr(api, audited[:7], PATCH)  # the Hub takes shorthands too

    assert hub.files(REPO, "refs/pr/1") == {**FILES, **PATCH}
    assert "later.txt" in hub.files(REPO, "main")
    assert hub.pull_requests(REPO)[0].base_commit == audited


def test_readme_commit_passes_validate_yaml_first(hub: FakeHub, api: HfApi) -> None:
    _open_pr(api, hub.repos[REPO].commit, {"README.md": CARD})

    posts = [r.path for r in hub.requests if r.method == "POST"]
    assert posts == [
        "/api/validate-yaml",
        f"/api/models/{REPO}/preupload/main",
        f"/api/models/{REPO}/commit/main",
    ]
    assert hub.files(REPO, "refs/pr/1")["README.md"] == CARD


def test_broken_card_front_matter_is_refused_before_any_upload(hub: FakeHub, api: HfApi) -> None:
    with pytest.raises(ValueError, match=r"Invalid metadata in README\.md"):
        _open_pr(api, hub.repos[REPO].commit, {"README.md": b"---\ntags: [unclosed\n---\n"})

    assert [r.path for r in hub.requests] == ["/api/validate-yaml"]
    assert hub.pull_requests(REPO) == []


def test_second_pull_request_gets_refs_pr_2_with_its_own_commit(hub: FakeHub, api: HfApi) -> None:
    seed = hub.repos[REPO].commit
    hub.add_discussion(REPO, "a question", author="bob", is_pull_request=False)

    first = _open_pr(api, seed, PATCH)
    second = _open_pr(api, seed, PATCH)  # same files, same parent: still a new commit

    assert (first.pr_revision, second.pr_revision) == ("refs/pr/2", "refs/pr/3")
    assert first.oid != second.oid
    assert [pr.ref for pr in hub.pull_requests(REPO)] == ["refs/pr/2", "refs/pr/3"]
    assert hub.files(REPO, "refs/pr/3") == hub.files(REPO, "refs/pr/2") == {**FILES, **PATCH}


def test_pull_request_from_unknown_parent_is_revision_not_found(hub: FakeHub, api: HfApi) -> None:
    with pytest.raises(RevisionNotFoundError) as caught:
        _open_pr(api, "0" * 40, PATCH)

    assert caught.value.response.status_code == 404
    assert hub.pull_requests(REPO) == []
    assert len(hub.commits(REPO)) == 1


# --- discussions ---------------------------------------------------------------------------------


def test_repo_discussions_lists_open_pull_requests_filtered_by_author(
    hub: FakeHub, api: HfApi
) -> None:
    _open_pr(api, hub.repos[REPO].commit, PATCH, title="mine, open")
    hub.add_discussion(REPO, "mine, merged", author=USER, status="merged")
    hub.add_discussion(REPO, "mine, not a PR", author=USER, is_pull_request=False)
    hub.add_discussion(REPO, "bob's", author="bob")

    found = api.get_repo_discussions(
        REPO, author=USER, discussion_type="pull_request", discussion_status="open"
    )

    assert [(d.num, d.title, d.author, d.is_pull_request) for d in found] == [
        (1, "mine, open", USER, True)
    ]
    asked = [r for r in hub.requests if r.path.endswith("/discussions")]
    assert [r.query for r in asked] == [
        {"type": "pull_request", "status": "open", "author": USER, "p": "0"}
    ]


def test_repo_discussions_are_paged_newest_first(hub: FakeHub, api: HfApi) -> None:
    hub.discussion_page_size = 2
    for n in range(5):
        hub.add_discussion(REPO, f"pr {n + 1}")

    found = [d.num for d in api.get_repo_discussions(REPO, discussion_type="pull_request")]

    assert found == [5, 4, 3, 2, 1]
    pages = [r.query["p"] for r in hub.requests if r.path.endswith("/discussions")]
    assert pages == ["0", "1", "2"]


# --- branch commits ------------------------------------------------------------------------------


def test_commit_to_the_branch_moves_it_and_keeps_the_history(hub: FakeHub, api: HfApi) -> None:
    seed = hub.repos[REPO].commit

    first = api.create_commit(REPO, _adds(PATCH), commit_message="add", parent_commit=seed)
    second = api.create_commit(
        REPO, [CommitOperationDelete("patched/")], commit_message="drop the folder"
    )

    assert first.pr_url is None
    assert hub.repos[REPO].commit == second.oid
    assert [c.oid for c in hub.history(REPO)] == [seed, first.oid, second.oid]
    assert hub.history(REPO)[-1].deleted == ("patched/open_clip_model.safetensors",)
    assert hub.files(REPO) == {**FILES, "hubscan/report.json": b"{}"}
    assert api.model_info(REPO).sha == second.oid


def test_deleting_a_missing_file_is_entry_not_found(hub: FakeHub, api: HfApi) -> None:
    with pytest.raises(RemoteEntryNotFoundError, match="A file with this name doesn't exist"):
        api.create_commit(REPO, [CommitOperationDelete("nope.txt")], commit_message="x")

    assert len(hub.commits(REPO)) == 1


def test_commit_with_a_stale_parent_is_412(hub: FakeHub, api: HfApi) -> None:
    seed = hub.repos[REPO].commit
    head = api.create_commit(REPO, _adds({"later.txt": b"x"}), commit_message="meanwhile").oid

    with pytest.raises(HfHubHTTPError) as caught:
        api.create_commit(REPO, _adds(PATCH), commit_message="late", parent_commit=seed)

    assert caught.value.response.status_code == 412
    assert CONFLICT in str(caught.value)
    assert hub.repos[REPO].commit == head


def test_commit_to_an_unknown_branch_is_revision_not_found(hub: FakeHub, api: HfApi) -> None:
    with pytest.raises(RevisionNotFoundError):
        api.create_commit(REPO, _adds(PATCH), commit_message="x", revision="nope")


# --- create_repo, whoami, tokens -----------------------------------------------------------------


def test_create_repo_holds_gitattributes_and_409s_when_it_exists(hub: FakeHub, api: HfApi) -> None:
    url = api.create_repo("acme/fresh")

    assert (url, url.repo_id) == (f"{hub.endpoint}/acme/fresh", "acme/fresh")
    assert hub.files("acme/fresh") == {".gitattributes": GITATTRIBUTES}
    assert api.create_repo("acme/fresh", exist_ok=True) == url
    with pytest.raises(HfHubHTTPError) as caught:
        api.create_repo("acme/fresh")
    assert caught.value.response.status_code == 409
    assert len(hub.commits("acme/fresh")) == 1


def test_create_repo_without_namespace_lands_in_the_users(hub: FakeHub, api: HfApi) -> None:
    assert api.create_repo("plain").repo_id == f"{USER}/plain"
    assert f"{USER}/plain" in hub.repos


def test_whoami_names_the_tokens_user(api: HfApi) -> None:
    assert api.whoami()["name"] == USER


@pytest.mark.parametrize("token", [False, "hf_unknown"], ids=["missing", "unknown"])
def test_write_without_a_valid_token_is_401(hub: FakeHub, token: bool | str) -> None:
    anonymous = HfApi(endpoint=hub.endpoint, token=token)

    with pytest.raises(HfHubHTTPError) as caught:
        _open_pr(anonymous, hub.repos[REPO].commit, PATCH)

    assert caught.value.response.status_code == 401
    assert hub.pull_requests(REPO) == []
    with pytest.raises(HfHubHTTPError) as refused:
        anonymous.create_repo("acme/other")
    assert refused.value.response.status_code == 401
    assert "acme/other" not in hub.repos


# --- scripted failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 404, 429, 500])
def test_scripted_commit_failure_raises_once_without_committing(
    hub: FakeHub, api: HfApi, status: int
) -> None:
    hub.fail(REPO, status, scope="commit", headers={"Retry-After": "30"})

    with pytest.raises(HfHubHTTPError) as caught:
        _open_pr(api, hub.repos[REPO].commit, PATCH)

    assert caught.value.response.status_code == status
    commit_posts = [r for r in hub.requests if r.path.endswith("/commit/main")]
    assert len(commit_posts) == 1  # the client sends a commit once: no retry, no sleep
    assert hub.pull_requests(REPO) == []
    assert len(hub.commits(REPO)) == 1


def test_scripted_repo_not_found_on_the_write_path(hub: FakeHub, api: HfApi) -> None:
    hub.fail(REPO, 404, error_code="RepoNotFound", scope="write")

    with pytest.raises(RepositoryNotFoundError):
        _open_pr(api, hub.repos[REPO].commit, PATCH)

    assert api.model_info(REPO).sha == hub.repos[REPO].commit  # reads still work


@pytest.mark.slow
def test_preupload_429_is_retried_by_the_client_after_retry_after(hub: FakeHub, api: HfApi) -> None:
    hub.fail(REPO, 429, scope="preupload", headers={"Retry-After": "0"}, times=1)

    info = _open_pr(api, hub.repos[REPO].commit, PATCH)  # sleeps Retry-After + 1 s

    preuploads = [r for r in hub.requests if "/preupload/" in r.path]
    assert len(preuploads) == 2
    assert info.pr_num == 1


def test_scripted_failure_reaches_create_repo_before_the_repo_exists(
    hub: FakeHub, api: HfApi
) -> None:
    hub.fail("acme/fresh", 403, error_message="no write access to acme", scope="write")

    with pytest.raises(HfHubHTTPError) as caught:
        api.create_repo("acme/fresh")

    assert caught.value.response.status_code == 403
    assert "acme/fresh" not in hub.repos
