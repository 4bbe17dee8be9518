"""Self-attention's diagonal: when every query/key row has the same norm, each position
attends to itself at least as much as to any other position."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.kit.assertions import assert_true
from conformance.kit.harness import call_op
from conformance.kit.strategies import arrays, budget, sizes
from properties import tolerances
from properties.plumbing import held
from properties.strategies import OP_SHARE

pytestmark = pytest.mark.op("attention_weights")


def centred_directions(x: np.ndarray) -> np.ndarray:
    """The rows of x centred, a constant row (no direction once centred: ``arrays`` rounds to
    two decimals, so it is drawn) replaced by the centred alternating row (1, -1, 1, ...), so
    that every row can be scaled to a norm. Shapes: (..., d), d >= 2 -> same."""
    x = x - x.mean(axis=-1, keepdims=True)
    alternating = (-1.0) ** np.arange(x.shape[-1])
    return np.where(np.ptp(x, axis=-1, keepdims=True) > 0, x, alternating - alternating.mean())


@st.composite
def equal_norm_rows(draw: st.DrawFn) -> np.ndarray:
    """(B, S, d) rows centred and scaled to the common norm r sqrt(d), d >= 2, as layer norm
    with gamma = r, beta = 0 (and eps -> 0) leaves them; r in (1, 0.3, 3)."""
    shape = (draw(sizes(1, 2)), draw(sizes(1, 6)), draw(sizes(2, 8)))
    x = centred_directions(draw(arrays(shape)))
    radius = draw(st.sampled_from([1.0, 0.3, 3.0])) * np.sqrt(shape[-1])
    return x / np.linalg.norm(x, axis=-1, keepdims=True) * radius


@budget(OP_SHARE)
@given(x=equal_norm_rows())
def test_diagonal_weight_is_the_row_maximum_for_equal_norm_rows(backend, x):
    """A_ii >= A_ij for A = softmax(X X^T / sqrt(d)) when all rows of X = Q = K have one norm r:
    by Cauchy-Schwarz x_i . x_j <= |x_i| |x_j| = r^2 = x_i . x_i, and softmax is monotone.

    The seed's "values along the diagonal are the highest" is false without equal norms.
    Counterexample: x_1 = (1, 0), x_2 = (2, 0); row 1 has scores x_1.x_1 = 1 < x_1.x_2 = 2, so
    A_12 > A_11: a longer key aligned with the query beats the query itself.
    """
    x = held(backend, x)
    weights = call_op(backend, "attention_weights", x, x, shape=x.shape[:-1] + (x.shape[-2],))
    diagonal = np.diagonal(weights, axis1=-2, axis2=-1)[..., :, None]              # (B, S, 1)
    err = tolerances.attention_weights_error(backend.dtype, x, x)
    assert_true(weights <= diagonal + tolerances.difference(err, err), values=weights - diagonal, backend=backend,
                op="attention_weights", what="A_ij <= A_ii (value: A_ij - A_ii, index: b, i, j)")
