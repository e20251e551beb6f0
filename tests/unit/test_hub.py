"""hub.py with the real huggingface_hub client: a fake Hub on 127.0.0.1 and a hand-built cache.

Nothing patches HTTP. Online tests switch huggingface_hub's offline constant off for the test
(conftest sets HF_HUB_OFFLINE=1 for the suite), the way huggingface_hub's own tests do.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import httpx2
import huggingface_hub.constants
import pytest
from huggingface_hub.errors import HfHubHTTPError

from hubscan import hub
from hubscan.errors import (
    AccessDenied,
    ExitCode,
    FetchError,
    HubscanError,
    HubUnavailable,
    NotCached,
    RefError,
    RepoNotFound,
    RevisionNotFound,
)
from hubscan.records import HubFileScan
from tests.support.fake_hub import FakeHub
from tests.support.hf_cache import build_cached_repo, fake_commit

REPO = "acme/tiny-clip"
FILES = {
    "open_clip_config.json": b'{"model_cfg": {}}',
    "open_clip_model.safetensors": b"\x08" + bytes(99),
    "README.md": b"# tiny clip\n",
}
LFS = ("open_clip_model.safetensors",)


def _assert_one_line_no_verdict(err: HubscanError) -> None:
    assert err.exit_code == ExitCode.NO_VERDICT
    assert str(err).strip()
    assert "\n" not in str(err)


# --- resolve ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("online")
def test_resolve_pins_the_commit_and_lists_files_in_one_call(fake_hub: FakeHub) -> None:
    repo = fake_hub.add_repo(REPO, FILES, lfs=LFS)

    got = hub.resolve(REPO, "main", endpoint=fake_hub.endpoint)

    assert got.commit == repo.commit
    assert got.revision == "main"
    assert [f.path for f in got.files] == sorted(FILES)
    by_path = {f.path: f for f in got.files}
    weights = FILES["open_clip_model.safetensors"]
    assert by_path["open_clip_model.safetensors"].lfs_sha256 == hashlib.sha256(weights).hexdigest()
    assert by_path["open_clip_model.safetensors"].size == len(weights)
    assert by_path["README.md"].lfs_sha256 is None
    assert by_path["README.md"].size == len(FILES["README.md"])
    (request,) = fake_hub.requests
    assert request.path == f"/api/models/{REPO}/revision/main"
    assert request.query == {"blobs": "true", "securityStatus": "true"}


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize("revision", [None, "v1.0", "sha"])
def test_resolve_default_branch_tag_and_sha(fake_hub: FakeHub, revision: str | None) -> None:
    repo = fake_hub.add_repo(REPO, FILES, tags=["v1.0"])
    asked = repo.commit if revision == "sha" else revision

    got = hub.resolve(REPO, asked, endpoint=fake_hub.endpoint)

    assert got.commit == repo.commit
    (request,) = fake_hub.requests
    expected = f"/api/models/{REPO}" + ("" if asked is None else f"/revision/{asked}")
    assert request.path == expected


@pytest.mark.usefixtures("online")
def test_security_status_becomes_hub_file_scans(fake_hub: FakeHub) -> None:
    security = {
        "scansDone": False,
        "filesWithIssues": [
            {
                "path": "pytorch_model.bin",
                "level": "unsafe",
                "pickleImportScan": {"status": "unsafe"},
            },
            {"path": "tool.py", "level": "caution"},
            {"path": "odd.bin", "level": "brand-new-level"},
            {"level": "unsafe"},  # no path: nothing to attach it to
        ],
    }
    fake_hub.add_repo(REPO, FILES, security=security)

    got = hub.resolve(REPO, endpoint=fake_hub.endpoint)

    assert got.scans_done is False
    assert [(s.path, s.status) for s in got.scans] == [
        ("pytorch_model.bin", "unsafe"),
        ("tool.py", "caution"),
        ("odd.bin", "suspicious"),  # an unknown level listed as an issue fails closed
    ]
    assert all(isinstance(s, HubFileScan) and "\n" not in s.detail for s in got.scans)
    assert "pickleImportScan: unsafe" in got.scans[0].detail
    assert "brand-new-level" in got.scans[2].detail


@pytest.mark.usefixtures("online")
def test_clean_and_missing_security_status(fake_hub: FakeHub) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.add_repo("acme/unscanned", FILES, security={})

    clean = hub.resolve(REPO, endpoint=fake_hub.endpoint)
    unknown = hub.resolve("acme/unscanned", endpoint=fake_hub.endpoint)

    assert (clean.scans, clean.scans_done) == ((), True)
    assert (unknown.scans, unknown.scans_done) == ((), None)


HTTP_ERRORS = [
    pytest.param(404, "RepoNotFound", None, RepoNotFound, id="404-repo"),
    pytest.param(401, "RepoNotFound", None, RepoNotFound, id="401-private-or-missing"),
    pytest.param(404, "RevisionNotFound", None, RevisionNotFound, id="404-revision"),
    pytest.param(403, "GatedRepo", None, AccessDenied, id="403-gated"),
    pytest.param(401, "GatedRepo", None, AccessDenied, id="401-gated"),
    pytest.param(401, None, "Invalid credentials in Authorization header", AccessDenied, id="401"),
    pytest.param(403, None, "Forbidden", AccessDenied, id="403"),
    pytest.param(429, None, None, HubUnavailable, id="429"),
    pytest.param(500, None, None, HubUnavailable, id="500"),
    pytest.param(503, None, None, HubUnavailable, id="503"),
]


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize(("status", "code", "message", "expected"), HTTP_ERRORS)
def test_resolve_maps_each_hub_error_once(
    fake_hub: FakeHub,
    status: int,
    code: str | None,
    message: str | None,
    expected: type[HubscanError],
) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.fail(REPO, status, error_code=code, error_message=message, scope="api")

    with pytest.raises(expected) as caught:
        hub.resolve(REPO, "main", endpoint=fake_hub.endpoint)

    assert type(caught.value) is expected
    _assert_one_line_no_verdict(caught.value)
    assert isinstance(caught.value.__cause__, HfHubHTTPError)
    assert len(fake_hub.requests) == 1  # no retry storm hidden behind one answer


@pytest.mark.usefixtures("online")
def test_rate_limit_message_says_so(fake_hub: FakeHub) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.fail(REPO, 429, scope="api", headers={"Retry-After": "30"})

    with pytest.raises(HubUnavailable, match=r"rate limited .* retry after 30 s"):
        hub.resolve(REPO, endpoint=fake_hub.endpoint)


@pytest.mark.usefixtures("online")
def test_unknown_repo_is_repo_not_found(fake_hub: FakeHub) -> None:
    with pytest.raises(RepoNotFound, match="acme/nothing-here"):
        hub.resolve("acme/nothing-here", endpoint=fake_hub.endpoint)


@pytest.mark.usefixtures("online")
def test_unreachable_endpoint_is_hub_unavailable() -> None:
    with socket.socket() as probe:  # a port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(HubUnavailable, match="cannot reach the Hub") as caught:
        hub.resolve(REPO, endpoint=f"http://127.0.0.1:{port}")

    _assert_one_line_no_verdict(caught.value)
    assert isinstance(caught.value.__cause__, httpx2.TransportError)


def test_offline_mode_refuses_the_network(fake_hub: FakeHub) -> None:
    fake_hub.add_repo(REPO, FILES)
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # conftest's setting

    with pytest.raises(NotCached, match="HF_HUB_OFFLINE") as caught:
        hub.resolve(REPO, endpoint=fake_hub.endpoint)

    _assert_one_line_no_verdict(caught.value)
    assert fake_hub.requests == []


def test_invalid_repo_id_is_a_ref_error() -> None:
    with pytest.raises(RefError):
        hub.resolve("acme/bad--name")


# --- download --------------------------------------------------------------------------------


@pytest.mark.usefixtures("online")
def test_download_fetches_exactly_the_paths_at_the_commit(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake = fake_hub.add_repo(REPO, FILES, lfs=LFS)
    repo = hub.resolve(REPO, "main", endpoint=fake_hub.endpoint)
    wanted = ["open_clip_config.json", "open_clip_model.safetensors"]

    root = hub.download(repo, wanted, endpoint=fake_hub.endpoint, cache_dir=tmp_path)

    assert root == tmp_path / "models--acme--tiny-clip" / "snapshots" / fake.commit
    for path in wanted:
        assert (root / path).read_bytes() == FILES[path]
    assert not (root / "README.md").exists()
    assert {(rev, path) for _, rev, path in fake_hub.resolve_requests()} == {
        (fake.commit, p) for p in wanted
    }

    before = len(fake_hub.requests)
    hub.download(repo, wanted, endpoint=fake_hub.endpoint, cache_dir=tmp_path)
    assert len(fake_hub.requests) == before  # pinned to a sha: served from the cache


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize("status", [401, 403])
def test_download_refused_is_access_denied(fake_hub: FakeHub, tmp_path: Path, status: int) -> None:
    fake_hub.add_repo(REPO, FILES)
    repo = hub.resolve(REPO, endpoint=fake_hub.endpoint)
    fake_hub.fail(REPO, status, error_message="Forbidden", scope="resolve")

    # hf_hub_download reports a refused HEAD as "not in the local cache" (status 403) or as the
    # HTTP error itself (401): both must come out as what really happened.
    with pytest.raises(AccessDenied) as caught:
        hub.download(repo, ["README.md"], endpoint=fake_hub.endpoint, cache_dir=tmp_path)

    _assert_one_line_no_verdict(caught.value)


@pytest.mark.usefixtures("online")
def test_download_of_a_vanished_file_is_a_fetch_error(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, FILES)
    repo = hub.resolve(REPO, endpoint=fake_hub.endpoint)
    del fake_hub.repos[REPO].files["README.md"]

    with pytest.raises(FetchError, match=r"README\.md"):
        hub.download(repo, ["README.md"], endpoint=fake_hub.endpoint, cache_dir=tmp_path)


# --- cached (offline) ------------------------------------------------------------------------


@pytest.mark.parametrize("revision", [None, "main", "v2", "sha"])
def test_cached_resolves_refs_and_shas_without_network(
    tmp_path: Path, revision: str | None
) -> None:
    built = build_cached_repo(tmp_path, REPO, FILES, refs=("main", "v2"))
    asked = built.commit if revision == "sha" else revision

    found = hub.cached(REPO, asked, cache_dir=tmp_path)

    assert found.commit == built.commit == (built.repo_dir / "refs" / "main").read_text()
    assert found.root == built.snapshot


def test_cached_older_commit_by_sha(tmp_path: Path) -> None:
    old = build_cached_repo(tmp_path, REPO, {"a.json": b"1"}, commit=fake_commit("old"), refs=())
    new = build_cached_repo(tmp_path, REPO, {"a.json": b"2"}, commit=fake_commit("new"))

    assert hub.cached(REPO, cache_dir=tmp_path).commit == new.commit
    assert hub.cached(REPO, old.commit, cache_dir=tmp_path).root == old.snapshot


@pytest.mark.parametrize(
    ("repo_id", "revision"), [("acme/not-cached", None), (REPO, "dev"), (REPO, fake_commit("x"))]
)
def test_not_cached(tmp_path: Path, repo_id: str, revision: str | None) -> None:
    build_cached_repo(tmp_path, REPO, FILES)

    with pytest.raises(NotCached, match="not in the local HF cache") as caught:
        hub.cached(repo_id, revision, cache_dir=tmp_path)

    _assert_one_line_no_verdict(caught.value)
