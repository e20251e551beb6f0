"""shapes.py: every trigger shape stays within its budget and its estimate reproduces what the
search stamped."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hubscan.estimates import AdditiveTrigger, FlowTrigger, InvertedTrigger
from hubscan.policy import load_policy
from hubscan.shapes import shape_of


@pytest.mark.parametrize("family", ["patch", "blend", "warp"])
def test_every_shape_stays_within_its_budget(family: str) -> None:
    policy = dataclasses.replace(
        load_policy("default").detection, patch_area=0.05, blend_linf=0.04, warp_pixels=0.5
    )
    shape = shape_of(family, policy)
    gen = torch.Generator().manual_seed(0)
    params = [p * 40 for p in shape.params(3, 1, 16, 16, gen)]  # far outside any budget
    x = torch.full((2, 1, 16, 16), 0.5)
    out = shape.stamp(x, params)
    assert out.shape == (6, 1, 16, 16)
    estimate = shape.trigger(params, 1, 16, 16)
    if isinstance(estimate, InvertedTrigger):
        assert float(estimate.mask.mean()) <= 0.05 + 1e-6
    elif isinstance(estimate, AdditiveTrigger):
        assert float(estimate.delta.abs().max()) <= 0.04 + 1e-6
    else:
        assert isinstance(estimate, FlowTrigger)
        assert float(estimate.flow.abs().mean()) <= 0.5 + 1e-6
    # The estimate reproduces what the search stamped (up to clamping)
    torch.testing.assert_close(estimate.apply(x), out[2:4].clamp(0, 1), atol=1e-5, rtol=0)
