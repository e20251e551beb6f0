"""TBAR's trigger vector τ (METHOD.md §4): the short fine-tunes of the image tower it is
learned from, the variants (see unlearn.py's docstring), the Fisher damping, and the editing of
the tower's weights.

Only the image tower's parameters are trained; the text tower and the zero-shot head stay
frozen, and every function leaves `clip.model` as it found it. Must not choose a coefficient
(unlearn.py does), load or save files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hubscan.metrics import Stamp
from hubscan.model import ClipHandle
from hubscan.policy import UnlearningPolicy

Tick = Callable[[int], None]
State = dict[str, torch.Tensor]


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """What to remove and the probes to remove it with (tensors: a live object, not a record)."""

    stamp: Stamp
    trigger: str  # the spec, or the estimate's description, for reports
    target: int
    target_name: str
    estimated: bool  # the trigger came from the detector, not from the user
    head: torch.Tensor  # (K, D) zero-shot head
    tune: torch.Tensor  # images the vector is learned on
    tune_labels: torch.Tensor  # their classes (or θ_b's predictions: unlabelled probes)
    val: torch.Tensor  # images α is chosen on
    val_labels: torch.Tensor
    labelled: bool  # False: the labels above are θ_b's predictions (accuracy = agreement)


def tower_params(clip: ClipHandle) -> State:
    """θ_b of the image tower: the floating-point parameters TBAR edits (buffers are left)."""
    return {k: p.detach().clone() for k, p in clip.model.visual.named_parameters()}


def trigger_vector(
    clip: ClipHandle, task: Task, policy: UnlearningPolicy, *, seed: int, tick: Tick | None
) -> State:
    """τ for the policy's variant (see the module docstring), undamped: `fisher` learns the
    contrast vector, which `damped` then damps."""
    x, y = task.tune, task.tune_labels
    gen = torch.Generator().manual_seed(seed)
    soft = policy.soft_estimate if task.estimated else policy.soft_trigger
    gain = policy.estimate_gain if task.estimated else 1.0
    stamped = _stamp(task.stamp, x, gen, soft=soft, gain=gain)
    to_target = torch.full_like(y, task.target)
    if policy.variant == "paper":
        return _minus(finetune(clip, task.head, stamped, to_target, policy, seed, tick), None)
    if policy.variant == "mixed":
        both, labels = torch.cat([stamped, x]), torch.cat([to_target, y])
        clean = finetune(clip, task.head, x, y, policy, seed, tick)
        return _minus(finetune(clip, task.head, both, labels, policy, seed, tick), clean)
    share = policy.estimate_anchor if task.estimated else 0.0
    anchor = _anchor(x, y, task.target, round(share * len(stamped)))
    both = torch.cat([stamped, x, anchor])
    kept = torch.full((len(anchor),), task.target, dtype=y.dtype)
    toward = finetune(clip, task.head, both, torch.cat([to_target, y, kept]), policy, seed, tick)
    away = finetune(clip, task.head, both, torch.cat([y, y, kept]), policy, seed, tick)
    return _minus(toward, away)


def _anchor(x: torch.Tensor, y: torch.Tensor, target: int, count: int) -> torch.Tensor:
    """`count` clean images of the target class, its tune images taken in turn (none if it has
    none). Both fine-tunes label them the target. An estimate is partly an adversarial
    perturbation made of the target's own features: the "away" run, asked to keep stamped images
    in their class, could otherwise lower the target everywhere, and subtracting τ then lowered
    the target's clean recall (sinusoid-bag's bag 0.97 → 0.73-0.77;
    benchmarks/explore/estimate_damage.txt)."""
    own = x[y.to(x.device) == target]
    if count == 0 or len(own) == 0:
        return x[:0]
    return own[torch.arange(count) % len(own)]


def damped(
    clip: ClipHandle, task: Task, tau: State, policy: UnlearningPolicy
) -> Iterator[tuple[float, State]]:
    """(λ, τ_λ) for each of the `fisher` variant's dampings, ascending; any other variant:
    (0, τ) alone. τ_λ = s·τ / (1 + λ·F/F̄), with s making Σ F·τ_λ² = Σ F·τ²: subtracting α·τ_λ
    then costs about the same clean loss (½·α²·Σ F·τ²) at every λ, so the coefficient grid
    reaches the clean floor at about the same α for each damping instead of walking all of it
    for the strong ones. Lazy: the Fisher is computed when a λ > 0 is first asked for."""
    if policy.variant != "fisher":
        yield 0.0, tau
        return
    fisher: State | None = None
    for lam in policy.fisher_dampings:
        if lam == 0:
            yield lam, tau
            continue
        if fisher is None:
            fisher = clean_fisher(clip, task.head, task.tune, task.tune_labels)
            mean = torch.cat([f.flatten() for f in fisher.values()]).mean()
            cost = _fisher_norm(fisher, tau)
        out = {k: t / (1 + lam * fisher[k] / mean) for k, t in tau.items()}
        damped_cost = _fisher_norm(fisher, out)
        scale = (cost / damped_cost) ** 0.5 if damped_cost > 0 else 1.0  # τ = 0 stays 0
        yield lam, {k: t * scale for k, t in out.items()}


def _fisher_norm(fisher: State, tau: State) -> float:
    """Σ F·τ²: twice the clean loss subtracting τ costs, to second order."""
    return sum(float((fisher[k].double() * tau[k].double() ** 2).sum()) for k in tau)


def clean_fisher(
    clip: ClipHandle, head: torch.Tensor, images: torch.Tensor, labels: torch.Tensor
) -> State:
    """The diagonal empirical Fisher of the image tower on clean images: the mean over
    mini-batches of the squared gradient of their cross-entropy through the zero-shot head
    (batches of 16: per-image gradients would cost 16x the passes for little difference)."""
    model = clip.model
    params = dict(model.visual.named_parameters())
    fisher = {k: torch.zeros_like(p) for k, p in params.items()}
    scale = model.logit_scale.exp().detach()
    y = labels.to(clip.device)
    batches = range(0, len(images), 16)
    model.eval()
    with _training_only(clip, params):
        for i in batches:
            feats = F.normalize(model.encode_image(clip.prepare(images[i : i + 16])), dim=-1)
            loss = F.cross_entropy(scale * feats @ head.T, y[i : i + 16])
            grads = torch.autograd.grad(loss, list(params.values()))
            for k, g in zip(params, grads, strict=True):
                fisher[k] += g.detach() ** 2 / len(batches)
    return fisher


@contextmanager
def _training_only(clip: ClipHandle, params: dict[str, torch.nn.Parameter]) -> Iterator[None]:
    """Gradients for `params` only inside the block; every flag as it was after it."""
    model = clip.model
    frozen = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    try:
        yield
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(frozen[name])
            p.grad = None


def _minus(a: tuple[State, State], b: tuple[State, State] | None) -> State:
    """a − b over the tuned parameters; without b, a − the start (both runs start at θ_b)."""
    tuned, start = a
    other = start if b is None else b[0]
    return {k: tuned[k] - other[k] for k in tuned}


def _stamp(
    stamp: Stamp, x: torch.Tensor, gen: torch.Generator, *, soft: bool, gain: float
) -> torch.Tensor:
    """x + s·(T(x) − x), s = gain (or u·gain, u ~ U(0, 1), when `soft`), clamped to [0, 1]: a
    gain above 1 extrapolates the trigger's change to each image past the trigger itself."""
    if not soft and gain == 1.0:
        return stamp(x)
    strength = torch.full((len(x), 1, 1, 1), gain)
    if soft:
        strength = strength * torch.rand(len(x), 1, 1, 1, generator=gen)
    return (x + strength * (stamp(x) - x)).clamp(0, 1)


