"""The pickle scanner: hostile pickles are written as opcode bytes here, never by pickling objects.

Nothing in this file unpickles what it builds; the one test that would run a payload checks that
scanning leaves no trace of it.
"""

from __future__ import annotations

import io
import random
import struct
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hubscan.codes import CODES
from hubscan.policy import Policy, load_policy
from hubscan.records import Finding, Severity
from hubscan.scan.pickle import scan_pickle_file

POLICY = load_policy("default")

# --- opcode builders ----------------------------------------------------------------------------

PROTO2, PROTO4 = b"\x80\x02", b"\x80\x04"
MARK, TUPLE, TUPLE1, EMPTY_TUPLE = b"(", b"t", b"\x85", b")"
REDUCE, BUILD, STOP, POP, DUP = b"R", b"b", b".", b"0", b"2"
STACK_GLOBAL, MEMOIZE, EMPTY_DICT, NONE = b"\x93", b"\x94", b"}", b"N"


def glob(module: str, name: str) -> bytes:
    """GLOBAL: import module.name."""
    return b"c" + f"{module}\n{name}\n".encode()


def text(value: str) -> bytes:
    """BINUNICODE: push a str."""
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def binput(key: int) -> bytes:
    return b"q" + bytes([key])


def binget(key: int) -> bytes:
    return b"h" + bytes([key])


def call(fn: bytes, *args: bytes) -> bytes:
    """fn(*args) through REDUCE."""
    return fn + MARK + b"".join(args) + TUPLE + REDUCE


def pickle_of(*body: bytes, proto: bytes = PROTO2) -> bytes:
    return proto + b"".join(body) + STOP


OS_SYSTEM = pickle_of(call(glob("os", "system"), text("echo hi")))


# --- helpers ------------------------------------------------------------------------------------


def write(tmp_path: Path, data: bytes, name: str = "model.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def write_zip(tmp_path: Path, members: dict[str, bytes], name: str = "model.pt") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def scan(path: Path, policy: Policy = POLICY) -> tuple[Finding, ...]:
    return scan_pickle_file(path, path.name, policy=policy)


def codes(findings: tuple[Finding, ...]) -> set[str]:
    return {f.code for f in findings}


def with_pickle_limits(**limits: Any) -> Policy:
    return replace(POLICY, pickle=replace(POLICY.pickle, **limits))


# --- one case per finding code ------------------------------------------------------------------

Case = Callable[[Path], tuple[Path, Policy]]


def _dangerous(tmp: Path) -> tuple[Path, Policy]:
    return write(tmp, OS_SYSTEM), POLICY


def _unknown(tmp: Path) -> tuple[Path, Policy]:
    return write(tmp, pickle_of(call(glob("mypkg.models", "Net")))), POLICY


def _unresolved(tmp: Path) -> tuple[Path, Policy]:
    # The global's name is the result of a call, so no static reader can know it.
    name = call(glob("collections", "OrderedDict"))
    return write(tmp, pickle_of(text("os"), name, STACK_GLOBAL, POP)), POLICY


def _indirect(tmp: Path) -> tuple[Path, Policy]:
    return write(tmp, pickle_of(call(call(glob("collections", "OrderedDict"))))), POLICY


def _malformed(tmp: Path) -> tuple[Path, Policy]:
    return write(tmp, PROTO2 + glob("collections", "OrderedDict") + REDUCE), POLICY


def _too_complex(tmp: Path) -> tuple[Path, Policy]:
    return write(tmp, pickle_of(NONE * 50, POP * 50)), with_pickle_limits(max_opcodes=10)


def _archive_invalid(tmp: Path) -> tuple[Path, Policy]:
    return write(tmp, b"PK\x03\x04" + b"\x00" * 100), POLICY


def _archive_nested(tmp: Path) -> tuple[Path, Policy]:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("archive/data.pkl", OS_SYSTEM)
    return write_zip(
        tmp, {"archive/data.pkl": pickle_of(NONE), "inner.zip": inner.getvalue()}
    ), POLICY


def _archive_unsupported(tmp: Path) -> tuple[Path, Policy]:
    return write(tmp, b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 64), POLICY


def _no_pickle(tmp: Path) -> tuple[Path, Policy]:
    return write(tmp, b"\x00\x01\x02\x03 this is not a pickle"), POLICY


CASES: dict[str, Case] = {
    "PKL_DANGEROUS_GLOBAL": _dangerous,
    "PKL_UNKNOWN_GLOBAL": _unknown,
    "PKL_UNRESOLVED_GLOBAL": _unresolved,
    "PKL_INDIRECT_CALL": _indirect,
    "PKL_MALFORMED": _malformed,
    "PKL_TOO_COMPLEX": _too_complex,
    "PKL_ARCHIVE_INVALID": _archive_invalid,
    "PKL_ARCHIVE_NESTED": _archive_nested,
    "PKL_ARCHIVE_UNSUPPORTED": _archive_unsupported,
    "PKL_NO_PICKLE": _no_pickle,
}


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_pickle_code_is_emitted_for_its_case(tmp_path: Path, code: str) -> None:
    path, policy = CASES[code](tmp_path)
    findings = scan(path, policy)
    assert code in codes(findings)
    for finding in findings:
        assert finding.scanner == "pickle"
        assert finding.severity == policy.severity_of(finding.code)
        assert finding.message and not finding.message.endswith(".")


def test_every_pickle_code_has_a_case() -> None:
    assert {code for code in CODES if code.startswith("PKL_")} == set(CASES)


# --- dangerous globals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("os", "system"),
        ("builtins", "eval"),
        ("__builtin__", "eval"),
        ("subprocess", "Popen"),
        ("runpy", "_run_code"),
        ("posix", "system"),
        ("os.path", "join"),
    ],
)
def test_denied_global_called_through_reduce_is_dangerous(
    tmp_path: Path, module: str, name: str
) -> None:
    path = write(tmp_path, pickle_of(call(glob(module, name), text("x"))))
    findings = scan(path)
    assert [(f.code, f.path) for f in findings] == [("PKL_DANGEROUS_GLOBAL", "model.bin")]
    assert findings[0].message.startswith(f"imports {module}.{name}")
    assert findings[0].severity is Severity.CRITICAL


