"""The finding-code table: every code a scanner may emit, its default severity and meaning.

Owns the names and defaults only; policies override severities per code (policy.py), scanners
emit codes (scan/). Adding a code here is an API change: the README table is checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubscan.records import Severity

C, H, M, L, N = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO


@dataclass(frozen=True, slots=True)
class CodeInfo:
    scanner: str
    severity: Severity
    summary: str


CODES: dict[str, CodeInfo] = {
    # safetensors header walk (scan/safetensors.py)
    "ST_TOO_SHORT": CodeInfo("safetensors", H, "file shorter than the 8-byte header length"),
    "ST_HEADER_TOO_LARGE": CodeInfo("safetensors", H, "header length over the policy cap"),
    "ST_HEADER_TRUNCATED": CodeInfo("safetensors", H, "header runs past the end of the file"),
    "ST_HEADER_NOT_UTF8": CodeInfo("safetensors", H, "header is not valid UTF-8"),
    "ST_HEADER_NOT_JSON": CodeInfo("safetensors", H, "header is not a JSON object"),
    "ST_DUPLICATE_KEY": CodeInfo("safetensors", H, "header repeats a key (parsers disagree)"),
    "ST_BAD_ENTRY": CodeInfo(
        "safetensors", H, "tensor entry lacks or mistypes dtype/shape/offsets"
    ),
    "ST_DTYPE_NOT_ALLOWED": CodeInfo("safetensors", M, "dtype not in the policy allowlist"),
    "ST_SIZE_MISMATCH": CodeInfo("safetensors", H, "shape x dtype size differs from the byte span"),
    "ST_OFFSETS_OVERLAP": CodeInfo("safetensors", H, "two tensors share bytes"),
    "ST_OFFSETS_GAP": CodeInfo("safetensors", H, "tensor data not contiguous from offset 0"),
    "ST_DATA_TRUNCATED": CodeInfo(
        "safetensors", H, "header declares more data than the file holds"
    ),
    "ST_TRAILING_BYTES": CodeInfo("safetensors", M, "bytes after the last tensor"),
    "ST_METADATA_INVALID": CodeInfo("safetensors", M, "__metadata__ is not a string-to-string map"),
    # pickle opcode walk (scan/pickle.py)
    "PKL_DANGEROUS_GLOBAL": CodeInfo("pickle", C, "imports a global on the deny list"),
    "PKL_UNKNOWN_GLOBAL": CodeInfo("pickle", M, "imports a global on neither list"),
    "PKL_UNRESOLVED_GLOBAL": CodeInfo("pickle", H, "imports a global whose name is computed"),
    "PKL_INDIRECT_CALL": CodeInfo("pickle", H, "calls an object that is not an imported global"),
    "PKL_MALFORMED": CodeInfo("pickle", H, "opcode stream does not parse"),
    "PKL_TOO_COMPLEX": CodeInfo("pickle", H, "over the policy's opcode or size budget"),
    "PKL_ARCHIVE_INVALID": CodeInfo("pickle", H, "zip archive cannot be read"),
    "PKL_ARCHIVE_NESTED": CodeInfo("pickle", H, "archive inside an archive"),
    "PKL_ARCHIVE_UNSUPPORTED": CodeInfo(
        "pickle", H, "archive format hubscan cannot open (7z, tar, gzip)"
    ),
    "PKL_NO_PICKLE": CodeInfo("pickle", H, "weights file holds no pickle hubscan recognizes"),
    # file inventory (scan/files.py)
    "FILE_PATH_ESCAPE": CodeInfo("files", C, "symlink or path leads out of the snapshot"),
    "FILE_SPECIAL": CodeInfo("files", H, "fifo, socket or device file"),
    "FILE_EXECUTABLE": CodeInfo("files", H, "native executable or script with a shebang"),
    "FILE_CODE": CodeInfo("files", M, "source code file shipped with the weights"),
    "FILE_TOO_LARGE": CodeInfo("files", H, "file over the policy size cap (not read)"),
    "FILE_TOO_MANY": CodeInfo("files", H, "more files than the policy allows (listing cut)"),
    "FILE_HASH_MISMATCH": CodeInfo("files", C, "local sha256 differs from the Hub's LFS sha256"),
    "FILE_CONFIG_MISSING": CodeInfo("files", M, "no open_clip_config.json beside the weights"),
    "FILE_CONFIG_INVALID": CodeInfo("files", H, "open_clip_config.json is malformed"),
    "FILE_WEIGHTS_UNSCANNED": CodeInfo("files", M, "weights in a format hubscan does not scan"),
    "FILE_PICKLE_WEIGHTS": CodeInfo("files", L, "weights only in a pickle format, not safetensors"),
    # the Hub's own scans (read from the API when online)
    "HUB_FLAGGED": CodeInfo("hub", H, "the Hub's security scan flags this file"),
    "HUB_SCAN_PENDING": CodeInfo("hub", N, "the Hub has not finished scanning this commit"),
}


def default_severity(code: str) -> Severity:
    return CODES[code].severity
