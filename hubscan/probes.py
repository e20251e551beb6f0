"""Clean probe images and label sets: what detection and TBAR show the model.

Owns the built-in label sets and their prompt templates, label files, the bundled Fashion-MNIST
probe slice (hubscan/data/, MIT notice beside it), parsing the Debian Fashion-MNIST idx files,
reading image folders safely (bounded file count, size and pixels; allow-listed decoders; hidden
files skipped; no symlink out of the folder), stratified subsets and tune/val/test splits.

Returns pixel tensors in [0, 1] at the images' own size. Must not import open_clip or know about
models: resizing to a model's resolution and normalization happen in model.py.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, UnidentifiedImageError

from hubscan.errors import ProbeError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    *("t-shirt", "trouser", "pullover", "dress", "coat"),
    *("sandal", "shirt", "sneaker", "bag", "ankle boot"),
)
_FASHION_PREFIX = {"train": "train", "test": "t10k"}  # file names: {prefix}-images-idx3-ubyte.gz
_FASHION_SPECS: dict[str, Literal["train", "test"]] = {
    "fashion-mnist": "test",
    "fashion-mnist:test": "test",
    "fashion-mnist:train": "train",
}
_INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"
_IDX_IMAGES, _IDX_LABELS = 0x0803, 0x0801  # idx magic: unsigned bytes, 3 or 1 dimensions
_MAX_IDX_BYTES = 64 << 20  # the train images are 47 MB; a header declaring more is corrupt
_BUNDLED = "fashion_mnist_probes.npz"
_BUNDLED_PER_CLASS = 100
_MAX_LABEL_FILE_BYTES = 1 << 20  # 1,000 ImageNet names fit in ~25 kB
_MAX_FILES = 20_000  # entries listed per folder, before `limit` picks from them
_MAX_DECODED = 5_000  # images decoded from a folder: 3 GB as float32 at 224 x 224 RGB
_MAX_FILE_BYTES = 64 << 20
_MAX_PIXELS = 4096 * 4096  # read from the header, before anything is decoded
_MAX_SIDE = 224  # the common size is the first image's, scaled down to fit this
# Decoders PIL may use: plain raster formats only (opening EPS, for one, runs Ghostscript).
_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
_GREY_MODES = frozenset({"1", "L", "LA"})


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelSet:
    """Class names for the zero-shot head, in label-index order, and its prompt templates."""

    name: str  # a built-in name or the file path
    classes: tuple[str, ...]
    templates: tuple[str, ...]  # each has one "{}"


# CLIP-style prompts (after the CLIP paper's ImageNet set); a label file gets the generic ones.
_TEMPLATES = ("a photo of a {}.", "a low resolution photo of a {}.", "a cropped photo of a {}.")
_FASHION_TEMPLATES = ("a black and white photo of a {}.", "a photo of the {}, a type of clothing.")
BUILTIN_LABELS: dict[str, LabelSet] = {  # room for "imagenet"
    "fashion-mnist": LabelSet(
        name="fashion-mnist",
        classes=FASHION_MNIST_CLASSES,
        templates=(*_TEMPLATES, *_FASHION_TEMPLATES),
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeSet:
    """Probe images (float32 in [0, 1], (N, C, H, W), C = 1 or 3) and, if labelled, their labels.

    A live object holding tensors, not a record. `labels` index into `classes`; both are None for
    an unlabelled set.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: tuple[str, ...] | None
    source: str

    def __post_init__(self) -> None:
        shape = tuple(self.images.shape)
        if len(shape) != 4 or shape[1] not in (1, 3) or self.images.dtype != torch.float32:
            raise ValueError(f"probe images must be float32 (N, 1|3, H, W), got {shape}")
        if (self.labels is None) != (self.classes is None):
            raise ValueError("probe labels and classes must both be given or both be None")
        if self.labels is not None and tuple(self.labels.shape) != shape[:1]:
            raise ValueError(f"{len(self.labels)} probe labels for {shape[0]} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor) -> ProbeSet:
        labels = None if self.labels is None else self.labels[index]
        return replace(self, images=self.images[index], labels=labels)

    def split(
        self, *, seed: int = 0, fractions: tuple[float, float, float] = (0.4, 0.3, 0.3)
    ) -> Splits:
        """Disjoint tune/val/test sets covering the probes, stratified by label, fixed by `seed`."""
        if len(fractions) != 3 or min(fractions) <= 0 or not math.isclose(sum(fractions), 1):
            raise ValueError(f"split fractions must be 3 positives summing to 1: {fractions}")
        generator = torch.Generator().manual_seed(seed)
        parts: tuple[list[torch.Tensor], ...] = ([], [], [])
        for group in _groups(self.labels, len(self)):
            order = group[torch.randperm(len(group), generator=generator)]
            ends = [round(len(group) * sum(fractions[:i])) for i in range(4)]
            for i, part in enumerate(parts):
                part.append(order[ends[i] : ends[i + 1]])
        tune, val, test = (self.subset(torch.cat(part).sort().values) for part in parts)
        if min(len(tune), len(val), len(test)) == 0:
            raise ProbeError(f"{len(self)} probe images are too few to split ({self.source})")
        return Splits(tune=tune, val=val, test=test)


@dataclass(frozen=True, slots=True, kw_only=True)
class Splits:
    """tune fits the trigger vector, val chooses its coefficient, test reports (METHOD.md §4)."""

    tune: ProbeSet
    val: ProbeSet
    test: ProbeSet


def load_labels(spec: str) -> LabelSet:
    """A built-in label set by name, or a UTF-8 file: one class name per line.

    Blank lines and lines starting with "#" are skipped; names are compared case- and
    space-insensitively, and a duplicate is an error.
    """
    if spec in BUILTIN_LABELS:
        return BUILTIN_LABELS[spec]
    try:
        with open(spec, "rb") as stream:
            data = stream.read(_MAX_LABEL_FILE_BYTES + 1)
        if len(data) > _MAX_LABEL_FILE_BYTES:
            raise ProbeError(f"label file {spec!r} is over {_MAX_LABEL_FILE_BYTES} bytes")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ProbeError(
            f"label set {spec!r} is neither built in ({', '.join(BUILTIN_LABELS)}) "
            f"nor a readable UTF-8 file ({_why(err)})"
        ) from err
    lines = (line.strip() for line in text.splitlines())
    classes = tuple(line for line in lines if line and not line.startswith("#"))
    if len(classes) < 2:
        raise ProbeError(f"label file {spec!r} has {len(classes)} class names; at least two needed")
    seen: dict[str, str] = {}
    for name in classes:
        if (first := seen.get(_key(name))) is not None:
            raise ProbeError(f"label file {spec!r} names {name!r} twice (also as {first!r})")
        seen[_key(name)] = name
    return LabelSet(name=spec, classes=classes, templates=(*_TEMPLATES, "a photo of the {}."))


def concept_labels(concepts: Sequence[str], *, name: str = "vocabulary") -> LabelSet:
    """Free concepts as a label set, with the generic templates: label-free detection's classes
    (the policy's vocabulary), so a suspected target is reported as the nearest concept."""
    classes = tuple(concepts)
    if len(classes) < 2:
        raise ProbeError(f"label set {name!r} has {len(classes)} concepts; at least two needed")
    return LabelSet(name=name, classes=classes, templates=_TEMPLATES)


def load_probes(
    spec: str, *, labels: LabelSet | None = None, limit: int | None = None, seed: int = 0
) -> ProbeSet:
    """`default` (bundled slice), `fashion-mnist[:test|:train]` (Debian set) or an image folder.

    A folder of class subfolders is labelled (subfolder names, sorted, are the classes); a flat
    folder is unlabelled. Given `labels`, the classes follow its order and every class found must
    be one of its classes. `limit` keeps a stratified subset chosen by `seed`.
    """
    if limit is not None and limit < 1:
        raise ProbeError(f"probe limit must be at least 1, got {limit}")
    if spec == "default":
        pixels, target = _load_bundled()
        source = f"bundled Fashion-MNIST test slice ({_BUNDLED})"
    elif spec in _FASHION_SPECS:
        split = _FASHION_SPECS[spec]
        pixels, target = load_fashion_mnist(split)
        source = f"Fashion-MNIST {split} set ({FASHION_MNIST_DIR})"
    else:
        return _read_folder(Path(spec), labels, limit, seed)
    if limit is not None:
        pick = _stratified_pick(target, len(target), limit, seed)
        pixels, target = pixels[pick], target[pick]
    classes, target = _align(FASHION_MNIST_CLASSES, target, labels, source)
    images = pixels[:, None].float().div_(255)
    return ProbeSet(images=images, labels=target, classes=classes, source=source)


def load_fashion_mnist(
    split: Literal["train", "test"], *, root: Path = FASHION_MNIST_DIR
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST from its idx .gz files: uint8 images (N, 28, 28) and int64 labels (N,)."""
    prefix = _FASHION_PREFIX[split]
    images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz", _IDX_IMAGES)
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", _IDX_LABELS)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ProbeError(f"Fashion-MNIST {split} files disagree: {images.shape}, {labels.shape}")
    if len(labels) == 0 or labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ProbeError(f"Fashion-MNIST {split} labels in {root} are empty or out of range")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def build_bundled_slice(out: Path, *, root: Path = FASHION_MNIST_DIR) -> None:
    """Write the bundled probe file: the first 100 test images of each class, in file order."""
    images, labels = load_fashion_mnist("test", root=root)
    firsts = [(labels == c).nonzero().flatten()[:_BUNDLED_PER_CLASS] for c in range(10)]
    pick = torch.cat(firsts).sort().values
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, images=images[pick].numpy(), labels=labels[pick].numpy().astype(np.uint8)
    )
    temp = out.with_name(out.name + ".tmp")  # written whole, then renamed into place
    temp.write_bytes(buffer.getvalue())
    temp.replace(out)


def _read_idx(path: Path, magic: int) -> npt.NDArray[np.uint8]:
    ndim = magic & 0xFF
    try:
        with gzip.open(path, "rb") as stream:
            header = stream.read(4 + 4 * ndim)
            if len(header) != 4 + 4 * ndim or struct.unpack(">I", header[:4])[0] != magic:
                raise ProbeError(f"{path} is not the expected idx file (bad magic number)")
            dims = struct.unpack(f">{ndim}I", header[4:])
            size = math.prod(dims)
            if size > _MAX_IDX_BYTES:
                raise ProbeError(f"{path} declares {size} bytes, over the {_MAX_IDX_BYTES} cap")
            data = stream.read(size + 1)
    except FileNotFoundError as err:
        raise ProbeError(f"Fashion-MNIST not found: no {path}; {_INSTALL_HINT}") from err
    except (OSError, EOFError, zlib.error) as err:
        raise ProbeError(f"{path} is unreadable or corrupt ({_why(err)})") from err
    if len(data) != size:
        raise ProbeError(f"{path} holds {len(data)} data bytes where its header declares {size}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims).copy()


def _load_bundled() -> tuple[torch.Tensor, torch.Tensor]:
    resource = resources.files("hubscan") / "data" / _BUNDLED
    try:
        with np.load(io.BytesIO(resource.read_bytes()), allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (OSError, KeyError, ValueError) as err:
        raise ProbeError(f"bundled probe set missing or damaged ({_why(err)}); reinstall") from err
    if images.dtype != np.uint8 or images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ProbeError(f"bundled probe set has unexpected arrays {images.shape}, {labels.shape}")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _read_folder(root: Path, labels: LabelSet | None, limit: int | None, seed: int) -> ProbeSet:
    if not root.is_dir():
        raise ProbeError(
            f"probe set {str(root)!r} is not 'default', 'fashion-mnist[:test|:train]' or a folder"
        )
    entries = _visible(root, root)
    folders = [path for path in entries if path.is_dir()]
    target: torch.Tensor | None = None
    if folders:
        if strays := [path for path in entries if not path.is_dir()]:
            raise ProbeError(f"{str(strays[0])!r} lies beside class folders; move or remove it")
        members = [_visible(folder, root, files_only=True) for folder in folders]
        if empty := [f for f, m in zip(folders, members, strict=True) if not m]:
            raise ProbeError(f"class folder {str(empty[0])!r} holds no images")
        files = [path for group in members for path in group]
        target = torch.tensor([i for i, group in enumerate(members) for _ in group])
    else:
        files = _visible(root, root, files_only=True)
    if not files:
        raise ProbeError(f"no images in {str(root)!r}")
    if min(len(files), limit or len(files)) > _MAX_DECODED:
        raise ProbeError(f"{len(files)} images in {str(root)!r}; give a limit <= {_MAX_DECODED}")
    if limit is not None:
        pick = _stratified_pick(target, len(files), limit, seed)
        files = [files[i] for i in pick.tolist()]
        target = None if target is None else target[pick]
    images = _decode_all(files)
    if target is None:
        return ProbeSet(images=images, labels=None, classes=None, source=str(root))
    found = tuple(folder.name for folder in folders)
    classes, target = _align(found, target, labels, str(root))
    return ProbeSet(images=images, labels=target, classes=classes, source=str(root))


def _visible(folder: Path, root: Path, *, files_only: bool = False) -> list[Path]:
    """Entries of `folder` not starting with ".", sorted; a symlink must point inside `root`."""
    try:
        with os.scandir(folder) as scan:
            names = [entry.name for _, entry in zip(range(_MAX_FILES + 1), scan, strict=False)]
    except OSError as err:
        raise ProbeError(f"cannot list {str(folder)!r} ({_why(err)})") from err
    if len(names) > _MAX_FILES:
        raise ProbeError(f"{str(folder)!r} holds over {_MAX_FILES} entries; use a smaller folder")
    paths = [folder / name for name in sorted(names) if not name.startswith(".")]
    inside = root.resolve()
    for path in paths:
        if path.is_symlink() and not path.resolve().is_relative_to(inside):
            raise ProbeError(f"{str(path)!r} is a symlink out of the probe folder")
        if files_only and not path.is_file():
            raise ProbeError(f"{str(path)!r} is not an image file (nested folders are not read)")
    return paths


def _decode_all(files: list[Path]) -> torch.Tensor:
    """Decode to one common size (the first image's, capped) and mode (grey only if all are)."""
    size: tuple[int, int] | None = None
    tensors = []
    for path in files:
        image = _open_image(path)
        size = size or _capped(image.size)
        pixels = np.array(image.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)
        tensor = torch.from_numpy(pixels)
        tensors.append(tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1))
    channels = max(tensor.shape[0] for tensor in tensors)
    return torch.stack([t.expand(channels, -1, -1) for t in tensors]).float().div_(255)


def _open_image(path: Path) -> Image.Image:
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise ProbeError(f"{str(path)!r} is over {_MAX_FILE_BYTES} bytes")
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; a bomb must stop here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=_FORMATS) as image:
                if image.width * image.height > _MAX_PIXELS:
                    raise ProbeError(f"{str(path)!r} has {image.size} pixels, over the cap")
                return image.convert("L" if image.mode in _GREY_MODES else "RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ProbeError(f"{str(path)!r} is too large an image ({_why(err)})") from err
    except UnidentifiedImageError as err:
        raise ProbeError(f"{str(path)!r} is not an image in a supported format") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ProbeError(f"{str(path)!r} is not a readable image ({_why(err)})") from err


def _capped(size: tuple[int, int]) -> tuple[int, int]:
    scale = min(1.0, _MAX_SIDE / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _align(
    found: tuple[str, ...], target: torch.Tensor, labels: LabelSet | None, source: str
) -> tuple[tuple[str, ...], torch.Tensor]:
    """Renumber labels into `labels`' class order; a class it lacks is an error."""
    if labels is None:
        return found, target
    index = {_key(name): i for i, name in enumerate(labels.classes)}
    if unknown := [name for name in found if _key(name) not in index]:
        shown = ", ".join(repr(name) for name in unknown[:5])
        raise ProbeError(f"{source}: classes not in label set {labels.name!r}: {shown}")
    remap = torch.tensor([index[_key(name)] for name in found], dtype=torch.int64)
    return labels.classes, remap[target]


def _stratified_pick(
    labels: torch.Tensor | None, count: int, limit: int, seed: int
) -> torch.Tensor:
    """Up to `limit` indices in original order; each class keeps its share, `seed` picks which."""
    generator = torch.Generator().manual_seed(seed)
    keys = torch.empty(count, dtype=torch.float64)
    for group in _groups(labels, count):
        # A random rank as a fraction of the class size: sorting on it interleaves the classes
        # in proportion to their sizes.
        keys[group] = (torch.randperm(len(group), generator=generator).double() + 0.5) / len(group)
    return keys.argsort(stable=True)[:limit].sort().values


def _groups(labels: torch.Tensor | None, count: int) -> list[torch.Tensor]:
    if labels is None:
        return [torch.arange(count)]
    return [(labels == value).nonzero().flatten() for value in sorted(set(labels.tolist()))]


def _key(name: str) -> str:
    return " ".join(name.casefold().split())


def _why(err: BaseException) -> str:
    """An exception as one line (error messages end up as one line on stderr)."""
    return " ".join(str(err).split()) or type(err).__name__