def test_stack_global_resolved_through_memo_put_and_get(tmp_path: Path) -> None:
    body = (
        text("os"),
        binput(1),
        POP,
        text("system"),
        binput(2),
        POP,
        binget(1),
        binget(2),
        STACK_GLOBAL,
        text("id"),
        TUPLE1,
        REDUCE,
    )
    findings = scan(write(tmp_path, pickle_of(*body, proto=PROTO4)))
    assert [(f.code, f.message) for f in findings] == [
        ("PKL_DANGEROUS_GLOBAL", "imports os.system")
    ]


def test_stack_global_resolved_through_dup(tmp_path: Path) -> None:
    # STACK_GLOBAL consumes the DUP copy; the original string stays below.
    body = (text("subprocess"), DUP, text("Popen"), STACK_GLOBAL, text("id"), TUPLE1, REDUCE)
    findings = scan(write(tmp_path, pickle_of(*body, proto=PROTO4)))
    assert [(f.code, f.message) for f in findings] == [
        ("PKL_DANGEROUS_GLOBAL", "imports subprocess.Popen")
    ]


def test_stack_global_resolved_through_memoize(tmp_path: Path) -> None:
    body = (text("runpy"), MEMOIZE, POP, binget(0), text("_run_code"), STACK_GLOBAL, POP, NONE)
    findings = scan(write(tmp_path, pickle_of(*body, proto=PROTO4)))
    assert [(f.code, f.message) for f in findings] == [
        ("PKL_DANGEROUS_GLOBAL", "imports runpy._run_code")
    ]


def test_protocol_0_inst_imports_and_calls_its_class(tmp_path: Path) -> None:
    findings = scan(write(tmp_path, b"(S'echo hi'\nios\nsystem\n."))
    assert [(f.code, f.message) for f in findings] == [
        ("PKL_DANGEROUS_GLOBAL", "imports os.system")
    ]


def test_getattr_chain_is_dangerous_and_an_indirect_call(tmp_path: Path) -> None:
    # getattr(__import__("os"), "system")("echo hi"): the final call is on a computed object.
    os_module = call(glob("builtins", "__import__"), text("os"))
    system = call(glob("builtins", "getattr"), os_module, text("system"))
    findings = scan(write(tmp_path, pickle_of(call(system, text("echo hi")))))
    assert {(f.code, f.message) for f in findings} == {
        ("PKL_DANGEROUS_GLOBAL", "imports builtins.__import__"),
        ("PKL_DANGEROUS_GLOBAL", "imports builtins.getattr"),
        ("PKL_INDIRECT_CALL", "REDUCE calls the result of calling builtins.getattr"),
    }


def test_python2_module_name_is_judged_as_the_module_it_loads(tmp_path: Path) -> None:
    findings = scan(write(tmp_path, pickle_of(call(glob("commands", "getoutput"), text("id")))))
    assert [(f.code, f.message) for f in findings] == [
        ("PKL_DANGEROUS_GLOBAL", "imports commands.getoutput (loaded as subprocess.getoutput)")
    ]


