from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hubscan.codes import CODES
from hubscan.policy import load_policy
from hubscan.records import FileEntry, FileKind, HubFileScan, Snapshot, SourceKind
from hubscan.scan.files import scan_files

POLICY = load_policy("default")
GOOD_CONFIG = json.dumps({"model_cfg": {"embed_dim": 16, "vision_cfg": {}, "text_cfg": {}}})


def entry(root: Path, path: str, data: bytes, **kw: object) -> FileEntry:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_bytes(data)
    fields: dict[str, object] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    fields.update(kw)
    return FileEntry(path=path, **fields)  # type: ignore[arg-type]


def snapshot(root: Path, *files: FileEntry, **kw: object) -> Snapshot:
    return Snapshot(
        repo_id="acme/x", commit="a" * 40, root=root, source=SourceKind.HUB, files=files, **kw
    )  # type: ignore[arg-type]


def clean_layout(root: Path) -> list[FileEntry]:
    return [
        entry(root, "open_clip_config.json", GOOD_CONFIG.encode()),
        entry(root, "open_clip_model.safetensors", b"weights"),
    ]


Case = Callable[[Path], Snapshot]
CASES: list[tuple[str, Case]] = [
    (
        "FILE_PATH_ESCAPE",
        lambda r: snapshot(
            r,
            *clean_layout(r),
            FileEntry(
                path="evil.bin", size=3, kind=FileKind.LINK_ESCAPE, link_target="/etc/passwd"
            ),
        ),
    ),
    (
        "FILE_SPECIAL",
        lambda r: snapshot(
            r, *clean_layout(r), FileEntry(path="pipe", size=0, kind=FileKind.SPECIAL)
        ),
    ),
    (
        "FILE_EXECUTABLE",
        lambda r: snapshot(r, *clean_layout(r), entry(r, "run.bin", b"\x7fELF\x02")),
    ),
    (
        "FILE_CODE",
        lambda r: snapshot(
            r, *clean_layout(r), FileEntry(path="modeling.py", size=10, kind=FileKind.REMOTE)
        ),
    ),
    (
        "FILE_TOO_LARGE",
        lambda r: snapshot(
            r,
            *clean_layout(r),
            FileEntry(path="huge.safetensors", size=POLICY.limits.max_file_bytes + 1),
        ),
    ),
    ("FILE_TOO_MANY", lambda r: snapshot(r, *clean_layout(r), truncated=True)),
    (
        "FILE_HASH_MISMATCH",
        lambda r: snapshot(
            r,
            clean_layout(r)[0],
            entry(r, "open_clip_model.safetensors", b"weights", hub_sha256="0" * 64),
        ),
    ),
    ("FILE_CONFIG_MISSING", lambda r: snapshot(r, clean_layout(r)[1])),
    (
        "FILE_CONFIG_INVALID",
        lambda r: snapshot(
            r,
            clean_layout(r)[1],
            entry(r, "open_clip_config.json", b'{"model_cfg": {"embed_dim": "16"}}'),
        ),
    ),
    ("FILE_WEIGHTS_UNSCANNED", lambda r: snapshot(r, *clean_layout(r), entry(r, "m.onnx", b"x"))),
    (
        "FILE_PICKLE_WEIGHTS",
        lambda r: snapshot(r, clean_layout(r)[0], entry(r, "open_clip_pytorch_model.bin", b"x")),
    ),
    (
        "HUB_FLAGGED",
        lambda r: snapshot(
            r,
            *clean_layout(r),
            hub_scans=(
                HubFileScan(
                    path="open_clip_model.safetensors", status="unsafe", detail="ClamAV: Win.Trojan"
                ),
            ),
        ),
    ),
    ("HUB_SCAN_PENDING", lambda r: snapshot(r, *clean_layout(r), hub_scans_done=False)),
]


@pytest.mark.parametrize(("code", "make"), CASES, ids=[c for c, _ in CASES])
def test_each_file_code_is_emitted_for_its_input(tmp_path: Path, code: str, make: Case) -> None:
    findings = scan_files(make(tmp_path), policy=POLICY)
    assert code in {f.code for f in findings}
    (hit,) = [f for f in findings if f.code == code]
    assert hit.severity is POLICY.severity_of(code)
    assert hit.message and not hit.message.endswith(".")


def test_every_file_and_hub_code_has_a_case() -> None:
    ours = {c for c, info in CODES.items() if info.scanner in ("files", "hub")}
    assert ours == {c for c, _ in CASES}


def test_a_clean_open_clip_layout_has_no_findings(tmp_path: Path) -> None:
    assert scan_files(snapshot(tmp_path, *clean_layout(tmp_path)), policy=POLICY) == ()


@pytest.mark.parametrize(
    "config",
    [
        b"\xff\xfe",
        b"[]",
        b'{"model_cfg": []}',
        b'{"model_cfg": {"embed_dim": 0}}',
        b'{"model_cfg": {"embed_dim": 8, "vision_cfg": {}, "text_cfg": 3}}',
        b'{"model_cfg": {"embed_dim": 8, "vision_cfg": {}, "text_cfg": {}}, "preprocess_cfg": 1}',
        b"[" * 100_000,
    ],
)
def test_malformed_configs_are_findings_not_crashes(tmp_path: Path, config: bytes) -> None:
    snap = snapshot(
        tmp_path, clean_layout(tmp_path)[1], entry(tmp_path, "open_clip_config.json", config)
    )
    codes = [f.code for f in scan_files(snap, policy=POLICY)]
    assert codes == ["FILE_CONFIG_INVALID"]


def test_a_hub_file_marked_safe_is_not_a_finding(tmp_path: Path) -> None:
    scans = (HubFileScan(path="open_clip_model.safetensors", status="safe", detail="ok"),)
    snap = snapshot(tmp_path, *clean_layout(tmp_path), hub_scans=scans, hub_scans_done=True)
    assert scan_files(snap, policy=POLICY) == ()


def test_a_path_with_dotdot_escapes_even_as_a_listing_entry(tmp_path: Path) -> None:
    snap = snapshot(
        tmp_path,
        *clean_layout(tmp_path),
        FileEntry(path="../outside.bin", size=1, kind=FileKind.REMOTE),
    )
    assert "FILE_PATH_ESCAPE" in {f.code for f in scan_files(snap, policy=POLICY)}
