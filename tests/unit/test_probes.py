"""probes.py: label sets, the bundled Fashion-MNIST slice, the Debian idx files, image folders read
safely, stratified subsets and splits.

Image folders are tiny PNGs written with PIL in tmp_path. Tests that read the Debian Fashion-MNIST
files skip when the package is not installed.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hubscan import probes
from hubscan.errors import ExitCode, HubscanError, ProbeError
from hubscan.probes import (
    BUILTIN_LABELS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    LabelSet,
    ProbeSet,
    build_bundled_slice,
    concept_labels,
    load_fashion_mnist,
    load_labels,
    load_probes,
)

needs_debian_set = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian dataset-fashion-mnist is not installed",
)


def one_line_no_verdict(err: HubscanError) -> str:
    message = str(err)
    assert isinstance(err, ProbeError)
    assert err.exit_code is ExitCode.NO_VERDICT
    assert message and "\n" not in message
    return message


def write_png(
    path: Path, *, mode: str = "L", size: tuple[int, int] = (8, 6), value: int = 0
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path, format="PNG")
    return path


def labelled_folder(root: Path, per_class: dict[str, int]) -> Path:
    for name, count in per_class.items():
        for i in range(count):
            write_png(root / name / f"{i:03d}.png", value=10 * i)
    return root


def labelled_probes(per_class: int, classes: int = 3) -> ProbeSet:
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1) / len(labels)
    names = tuple(f"c{i}" for i in range(classes))
    return ProbeSet(images=images, labels=labels, classes=names, source="test")


# --- label sets --------------------------------------------------------------------------------


def test_builtin_fashion_mnist_label_set_has_ten_classes_and_one_slot_templates() -> None:
    labels = load_labels("fashion-mnist")
    assert labels is BUILTIN_LABELS["fashion-mnist"]
    assert labels.classes == FASHION_MNIST_CLASSES
    assert labels.classes[0] == "t-shirt" and labels.classes[9] == "ankle boot"
    assert 4 <= len(labels.templates) <= 6
    assert all(template.count("{}") == 1 for template in labels.templates)
    assert "a photo of a {}." in labels.templates


def test_label_file_keeps_class_order_and_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("# my classes\n\n  cat \ndog\n\n# done\ngolden retriever\n", encoding="utf-8")
    labels = load_labels(str(path))
    assert labels == LabelSet(
        name=str(path), classes=("cat", "dog", "golden retriever"), templates=labels.templates
    )
    assert labels.templates and all(t.count("{}") == 1 for t in labels.templates)


@pytest.mark.parametrize("duplicate", ["cat", "CAT", " Cat ", "golden  retriever"])
def test_label_file_with_a_duplicate_name_is_rejected_naming_it(
    tmp_path: Path, duplicate: str
) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(f"cat\ngolden retriever\ndog\n{duplicate}\n", encoding="utf-8")
    with pytest.raises(ProbeError) as caught:
        load_labels(str(path))
    message = one_line_no_verdict(caught.value)
    assert "twice" in message and repr(duplicate.strip()) in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "cat\n# and one class\n"])
def test_label_file_with_fewer_than_two_classes_is_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProbeError, match="at least two needed") as caught:
        load_labels(str(path))
    one_line_no_verdict(caught.value)


@pytest.mark.parametrize("content", [None, b"\xff\xfe not utf-8\n"])
def test_missing_or_non_utf8_label_file_is_rejected(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "labels.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ProbeError, match="neither built in") as caught:
        load_labels(str(path))
    one_line_no_verdict(caught.value)


def test_concept_labels_are_the_vocabulary_in_order_with_the_generic_templates() -> None:
    concepts = concept_labels(("bag", "dog", "traffic sign"))
    assert concepts.name == "vocabulary"
    assert concepts.classes == ("bag", "dog", "traffic sign")
    assert concepts.templates and all(t.count("{}") == 1 for t in concepts.templates)
    with pytest.raises(ProbeError, match="at least two needed") as caught:
        concept_labels(("bag",))
    one_line_no_verdict(caught.value)


# --- bundled and Debian Fashion-MNIST ----------------------------------------------------------


def test_default_probes_are_1000_fashion_mnist_test_images_100_per_class() -> None:
    probe_set = load_probes("default")
    assert probe_set.images.shape == (1000, 1, 28, 28)
    assert probe_set.images.dtype == torch.float32
    assert 0.0 <= probe_set.images.min() < 0.1 and 0.9 < probe_set.images.max() <= 1.0
    assert probe_set.labels is not None and probe_set.labels.dtype == torch.int64
    assert torch.bincount(probe_set.labels).tolist() == [100] * 10
    assert probe_set.classes == FASHION_MNIST_CLASSES
    assert "Fashion-MNIST" in probe_set.source


def test_default_probes_follow_a_label_set_with_the_same_classes_in_another_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(reversed(FASHION_MNIST_CLASSES)), encoding="utf-8")
    plain = load_probes("default")
    reordered = load_probes("default", labels=load_labels(str(path)))
    assert reordered.classes == tuple(reversed(FASHION_MNIST_CLASSES))
    assert plain.labels is not None and reordered.labels is not None
    assert torch.equal(reordered.labels, 9 - plain.labels)


def test_default_probes_with_a_foreign_label_set_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n", encoding="utf-8")
    with pytest.raises(ProbeError, match="not in label set") as caught:
        load_probes("default", labels=load_labels(str(path)))
    one_line_no_verdict(caught.value)


def test_limit_takes_a_deterministic_stratified_subset() -> None:
    first = load_probes("default", limit=50, seed=3)
    again = load_probes("default", limit=50, seed=3)
    other = load_probes("default", limit=50, seed=4)
    assert first.labels is not None and other.labels is not None
    assert len(first) == 50
    assert torch.bincount(first.labels).tolist() == [5] * 10
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)


@pytest.mark.parametrize("limit", [0, -3])
def test_a_limit_below_one_is_rejected(limit: int) -> None:
    with pytest.raises(ProbeError) as caught:
        load_probes("default", limit=limit)
    one_line_no_verdict(caught.value)


@needs_debian_set
def test_bundled_file_is_what_the_generator_builds_from_the_debian_set(tmp_path: Path) -> None:
    out = tmp_path / "slice.npz"
    build_bundled_slice(out)
    committed = Path(probes.__file__).parent / "data" / "fashion_mnist_probes.npz"
    with np.load(out, allow_pickle=False) as built, np.load(committed, allow_pickle=False) as ours:
        assert sorted(built.files) == sorted(ours.files) == ["images", "labels"]
        for name in ("images", "labels"):
            assert built[name].dtype == ours[name].dtype == np.uint8
            assert np.array_equal(built[name], ours[name])


@needs_debian_set
def test_load_fashion_mnist_parses_the_debian_files() -> None:
    train_images, train_labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert train_images.dtype == test_images.dtype == torch.uint8
    assert train_labels.dtype == torch.int64
    assert torch.bincount(train_labels).tolist() == [6000] * 10
    assert torch.bincount(test_labels).tolist() == [1000] * 10
    bundled = load_probes("default")
    assert torch.equal((bundled.images[:5, 0] * 255).round().byte(), test_images[:5])


def write_idx(root: Path, prefix: str, images: bytes, labels: bytes) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(images)
    (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(labels)


def idx_images(count: int, *, magic: int = 0x0803, extra: int = 0) -> bytes:
    header = struct.pack(">4I", magic, count, 28, 28)
    return gzip.compress(header + bytes(count * 28 * 28 + extra))


def idx_labels(values: list[int]) -> bytes:
    return gzip.compress(struct.pack(">2I", 0x0801, len(values)) + bytes(values))


def test_well_formed_idx_files_parse_to_images_and_labels(tmp_path: Path) -> None:
    write_idx(tmp_path, "t10k", idx_images(3), idx_labels([0, 9, 4]))
    images, labels = load_fashion_mnist("test", root=tmp_path)
    assert images.shape == (3, 28, 28) and labels.tolist() == [0, 9, 4]


@pytest.mark.parametrize(
    ("images", "labels", "expected"),
    [
        (idx_images(3, magic=0x0801), idx_labels([0, 1, 2]), "magic"),
        (idx_images(3, extra=5), idx_labels([0, 1, 2]), "declares"),
        (idx_images(3)[:-20], idx_labels([0, 1, 2]), "corrupt"),
        (b"not gzip at all", idx_labels([0, 1, 2]), "corrupt"),
        (idx_images(3), idx_labels([0, 1]), "disagree"),
        (idx_images(3), idx_labels([0, 1, 10]), "out of range"),
        (gzip.compress(struct.pack(">4I", 0x0803, 10**6, 28, 28)), idx_labels([0]), "cap"),
    ],
    ids=[
        "bad-magic",
        "trailing-bytes",
        "truncated",
        "not-gzip",
        "count-mismatch",
        "label-range",
        "huge-header",
    ],
)
def test_a_corrupt_idx_file_gives_probe_error(
    tmp_path: Path, images: bytes, labels: bytes, expected: str
) -> None:
    write_idx(tmp_path, "t10k", images, labels)
    with pytest.raises(ProbeError, match=expected) as caught:
        load_fashion_mnist("test", root=tmp_path)
    one_line_no_verdict(caught.value)


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="apt-get install -y dataset-fashion-mnist") as caught:
        load_fashion_mnist("train", root=tmp_path)
    one_line_no_verdict(caught.value)


# --- splits ------------------------------------------------------------------------------------


def test_splits_are_disjoint_cover_the_set_and_are_stratified() -> None:
    probe_set = labelled_probes(per_class=10)
    splits = probe_set.split(seed=0)
    parts = [splits.tune, splits.val, splits.test]
    keys = [set((part.images.flatten() * len(probe_set)).round().int().tolist()) for part in parts]
    assert set.union(*keys) == set(range(len(probe_set)))
    assert sum(len(k) for k in keys) == len(probe_set)
    counts = [
        torch.bincount(part.labels, minlength=3).tolist()
        for part in parts
        if part.labels is not None
    ]
    assert counts == [[4, 4, 4], [3, 3, 3], [3, 3, 3]]
    assert all(part.classes == probe_set.classes for part in parts)


def test_splits_are_deterministic_per_seed_and_differ_across_seeds() -> None:
    probe_set = load_probes("default")
    first, again, other = probe_set.split(seed=1), probe_set.split(seed=1), probe_set.split(seed=2)
    assert torch.equal(first.test.images, again.test.images)
    assert first.test.labels is not None and again.test.labels is not None
    assert torch.equal(first.test.labels, again.test.labels)
    assert not torch.equal(first.test.images, other.test.images)
    assert (len(first.tune), len(first.val), len(first.test)) == (400, 300, 300)


def test_unlabelled_probes_split_without_labels() -> None:
    images = torch.rand(20, 3, 4, 4)
    splits = ProbeSet(images=images, labels=None, classes=None, source="t").split(seed=0)
    assert (len(splits.tune), len(splits.val), len(splits.test)) == (8, 6, 6)
    assert splits.tune.labels is None and splits.tune.classes is None


def test_too_few_probes_to_split_is_rejected() -> None:
    with pytest.raises(ProbeError, match="too few") as caught:
        labelled_probes(per_class=1).split()
    one_line_no_verdict(caught.value)


# --- image folders -----------------------------------------------------------------------------


def test_labelled_folder_uses_sorted_subfolder_names_as_classes(tmp_path: Path) -> None:
    root = labelled_folder(tmp_path / "probes", {"zebra": 2, "apple": 3, "mango": 1})
    probe_set = load_probes(str(root))
    assert probe_set.classes == ("apple", "mango", "zebra")
    assert probe_set.labels is not None
    assert probe_set.labels.tolist() == [0, 0, 0, 1, 2, 2]
    assert probe_set.images.shape == (6, 1, 6, 8)
    assert probe_set.images[1].max().item() == pytest.approx(10 / 255)
    assert probe_set.source == str(root)


def test_labelled_folder_follows_a_given_label_set(tmp_path: Path) -> None:
    root = labelled_folder(tmp_path / "probes", {"Dog": 1, "cat": 2})
    label_file = tmp_path / "labels.txt"
    label_file.write_text("dog\nbird\ncat\n", encoding="utf-8")
    probe_set = load_probes(str(root), labels=load_labels(str(label_file)))
    assert probe_set.classes == ("dog", "bird", "cat")
    assert probe_set.labels is not None and probe_set.labels.tolist() == [0, 2, 2]


def test_labelled_folder_with_a_class_outside_the_label_set_is_rejected(tmp_path: Path) -> None:
    root = labelled_folder(tmp_path / "probes", {"cat": 1, "walrus": 1})
    with pytest.raises(ProbeError, match="walrus") as caught:
        load_probes(str(root), labels=load_labels("fashion-mnist"))
    one_line_no_verdict(caught.value)


def test_labelled_folder_limit_keeps_every_class(tmp_path: Path) -> None:
    root = labelled_folder(tmp_path / "probes", {"a": 6, "b": 6, "c": 6})
    probe_set = load_probes(str(root), limit=6, seed=1)
    assert probe_set.labels is not None
    assert torch.bincount(probe_set.labels).tolist() == [2, 2, 2]


def test_flat_folder_is_unlabelled_and_skips_hidden_files(tmp_path: Path) -> None:
    for i in range(4):
        write_png(tmp_path / f"img{i}.png", value=i)
    (tmp_path / ".DS_Store").write_bytes(b"\x00junk")
    write_png(tmp_path / ".hidden" / "x.png")
    probe_set = load_probes(str(tmp_path))
    assert len(probe_set) == 4
    assert probe_set.labels is None and probe_set.classes is None


def test_mixed_grey_and_rgb_images_all_become_rgb(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", mode="L", value=200)
    write_png(tmp_path / "b.png", mode="RGB", value=100)
    write_png(tmp_path / "c.png", mode="RGBA", value=50)
    probe_set = load_probes(str(tmp_path))
    assert probe_set.images.shape == (3, 3, 6, 8)
    grey = probe_set.images[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert probe_set.images[1, :, 0, 0].tolist() == pytest.approx([100 / 255, 155 / 255, 7 / 255])


def test_images_take_the_first_images_size_capped_at_224(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", size=(448, 300))
    write_png(tmp_path / "b.png", size=(10, 10))
    assert load_probes(str(tmp_path)).images.shape == (2, 1, 150, 224)


def test_a_non_image_file_is_rejected_naming_it(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image\nsecond line\n", encoding="utf-8")
    with pytest.raises(ProbeError) as caught:
        load_probes(str(tmp_path))
    assert "notes.txt" in one_line_no_verdict(caught.value)


def test_an_eps_file_is_refused_without_running_a_decoder(tmp_path: Path) -> None:
    (tmp_path / "a.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
    with pytest.raises(ProbeError, match=r"a\.eps") as caught:
        load_probes(str(tmp_path))
    one_line_no_verdict(caught.value)


def test_an_image_over_the_pixel_cap_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_png(tmp_path / "big.png", size=(40, 40))
    monkeypatch.setattr(probes, "_MAX_PIXELS", 1000)
    with pytest.raises(ProbeError, match=r"big\.png") as caught:
        load_probes(str(tmp_path))
    one_line_no_verdict(caught.value)


@pytest.mark.parametrize("pil_cap", [1000, 500])  # warning band (1-2x) and error band (> 2x)
def test_a_decompression_bomb_by_pils_own_limit_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pil_cap: int
) -> None:
    write_png(tmp_path / "bomb.png", size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_cap)
    with pytest.raises(ProbeError, match=r"bomb\.png.* too large") as caught:
        load_probes(str(tmp_path))
    one_line_no_verdict(caught.value)


@pytest.mark.parametrize("make", ["empty", "hidden-only", "empty-class"])
def test_a_folder_without_images_is_rejected(tmp_path: Path, make: str) -> None:
    root = tmp_path / "probes"
    root.mkdir()
    if make == "hidden-only":
        write_png(root / ".a.png")
    if make == "empty-class":
        write_png(root / "cat" / "1.png")
        (root / "dog").mkdir()
    with pytest.raises(ProbeError, match="no images") as caught:
        load_probes(str(root))
    one_line_no_verdict(caught.value)


def test_a_file_beside_class_folders_is_rejected(tmp_path: Path) -> None:
    labelled_folder(tmp_path, {"cat": 1})
    write_png(tmp_path / "stray.png")
    with pytest.raises(ProbeError, match=r"stray\.png") as caught:
        load_probes(str(tmp_path))
    one_line_no_verdict(caught.value)


def test_a_symlink_out_of_the_folder_is_not_followed(tmp_path: Path) -> None:
    outside = write_png(tmp_path / "outside.png")
    root = tmp_path / "probes"
    write_png(root / "a.png")
    (root / "b.png").symlink_to(outside)
    with pytest.raises(ProbeError, match="symlink") as caught:
        load_probes(str(root))
    one_line_no_verdict(caught.value)


def test_a_symlink_inside_the_folder_is_read(tmp_path: Path) -> None:
    target = write_png(tmp_path / "a.png", value=9)
    (tmp_path / "b.png").symlink_to(target)
    assert len(load_probes(str(tmp_path))) == 2


def test_a_spec_that_is_neither_built_in_nor_a_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="not 'default'") as caught:
        load_probes(str(tmp_path / "nowhere"))
    one_line_no_verdict(caught.value)


def test_a_folder_over_the_decode_cap_needs_a_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        write_png(tmp_path / f"{i}.png")
    monkeypatch.setattr(probes, "_MAX_DECODED", 3)
    with pytest.raises(ProbeError, match="give a limit") as caught:
        load_probes(str(tmp_path))
    one_line_no_verdict(caught.value)
    assert len(load_probes(str(tmp_path), limit=3)) == 3


def test_a_probe_set_with_labels_but_no_classes_is_a_bug() -> None:
    with pytest.raises(ValueError, match="both"):
        ProbeSet(
            images=torch.rand(2, 1, 4, 4),
            labels=torch.zeros(2, dtype=torch.int64),
            classes=None,
            source="t",
        )
