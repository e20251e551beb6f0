"""The safetensors header walk: one hostile file per ST_* code, built as bytes, plus real files."""

from __future__ import annotations

import dataclasses
import json
import random
import struct
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from hubscan.codes import CODES
from hubscan.policy import Policy, load_policy
from hubscan.records import Finding, Severity
from hubscan.scan.safetensors import scan_safetensors

REL = "sub/model.safetensors"
POLICY = load_policy("default")


def st_file(
    header: dict[str, Any] | bytes, payload: bytes = b"", *, length: int | None = None
) -> bytes:
    """The 8-byte little-endian header length (real, or `length` to lie), the header, the data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + payload


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def scan(tmp_path: Path, data: bytes, policy: Policy = POLICY) -> tuple[Finding, ...]:
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    return scan_safetensors(path, REL, policy=policy)


def codes(findings: tuple[Finding, ...]) -> set[str]:
    return {f.code for f in findings}


F32_1 = entry("F32", [1], 0, 4)

CASES = [
    pytest.param("ST_TOO_SHORT", b"\x01\x02\x03", id="ST_TOO_SHORT"),
    pytest.param("ST_HEADER_TOO_LARGE", st_file(b"{}", length=2**60), id="ST_HEADER_TOO_LARGE"),
    pytest.param("ST_HEADER_TRUNCATED", st_file(b"{}", length=1000), id="ST_HEADER_TRUNCATED"),
    pytest.param("ST_HEADER_NOT_UTF8", st_file(b'{"\xff\xfe": 1}'), id="ST_HEADER_NOT_UTF8"),
    pytest.param("ST_HEADER_NOT_JSON", st_file(b'{"w": '), id="ST_HEADER_NOT_JSON"),
    pytest.param(
        "ST_DUPLICATE_KEY",
        st_file(f'{{"w": {json.dumps(F32_1)}, "w": {json.dumps(F32_1)}}}'.encode(), b"\0" * 4),
        id="ST_DUPLICATE_KEY",
    ),
    pytest.param("ST_BAD_ENTRY", st_file({"w": entry("F32", [-1], 0, 0)}), id="ST_BAD_ENTRY"),
    pytest.param(
        "ST_DTYPE_NOT_ALLOWED",
        st_file({"w": entry("U64", [1], 0, 8)}, b"\0" * 8),
        id="ST_DTYPE_NOT_ALLOWED",
    ),
    pytest.param(
        "ST_SIZE_MISMATCH",
        st_file({"w": entry("F32", [2], 0, 4)}, b"\0" * 4),
        id="ST_SIZE_MISMATCH",
    ),
    pytest.param(
        "ST_OFFSETS_OVERLAP",
        st_file({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, b"\0" * 12),
        id="ST_OFFSETS_OVERLAP",
    ),
    pytest.param(
        "ST_OFFSETS_GAP", st_file({"w": entry("F32", [1], 4, 8)}, b"\0" * 8), id="ST_OFFSETS_GAP"
    ),
    pytest.param(
        "ST_DATA_TRUNCATED",
        st_file({"w": entry("F32", [4], 0, 16)}, b"\0" * 8),
        id="ST_DATA_TRUNCATED",
    ),
    pytest.param("ST_TRAILING_BYTES", st_file({"w": F32_1}, b"\0" * 8), id="ST_TRAILING_BYTES"),
    pytest.param(
        "ST_METADATA_INVALID",
        st_file({"__metadata__": {"format": 1}, "w": F32_1}, b"\0" * 4),
        id="ST_METADATA_INVALID",
    ),
]


@pytest.mark.parametrize(("code", "data"), CASES)
def test_each_hostile_file_yields_exactly_its_code(tmp_path: Path, code: str, data: bytes) -> None:
    findings = scan(tmp_path, data)
    assert codes(findings) == {code}
    for f in findings:
        assert f.scanner == "safetensors"
        assert f.path == REL
        assert f.severity == POLICY.severity_of(code)
        assert f.message and not f.message.endswith(".") and "\n" not in f.message


def test_every_safetensors_code_has_a_hostile_case() -> None:
    st_codes = {code for code in CODES if code.startswith("ST_")}
    assert {p.values[0] for p in CASES} == st_codes
    assert {p.id for p in CASES} == st_codes


def test_file_written_by_safetensors_torch_is_clean(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    save_file = pytest.importorskip("safetensors.torch").save_file
    tensors = {
        "f32": torch.randn(3, 5),
        "f16": torch.randn(7).half(),
        "bf16": torch.randn(2, 2, 3).bfloat16(),
        "f64": torch.randn(1).double(),
        "i64": torch.arange(9),
        "i8": torch.arange(4, dtype=torch.int8),
        "u8": torch.arange(5, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 4),
        "f8": torch.zeros(4).to(torch.float8_e4m3fn),
    }
    path = tmp_path / "real.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    assert scan_safetensors(path, "real.safetensors", policy=POLICY) == ()


# Codes the reference parser cannot see: a policy choice, and the duplicate it silently resolves.
REFERENCE_ACCEPTS = {"ST_DTYPE_NOT_ALLOWED", "ST_DUPLICATE_KEY"}


@pytest.mark.parametrize(("code", "data"), CASES)
def test_reference_parser_agrees_the_structural_cases_are_broken(code: str, data: bytes) -> None:
    deserialize = pytest.importorskip("safetensors").deserialize
    if code in REFERENCE_ACCEPTS:
        assert deserialize(data) is not None
    else:
        with pytest.raises(Exception, match="deserializ"):
            deserialize(data)


W_F32 = json.dumps(F32_1).encode()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(st_file(b"{}"), id="zero-tensors"),
        pytest.param(st_file(b'{"w": ' + W_F32 + b"}    ", b"\0" * 4), id="space-padded"),
        pytest.param(st_file(b'{"\\ud83d\\ude00": ' + W_F32 + b"}", b"\0" * 4), id="paired-escape"),
        pytest.param(st_file({"__metadata__": {"format": "pt"}, "w": F32_1}, b"\0" * 4), id="meta"),
    ],
)
def test_legal_edge_cases_give_no_findings(tmp_path: Path, data: bytes) -> None:
    assert scan(tmp_path, data) == ()
    assert pytest.importorskip("safetensors").deserialize(data) is not None


def test_huge_declared_header_is_rejected_without_reading_or_allocating(tmp_path: Path) -> None:
    data = st_file(b"{}", length=2**60)
    tracemalloc.start()
    start = time.perf_counter()
    findings = scan(tmp_path, data)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert codes(findings) == {"ST_HEADER_TOO_LARGE"}
    assert str(2**60) in findings[0].message
    assert elapsed < 1.0
    assert peak < 1_000_000


def test_header_declaring_more_data_than_the_file_holds_is_truncated(tmp_path: Path) -> None:
    header = {"a": entry("F32", [2], 0, 8), "b": entry("F16", [1000], 8, 2008)}
    findings = scan(tmp_path, st_file(header, b"\0" * 100))
    assert codes(findings) == {"ST_DATA_TRUNCATED"}
    assert "2008" in findings[0].message and "100" in findings[0].message


def test_policy_severity_override_applies(tmp_path: Path) -> None:
    policy = dataclasses.replace(
        POLICY, severity_overrides=(("ST_TRAILING_BYTES", Severity.CRITICAL),)
    )
    (finding,) = scan(tmp_path, st_file({"w": F32_1}, b"\0" * 8), policy)
    assert finding.code == "ST_TRAILING_BYTES"
    assert finding.severity == Severity.CRITICAL
    assert CODES["ST_TRAILING_BYTES"].severity != Severity.CRITICAL


def test_independent_problems_are_all_reported(tmp_path: Path) -> None:
    header = {
        "__metadata__": ["not", "a", "map"],
        "odd": entry("U64", [1], 0, 8),
        "bad": {"dtype": "F32", "shape": [1]},
        "short": entry("F32", [3], 8, 12),
    }
    found = codes(scan(tmp_path, st_file(header, b"\0" * 20)))
    assert found == {
        "ST_METADATA_INVALID",
        "ST_DTYPE_NOT_ALLOWED",
        "ST_BAD_ENTRY",
        "ST_SIZE_MISMATCH",
        "ST_TRAILING_BYTES",
    }


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b' {"w": 1}', id="leading-space"),
        pytest.param(b"\xef\xbb\xbf{}", id="utf8-bom"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"w": NaN}', id="nan"),
        pytest.param(b'{"\\ud800": {}}', id="lone-surrogate"),
        pytest.param(b'{"__metadata__": {"k": "\\udc00"}}', id="lone-surrogate-value"),
        pytest.param(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="deep-nesting"),
        pytest.param(b'{"w": ' + b"9" * 5000 + b"}", id="huge-integer"),
    ],
)
def test_headers_parsers_disagree_on_are_not_json(tmp_path: Path, header: bytes) -> None:
    assert codes(scan(tmp_path, st_file(header))) == {"ST_HEADER_NOT_JSON"}


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param([1], id="not-an-object"),
        pytest.param({**F32_1, "extra": 1}, id="extra-key"),
        pytest.param({**F32_1, "dtype": 4}, id="dtype-not-string"),
        pytest.param({**F32_1, "shape": [True]}, id="bool-dim"),
        pytest.param({**F32_1, "shape": [1.0]}, id="float-dim"),
        pytest.param({**F32_1, "shape": [2**64]}, id="dim-over-u64"),
        pytest.param({**F32_1, "data_offsets": [4, 0]}, id="begin-after-end"),
        pytest.param({**F32_1, "data_offsets": [0, 4, 8]}, id="three-offsets"),
        pytest.param({**F32_1, "data_offsets": "0-4"}, id="offsets-string"),
    ],
)
def test_malformed_tensor_entries_are_bad_entries(tmp_path: Path, bad: Any) -> None:
    findings = scan(tmp_path, st_file({"w": bad}, b"\0" * 4))
    assert "ST_BAD_ENTRY" in codes(findings)
    assert codes(findings) <= {"ST_BAD_ENTRY", "ST_TRAILING_BYTES"}


def test_unknown_dtype_is_not_allowed(tmp_path: Path) -> None:
    findings = scan(tmp_path, st_file({"w": entry("Q4_K", [1], 0, 4)}, b"\0" * 4))
    assert codes(findings) == {"ST_DTYPE_NOT_ALLOWED"}
    assert "Q4_K" in findings[0].message


def test_shape_whose_element_count_overflows_u64_is_a_size_mismatch(tmp_path: Path) -> None:
    # The crate's checked_mul fails at the overflowing step even though a later dim is 0.
    header = {"w": entry("U8", [2**32, 2**32, 0], 0, 0)}
    findings = scan(tmp_path, st_file(header))
    assert codes(findings) == {"ST_SIZE_MISMATCH"}
    assert "overflow" in findings[0].message


def test_sub_byte_dtype_must_fill_whole_bytes(tmp_path: Path) -> None:
    allowed = POLICY.safetensors.dtypes | {"F4", "F6_E2M3"}
    policy = dataclasses.replace(
        POLICY, safetensors=dataclasses.replace(POLICY.safetensors, dtypes=allowed)
    )
    good = {"a": entry("F4", [4], 0, 2), "b": entry("F6_E2M3", [4], 2, 5)}
    assert scan(tmp_path, st_file(good, b"\0" * 5), policy) == ()
    odd = scan(tmp_path, st_file({"w": entry("F4", [3], 0, 1)}, b"\0"), policy)
    assert codes(odd) == {"ST_SIZE_MISMATCH"}


def test_zero_length_tensor_inside_another_tensor_overlaps(tmp_path: Path) -> None:
    header = {"a": entry("F32", [2], 0, 8), "z": entry("F32", [0], 4, 4)}
    findings = scan(tmp_path, st_file(header, b"\0" * 8))
    assert codes(findings) == {"ST_OFFSETS_OVERLAP"}
    assert "'z'" in findings[0].message and "'a'" in findings[0].message


def test_tensor_names_are_escaped_and_capped_in_messages(tmp_path: Path) -> None:
    name = "\x1b[31mred\n" + "x" * 500
    (finding,) = scan(tmp_path, st_file({name: entry("F32", [2], 0, 4)}, b"\0" * 4))
    assert "\x1b" not in finding.message and "\n" not in finding.message
    assert len(finding.message) < 300


def test_findings_per_code_are_capped_with_a_summary(tmp_path: Path) -> None:
    header = {f"t{i}": entry("U64", [1], 8 * i, 8 * i + 8) for i in range(100)}
    findings = scan(tmp_path, st_file(header, b"\0" * 800))
    assert codes(findings) == {"ST_DTYPE_NOT_ALLOWED"}
    assert len(findings) == 21
    assert "80 more" in findings[-1].message


def test_missing_file_raises_oserror_not_a_finding(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_safetensors(tmp_path / "absent.safetensors", "absent.safetensors", policy=POLICY)


def test_random_corruption_never_raises(tmp_path: Path) -> None:
    header = {"__metadata__": {"k": "v"}, "a": entry("F32", [2, 2], 0, 16), "b": F32_1}
    header["b"] = entry("F16", [2], 16, 20)
    base = st_file(header, b"\0" * 20)
    rng = random.Random(1234)
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = rng.choice([len(data), rng.randrange(len(data) + 1)])
        findings = scan(tmp_path, bytes(data[:cut]))
        assert all(f.code in CODES and f.code.startswith("ST_") for f in findings)
