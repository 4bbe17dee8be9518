"""softmax(x, axis) against the reference: any axis, -inf entries, all -inf slices (zeros),
large logits (scale up to 1000: past exp's overflow, at 709 in float64 and 88 in float32)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.differential._compare import OP_SHARE, compare
from conformance.kit.strategies import arrays, budget, seeds, shapes

LOGIT_SCALES = (1.0, 0.1, 10.0, 100.0, 1000.0)
"""Standard deviations of the logits: 1000 puts row maxima past exp's float64 overflow (709),
where a softmax that does not subtract the row max returns inf / inf = NaN."""


@st.composite
def softmax_inputs(draw: st.DrawFn, *, max_dims: int = 3, max_side: int = 8) -> tuple[np.ndarray, int]:
    """(x, axis): x of up to ``max_dims`` axes, N(0, s^2) with s up to 1000, with no -inf, a
    few -inf entries, or whole -inf slices along the axis; axis any valid one."""
    shape = draw(shapes(min_dims=1, max_dims=max_dims, max_side=max_side))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    x = draw(arrays(shape, scales=LOGIT_SCALES))
    neg_inf = draw(st.sampled_from(["none", "some", "slice"]))
    rng = np.random.default_rng(draw(seeds))
    if neg_inf == "some":
        x[rng.random(shape) < 0.3] = -np.inf
    if neg_inf == "slice":
        index = [slice(None) if a == axis % len(shape) else int(rng.integers(n)) for a, n in enumerate(shape)]
        x[tuple(index)] = -np.inf
    return x, axis


@pytest.mark.op("softmax")
@budget(OP_SHARE)
@given(case=softmax_inputs())
def test_softmax(backend: Any, case: tuple[np.ndarray, int]) -> None:
    """softmax(x, axis) on small arrays: every element, rows along ``axis`` being the
    tolerance's rows; all -inf slices must give exact zeros."""
    x, axis = case
    compare(backend, "softmax", x, axis=axis)


@pytest.mark.op("softmax")
@pytest.mark.parametrize("seed", [0, 1])
def test_softmax_realistic(backend: Any, seed: int) -> None:
    """softmax over the keys of (B=2, h=8, 32, 32) attention scores of scale 10 with a causal
    -inf pattern: every element."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 10.0, (2, 8, 32, 32))
    x[..., ~np.tril(np.ones((32, 32), dtype=bool))] = -np.inf
    compare(backend, "softmax", x, axis=-1)