def finetune(
    clip: ClipHandle,
    head: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    policy: UnlearningPolicy,
    seed: int,
    tick: Tick | None,
) -> tuple[State, State]:
    """(tuned, start) image-tower parameters after `policy.steps` AdamW steps of cross-entropy
    through the frozen zero-shot head; clip.model is restored before returning. The benchmark's
    fine-tuning baselines use it too, so they differ from TBAR only in what they learn."""
    model = clip.model
    start = tower_params(clip)
    params = dict(model.visual.named_parameters())
    # eval(): batch-norm statistics (timm towers) stay θ_b's; only the weights learn.
    model.eval()
    opt = torch.optim.AdamW(params.values(), lr=policy.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)  # the same batches in every run of one τ
    scale = model.logit_scale.exp().detach()
    y = labels.to(clip.device)
    with _training_only(clip, params):
        try:
            for _ in range(policy.steps):
                n = min(policy.batch, len(images))
                idx = torch.randint(0, len(images), (n,), generator=gen)
                feats = F.normalize(model.encode_image(clip.prepare(images[idx])), dim=-1)
                loss = F.cross_entropy(scale * feats @ head.T, y[idx.to(y.device)])
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                if tick is not None:
                    tick(1)
            tuned = tower_params(clip)
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(start[name])
    return tuned, start


@contextmanager
def tower_at(clip: ClipHandle, params: State) -> Iterator[None]:
    """clip.model's image tower with `params` inside the block, as it was after it."""
    live = dict(clip.model.visual.named_parameters())
    saved = {k: p.detach().clone() for k, p in live.items()}
    try:
        with torch.no_grad():
            for name, p in live.items():
                p.copy_(params[name])
        yield
    finally:
        with torch.no_grad():
            for name, p in live.items():
                p.copy_(saved[name])