def test_dotted_name_reaching_a_denied_module_is_dangerous(tmp_path: Path) -> None:
    body = (
        text("torch"),
        text("serialization.os.system"),
        STACK_GLOBAL,
        text("id"),
        TUPLE1,
        REDUCE,
    )
    findings = scan(write(tmp_path, pickle_of(*body, proto=PROTO4)))
    assert codes(findings) == {"PKL_DANGEROUS_GLOBAL"}


def test_dotted_name_under_an_allowed_global_is_not_allowed(tmp_path: Path) -> None:
    body = (text("torch"), text("Size.__init__.__globals__"), STACK_GLOBAL, POP)
    findings = scan(write(tmp_path, pickle_of(*body, NONE, proto=PROTO4)))
    assert codes(findings) == {"PKL_UNKNOWN_GLOBAL"}


def test_allowed_globals_give_no_finding(tmp_path: Path) -> None:
    body = call(glob("collections", "OrderedDict")), call(glob("torch", "Size"), EMPTY_TUPLE)
    assert scan(write(tmp_path, pickle_of(*body, POP))) == ()


def test_each_global_is_reported_once(tmp_path: Path) -> None:
    body = [call(glob("os", "system"), text("a")) + POP for _ in range(5)]
    findings = scan(write(tmp_path, pickle_of(*body, NONE)))
    assert len(findings) == 1


def test_stack_global_with_denied_module_and_computed_name_is_also_dangerous(
    tmp_path: Path,
) -> None:
    name = call(glob("collections", "OrderedDict"))
    findings = scan(write(tmp_path, pickle_of(text("os"), name, STACK_GLOBAL, POP, NONE)))
    assert codes(findings) == {"PKL_UNRESOLVED_GLOBAL", "PKL_DANGEROUS_GLOBAL"}
    assert "imports os.<computed>" in {f.message for f in findings}


def test_extension_registry_global_is_unresolved(tmp_path: Path) -> None:
    findings = scan(write(tmp_path, pickle_of(b"\x82\x07", EMPTY_TUPLE, REDUCE)))
    assert codes(findings) == {"PKL_UNRESOLVED_GLOBAL"}


def test_build_on_an_imported_global_is_flagged(tmp_path: Path) -> None:
    # BUILD with a (None, {"attr": value}) state setattr()s on the global: a monkeypatch.
    state = MARK + NONE + EMPTY_DICT + text("attr") + NONE + b"s" + TUPLE
    findings = scan(write(tmp_path, pickle_of(glob("torch", "Size"), state, BUILD)))
    assert [(f.code, f.message) for f in findings] == [
        ("PKL_INDIRECT_CALL", "BUILD mutates imported torch.Size")
    ]


def test_hostile_names_are_escaped_in_messages(tmp_path: Path) -> None:
    findings = scan(write(tmp_path, pickle_of(glob("evil\x1b[2J", "x"), POP, NONE)))
    assert findings[0].message == "imports evil\\x1b[2J.x"


# --- malformed and truncated streams ------------------------------------------------------------


def test_truncated_pickle_reports_its_globals_and_malformed(tmp_path: Path) -> None:
    # An Unpickler runs the REDUCE before it notices the missing STOP.
    findings = scan(write(tmp_path, PROTO2 + call(glob("os", "system"), text("id"))))
    assert codes(findings) == {"PKL_DANGEROUS_GLOBAL", "PKL_MALFORMED"}


def test_memo_get_of_an_unset_key_is_malformed(tmp_path: Path) -> None:
    assert codes(scan(write(tmp_path, pickle_of(binget(9))))) == {"PKL_MALFORMED"}


def test_pop_across_a_mark_is_malformed(tmp_path: Path) -> None:
    body = (glob("collections", "OrderedDict"), MARK, REDUCE)
    assert "PKL_MALFORMED" in codes(scan(write(tmp_path, pickle_of(*body))))


def test_declared_length_past_end_of_file_is_malformed_without_allocating(tmp_path: Path) -> None:
    data = PROTO2 + b"\x8e" + struct.pack("<Q", 1 << 62) + b"abc"  # BINBYTES8
    assert codes(scan(write(tmp_path, data))) == {"PKL_MALFORMED"}


def test_declared_length_over_max_pickle_bytes_is_too_complex(tmp_path: Path) -> None:
    data = pickle_of(b"\x8e" + struct.pack("<Q", 4096) + b"\x00" * 4096, POP, NONE)
    policy = with_pickle_limits(max_pickle_bytes=1024)
    assert codes(scan(write(tmp_path, data), policy)) == {"PKL_TOO_COMPLEX"}


