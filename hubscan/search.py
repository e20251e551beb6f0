"""The optimizer behind invert.py: many candidate triggers of one shape, optimized in one batch.

Owns the screen (every candidate, a few images per step, a few steps; the first round's budget
annealed from a multiple down to the policy's) and the refinement (the survivors, more images,
more steps, early stop) of the shapes in shapes.py; the held-out score; and the pass counter that
enforces the time budget. Must not decide verdicts (invert.py) or touch files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hubscan.errors import BudgetExhausted
from hubscan.model import ClipHandle
from hubscan.policy import DetectionPolicy
from hubscan.shapes import Shape, shape_of
from hubscan.trigger_base import Trigger

COLLAPSE = -1  # the label-free candidate's target: pull the stamped embeddings together
# Adam's step on each shape's unconstrained parameters. The patch mask must gather its mass
# from a uniform start onto a few pixels within a few dozen steps, hence the larger step.
_LRS = {"patch": 0.5, "blend": 0.1, "warp": 0.1}
_STREAK = 3  # steps in a row a candidate must succeed for before the search stops early


@dataclass(slots=True)
class Counter:
    """Image passes spent; raises BudgetExhausted past the deadline (a time.perf_counter())."""

    deadline: float
    passes: int = 0  # forward + backward, one per image
    forwards: int = 0  # forward only

    def spend(self, images: int, *, backward: bool) -> None:
        if backward:
            self.passes += images
        else:
            self.forwards += images
        if time.perf_counter() > self.deadline:
            raise BudgetExhausted(
                f"trigger inversion ran out of time after {self.passes} image passes "
                "(raise detection.max_seconds or lower the steps)"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidates:
    """The model, its head, the counter and the progress tick shared by every family's search."""

    clip: ClipHandle
    head: torch.Tensor  # (K, D) normalized class embeddings
    counter: Counter
    tick: Callable[[int], None] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FamilyResult:
    family: str
    best_target: int  # class index
    best_share: float  # held-out share of probes sent to best_target
    screen: torch.Tensor  # (K,) mean target probability of every class in the screen
    trigger: Trigger


