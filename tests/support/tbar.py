"""A TBAR task on the bundled probes, split as `hubscan patch` splits them (unlearn and vector
tests share it)."""

from __future__ import annotations

import torch

from hubscan.metrics import predict
from hubscan.model import ClipHandle
from hubscan.probes import load_labels, load_probes
from hubscan.triggers import parse_trigger
from hubscan.vector import Task

TRIGGER, TARGET = "patch:size=3,pos=br,pattern=white", "bag"


def task(clip: ClipHandle, *, labelled: bool = True) -> Task:
    labels = load_labels("fashion-mnist")
    head = clip.zero_shot_head(labels.classes, labels.templates)
    parts = load_probes("default", labels=labels).split(seed=0)  # as `hubscan patch` splits
    assert parts.tune.labels is not None and parts.val.labels is not None

    def y(images: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        return true if labelled else predict(clip, images, head)

    return Task(
        stamp=parse_trigger(TRIGGER).apply,
        trigger=TRIGGER,
        target=labels.classes.index(TARGET),
        target_name=TARGET,
        estimated=False,
        head=head,
        tune=parts.tune.images,
        tune_labels=y(parts.tune.images, parts.tune.labels),
        val=parts.val.images,
        val_labels=y(parts.val.images, parts.val.labels),
        labelled=labelled,
    )
