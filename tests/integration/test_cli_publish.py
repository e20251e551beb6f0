"""`hubscan publish` through the real huggingface_hub client against a fake Hub on 127.0.0.1:
a zoo model is patched from the (fake) Hub once, then its release is offered back as a pull
request: exactly one commit, on refs/pr/N, parented on the audited commit, holding exactly the
release files; no second PR; a changed file refused before anything is sent; Hub errors exit 3."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
from typer.testing import CliRunner

from hubscan.cli import app
from hubscan.errors import ExitCode
from tests.support.fake_hub import FAKE_TOKEN, FakeHub
from tests.support.hub_release import REPO, Released, serve

runner = CliRunner()


@pytest.fixture
def released(hub_release: Released) -> Released:
    """`hubscan patch acme/coat-clip` fetched from a fake Hub (known trigger, the fast policy)."""
    assert hub_release.code == ExitCode.OK, hub_release.stderr
    return hub_release


@pytest.fixture
def hub(released: Released, online: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A fresh fake Hub holding the audited commit, and a write token in the environment."""
    with FakeHub() as server:
        assert serve(server, released.hub_files) == released.commit
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
        yield server


def publish(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["publish", *args], input=stdin)
    assert FAKE_TOKEN not in result.stdout + result.stderr  # a token is never printed
    return result.exit_code, result.stdout, result.stderr


def write_requests(hub: FakeHub) -> list[str]:
    return [r.path for r in hub.requests if r.method == "POST"]


def test_publish_makes_one_commit_on_a_pr_ref_from_the_audited_commit(
    released: Released, hub: FakeHub
) -> None:
    code, out, err = publish(str(released.out), "--yes", "--format", "json")
    assert code == ExitCode.OK, err
    (pr,) = hub.pull_requests(REPO)
    assert pr.ref == "refs/pr/1" and pr.status == "open"
    assert pr.title.startswith("hubscan:") and released.commit[:12] in pr.title
    *_, head = hub.history(REPO, "refs/pr/1")
    assert head.parent == released.commit
    assert len(hub.commits(REPO)) == 2  # the audited one and the PR's
    assert hub.files(REPO) == released.hub_files  # main untouched
    uploaded = {p: hashlib.sha256(b).hexdigest() for p, b in head.added.items()}
    assert uploaded == released.expected_upload()
    data = json.loads(out)
    assert data["pr_num"] == 1 and data["parent_commit"] == released.commit
    assert data["url"].endswith(f"/{REPO}/discussions/1")


def test_pr_body_says_what_was_found_the_numbers_and_how_to_verify(
    released: Released, hub: FakeHub
) -> None:
    publish(str(released.out), "--yes")
    (pr,) = hub.pull_requests(REPO)
    body = hub.history(REPO, "refs/pr/1")[-1].description
    assert body == pr.description
    assert released.commit in body and "**coat**" in body
    assert "attack success before" in body and "finds no backdoor" in body
    assert f"hubscan audit {REPO}@refs/pr/" in body
    weights = released.expected_upload()["open_clip_model.safetensors"]
    assert f"`{weights}`" in body


def test_publishing_again_opens_no_second_pr(released: Released, hub: FakeHub) -> None:
    first, url, _ = publish(str(released.out), "--yes")
    again, same_url, err = publish(str(released.out), "--yes")
    assert first == again == ExitCode.OK
    assert same_url == url
    assert "already exists" in err
    assert len(hub.pull_requests(REPO)) == 1 and len(hub.commits(REPO)) == 2


@pytest.mark.parametrize("name", ["README.md", "open_clip_model.safetensors", "trigger.png"])
def test_a_release_file_changed_after_verification_is_refused_and_nothing_is_sent(
    released: Released, hub: FakeHub, tmp_path: Path, name: str
) -> None:
    copy = tmp_path / "release"
    shutil.copytree(released.out, copy)
    with (copy / name).open("r+b") as stream:  # one byte flipped, size unchanged
        first = stream.read(1)
        stream.seek(0)
        stream.write(bytes([first[0] ^ 1]))
    code, out, err = publish(str(copy), "--yes")
    assert code == ExitCode.NOT_REMEDIATED
    assert f"{name} changed after verification" in err and "nothing was uploaded" in err
    assert out == "" and write_requests(hub) == []


