"""ClipHandle: an open_clip model, its tokenizer and its pixel pipeline, loaded from a snapshot.

Owns loading (safetensors only, strictly: every key and shape must match the architecture in
open_clip_config.json), the pixel pipeline (resize to the model's resolution, grey -> RGB,
normalize), batched encoding and the zero-shot head. The one live object between stages. Must
never unpickle: weights come from safetensors, and loading is refused while the static scan
blocks it. Wraps open_clip/safetensors errors once, here, as ModelError/WeightsMismatch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hubscan.atomic import write_atomic, write_text_atomic
from hubscan.errors import ModelError, RefusedToLoad, WeightsMismatch
from hubscan.records import ScanReport, Severity

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
_SHOW_KEYS = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipHandle:
    model: Any  # open_clip.CLIP (or CustomTextCLIP); untyped library
    tokenizer: Any
    config: Mapping[str, Any]  # the whole open_clip_config.json
    image_size: int
    mean: torch.Tensor  # (1, 3, 1, 1)
    std: torch.Tensor
    device: torch.device
    source: str  # where the weights came from, for reports
    channels_last: bool = False  # a convolutional image tower, run in channels-last layout

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0,1] pixels (N, 1|3, H, W) -> the model's input: resized, RGB, normalized."""
        x = pixels.to(self.device, torch.float32)
        if x.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def encode_images(self, pixels: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
        """L2-normalized image embeddings, no gradient, in batches."""
        chunks = []
        with torch.no_grad():
            for start in range(0, len(pixels), batch_size):
                feats = self.model.encode_image(self.prepare(pixels[start : start + batch_size]))
                chunks.append(F.normalize(feats.float(), dim=-1))
        return torch.cat(chunks)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        with torch.no_grad():
            tokens = self.tokenizer(list(texts)).to(self.device)
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def zero_shot_head(self, classes: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """(K, D): per class, the normalized mean of its normalized template embeddings."""
        texts = [t.format(c) for c in classes for t in templates]
        emb = self.encode_texts(texts).view(len(classes), len(templates), -1).mean(dim=1)
        return F.normalize(emb, dim=-1)

    def logits(self, pixels: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        scale = self.model.logit_scale.exp().detach()
        out: torch.Tensor = scale * self.encode_images(pixels) @ head.T
        return out


def refuse_if_blocked(scan: ScanReport, fail_on: Severity) -> None:
    blocking = scan.blocking(fail_on)
    if blocking:
        codes = ", ".join(sorted({f.code for f in blocking}))
        raise RefusedToLoad(f"the static scan blocks loading {scan.snapshot.repo_id}: {codes}")


def load_clip(root: Path, *, device: str = "cpu", seed: int = 0) -> ClipHandle:
    """Build the architecture from root/open_clip_config.json and load root's safetensors
    weights strictly. The caller has scanned `root` (pipeline: refuse_if_blocked first)."""
    import open_clip

    weights = root / WEIGHTS_NAME
    config = _read_config(root)
    if not weights.is_file():
        raise ModelError(f"no {WEIGHTS_NAME} in {root}: hubscan loads safetensors weights only")
    torch.manual_seed(seed)
    # open_clip logs through the root logger, and warns that no pretrained weights were loaded
    # (we load them next): keep hubscan's stderr to what the user needs.
    logging.disable(logging.WARNING)
    try:
        model = open_clip.create_model(
            f"local-dir:{root}",
            load_weights=False,
            device=device,
            pretrained_image=False,
            pretrained_text=False,
        )
        tokenizer = open_clip.get_tokenizer(f"local-dir:{root}")
    except (ValueError, KeyError, TypeError, RuntimeError, OSError) as err:
        raise ModelError(f"open_clip cannot build the model in {root}: {err}") from err
    finally:
        logging.disable(logging.NOTSET)
    load_weights_strict(model, weights)
    model.eval()
    return _handle(model, tokenizer, config, torch.device(device), str(weights))


def _read_config(root: Path) -> dict[str, Any]:
    try:
        config = json.loads((root / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot read {CONFIG_NAME} in {root}: {err}") from err
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise ModelError(f"{CONFIG_NAME} in {root} has no model_cfg object")
    return config


def load_weights_strict(model: torch.nn.Module, path: Path) -> None:
    """Every parameter/buffer key present with the same shape, nothing extra; else WeightsMismatch
    naming the first keys. Values are cast to the model's dtypes (a fp16 file loads into fp32)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ModelError(f"cannot read {path.name}: {err}") from err
    expected = model.state_dict()
    problems = _mismatches(expected, state)
    if problems:
        raise WeightsMismatch(f"{path.name} does not fit the architecture: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def _mismatches(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> list[str]:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    shapes = sorted(
        f"{k} {tuple(got[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(got)
        if got[k].shape != expected[k].shape
    )
    out = []
    for label, keys in (("missing", missing), ("unexpected", extra), ("shape", shapes)):
        if keys:
            more = f" (+{len(keys) - _SHOW_KEYS} more)" if len(keys) > _SHOW_KEYS else ""
            out.append(f"{label} {len(keys)}: " + ", ".join(keys[:_SHOW_KEYS]) + more)
    return out


def _handle(
    model: Any, tokenizer: Any, config: Mapping[str, Any], device: torch.device, source: str
) -> ClipHandle:
    size = model.visual.image_size
    image_size = int(size[0] if isinstance(size, tuple | list) else size)
    mean = torch.tensor(model.visual.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.image_std, device=device).view(1, 3, 1, 1)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.visual.modules())
    channels_last = convs > 1  # a ViT has one (its patch embedding)
    if channels_last:
        # CPU convolutions run ~1.4x faster in this layout (MobileNetV2 tower at 64 px,
        # forward + backward, 1 thread); the same model, and saved weights stay contiguous.
        model.visual.to(memory_format=torch.channels_last)
    return ClipHandle(
        model=model,
        tokenizer=tokenizer,
        config=config,
        image_size=image_size,
        mean=mean,
        std=std,
        device=device,
        source=source,
        channels_last=channels_last,
    )


def handle_from_model(
    model: Any, tokenizer: Any, config: Mapping[str, Any], *, source: str = "memory"
) -> ClipHandle:
    """Wrap a model built in memory (the zoo while training) in the same pixel pipeline."""
    return _handle(model, tokenizer, config, next(model.parameters()).device, source)


def save_clip(model: torch.nn.Module, config: Mapping[str, Any], out: Path) -> Path:
    """open_clip layout: open_clip_config.json + open_clip_model.safetensors, each written
    atomically, so a crash never leaves a half-written file under its final name."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    write_atomic(out / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp)))
    write_text_atomic(out / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return out