def rounds(k: int, policy: DetectionPolicy) -> int:
    """Screening rounds for k classes (+ the collapse candidate): halve until `keep` are left."""
    alive, n = k + 1, 0
    while alive > policy.keep:
        alive, n = max(policy.keep, -(-alive // 2)), n + 1
    return n


def planned_steps(k: int, policy: DetectionPolicy) -> int:
    """Optimization steps one family takes at most (for a progress bar's total)."""
    return rounds(k, policy) * policy.screen_steps + policy.steps


def search_family(
    cands: Candidates,
    family: str,
    optimize: torch.Tensor,
    holdout: torch.Tensor,
    *,
    holdout_clean: torch.Tensor,
    policy: DetectionPolicy,
    generator: torch.Generator,
) -> FamilyResult:
    """Screen every class (and the collapse candidate) in halving rounds, refine the survivors,
    and score them on held-out probes (`holdout_clean`: the model's predictions on them, made
    once for every family)."""
    shape = shape_of(family, policy)
    k = cands.head.shape[0]
    _, c, h, w = optimize.shape
    clean = predict(cands, optimize)
    targets = torch.cat((torch.arange(k), torch.tensor([COLLAPSE])))
    params = shape.params(k + 1, c, h, w, generator)
    first: torch.Tensor | None = None
    planned = rounds(k, policy)
    for done in range(1, planned + 1):
        params, success, hit = _screen(
            cands,
            shape,
            family,
            params,
            optimize,
            targets,
            clean,
            policy,
            generator,
            anneal=policy.anneal if done == 1 else 1.0,
        )
        first = success[:k] if first is None else first
        keep = policy.keep if hit else max(policy.keep, -(-len(targets) // 2))
        rows = success.topk(min(keep, len(targets))).indices
        params, targets = [p[rows] for p in params], targets[rows]
        if hit:  # one candidate already sends its images home: no need to screen further
            _tick(cands, (planned - done) * policy.screen_steps)
            break
    params = [p.clone().requires_grad_() for p in params]
    _refine(
        cands,
        shape,
        params,
        torch.optim.Adam(params, lr=_LRS[family]),
        optimize,
        targets,
        policy,
        clean,
        generator,
    )
    shares, reached = _held_out(cands, shape, params, holdout, holdout_clean, targets)
    best = int(shares.argmax())
    return FamilyResult(
        family=family,
        best_target=int(reached[best]),
        best_share=float(shares[best]),
        screen=first if first is not None else torch.zeros(k),
        trigger=shape.trigger(params, best, h, w),
    )


def _screen(
    cands: Candidates,
    shape: Shape,
    family: str,
    params: list[torch.Tensor],
    optimize: torch.Tensor,
    targets: torch.Tensor,
    clean: torch.Tensor,
    policy: DetectionPolicy,
    generator: torch.Generator,
    *,
    anneal: float,
) -> tuple[list[torch.Tensor], torch.Tensor, bool]:
    """One round: every candidate, a few fresh images per step. Returns the parameters, each
    candidate's mean success over the round's later half, and whether one has already won.

    With `anneal` > 1 the budget starts at that multiple and shrinks geometrically to the
    policy's over the round's first half (Neural Cleanse's shrinking mask, as a schedule): a
    small trigger is hard to find from a diffuse start, where each pixel's gradient is weak (a
    corner patch on a CNN tower took 70+ steps), while a large one reaches the target at once
    and then has to keep it as it shrinks. The later half, which ranks the candidates, and any
    early stop see only the policy's budget."""
    params = [p.detach().clone().requires_grad_() for p in params]
    opt = torch.optim.Adam(params, lr=_LRS[family])
    success = torch.zeros(len(targets))
    # A step costs about the same whatever the number of candidates: with many (a large label
    # set) each sees fewer images, down to one, until halving has thinned them out.
    per_candidate = max(1, min(policy.screen_images, policy.screen_batch // len(targets)))
    half = policy.screen_steps // 2
    later = policy.screen_steps - half
    recent: list[torch.Tensor] = []
    for step, factor in enumerate(budget_schedule(anneal, policy.screen_steps)):
        pick = torch.randint(len(optimize), (per_candidate,), generator=generator)
        now = shape.scaled(factor) if factor > 1 else shape
        probs = _step(cands, now, params, opt, optimize[pick], targets, clean=clean[pick])
        _tick(cands)
        if step >= half:  # the later half: where the candidates have moved
            success += probs / later
        if factor > 1:
            continue
        recent = [*recent[-(_STREAK - 1) :], probs]
        if (won := sustained(recent, policy.success_share)) is not None:
            _tick(cands, policy.screen_steps - step - 1)
            return [p.detach() for p in params], won, True
    return [p.detach() for p in params], success, False


def budget_schedule(anneal: float, steps: int) -> list[float]:
    """The budget's multiple at each step of a screening round: `anneal` shrinking
    geometrically to 1 over the first half, then 1."""
    half = steps // 2
    return [anneal ** (1 - step / half) if step < half else 1.0 for step in range(steps)]


def sustained(recent: list[torch.Tensor], share: float) -> torch.Tensor | None:
    """Each candidate's worst success over the last few steps, when one of them reached `share`
    at every one of them. A screening step sees only a couple of images per candidate: one lucky
    step would end the screen on a natural neighbour class before the backdoor's had moved."""
    if len(recent) < _STREAK:
        return None
    worst = torch.stack(recent[-_STREAK:]).min(dim=0).values
    return worst if float(worst.max()) >= share else None


def _tick(cands: Candidates, steps: int = 1) -> None:
    if cands.tick is not None and steps > 0:
        cands.tick(steps)


def _refine(
    cands: Candidates,
    shape: Shape,
    params: list[torch.Tensor],
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: torch.Tensor,
    policy: DetectionPolicy,
    clean: torch.Tensor,
    generator: torch.Generator,
) -> None:
    """Optimize the survivors, each step on `refine_batch` optimization images drawn afresh (all
    of them when there are no more); stop early once one candidate sends nearly all of a batch to
    its class for a few steps in a row (a backdoor is that easy). Fresh batches from a larger
    pool keep a trigger from fitting a dozen images: refined on fresh batches of 12 from 64, the
    warp search's held-out shares on the zoo's warp backdoors rose from 0.20-0.46 to 0.34-0.56
    at the same passes (benchmarks/explore/warp_variance.txt)."""
    streak = 0
    batch = min(policy.refine_batch, len(images))
    for step in range(policy.steps):
        pick = torch.randperm(len(images), generator=generator)[:batch]
        share = _step(
            cands, shape, params, opt, images[pick], targets, clean=clean[pick], hard=True
        )
        _tick(cands)
        streak = streak + 1 if float(share.max()) >= policy.success_share else 0
        if streak >= _STREAK:
            _tick(cands, policy.steps - step - 1)
            return


def _step(
    cands: Candidates,
    shape: Shape,
    params: list[torch.Tensor],
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    clean: torch.Tensor,
    hard: bool = False,
) -> torch.Tensor:
    """One Adam step for every candidate; returns each candidate's success on this batch: the
    mean target probability, or (hard) the share of images sent to its target (for the collapse
    candidate: to its most common class)."""
    n, k = len(images), len(targets)
    stamped = shape.stamp(images.to(cands.clip.device), params)
    emb = F.normalize(cands.clip.model.encode_image(cands.clip.prepare(stamped)).float(), dim=-1)
    logits = (cands.clip.model.logit_scale.exp().detach() * emb @ cands.head.T).view(k, n, -1)
    targeted = targets != COLLAPSE
    loss = torch.zeros((), device=emb.device)
    if bool(targeted.any()):
        t = targets[targeted].to(emb.device)
        chosen = logits[targeted]
        loss = (
            loss
            + F.cross_entropy(chosen.flatten(0, 1), t.repeat_interleave(n), reduction="sum") / n
        )
    if not bool(targeted.all()):
        loss = loss + _collapse_loss(emb.view(k, n, -1)[~targeted])
    # Gradients for the trigger parameters only: the model's weights need none, and computing
    # them would roughly double the cost of a backward pass on a large image tower.
    for param, grad in zip(params, torch.autograd.grad(loss, params), strict=True):
        param.grad = grad
    opt.step()
    cands.counter.spend(k * n, backward=True)
    with torch.no_grad():
        preds = logits.argmax(dim=-1).cpu()  # (k, n)
        goal = torch.where(targets == COLLAPSE, preds.mode(dim=1).values, targets)
        # Only images the model did not already put in the goal class count: otherwise classes
        # that many clean images resemble (shirt, t-shirt) would look easy to reach.
        moved = (clean[None] != goal[:, None]).float()
        if hard:
            hit = (preds == goal[:, None]).float()
        else:
            hit = logits.softmax(dim=-1).cpu().gather(2, goal.view(k, 1, 1).expand(k, n, 1))[..., 0]
        share: torch.Tensor = (hit * moved).sum(dim=1) / moved.sum(dim=1).clamp(min=1)
        return share


def predict(cands: Candidates, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        preds = (cands.clip.encode_images(images) @ cands.head.T).argmax(dim=1).cpu()
    cands.counter.spend(len(images), backward=False)
    return preds


def _collapse_loss(emb: torch.Tensor) -> torch.Tensor:
    """DECREE's objective: 1 - mean cosine of each stamped embedding to their mean direction."""
    centre = F.normalize(emb.mean(dim=1, keepdim=True), dim=-1)
    return (1 - (emb * centre).sum(dim=-1)).mean(dim=1).sum()


def _held_out(
    cands: Candidates,
    shape: Shape,
    params: list[torch.Tensor],
    holdout: torch.Tensor,
    clean: torch.Tensor,
    targets: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each candidate's share of held-out probes sent to its class, counting only probes the
    model did not already put there (`clean`); and the class (for the collapse candidate: its
    majority)."""
    clip, head = cands.clip, cands.head
    with torch.no_grad():
        stamped = shape.stamp(holdout.to(clip.device), params)
        preds = (clip.encode_images(stamped) @ head.T).argmax(dim=1).cpu().view(len(targets), -1)
    cands.counter.spend(len(holdout) * len(targets), backward=False)
    reached = torch.where(targets == COLLAPSE, preds.mode(dim=1).values, targets)
    shares = torch.zeros(len(targets))
    for i, t in enumerate(reached.tolist()):
        keep = clean != t
        if bool(keep.any()):
            shares[i] = (preds[i][keep] == t).float().mean()
    return shares, reached
