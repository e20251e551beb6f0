"""What every trigger shares: the Trigger protocol, the canonical spec of a trigger's fields, and
the pixel helpers (input checks, resizing, channel conversion) the families and the detector's
estimates both use. Must not know any family, model or file format.
"""

from __future__ import annotations

from dataclasses import Field, fields
from typing import Any, ClassVar, NoReturn, Protocol

import torch
import torch.nn.functional as F

from hubscan.errors import TriggerError

_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601, as PIL's "L" mode: colour -> grey


class Trigger(Protocol):
    """What every family offers; `spec` is canonical and round-trips through parse_trigger."""

    @property
    def spec(self) -> str: ...
    @property
    def family(self) -> str: ...
    def apply(self, images: torch.Tensor) -> torch.Tensor: ...


class Spec:
    """The canonical spec: every compared field in order; str(float) is exact, so it round-trips."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # every subclass is a dataclass
    family: ClassVar[str]

    @property
    def spec(self) -> str:
        pairs = (f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.compare)
        return f"{self.family}:" + ",".join(pairs)


def check_images(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
        shape = f"{images.dtype} {tuple(images.shape)}"
        raise TriggerError(f"trigger input must be a float (N, C, H, W), C = 1 or 3; got {shape}")
    return images


def resize(batch: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if tuple(batch.shape[-2:]) == (height, width):
        return batch
    # antialias: a large image or mask shrunk to a few pixels must not alias
    return F.interpolate(batch, size=(height, width), mode="bilinear", antialias=True)


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """(C, H, W) -> (channels, H, W): grey repeats into colour, colour turns grey by luma."""
    if image.shape[0] == channels:
        return image
    if channels == 3:
        return image.expand(3, -1, -1)
    return (image * _LUMA.to(image).view(3, 1, 1)).sum(0, keepdim=True)


def fail(source: str, problem: str) -> NoReturn:
    raise TriggerError(f"invalid trigger {source!r}: {problem}")
