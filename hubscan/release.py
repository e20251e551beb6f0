"""The release directory `hubscan patch` writes: a patched copy of an open_clip checkpoint.

Owns staging a release beside its destination and moving it into place in one rename, writing the
patched safetensors with the source file's keys and dtypes plus provenance metadata, copying the
config, the updated model card and its diff, and hashing what was written (for report.json).

Must not run any stage (the pipeline decides what goes in), talk to the Hub (hub.py opens the PR
from a finished directory), or import huggingface_hub (hub.py reads and writes model cards). It
reads only two files of the scanned repo, the config and the safetensors header, never executes or
unpickles anything from it, and never follows a symlink out of the source root.

A directory is a hubscan release when it holds the marker file MARKER_NAME, which staged() writes;
only a release, or an empty directory, is ever replaced.
"""

from __future__ import annotations

import difflib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from hubscan import hub
from hubscan.atomic import file_sha256, write_atomic
from hubscan.errors import ModelError, UsageError
from hubscan.model import CONFIG_NAME, WEIGHTS_NAME

MARKER_NAME = ".hubscan-release"
CARD_NAME = "README.md"
DIFF_NAME = "card.diff"
_MARKER_TEXT = "This directory is a hubscan release; `hubscan patch --out` may replace it.\n"
_MAX_CONFIG_BYTES = 1 << 20  # open_clip configs are a few KiB; more is not a config

# safetensors header dtype -> torch dtype; a source dtype missing here is refused, never guessed.
_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """An empty staging directory beside `out`, moved into place as `out` on normal exit.

    `out` may exist only as an empty directory or a previous release (MARKER_NAME); that is
    checked before yielding, so a wrong --out fails before hours of work, and again before the
    swap. On any exception, KeyboardInterrupt included, the staging directory is removed and
    `out` is left as it was.
    """
    out = _normalised(out)
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Same parent as `out`: the final rename stays on one file system, so it is atomic.
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        yield stage
        write_atomic(stage / MARKER_NAME, lambda tmp: tmp.write_text(_MARKER_TEXT, "utf-8"))
        _move_into_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def check_out(out: Path) -> None:
    """Raise UsageError unless `out` is absent, an empty directory or a previous release (a real
    directory holding MARKER_NAME). staged() checks this itself; callers may check earlier."""
    out = _normalised(out)
    if not os.path.lexists(out):
        return
    marker = out / MARKER_NAME
    try:
        replaceable = (
            not out.is_symlink()
            and out.is_dir()
            and (not any(out.iterdir()) or (marker.is_file() and not marker.is_symlink()))
        )
    except OSError:  # unreadable: not known to be ours, so not ours to delete
        replaceable = False
    if not replaceable:
        raise UsageError(
            f"--out {out} exists and is not a hubscan release; choose another directory"
        )


def _normalised(out: Path) -> Path:
    out = Path(os.path.abspath(out))  # normalised, not resolved: a symlinked `out` is refused
    if out.parent == out:
        raise UsageError(f"--out {out} is not a directory hubscan can replace")
    return out


def _move_into_place(stage: Path, out: Path) -> None:
    if not os.path.lexists(out):
        os.rename(stage, out)
        return
    check_out(out)  # again: hours may have passed since the first check
    # POSIX has no portable atomic swap of two directories: move the old release aside, move the
    # new one in (a reader sees `out` missing for that instant, never half-written), drop the old.
    aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rename(out, aside / out.name)
    try:
        os.rename(stage, out)
    except BaseException:
        os.rename(aside / out.name, out)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def write_weights(
    stage: Path, state: Mapping[str, torch.Tensor], *, like: Path, metadata: Mapping[str, str]
) -> Path:
    """stage/WEIGHTS_NAME: `state` with exactly the keys, shapes and dtypes of the safetensors
    file `like` (the source the model was loaded from), `metadata` as its `__metadata__`."""
    layout = _layout(like)
    missing, extra = sorted(layout.keys() - state.keys()), sorted(state.keys() - layout.keys())
    if missing or extra:
        raise ModelError(
            f"the patched weights do not match {like.name}: "
            f"{len(missing)} key(s) missing {missing[:3]}, {len(extra)} extra {extra[:3]}"
        )
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for key, (dtype, shape) in layout.items():
        tensor = state[key].detach().to("cpu", dtype).contiguous()
        if list(tensor.shape) != shape:
            raise ModelError(f"patched tensor {key} has shape {list(tensor.shape)}, not {shape}")
        # safetensors refuses tensors sharing storage (tied weights in the live model): copy them.
        ptr = tensor.untyped_storage().data_ptr()
        tensors[key] = tensor.clone() if ptr in storages else tensor
        storages.add(ptr)
    path = stage / WEIGHTS_NAME
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=dict(metadata)))
    return path


def _layout(like: Path) -> dict[str, tuple[torch.dtype, list[int]]]:
    """Key -> (dtype, shape) from a safetensors header; no tensor data is read."""
    try:
        with safe_open(str(like), framework="pt") as source:
            header = {k: source.get_slice(k) for k in source.keys()}  # noqa: SIM118 (not a dict)
            names = {k: (s.get_dtype(), list(s.get_shape())) for k, s in header.items()}
    except (SafetensorError, OSError) as err:
        raise ModelError(f"cannot read the header of {like}: {err}") from err
    unknown = sorted({name for name, _ in names.values() if name not in _DTYPES})
    if unknown:
        raise ModelError(f"{like.name} holds dtypes hubscan cannot write back: {unknown}")
    return {key: (_DTYPES[name], shape) for key, (name, shape) in names.items()}


