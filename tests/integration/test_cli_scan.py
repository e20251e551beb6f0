"""`hubscan scan` end to end through the real CLI, on checkpoints written by open_clip itself."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubscan.cli import app
from hubscan.errors import ExitCode
from tests.support.factories import write_open_clip_checkpoint

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "hubscan" / "examples" / "tiny-clip"
runner = CliRunner()


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_open_clip_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-clip")


@pytest.fixture
def ckpt(open_clip_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(open_clip_dir, tmp_path / "tiny-clip"))


def scan(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["scan", *args])
    return result.exit_code, result.stdout, result.stderr


def reduce_pickle(module: str, name: str, arg: str) -> bytes:
    """protocol 2: GLOBAL module.name, one string argument, REDUCE, STOP (never unpickled here)."""
    raw = arg.encode()
    return (
        b"\x80\x02c"
        + f"{module}\n{name}\n".encode()
        + b"X"
        + struct.pack("<I", len(raw))
        + raw
        + b"\x85R."
    )


def test_a_checkpoint_written_by_open_clip_passes_and_json_lists_every_sha256(ckpt: Path) -> None:
    code, out, _ = scan(str(ckpt), "--format", "json")
    assert code == ExitCode.OK
    data = json.loads(out)
    assert data["verdict"] == "pass"
    files = {f["path"]: f["sha256"] for f in data["scan"]["snapshot"]["files"]}
    assert set(files) == {p.name for p in ckpt.iterdir()}
    import hashlib

    for name, digest in files.items():
        assert digest == hashlib.sha256((ckpt / name).read_bytes()).hexdigest()
    assert data["scan"]["weights_scanned"] == ["open_clip_model.safetensors"]


def test_a_pickle_importing_os_system_fails_the_gate_and_never_runs(ckpt: Path) -> None:
    witness = ckpt.parent / "pwned"
    payload = reduce_pickle("os", "system", f"touch {witness}")
    with zipfile.ZipFile(ckpt / "open_clip_pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    code, out, _ = scan(str(ckpt), "--format", "json")
    assert code == ExitCode.FINDINGS
    hits = [f for f in json.loads(out)["scan"]["findings"] if "os.system" in f["message"]]
    assert hits and hits[0]["severity"] in ("high", "critical")
    assert hits[0]["path"].startswith("open_clip_pytorch_model.bin")
    assert not witness.exists()


def test_a_safetensors_header_declaring_more_data_than_the_file_fails(ckpt: Path) -> None:
    path = ckpt / "open_clip_model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    code, out, _ = scan(str(ckpt), "--format", "json")
    assert code == ExitCode.FINDINGS
    assert "ST_DATA_TRUNCATED" in {f["code"] for f in json.loads(out)["scan"]["findings"]}


def test_no_weights_is_no_verdict_never_clean(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# nothing here\n")
    code, out, _ = scan(str(tmp_path))
    assert code == ExitCode.NO_VERDICT
    assert "NO VERDICT" in out


def test_a_policy_with_an_unknown_key_exits_3_naming_it(ckpt: Path, tmp_path: Path) -> None:
    policy = tmp_path / "typo.toml"
    policy.write_text('schema = 1\nextends = "default"\nname = "t"\n[limits]\nmax_heder = 5\n')
    code, out, err = scan(str(ckpt), "--policy", str(policy))
    assert code == ExitCode.NO_VERDICT
    assert "limits.max_heder: unknown key" in err
    assert out == ""
    assert len(err.strip().splitlines()) == 1


def test_a_missing_directory_exits_3_with_one_line(tmp_path: Path) -> None:
    code, _, err = scan(str(tmp_path / "absent") + "/")
    assert code == ExitCode.NO_VERDICT
    assert len(err.strip().splitlines()) == 1


def test_fail_on_overrides_the_policy_gate(ckpt: Path) -> None:
    (ckpt / "modeling.py").write_text("print('hi')\n")  # FILE_CODE, medium
    assert scan(str(ckpt))[0] == ExitCode.OK
    assert scan(str(ckpt), "--fail-on", "medium")[0] == ExitCode.FINDINGS
    assert scan(str(ckpt), "--policy", "strict")[0] == ExitCode.FINDINGS
    assert scan(str(ckpt), "--fail-on", "severe")[0] == ExitCode.USAGE


@pytest.mark.parametrize("fmt", ["json", "sarif", "markdown", "human"])
def test_output_file_receives_the_report_and_stdout_stays_empty(
    ckpt: Path, tmp_path: Path, fmt: str
) -> None:
    target = tmp_path / "out" / f"report.{fmt}"
    code, out, _ = scan(str(ckpt), "--format", fmt, "--output", str(target))
    assert code == ExitCode.OK
    assert out == ""
    text = target.read_text()
    if fmt in ("json", "sarif"):
        json.loads(text)
    assert "tiny-clip" in text
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left


def test_the_bundled_example_scans_clean() -> None:
    code, out, _ = scan(str(EXAMPLE))
    assert code == ExitCode.OK, out
    assert "PASS" in out


def test_the_bundled_example_is_a_real_open_clip_checkpoint() -> None:
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{EXAMPLE}")
    assert model.visual.image_size == (16, 16)


def test_policy_show_and_check(tmp_path: Path) -> None:
    shown = runner.invoke(app, ["policy", "show", "strict"])
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["fail_on"] == "medium"
    bad = tmp_path / "bad.toml"
    bad.write_text('schema = 1\nextends = "default"\nname = "b"\nfail_on = 3\nwat = 1\n')
    checked = runner.invoke(app, ["policy", "check", str(bad)])
    assert checked.exit_code == ExitCode.NO_VERDICT
    assert "fail_on" in checked.stderr and "wat: unknown key" in checked.stderr
    assert runner.invoke(app, ["policy", "check", "default"]).exit_code == 0


@pytest.mark.slow
def test_scan_never_imports_torch_and_starts_fast(open_clip_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hubscan", "scan", str(open_clip_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    # (pickle itself is kept out of hubscan's static side by import-linter; rich imports it.)
    assert not {m for m in imported if m.split(".")[0] in ("torch", "open_clip", "safetensors")}
    self_us = [
        line.split(":", 1)[1].split("|")[0].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    ]
    assert sum(int(us) for us in self_us if us.isdigit()) < 1_000_000  # all imports, under 1 s


@pytest.mark.slow
def test_a_200_mb_safetensors_file_scans_in_a_third_of_the_600_mb_budget(tmp_path: Path) -> None:
    from hubscan.bench import write_large_safetensors

    write_large_safetensors(tmp_path / "big.safetensors", 200)
    scan(str(tmp_path))  # page cache warm, as in `hubscan bench scan`
    start = time.perf_counter()
    code, _, _ = scan(str(tmp_path))
    assert time.perf_counter() - start < 1.0
    assert code == ExitCode.OK  # FILE_CONFIG_MISSING is medium, under the default gate


def test_library_api_returns_the_run_report(ckpt: Path) -> None:
    import hubscan
    from hubscan.records import Verdict

    run = hubscan.scan_model(str(ckpt), policy="strict")
    assert run.verdict is Verdict.PASS
    assert run.policy_name == "strict"
    assert run.scan.weights_scanned == ("open_clip_model.safetensors",)


def test_version_and_help_document_exit_codes() -> None:
    assert runner.invoke(app, ["--version"]).stdout.startswith("hubscan ")
    help_text = runner.invoke(app, ["--help"]).stdout
    assert "Exit codes" in help_text and "no verdict" in help_text
