"""pipeline_patch.py: what reaches TBAR after the audit, on a real zoo model and the bundled
probes (the whole command is tests/integration/test_cli_patch.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from hubscan import pipeline_patch
from hubscan.estimates import AdditiveTrigger, InvertedTrigger
from hubscan.model import load_clip
from hubscan.policy import load_policy
from hubscan.probes import load_labels, load_probes
from hubscan.records import Timing


def test_the_audit_s_additive_estimate_reaches_tbar_refit_and_a_patch_estimate_as_found(
    quick_zoo: Path,
) -> None:
    policy = load_policy("default")
    policy = dataclasses.replace(
        policy, unlearning=dataclasses.replace(policy.unlearning, refit_steps=12)
    )
    labels = load_labels("fashion-mnist")
    probes = load_probes("default", labels=labels, limit=policy.unlearning.probe_images)
    clip = load_clip(quick_zoo / "blend-noise-coat")
    inputs = pipeline_patch._inputs(clip, labels, True, probes, policy, 0)
    box = torch.full((1, 28, 28), 0.08)  # a saturated audit estimate
    found = pipeline_patch._Target(
        trigger=AdditiveTrigger("in-memory", box), spec="inverted:file=t", target=4, estimated=True
    )
    bars: list[tuple[str, int]] = []

    def bar(name: str, total: int) -> Callable[[int], None]:
        bars.append((name, total))
        return lambda n: None

    timings: list[Timing] = []
    removal = pipeline_patch._refit(found, inputs, policy, 0, (timings, None, bar))
    assert (removal.spec, removal.target, removal.estimated) == ("inverted:file=t", 4, True)
    assert isinstance(removal.trigger, AdditiveTrigger)
    assert not torch.equal(removal.trigger.delta, box)
    assert bars == [("refit", 12)] and [t.stage for t in timings] == ["refit"]

    patch = InvertedTrigger("in-memory", torch.zeros(28, 28), torch.zeros(1, 28, 28))
    as_found = dataclasses.replace(found, trigger=patch)
    assert pipeline_patch._refit(as_found, inputs, policy, 0, (timings, None, bar)) is as_found
    assert len(bars) == len(timings) == 1  # no bar and no time for a stage that does nothing