def copy_config(stage: Path, source_root: Path) -> Path:
    """stage/CONFIG_NAME, byte for byte from source_root; a symlink is followed only when it lands
    inside source_root or, in an HF cache snapshot, the repo's blobs/ (where the cache keeps it)."""
    source = source_root / CONFIG_NAME
    real = Path(os.path.realpath(source))
    areas = [Path(os.path.realpath(source_root))]
    if source_root.parent.name == "snapshots":
        areas.append(Path(os.path.realpath(source_root.parent.parent / "blobs")))
    if not any(real.is_relative_to(area) for area in areas):
        raise ModelError(f"{CONFIG_NAME} in {source_root} links out of the snapshot; not copied")
    try:
        # O_NOFOLLOW on the resolved path, and fstat on the descriptor: nothing swapped in since.
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with open(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_CONFIG_BYTES:
                raise ModelError(f"{CONFIG_NAME} in {source_root} is not a small regular file")
            data = handle.read(_MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ModelError(
            f"cannot read {CONFIG_NAME} in {source_root}: {err.strerror or err}"
        ) from err
    path = stage / CONFIG_NAME
    write_atomic(path, lambda tmp: tmp.write_bytes(data))
    return path


def write_card(
    stage: Path,
    *,
    original: str | None,
    base_model: str,
    section: str,
    tags: Sequence[str] = ("hubscan-patched",),
) -> tuple[Path, Path]:
    """stage/README.md: the source card (None: a minimal one) with base_model and `tags` in its
    metadata and `section` (Markdown starting with its own heading) appended, or replacing the
    section under the same heading, so patching a patched model keeps one. stage/card.diff: the
    unified diff from the original. A card whose metadata cannot be read still gets a release:
    a line saying what was lost is added to the section (see hub.updated_card)."""
    heading = section.lstrip("\n").split("\n", 1)[0].strip()
    if _heading_level(heading) == 0:
        raise ValueError(f"a card section must start with a Markdown heading, not {heading!r}")

    def edit_body(body: str, problem: str | None) -> str:
        text = section.strip("\n") + "\n"
        if problem is not None:
            text += f"\n> Note: hubscan could not read this card's original metadata: {problem}.\n"
        if original is None:
            body = f"# {base_model}\n\nA copy of {base_model} patched by hubscan.\n"
        return _with_section(body, text, heading)

    text = hub.updated_card(original, base_model=base_model, tags=tags, edit_body=edit_body)
    diff = _unified_diff(original or "", text)
    card_path, diff_path = stage / CARD_NAME, stage / DIFF_NAME
    # Bytes, not text mode: the card keeps its own line endings, the diff shows the real change.
    write_atomic(card_path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))
    write_atomic(diff_path, lambda tmp: tmp.write_bytes(diff.encode("utf-8")))
    return card_path, diff_path


def _heading_level(line: str) -> int:
    """1-6 for an ATX heading line ("## Title"), else 0."""
    stripped = line.lstrip(" ")
    if len(line) - len(stripped) > 3:
        return 0
    level = len(stripped) - len(stripped.lstrip("#"))
    rest = stripped[level:]
    return level if 1 <= level <= 6 and (rest == "" or rest[0] in " \t\r\n") else 0


def _with_section(body: str, section: str, heading: str) -> str:
    """`body` with the section under `heading` replaced by `section`, else `section` appended.

    The old section runs to the next heading of its level or above, skipping fenced code blocks
    (a "# comment" in a shell snippet is not a heading).
    """
    newline = "\r\n" if "\r\n" in body else "\n"
    section = section.replace("\n", newline)
    lines = body.splitlines(keepends=True)
    level, start, end, fence = _heading_level(heading), None, len(lines), ""
    for i, line in enumerate(lines):
        mark = line.lstrip(" ")[:3]
        if mark in ("```", "~~~"):
            fence = "" if fence == mark else fence or mark
            continue
        if fence:
            continue
        if start is None and line.strip() == heading:
            start = i
        elif start is not None and 0 < _heading_level(line) <= level:
            end = i
            break
    if start is None:
        head = body.rstrip("\r\n")
        return f"{head}{newline}{newline}{section}" if head else section
    rest = "".join(lines[end:])
    return "".join(lines[:start]) + section + (newline + rest if rest else "")


def _unified_diff(before: str, after: str) -> str:
    diff = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile="a/README.md",
        tofile="b/README.md",
    )
    # A last line without a newline is marked as git marks it, so the diff stays applicable.
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in diff
    )


def sha256_files(stage: Path) -> dict[str, str]:
    """POSIX relative path -> sha256 of every regular file under `stage`, sorted; symlinks and
    the marker are left out (staged() writes no links, and the marker is not part of a release)."""
    digests: dict[str, str] = {}
    for folder, dirs, files in os.walk(stage):  # os.walk does not enter directory symlinks
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            if path.is_symlink() or not path.is_file() or path == stage / MARKER_NAME:
                continue
            digests[path.relative_to(stage).as_posix()] = file_sha256(path)
    return dict(sorted(digests.items()))
