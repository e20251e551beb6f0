"""Weight disentanglement of a trigger vector from clean behaviour (paper.md §5).

Owns the disentanglement error of two task vectors anchored at the audited weights θ_b — a
clean-task vector τ_c (fine-tuning θ_b's image tower on clean probes with their labels) and a
trigger vector τ_t — over a grid of coefficients (after Ortiz-Jimenez et al. 2023):

    ξ(a_c, a_t) = E_clean[ f(θ_b + a_c τ_c) ≠ f(θ_b + a_c τ_c + a_t τ_t) ]
                + E_triggered[ f(θ_b + a_t τ_t) ≠ f(θ_b + a_c τ_c + a_t τ_t) ]

(f: the zero-shot prediction). ξ near 0 over a wide region means the two vectors act on disjoint
inputs: moving along τ_t (TBAR removes the backdoor at a_t < 0) leaves clean predictions alone.
Must not load or save models, or choose vectors: the benchmark gives them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from hubscan.metrics import predict
from hubscan.model import ClipHandle
from hubscan.vector import State, tower_at, tower_params

Tick = Callable[[int], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorGrid:
    coefs: tuple[float, ...]  # the same grid for a_c (rows) and a_t (columns)
    xi: tuple[tuple[float, ...], ...]  # xi[i][j] = ξ(coefs[i], coefs[j]), in [0, 2]

    def mean(self, *, removal_only: bool = False) -> float:
        """Mean ξ over the grid, or over its removal half (a_t <= 0)."""
        cols = [j for j, a in enumerate(self.coefs) if a <= 0 or not removal_only]
        cells = [row[j] for row in self.xi for j in cols]
        return sum(cells) / len(cells)


def error_grid(
    clip: ClipHandle,
    head: torch.Tensor,
    tau_c: State,
    tau_t: State,
    clean: torch.Tensor,
    triggered: torch.Tensor,
    coefs: Sequence[float],
    tick: Tick | None = None,
) -> ErrorGrid:
    """ξ over coefs x coefs; clip.model is left as it was found. Each single-vector prediction
    is made once per coefficient, each combined one once per cell."""
    theta = tower_params(clip)

    def at(a_c: float, a_t: float, pixels: torch.Tensor) -> torch.Tensor:
        params = {k: theta[k] + a_c * tau_c[k] + a_t * tau_t[k] for k in theta}
        with tower_at(clip, params):
            return predict(clip, pixels, head)

    only_c = [at(a, 0.0, clean) for a in coefs]
    only_t = [at(0.0, a, triggered) for a in coefs]
    rows = []
    for i, a_c in enumerate(coefs):
        row = []
        for j, a_t in enumerate(coefs):
            both_clean, both_trig = at(a_c, a_t, clean), at(a_c, a_t, triggered)
            xi = (only_c[i] != both_clean).float().mean() + (only_t[j] != both_trig).float().mean()
            row.append(round(float(xi), 4))
            if tick is not None:
                tick(1)
        rows.append(tuple(row))
    return ErrorGrid(coefs=tuple(coefs), xi=tuple(rows))