def test_many_short_opcodes_over_max_pickle_bytes_are_too_complex(tmp_path: Path) -> None:
    data = pickle_of((NONE + POP) * 1000, NONE)
    policy = with_pickle_limits(max_pickle_bytes=1024)
    assert codes(scan(write(tmp_path, data), policy)) == {"PKL_TOO_COMPLEX"}


def test_concatenated_pickles_share_one_budget(tmp_path: Path) -> None:
    one = pickle_of((NONE + POP) * 100, NONE)  # 203 opcodes
    policy = with_pickle_limits(max_opcodes=500)
    assert scan(write(tmp_path, one * 2), policy) == ()
    assert codes(scan(write(tmp_path, one * 3), policy)) == {"PKL_TOO_COMPLEX"}


def test_endless_global_line_is_too_complex(tmp_path: Path) -> None:
    data = PROTO2 + b"c" + b"a" * 10_000
    policy = with_pickle_limits(max_pickle_bytes=1024)
    assert codes(scan(write(tmp_path, data), policy)) == {"PKL_TOO_COMPLEX"}


def test_empty_file_holds_no_pickle(tmp_path: Path) -> None:
    assert codes(scan(write(tmp_path, b""))) == {"PKL_NO_PICKLE"}


@pytest.mark.parametrize(
    ("magic", "kind"),
    [
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"BZh91AY&SY", "bzip2"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x00" * 257 + b"ustar\x0000", "tar"),
    ],
)
def test_other_archive_formats_are_unsupported(tmp_path: Path, magic: bytes, kind: str) -> None:
    findings = scan(write(tmp_path, magic + b"\x00" * 600))
    assert [(f.code, f.message) for f in findings] == [
        ("PKL_ARCHIVE_UNSUPPORTED", f"is a {kind} archive, not a pickle")
    ]


# --- concatenated pickles (legacy torch.save) ---------------------------------------------------


def test_every_concatenated_pickle_is_scanned(tmp_path: Path) -> None:
    data = pickle_of(NONE) + pickle_of(NONE) + OS_SYSTEM + b"\x00raw tensor bytes"
    assert codes(scan(write(tmp_path, data))) == {"PKL_DANGEROUS_GLOBAL"}


def test_raw_tail_that_starts_like_a_pickle_is_not_malformed(tmp_path: Path) -> None:
    data = pickle_of(NONE) + b"\x80\x02\x00\x00\x00\x00\x00\x00 raw bytes"
    assert scan(write(tmp_path, data)) == ()


# --- real checkpoints ---------------------------------------------------------------------------


def _state_dict() -> OrderedDict[str, object]:
    torch = pytest.importorskip("torch")
    # 640 elements = 0x280: in the legacy format the raw tail then starts 80 02, like a pickle.
    return OrderedDict(weight=torch.randn(640), bias=torch.zeros(3, dtype=torch.float16))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_real_torch_checkpoint_has_no_findings(tmp_path: Path, zip_format: bool) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(_state_dict(), path, _use_new_zipfile_serialization=zip_format)
    assert scan(path) == ()


