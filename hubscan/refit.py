"""The estimate TBAR removes (METHOD.md §3.2, §4): the audit's global estimate refit to the
smallest perturbation of its kind that still sends the tune images to the suspected target.

The audit searches every shape under a fixed budget, so that its scores compare across models
(blend: an L-inf box; warp: a capped mean displacement). Inside the box the optimizer spends
all it may: the additive estimate is nearly a ±blend_linf sign pattern, mostly adversarial
noise rather than the trigger. TBAR learns its vector from images stamped with the estimate,
so it learned to remove that noise too, and the estimate's attack success fell to zero well
before the true trigger's. What the backdoor makes cheap is what survives a size penalty:
Neural Cleanse's schedule minimizes cross-entropy to the target + λ·size, with λ raised 10 %
after a batch that reached `refit_share` and lowered 10 % after one that did not, so the
estimate shrinks to the edge of the target's reach (benchmarks/explore/estimate_refit.txt).

Size is the mean squared change: of the pixels for an additive estimate (in units of 0.1 of
the pixel range), of the flow for a warp (in units of 3 px, the flow kept on the audit's
coarse grid so it stays smooth). A patch estimate (mask + pattern, already at the audit's
small area) is returned as it is.

Must not choose the target, learn the vector or judge the patch; leaves the model's weights
and gradient flags as it found them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hubscan.estimates import AdditiveTrigger, FlowTrigger
from hubscan.model import ClipHandle
from hubscan.policy import UnlearningPolicy
from hubscan.shapes import WARP_GRID
from hubscan.trigger_base import Trigger

_ADDITIVE_UNIT = 0.1  # of the pixel range: an RMS change of 0.1 costs λ
_FLOW_UNIT = 3.0  # pixels: an RMS displacement of 3 px costs λ
_SCHEDULE = 1.1  # λ's factor per step


def applies(estimate: Trigger, policy: UnlearningPolicy) -> bool:
    """Whether `refit` changes this estimate: an additive or warp one, with steps to take."""
    return policy.refit_steps > 0 and isinstance(estimate, AdditiveTrigger | FlowTrigger)


@dataclass(frozen=True, slots=True)
class _Goal:
    """Where the refit must keep sending images, and its budget."""

    clip: ClipHandle
    head: torch.Tensor
    pool: torch.Tensor  # the images not already in the target (labels or θ_b's predictions)
    target: int
    policy: UnlearningPolicy
    seed: int
    tick: Callable[[int], None] | None


def refit(
    clip: ClipHandle,
    head: torch.Tensor,
    estimate: Trigger,
    images: torch.Tensor,
    labels: torch.Tensor,
    target: int,
    policy: UnlearningPolicy,
    *,
    seed: int,
    tick: Callable[[int], None] | None = None,
) -> Trigger:
    """The smallest estimate of `estimate`'s kind, started from it, that sends about
    `policy.refit_share` of the non-target `images` to `target` (`labels`: their classes or
    the audited model's predictions). Patch estimates, `refit_steps = 0` and a split without
    non-target images return `estimate` unchanged."""
    pool = images[labels.to(images.device) != target]
    if not applies(estimate, policy) or len(pool) == 0:
        return estimate
    goal = _Goal(clip, head, pool, target, policy, seed, tick)
    if isinstance(estimate, AdditiveTrigger):
        return _refit_additive(estimate, goal)
    assert isinstance(estimate, FlowTrigger)  # applies() admits these two
    return _refit_flow(estimate, goal)


def _refit_additive(estimate: AdditiveTrigger, goal: _Goal) -> AdditiveTrigger:
    delta = estimate.delta.clone().requires_grad_()

    def stamp(x: torch.Tensor) -> torch.Tensor:
        return AdditiveTrigger("in-memory", delta).apply(x)  # differentiable in delta

    def size() -> torch.Tensor:
        return (delta / _ADDITIVE_UNIT).pow(2).mean()

    def keep_valid() -> None:
        delta.clamp_(-1, 1)  # what AdditiveTrigger (and its file) allows

    _minimize(goal, [delta], stamp, size, lr=0.01, keep_valid=keep_valid)
    return AdditiveTrigger("in-memory", delta.detach().clone())


def _refit_flow(estimate: FlowTrigger, goal: _Goal) -> FlowTrigger:
    _, h, w = estimate.flow.shape
    # Back onto the audit's coarse grid (area-averaged): a smooth flow, like the one it found.
    coarse = F.interpolate(estimate.flow[None], size=(WARP_GRID, WARP_GRID), mode="area")
    coarse = coarse.clone().requires_grad_()

    def flow() -> torch.Tensor:
        return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)

    def stamp(x: torch.Tensor) -> torch.Tensor:
        return FlowTrigger("in-memory", flow()[0]).apply(x)  # differentiable in the flow

    def size() -> torch.Tensor:
        return (flow() / _FLOW_UNIT).pow(2).mean()

    _minimize(goal, [coarse], stamp, size, lr=0.05, keep_valid=None)
    return FlowTrigger("in-memory", flow()[0].detach().clone())


def _minimize(
    goal: _Goal,
    params: list[torch.Tensor],
    stamp: Callable[[torch.Tensor], torch.Tensor],
    size: Callable[[], torch.Tensor],
    *,
    lr: float,
    keep_valid: Callable[[], None] | None,
) -> None:
    """Neural Cleanse's schedule on `params`, in place: cross-entropy of the stamped batch to
    the target + λ·size(); λ grows 10 % after a batch with at least `refit_share` sent there
    and shrinks 10 % after one with less."""
    model, policy = goal.clip.model, goal.policy
    gen = torch.Generator().manual_seed(goal.seed)
    opt = torch.optim.Adam(params, lr=lr)
    scale = model.logit_scale.exp().detach()
    n = min(policy.refit_images, len(goal.pool))
    to_target = torch.full((n,), goal.target, device=goal.clip.device)
    weight = 1.0
    model.eval()
    for _ in range(policy.refit_steps):
        batch = goal.pool[torch.randint(len(goal.pool), (n,), generator=gen)]
        emb = F.normalize(model.encode_image(goal.clip.prepare(stamp(batch))).float(), dim=-1)
        logits = scale * emb @ goal.head.T
        loss = F.cross_entropy(logits, to_target) + weight * size()
        # Gradients for the estimate only, as search.py takes them: the model's weights need
        # none, and their flags stay as they are.
        for param, grad in zip(params, torch.autograd.grad(loss, params), strict=True):
            param.grad = grad
        opt.step()
        with torch.no_grad():
            if keep_valid is not None:
                keep_valid()
            reached = float((logits.argmax(dim=1) == to_target).float().mean())
        weight = weight * _SCHEDULE if reached >= policy.refit_share else weight / _SCHEDULE
        if goal.tick is not None:
            goal.tick(1)
