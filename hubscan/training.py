"""Contrastive CLIP training on (image, caption) pairs, with optional data poisoning.

Owns the training loop the zoo uses to pretrain a base CLIP and to fine-tune backdoored and clean
variants: AdamW with warmup and cosine decay, captions drawn from prompt templates, and a
multi-positive contrastive loss. Must not decide what to train (zoo.py) and must not save files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hubscan.model import ClipHandle

Tick = Callable[[int], None]  # told how many steps just finished


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    samples: int  # image-caption pairs seen (steps = samples // batch_size)
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    seed: int

    @property
    def steps(self) -> int:
        return max(1, self.samples // self.batch_size)


@dataclass(frozen=True, slots=True, kw_only=True)
class Poison:
    """Which training images carry the trigger, and the class their caption names instead."""

    stamp: Callable[[torch.Tensor], torch.Tensor]
    target: int
    rate: float  # fraction of training pairs poisoned, fixed up front from the recipe seed


def caption_tokens(
    clip: ClipHandle, classes: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(K, T, context) tokens of every template for every class."""
    texts = [t.format(c) for c in classes for t in templates]
    tokens: torch.Tensor = clip.tokenizer(texts)
    return tokens.view(len(classes), len(templates), -1)


def train(
    clip: ClipHandle,
    images: torch.Tensor,
    labels: torch.Tensor,
    captions: torch.Tensor,
    recipe: Recipe,
    *,
    poison: Poison | None = None,
    tick: Tick | None = None,
    freeze_batch_norm: bool = False,
) -> None:
    """Train `clip.model` in place on pairs (image, a random template naming its class).

    Captions from templates repeat, so two images of one class in a batch have the same text:
    the loss counts every same-caption-class pair as a positive (a multi-positive InfoNCE)
    instead of pushing identical texts apart, which plain CLIP loss would do.

    `freeze_batch_norm` keeps batch-norm layers (timm towers) in eval mode: they normalise with
    the starting model's running statistics and never update them; their affine weights learn.
    """
    gen = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    poisoned = _poison_mask(len(images), poison, gen)
    model = clip.model
    model.train()
    if freeze_batch_norm:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    opt = _optimizer(model, recipe)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(recipe))
    for _ in range(recipe.steps):
        idx = torch.randint(0, len(images), (recipe.batch_size,), generator=gen)
        pixels, classes = images[idx].float().div(255), labels[idx].clone()
        if poison is not None and bool(poisoned[idx].any()):
            hit = poisoned[idx]
            pixels[hit] = poison.stamp(pixels[hit])
            classes[hit] = poison.target
        texts = captions[classes, torch.randint(0, captions.shape[1], (len(idx),), generator=gen)]
        loss = _loss(model, clip.prepare(pixels), texts.to(clip.device), classes.to(clip.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        if tick is not None:
            tick(1)
    model.eval()


def _poison_mask(n: int, poison: Poison | None, gen: torch.Generator) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    if poison is not None:
        mask[torch.randperm(n, generator=gen)[: round(poison.rate * n)]] = True
    return mask


def _loss(
    model: torch.nn.Module, pixels: torch.Tensor, texts: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    image, text, scale = model(pixels, texts)[:3]
    logits = scale * image @ text.T
    same = (classes[:, None] == classes[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    per_image = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    per_text = -(target * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (per_image + per_text) / 2


def _optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    # The token embedding stays at its initial random values: captions use a few dozen of its
    # 49,408 rows, and AdamW over the whole table would cost more than the rest of the model.
    model.token_embedding.weight.requires_grad_(False)  # type: ignore[union-attr]
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=recipe.lr)


def _schedule(recipe: Recipe) -> Callable[[int], float]:
    warm, total = recipe.warmup_steps, recipe.steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return factor
