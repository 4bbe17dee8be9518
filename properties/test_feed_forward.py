"""Feed-forward property: with zero biases and ReLU the FFN is positively homogeneous."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.assertions import assert_close
from conformance.harness import call_op
from conformance.strategies import arrays
from properties import tolerances
from properties.plumbing import held
from properties.strategies import OP_SHARE, examples, powers_of_two

pytestmark = pytest.mark.op("feed_forward")

WEIGHT_SCALES = (0.5, 0.1)
"""Weights of order 1/sqrt(fan-in), as initialisation gives, so float16 never overflows."""


@st.composite
def bias_free_ffns(draw: st.DrawFn) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(x (B, S, d_model), {w_1, b_1 = 0, w_2, b_2 = 0})."""
    d_model, d_ff = draw(st.integers(1, 8)), draw(st.integers(1, 16))
    x = draw(arrays((draw(st.integers(1, 2)), draw(st.integers(1, 4)), d_model)))
    p = {"w_1": draw(arrays((d_model, d_ff), scales=WEIGHT_SCALES)), "b_1": np.zeros(d_ff),
         "w_2": draw(arrays((d_ff, d_model), scales=WEIGHT_SCALES)), "b_2": np.zeros(d_model)}
    return x, p


@examples(OP_SHARE)
@given(case=bias_free_ffns(), a=powers_of_two())
def test_relu_ffn_without_biases_is_positively_homogeneous(backend, case, a):
    """FFN(a x) = a FFN(x) for a > 0 when b_1 = b_2 = 0: ReLU(a h) = a ReLU(h) for a > 0 and
    the matrix products are linear. a is a power of two, so a x is exact."""
    x, p = held(backend, case)
    out = call_op(backend, "feed_forward", x, p, activation="relu", shape=x.shape)
    scaled = call_op(backend, "feed_forward", a * x, p, activation="relu", shape=x.shape)
    err = tolerances.feed_forward_error(backend.dtype, x, p["w_1"], p["w_2"])
    assert_close(scaled, a * out, tol=tolerances.difference(a * err, a * err), backend=backend, op="feed_forward",
                 what=f"FFN(a x) = a FFN(x), a = {a}")
