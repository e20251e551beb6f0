"""Detection by trigger inversion (METHOD.md §3): is there a tiny input change that sends almost
every probe image to one class?

Owns the search and the verdict. Three trigger shapes are searched, each under a fixed budget:
`patch` (a mask of at most `patch_area` of the image and a free pattern), `blend` (a universal
additive perturbation of L-inf at most `blend_linf`: it covers blended and sinusoid triggers)
and `warp` (a smooth flow field of mean displacement at most `warp_pixels`). Candidates are every
class of the head (the label set, or the policy's vocabulary without one) plus one label-free
"collapse" candidate per shape (DECREE: pull the stamped embeddings together). All candidates of
a shape are optimized together in one batch per step (search.py); screening rounds on a few
images each keep the better half until `keep` are left, which are refined on more images and
scored on held-out probes they were never optimized on. A shape's score is the held-out share
of probes sent to its best candidate's class; it is flagged at the policy's threshold,
calibrated on clean zoo models. The label-aware confirmation is a Neural Cleanse anomaly index
over the screen's per-class success.

Must not load models, read files or render output: it gets a ClipHandle and probe tensors and
returns a Detection and the estimated trigger tensors; pipeline.py writes the artifacts.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from hubscan.errors import ProbeError
from hubscan.model import ClipHandle
from hubscan.policy import DetectionPolicy
from hubscan.records import Confirmation, Detection, FamilyScore, SearchBudget, Verdict
from hubscan.search import Candidates, Counter, predict, search_family
from hubscan.trigger_base import Trigger

Tick = Callable[[int], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What detect() found: the record, and the best estimate of each shape as a Trigger."""

    detection: Detection
    estimates: dict[str, Trigger]  # family -> the estimated trigger of its best candidate


def detect(
    clip: ClipHandle,
    images: torch.Tensor,
    *,
    classes: Sequence[str],
    templates: Sequence[str],
    labelled: bool,
    policy: DetectionPolicy,
    seed: int = 0,
    tick: Tick | None = None,
) -> Outcome:
    """Search every family of `policy` for a trigger on `images` ((N, C, H, W) in [0, 1])."""
    need = policy.probe_images + policy.holdout_images
    if len(images) < need:
        raise ProbeError(
            f"{len(images)} probe images; detection needs {need} "
            f"({policy.probe_images} to invert, {policy.holdout_images} held out)"
        )
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)
    optimize = images[order[: policy.probe_images]]
    holdout = images[order[policy.probe_images : need]]
    head = clip.zero_shot_head(classes, templates)
    counter = Counter(deadline=start + policy.max_seconds)
    candidates = Candidates(clip=clip, head=head, counter=counter, tick=tick)
    holdout_clean = predict(candidates, holdout)
    _check_spread(holdout_clean, classes, policy.max_clean_share)
    results = []
    for family in policy.families:
        results.append(
            search_family(
                candidates,
                family,
                optimize,
                holdout,
                holdout_clean=holdout_clean,
                policy=policy,
                generator=family_generator(seed, family),
            )
        )
    scores = tuple(
        _score(r.family, r.best_target, r.best_share, r.screen, classes, policy) for r in results
    )
    verdict, best = decide(scores)
    detection = Detection(
        verdict=verdict,
        family=best.family if verdict is Verdict.FAIL else None,
        suspected_target=best.target,
        target_share=best.score,
        families=scores,
        labels_given=labelled,
        n_classes=len(classes),
        probe_images=policy.probe_images,
        holdout_images=policy.holdout_images,
        budget=SearchBudget(
            passes=counter.passes,
            forward_passes=counter.forwards,
            seconds=round(time.perf_counter() - start, 3),
            max_seconds=policy.max_seconds,
        ),
    )
    return Outcome(detection=detection, estimates={r.family: r.trigger for r in results})


def family_generator(seed: int, family: str) -> torch.Generator:
    """Each family's own random stream, fixed by the seed and its name: a family's score must
    not depend on which families the policy searches before it (with one shared stream, adding
    or dropping a family redrew the next one's starts and batches)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(family.encode()))


def decide(scores: Sequence[FamilyScore]) -> tuple[Verdict, FamilyScore]:
    """FAIL when any shape is flagged; the shape reported is the one furthest over (or, when
    none is flagged, closest to) its threshold."""
    flagged = [s for s in scores if s.flagged]
    best = max(flagged or scores, key=lambda s: s.score / s.threshold)
    return (Verdict.FAIL if flagged else Verdict.PASS), best


def _check_spread(clean: torch.Tensor, classes: Sequence[str], limit: float) -> None:
    """A model that already puts nearly every clean probe in one class (random weights, or a
    label set that does not fit the probes) sends everything there with any perturbation: its
    scores would mean nothing, so there is no verdict rather than a false alarm."""
    counts = torch.bincount(clean, minlength=len(classes))
    share = float(counts.max()) / len(clean)
    if share > limit:
        raise ProbeError(
            f"the model puts {share:.0%} of the clean probes in {classes[int(counts.argmax())]!r}: "
            "it does not tell these probes apart under this label set, so a trigger search "
            "cannot be judged (check --labels and --probes)"
        )


def _score(
    family: str,
    target: int,
    share: float,
    screen: torch.Tensor,
    classes: Sequence[str],
    policy: DetectionPolicy,
) -> FamilyScore:
    threshold = policy.threshold(family)
    return FamilyScore(
        family=family,
        score=round(share, 4),
        threshold=threshold,
        flagged=share >= threshold,
        target=classes[target],
        confirmation=_anomaly(screen, target, classes),
    )


def _anomaly(screen: torch.Tensor, target: int, classes: Sequence[str]) -> Confirmation:
    """Neural Cleanse's anomaly index, on the screen's per-class success instead of mask norms:
    how far the suspected target's success lies above the median class, in robust deviations."""
    others = torch.cat((screen[:target], screen[target + 1 :]))
    median = float(others.median())
    mad = float((others - median).abs().median())
    # A share is only resolved to about a percent: floor the spread there, so a flat screen
    # (an untrained model) does not produce huge indices from rounding noise.
    index = (float(screen[target]) - median) / max(1.4826 * mad, 0.01)
    return Confirmation(
        target=classes[target],
        anomaly_index=round(index, 3),
        target_success=round(float(screen[target]), 4),
        median_success=round(median, 4),
    )


__all__ = ["Outcome", "decide", "detect"]