def test_legacy_checkpoint_whose_tail_looks_like_a_pickle_has_no_findings(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.bin"
    torch.save({"w": torch.ones(640)}, path, _use_new_zipfile_serialization=False)
    assert b"\x80\x02\x00\x00\x00\x00\x00\x00" in path.read_bytes()
    assert scan(path) == ()


def _rebuild(src: Path, dst: Path, change: Callable[[str, bytes], tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            name, data = change(info.filename, old.read(info))
            new.writestr(name, data)


def test_renamed_pickle_member_in_a_torch_zip_is_scanned(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    clean = tmp_path / "clean.pt"
    torch.save(_state_dict(), clean)

    def rename(name: str, data: bytes) -> tuple[str, bytes]:
        if name.endswith("/data.pkl"):
            return name.replace("data.pkl", "model_state"), OS_SYSTEM
        return name, data

    _rebuild(clean, tmp_path / "model.pt", rename)
    findings = scan(tmp_path / "model.pt")
    assert [(f.code, f.path) for f in findings] == [
        ("PKL_DANGEROUS_GLOBAL", "model.pt:clean/model_state")
    ]


def test_pkl_member_under_any_prefix_is_scanned(tmp_path: Path) -> None:
    path = write_zip(tmp_path, {"weird/prefix/data.pkl": OS_SYSTEM})
    assert [f.path for f in scan(path)] == ["model.pt:weird/prefix/data.pkl"]


def test_storage_member_with_chance_pickle_bytes_is_ignored(tmp_path: Path) -> None:
    noise = b"\x80\x02" + bytes(random.Random(1).randrange(256) for _ in range(4096))
    path = write_zip(tmp_path, {"archive/data.pkl": pickle_of(NONE), "archive/data/0": noise})
    assert scan(path) == ()


def test_storage_member_holding_a_whole_malicious_pickle_is_reported(tmp_path: Path) -> None:
    path = write_zip(tmp_path, {"archive/data.pkl": pickle_of(NONE), "archive/data/3": OS_SYSTEM})
    assert [(f.code, f.path) for f in scan(path)] == [
        ("PKL_DANGEROUS_GLOBAL", "model.pt:archive/data/3")
    ]


def test_encrypted_flag_does_not_hide_a_member(tmp_path: Path) -> None:
    # Scanners that honour the flag skip the member; torch's reader ignores it and loads it.
    path = write_zip(tmp_path, {"archive/data.pkl": OS_SYSTEM})
    raw = bytearray(path.read_bytes())
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        raw[at + flag_at] |= 0x1
    path.write_bytes(bytes(raw))
    assert codes(scan(path)) == {"PKL_ARCHIVE_UNSUPPORTED", "PKL_DANGEROUS_GLOBAL"}


def test_member_with_unknown_compression_method_is_unsupported(tmp_path: Path) -> None:
    path = write_zip(tmp_path, {"archive/data.pkl": OS_SYSTEM})
    raw = bytearray(path.read_bytes())
    for signature, method_at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = raw.find(signature)
        raw[at + method_at : at + method_at + 2] = struct.pack("<H", 99)
    path.write_bytes(bytes(raw))
    assert codes(scan(path)) == {"PKL_ARCHIVE_UNSUPPORTED", "PKL_NO_PICKLE"}


def test_zip_without_pickle_members_holds_no_pickle(tmp_path: Path) -> None:
    path = write_zip(tmp_path, {"archive/version": b"3\n", "archive/data/0": b"\x00" * 16})
    assert codes(scan(path)) == {"PKL_NO_PICKLE"}


def test_zip_inside_zip_is_nested(tmp_path: Path) -> None:
    path, _ = _archive_nested(tmp_path)
    assert [(f.code, f.path) for f in scan(path)] == [("PKL_ARCHIVE_NESTED", "model.pt:inner.zip")]


def test_zip_bomb_member_stops_at_max_member_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pt"
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("archive/data.pkl", "w", force_zip64=True) as member,
    ):
        member.write(PROTO2 + b"\x8e" + struct.pack("<Q", 64 << 20))  # BINBYTES8 of 64 MiB
        for _ in range(64):
            member.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 18
    started = time.monotonic()
    findings = scan(path, with_pickle_limits(max_member_bytes=1 << 20))
    assert time.monotonic() - started < 2
    assert [(f.code, f.message) for f in findings] == [
        ("PKL_TOO_COMPLEX", f"member decompresses past max_member_bytes ({1 << 20})")
    ]


def test_zip_with_more_members_than_allowed_is_too_complex(tmp_path: Path) -> None:
    path = write_zip(tmp_path, {f"archive/data/{i}": b"" for i in range(5)})
    assert codes(scan(path, with_pickle_limits(max_zip_members=2))) == {"PKL_TOO_COMPLEX"}


def test_corrupt_member_data_is_archive_invalid(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", OS_SYSTEM * 50)
    raw = bytearray(path.read_bytes())
    raw[60:80] = b"\xff" * 20  # inside the deflate stream
    path.write_bytes(bytes(raw))
    assert "PKL_ARCHIVE_INVALID" in codes(scan(path))


# --- the scanner never runs what it reads -------------------------------------------------------


def test_scanning_never_runs_the_payload(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle_of(call(glob("os", "system"), text(f"touch {marker}")))
    findings = scan(write(tmp_path, payload))
    assert "PKL_DANGEROUS_GLOBAL" in codes(findings)
    assert not marker.exists()


def test_mutated_inputs_never_crash_the_scanner(tmp_path: Path) -> None:
    # Random byte flips of a zip checkpoint and of a plain pickle: findings, never exceptions.
    seeds = [write_zip(tmp_path, {"archive/data.pkl": OS_SYSTEM, "archive/data/0": b"\x01" * 64})]
    seeds.append(write(tmp_path, OS_SYSTEM + pickle_of(call(glob("a", "b"), NONE))))
    rng = random.Random(7)
    for seed in seeds:
        original = seed.read_bytes()
        for _ in range(300):
            data = bytearray(original)
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            mutated = write(tmp_path, bytes(data[: rng.randrange(1, len(data) + 1)]), "m.bin")
            for finding in scan(mutated):
                assert finding.code in CODES
