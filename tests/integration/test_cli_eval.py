"""`hubscan eval` on bad input: one clear line each, the README's exit code, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from hubscan.cli import app
from hubscan.errors import ExitCode
from tests.support.factories import write_open_clip_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_open_clip_checkpoint(tmp_path_factory.mktemp("eval") / "tiny")


def evaluate(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["eval", *args])
    return result.exit_code, result.stdout, result.stderr


def test_eval_prints_clean_accuracy_and_attack_success_as_json(tiny: Path) -> None:
    code, out, err = evaluate(str(tiny), "--trigger", "patch:size=3", "--target", "bag",
                              "--format", "json")  # fmt: skip
    assert code == ExitCode.OK, err
    data = json.loads(out)
    assert data["n_probes"] == 1000
    assert 0.0 <= data["clean_accuracy"] <= 1.0
    assert 0.0 <= data["attack_success"] <= 1.0


def _folder_with(tmp_path: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    return tmp_path


def _png() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("L", (28, 28), 128).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad-trigger", ExitCode.NO_VERDICT),
        ("unknown-family", ExitCode.NO_VERDICT),
        ("target-without-trigger", ExitCode.USAGE),
        ("target-not-a-class", ExitCode.USAGE),
        ("duplicate-labels", ExitCode.NO_VERDICT),
        ("empty-labels", ExitCode.NO_VERDICT),
        ("empty-folder", ExitCode.NO_VERDICT),
        ("not-an-image", ExitCode.NO_VERDICT),
        ("unlabelled-probes", ExitCode.NO_VERDICT),
    ],
)
def test_bad_input_is_one_line_and_its_exit_code(
    tiny: Path, tmp_path: Path, case: str, expected: ExitCode
) -> None:
    args = {
        "bad-trigger": ["--trigger", "patch:size=zero", "--target", "bag"],
        "unknown-family": ["--trigger", "laser:power=9", "--target", "bag"],
        "target-without-trigger": ["--target", "bag"],
        "target-not-a-class": ["--trigger", "patch", "--target", "spaceship"],
        "duplicate-labels": ["--labels", str(_folder_with(tmp_path, {"l.txt": b"cat\ndog\nCat\n"})
                                             / "l.txt")],
        "empty-labels": ["--labels", str(_folder_with(tmp_path, {"l.txt": b"\n# none\n"})
                                         / "l.txt")],
        "empty-folder": ["--probes", str(_folder_with(tmp_path / "empty", {}))],
        "not-an-image": ["--probes", str(_folder_with(tmp_path / "p", {
            "bag/a.png": _png(), "bag/b.png": b"not a png"}))],
        "unlabelled-probes": ["--probes", str(_folder_with(tmp_path / "flat", {"a.png": _png()}))],
    }[case]  # fmt: skip
    (tmp_path / "empty").mkdir(exist_ok=True)
    before = sorted(p.name for p in tiny.iterdir())
    code, out, err = evaluate(str(tiny), *args)
    assert code == expected, err
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tiny.iterdir()) == before
