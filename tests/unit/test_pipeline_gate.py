from __future__ import annotations

from pathlib import Path

import pytest

from hubscan.errors import LockFileError
from hubscan.pipeline_gate import combined_verdict, read_models_file, run_dir_name
from hubscan.records import Verdict

A = "a" * 40
B = "b" * 40


def lock(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "models.lock"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_comments_blank_lines_and_repeats_are_skipped(tmp_path: Path) -> None:
    text = f"# pinned models\n\nacme/one@{A}  # prod\nacme/two@{B}\nacme/one@{A}\n"
    entries = read_models_file(lock(tmp_path, text))
    assert [(e.line, e.ref) for e in entries] == [(3, f"acme/one@{A}"), (4, f"acme/two@{B}")]


def test_every_bad_line_is_named(tmp_path: Path) -> None:
    text = f"acme/one@{A}\nacme/two@main\nnot a ref\nacme/three@{A[:12]}\nacme/four@v1\n"
    with pytest.raises(LockFileError) as caught:
        read_models_file(lock(tmp_path, text))
    message = str(caught.value)
    assert "line 2: 'acme/two@main'" in message and "line 4:" in message
    assert "(and 1 more)" in message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe acme", "is not UTF-8 text"),
        (b"x" * ((1 << 20) + 1), "is over 1048576 bytes"),
        ("".join(f"acme/m{i}@{A}\n" for i in range(1001)), "lists 1001 models; at most 1000"),
    ],
    ids=["not-utf8", "too-big", "too-many"],
)
def test_unreadable_or_oversized_files_are_refused(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    with pytest.raises(LockFileError, match=message):
        read_models_file(lock(tmp_path, content))


def test_a_missing_file_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(LockFileError, match="cannot read models file"):
        read_models_file(tmp_path / "nope.lock")


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([Verdict.PASS, Verdict.PASS], Verdict.PASS),
        ([Verdict.PASS, Verdict.NO_VERDICT], Verdict.NO_VERDICT),
        ([Verdict.NO_VERDICT, Verdict.FAIL, Verdict.PASS], Verdict.FAIL),
    ],
)
def test_the_gate_over_many_models_is_the_worst_verdict(
    verdicts: list[Verdict], expected: Verdict
) -> None:
    assert combined_verdict(verdicts) is expected


def test_run_directories_are_named_by_repo_and_commit() -> None:
    assert run_dir_name(f"acme/one@{A}") == f"acme--one--{A[:12]}"
