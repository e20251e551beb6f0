"""TBAR (METHOD.md §4): learn the backdoor's direction in weight space, then subtract it.

The paper's trigger vector is τ = finetune(θ_b, triggered images → target) − θ_b. On a backdoor
the model already obeys, that fine-tune has almost no gradient on the backdoor and mostly learns
generic drift, so subtracting it costs clean accuracy before it removes anything (METHOD.md §4,
measured). hubscan's `contrast` vector (which the default, `fisher`, damps) fixes both problems:

- two fine-tunes from θ_b on the same batches, the same images and the same seed, which differ
  only in the label of the triggered images: the target in one, the image's own class in the
  other. Their difference cancels everything the two runs share (the drift, the clean pairs
  mixed in, the look of the trigger) and keeps what separates "trigger means target" from
  "trigger means nothing";
- a known trigger is stamped in full by default; `soft_trigger` stamps it at a random strength
  (x + u·(T(x) − x), u ~ U(0, 1)) instead, meant to keep gradient on a saturated backdoor. The
  contrast's "away" run already has that gradient, and over the first zoo the full stamp removed
  more at the same clean cost (benchmarks/explore/policy_variant-hard_stamp.txt). An estimated
  trigger is stamped at a random strength by default (`soft_estimate`): it only approximates the
  true one, and stamped in full on the demo's model it taught a vector whose patch left 22 % of
  the true trigger's attack success (verification's bar is 10 %). Its strength is also
  multiplied by `estimate_gain` (default 2, images clamped to [0, 1]): the audit's budgets cap
  the estimate below the trigger it stands for (blend_linf 0.08 against the first zoo's 0.2
  checker blend), and extrapolating its change teaches the vector the stronger trigger. Both
  fine-tunes of an estimate's contrast also learn clean images of the suspected target labelled
  the target (`estimate_anchor` of them per stamped image): the estimate borrows the target's
  own features, and without that anchor the patch cost the target's clean recall first. An
  additive or warp estimate reaches this module already refit to the smallest change that
  still reaches the target (refit.py).

`fisher` (the default) is the contrast vector damped where the clean task is sensitive:
τ_i / (1 + λ·F_i / F̄), F the diagonal empirical Fisher of the clean tune images at θ_b (the mean
squared gradient of their loss), F̄ its mean over the tower, rescaled to the undamped Σ F_i τ_i².
Subtracting α·τ raises the clean loss by about ½·α²·Σ F_i τ_i², so damping the coordinates clean
accuracy leans on lets α remove more before the floor, and the rescaling keeps what a coefficient
costs the same at every λ. Which λ helps depends on the model
(benchmarks/explore/fisher_dampings.txt: on a blend backdoor λ = 10 takes val attack success from
31 % to 6 % within the floor; on others λ > 0 only costs a larger α), so every λ of
`fisher_dampings` is tried on the same fine-tunes and the damping is chosen on the val split with
the coefficient. `paper` (plain TBAR) and `mixed` (target-labelled triggered images plus clean
pairs, minus a clean-only fine-tune) are kept for the benchmark. vector.py learns and damps τ;
this module chooses the edit.

θ(α) = θ_b − α·τ; α is the coefficient on the policy's grid, refined by halving steps, with the
lowest attack success on the val split among those whose clean accuracy (agreement with θ_b when
the probes have no labels) is at least κ of θ_b's — over the dampings tried (in ascending order,
until one reaches `asr_tolerance`), the smallest damping within the tolerance of the lowest; none
qualifies → NotRemediated (exit 4) carrying the undamped vector's trial table.

Only the image tower's parameters are edited; the text tower and the zero-shot head stay
frozen. Must not load or save files, and must not judge the patch: verify.py does, on a split
this module never sees.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from hubscan.errors import NotRemediated
from hubscan.metrics import attack_success, clean_accuracy
from hubscan.model import ClipHandle
from hubscan.policy import UnlearningPolicy
from hubscan.records import CoefTrial, DampingCurve, Patch
from hubscan.vector import State, Task, Tick, damped, tower_at, tower_params, trigger_vector


@dataclass(frozen=True, slots=True, kw_only=True)
class Removal:
    patch: Patch
    state: State  # the whole model state_dict with the patched image tower


def remove(
    clip: ClipHandle,
    task: Task,
    policy: UnlearningPolicy,
    *,
    seed: int = 0,
    tick: Tick | None = None,
    tau: State | None = None,
) -> Removal:
    """TBAR on `clip.model`, which is left as it was found. `tau`: a trigger vector known
    otherwise (the benchmark's oracle, θ_b − θ_base) instead of the policy's estimate."""
    start = time.perf_counter()
    before = tower_params(clip)
    vectors: Iterable[tuple[float, State]]
    if tau is None:
        vectors = damped(
            clip, task, trigger_vector(clip, task, policy, seed=seed, tick=tick), policy
        )
    elif tau.keys() != before.keys():
        raise ValueError("a given trigger vector must cover exactly the image tower's parameters")
    else:
        vectors = [(0.0, tau)]
    tried, curves = _search_dampings(clip, task, policy, before, vectors, tick)
    index, chosen = _pick(curves, task, policy)
    damping, tau = tried[index]
    with _edited(clip, before, tau, chosen.coef):
        state = {k: v.detach().clone() for k, v in clip.model.state_dict().items()}
    patch = Patch(
        variant=policy.variant,
        damping=damping,
        trigger=task.trigger,
        target=task.target_name,
        estimated=task.estimated,
        accuracy_kind=_kind(task),
        clean_floor=policy.clean_floor,
        coef=chosen.coef,
        chosen=chosen,
        reference=curves[0][1][0],
        trials=_by_coef(curves[index][1]),
        curves=tuple(DampingCurve(damping=lam, trials=_by_coef(t)) for lam, t in curves),
        tune_images=len(task.tune),
        val_images=len(task.val),
        steps=policy.steps,
        vector_norm=_norm(tau),
        seconds=round(time.perf_counter() - start, 3),
    )
    return Removal(patch=patch, state=state)


def planned_steps(policy: UnlearningPolicy) -> int:
    """Fine-tune steps + coefficient trials (at most), for a progress bar."""
    runs = 1 if policy.variant == "paper" else 2
    searches = len(policy.fisher_dampings) if policy.variant == "fisher" else 1
    trials = len(coefficient_grid(policy)) + 2 * policy.refine + 1
    return runs * policy.steps + searches * trials


def coefficient_grid(policy: UnlearningPolicy) -> tuple[float, ...]:
    count = round(policy.coef_max / policy.coef_step)
    return tuple(round(policy.coef_step * i, 6) for i in range(1, count + 1))


def _search(
    clip: ClipHandle,
    task: Task,
    policy: UnlearningPolicy,
    before: State,
    tau: State,
    tick: Tick | None,
) -> list[CoefTrial]:
    """α = 0, then the grid upward until clean accuracy has been under the floor twice in a row
    (it only falls further), then `refine` halvings of the step around the best α so far."""

    def trial(coef: float) -> CoefTrial:
        with _edited(clip, before, tau, coef):
            out = _measure(clip, task, coef)
        if tick is not None:
            tick(1)
        return out

    trials = [trial(0.0)]
    floor = policy.clean_floor * trials[0].clean_accuracy
    misses = 0
    for coef in coefficient_grid(policy):
        trials.append(trial(coef))
        misses = misses + 1 if trials[-1].clean_accuracy < floor else 0
        if misses == 2:
            break
    step = policy.coef_step
    for _ in range(policy.refine):
        step /= 2
        ok = [t for t in trials[1:] if t.clean_accuracy >= floor]
        if not ok:
            break
        best = choose(ok, policy.asr_tolerance).coef
        tried = {t.coef for t in trials}
        for coef in (round(best - step, 6), round(best + step, 6)):
            if coef > 0 and coef not in tried:
                trials.append(trial(coef))
    return trials


def _search_dampings(
    clip: ClipHandle,
    task: Task,
    policy: UnlearningPolicy,
    before: State,
    vectors: Iterable[tuple[float, State]],
    tick: Tick | None,
) -> tuple[list[tuple[float, State]], list[tuple[float, list[CoefTrial]]]]:
    """The coefficient search for each damping in turn, until one brings attack success within
    the floor down to `asr_tolerance`: a later damping could not do measurably better, and each
    search costs as many val passes as the first (minutes on a full-size tower)."""
    tried: list[tuple[float, State]] = []
    curves: list[tuple[float, list[CoefTrial]]] = []
    for lam, tau in vectors:
        tried.append((lam, tau))
        curves.append((lam, _search(clip, task, policy, before, tau, tick)))
        floor = policy.clean_floor * curves[0][1][0].clean_accuracy
        trials = curves[-1][1][1:]
        if any(
            t.clean_accuracy >= floor and t.attack_success <= policy.asr_tolerance for t in trials
        ):
            break
    return tried, curves


def _pick(
    curves: list[tuple[float, list[CoefTrial]]], task: Task, policy: UnlearningPolicy
) -> tuple[int, CoefTrial]:
    """The coefficient rule over every damping's trials: (which damping, its trial). The lowest
    attack success within the floor, at the smallest damping that comes within the tolerance of
    it; NotRemediated with the undamped vector's table when nothing keeps the floor."""
    reference = curves[0][1][0]  # α = 0: θ_b itself
    floor = policy.clean_floor * reference.clean_accuracy
    qualifying = [[t for t in trials[1:] if t.clean_accuracy >= floor] for _, trials in curves]
    if not any(qualifying):
        table = _by_coef(curves[0][1])
        raise NotRemediated(
            f"no coefficient keeps {_kind(task)} >= {policy.clean_floor:g} x "
            f"{reference.clean_accuracy:.3f}; tried {len(table) - 1}"
            + (f" at each of {len(curves)} dampings" if len(curves) > 1 else ""),
            trials=tuple((t.coef, t.clean_accuracy, t.attack_success) for t in table),
        )
    lowest = min(t.attack_success for ok in qualifying for t in ok)
    index = next(
        i
        for i, ok in enumerate(qualifying)
        if any(t.attack_success <= lowest + policy.asr_tolerance for t in ok)
    )
    return index, choose(qualifying[index], policy.asr_tolerance, lowest=lowest)


def _by_coef(trials: list[CoefTrial]) -> tuple[CoefTrial, ...]:
    return tuple(sorted(trials, key=lambda t: t.coef))


def choose(
    qualifying: list[CoefTrial], tolerance: float, *, lowest: float | None = None
) -> CoefTrial:
    """The smallest edit whose attack success is within `tolerance` of the lowest (of these
    trials, or `lowest` found elsewhere): a larger coefficient buys nothing measurable on val and
    moves the weights further from θ_b (more clean accuracy lost, and a model more open to other
    triggers)."""
    if lowest is None:
        lowest = min(t.attack_success for t in qualifying)
    return min(
        (t for t in qualifying if t.attack_success <= lowest + tolerance), key=lambda t: t.coef
    )


def _measure(clip: ClipHandle, task: Task, coef: float) -> CoefTrial:
    x, y, head = task.val, task.val_labels, task.head
    return CoefTrial(
        coef=coef,
        clean_accuracy=round(clean_accuracy(clip, x, y, head), 4),
        attack_success=round(attack_success(clip, x, y, head, task.stamp, task.target), 4),
    )


@contextmanager
def _edited(clip: ClipHandle, before: State, tau: State, coef: float) -> Iterator[None]:
    """clip.model's image tower at θ_b − coef·τ inside the block, θ_b again after it."""
    with tower_at(clip, {k: before[k] - coef * tau[k] for k in before}):
        yield


def _norm(tau: State) -> float:
    return float(torch.cat([t.flatten().double() for t in tau.values()]).norm())


def _kind(task: Task) -> str:
    return "clean accuracy" if task.labelled else "agreement"