def with_verification(released: Released, tmp_path: Path, **fields: Any) -> Path:
    """A copy of the release whose report.json says other things of its verification."""
    copy = tmp_path / "release"
    shutil.copytree(released.out, copy)
    report = json.loads((copy / "report.json").read_text())
    report["verification"].update(fields)
    (copy / "report.json").write_text(json.dumps(report))
    return copy


def test_a_release_whose_verification_failed_is_refused(
    released: Released, hub: FakeHub, tmp_path: Path
) -> None:
    copy = with_verification(released, tmp_path, passed=False, reasons=["attack success 40% > 10%"])
    code, _, err = publish(str(copy), "--yes")
    assert code == ExitCode.NOT_REMEDIATED
    assert "did not pass verification (attack success 40% > 10%)" in err
    assert write_requests(hub) == []


def test_a_release_whose_weights_are_not_the_verified_file_is_refused(
    released: Released, hub: FakeHub, tmp_path: Path
) -> None:
    copy = with_verification(released, tmp_path, weights_sha256="0" * 64)
    code, _, err = publish(str(copy), "--yes")
    assert code == ExitCode.NOT_REMEDIATED
    assert "not the file verification measured" in err and write_requests(hub) == []


def test_the_publish_module_names_the_files_as_the_loader_and_release_do() -> None:
    from hubscan import publish as publishing
    from hubscan.model import CONFIG_NAME, WEIGHTS_NAME
    from hubscan.release import CARD_NAME, MARKER_NAME

    assert publishing.WEIGHTS_NAME == WEIGHTS_NAME and publishing.MARKER_NAME == MARKER_NAME
    assert {WEIGHTS_NAME, CONFIG_NAME, CARD_NAME} == publishing.ROOT_FILES


def test_a_directory_that_is_not_a_release_exits_3(hub: FakeHub, tmp_path: Path) -> None:
    code, _, err = publish(str(tmp_path), "--yes")
    assert code == ExitCode.NO_VERDICT
    assert "is not a hubscan release" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("status", "error_code", "message"),
    [
        (401, None, "refused access"),
        (403, None, "refused access"),
        (404, "RepoNotFound", "not found on the Hub"),
        (429, None, "rate limited"),
        (500, None, "HTTP 500"),
    ],
)
def test_hub_errors_on_the_commit_exit_3_with_one_line(
    released: Released, hub: FakeHub, status: int, error_code: str | None, message: str
) -> None:
    hub.fail(REPO, status, error_code=error_code, scope="commit")
    code, out, err = publish(str(released.out), "--yes")
    assert code == ExitCode.NO_VERDICT
    *plan, last = err.strip().splitlines()  # what would have been sent, then the one error
    assert last.startswith("hubscan: ") and message in last, err
    assert not any(line.startswith("hubscan: ") and "HTTP" in line for line in plan)
    assert out == "" and hub.pull_requests(REPO) == []


def test_without_a_token_nothing_is_sent(
    released: Released, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", "/nonexistent/token")
    code, _, err = publish(str(released.out), "--yes")
    assert code == ExitCode.NO_VERDICT
    assert "needs a Hub token" in err
    assert write_requests(hub) == []


@pytest.mark.parametrize(("answer", "expected"), [("n\n", ExitCode.USAGE), ("", ExitCode.USAGE)])
def test_without_yes_nothing_is_sent_unless_confirmed(
    released: Released, hub: FakeHub, answer: str, expected: int
) -> None:
    code, _, err = publish(str(released.out), stdin=answer)
    assert code == expected
    assert "not confirmed" in err and write_requests(hub) == []


def test_confirming_publishes(released: Released, hub: FakeHub) -> None:
    code, _, err = publish(str(released.out), stdin="y\n")
    assert code == ExitCode.OK, err
    assert f"publish {len(released.expected_upload())} files? [y/N]" in err
    assert len(hub.pull_requests(REPO)) == 1


def test_new_repo_gets_the_release_as_its_first_commit_and_no_pr(
    released: Released, hub: FakeHub
) -> None:
    target = "acme/coat-clip-patched"
    code, _, err = publish(str(released.out), "--new-repo", "--to", target, "--yes")
    assert code == ExitCode.OK, err
    files = hub.files(target)
    assert {
        p: hashlib.sha256(b).hexdigest() for p, b in files.items() if p != ".gitattributes"
    } == (released.expected_upload())
    assert hub.pull_requests(target) == [] and hub.pull_requests(REPO) == []
    code, _, err = publish(str(released.out), "--new-repo", "--to", target, "--yes")
    assert code == ExitCode.NO_VERDICT and "already exists" in err
