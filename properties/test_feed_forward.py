"""Feed-forward properties of FFN(x) = act(x W_1 + b_1) W_2 + b_2: with zero biases and ReLU it
is positively homogeneous; its second layer is linear (negating W_2 and b_2 negates the
output); with identity weights and zero biases it is the activation itself, act(x), whose
exact values are known (ReLU: max(x, 0); GELU: x Phi(x) with the normal CDF from erf)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.kit.assertions import assert_close
from conformance.kit.harness import call_op
from conformance.kit.strategies import arrays, budget, sizes
from properties import tolerances
from properties.plumbing import held
from properties.strategies import OP_SHARE, powers_of_two

pytestmark = pytest.mark.op("feed_forward")

WEIGHT_SCALES = (0.5, 0.1)
"""Weights of order 1/sqrt(fan-in), as initialisation gives, so float16 never overflows."""

ACTIVATION_SCALES = (1.0, 3.0, 0.1)
"""Scales of x fed straight to the activation: |x| <= ~4, where GELU bends and where its tanh
approximation is off by up to 1.8e-4 |x|; then tiny values (GELU ~ x / 2)."""

activations = st.sampled_from(["relu", "gelu"])


@st.composite
def bias_free_ffns(draw: st.DrawFn) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(x (B, S, d_model), {w_1, b_1 = 0, w_2, b_2 = 0})."""
    d_model, d_ff = draw(sizes(1, 8)), draw(sizes(1, 16))
    x = draw(arrays((draw(sizes(1, 2)), draw(sizes(1, 4)), d_model)))
    p = {"w_1": draw(arrays((d_model, d_ff), scales=WEIGHT_SCALES)), "b_1": np.zeros(d_ff),
         "w_2": draw(arrays((d_ff, d_model), scales=WEIGHT_SCALES)), "b_2": np.zeros(d_model)}
    return x, p


@st.composite
def ffns(draw: st.DrawFn) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(x (B, S, d_model), {w_1, b_1, w_2, b_2}), biases drawn like the weights."""
    d_model, d_ff = draw(sizes(1, 8)), draw(sizes(1, 16))
    x = draw(arrays((draw(sizes(1, 2)), draw(sizes(1, 4)), d_model)))
    p = {"w_1": draw(arrays((d_model, d_ff), scales=WEIGHT_SCALES)), "b_1": draw(arrays((d_ff,), scales=WEIGHT_SCALES)),
         "w_2": draw(arrays((d_ff, d_model), scales=WEIGHT_SCALES)),
         "b_2": draw(arrays((d_model,), scales=WEIGHT_SCALES))}
    return x, p


@st.composite
def activation_inputs(draw: st.DrawFn) -> np.ndarray:
    """x (2, 3, d), d <= 8, at ``ACTIVATION_SCALES``."""
    return draw(arrays((2, 3, draw(sizes(1, 8))), scales=ACTIVATION_SCALES))


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x) = erfc(-x / sqrt 2) / 2 in float64 (math.erfc: no cancellation for x < 0), good to
    a few float64 ulps. Shapes: any -> same."""
    return np.vectorize(lambda t: 0.5 * math.erfc(-t / math.sqrt(2.0)), otypes=[np.float64])(x)


@budget(OP_SHARE)
@given(case=bias_free_ffns(), a=powers_of_two())
def test_relu_ffn_without_biases_is_positively_homogeneous(backend, case, a):
    """FFN(a x) = a FFN(x) for a > 0 when b_1 = b_2 = 0: ReLU(a h) = a ReLU(h) for a > 0 and
    the matrix products are linear. a is a power of two, so a x is exact."""
    x, p = held(backend, case)
    out = call_op(backend, "feed_forward", x, p, activation="relu", shape=x.shape)
    scaled = call_op(backend, "feed_forward", a * x, p, activation="relu", shape=x.shape)
    err = tolerances.feed_forward_error(backend.dtype, x, p["w_1"], p["w_2"])
    err_scaled = tolerances.feed_forward_error(backend.dtype, a * x, p["w_1"], p["w_2"])
    assert_close(scaled, a * out, tol=tolerances.difference(err_scaled, a * err), backend=backend, op="feed_forward",
                 what=f"FFN(a x) = a FFN(x), a = {a}")


@budget(OP_SHARE)
@given(case=ffns(), activation=activations)
def test_negating_the_second_layer_negates_the_output(backend, case, activation):
    """FFN(x; W_1, b_1, -W_2, -b_2) = -FFN(x; W_1, b_1, W_2, b_2): the second layer is affine and
    comes after the activation, act(h) (-W_2) - b_2 = -(act(h) W_2 + b_2). Negation is exact, so
    the two evaluations differ by at most their rounding errors (``feed_forward_affine_error``,
    the same for both); an activation applied after the second layer too breaks it."""
    x, p = held(backend, case)
    negated = {**p, "w_2": -p["w_2"], "b_2": -p["b_2"]}
    out = call_op(backend, "feed_forward", x, p, activation=activation, shape=x.shape)
    flipped = call_op(backend, "feed_forward", x, negated, activation=activation, shape=x.shape)
    err = tolerances.feed_forward_affine_error(backend.dtype, x, p, activation)
    assert_close(flipped, -out, tol=tolerances.difference(err, err), backend=backend, op="feed_forward",
                 what=f"FFN(x; -W_2, -b_2) = -FFN(x), activation={activation}")


@budget(OP_SHARE)
@given(x=activation_inputs(), activation=activations)
def test_identity_weights_give_the_activation_itself(backend, x, activation):
    """FFN(x; I, 0, I, 0) = act(x): ReLU max(x, 0), GELU x Phi(x) with the exact normal CDF
    Phi(x) = erfc(-x / sqrt 2) / 2 evaluated in float64 (``normal_cdf``). The tolerance is
    ``feed_forward_affine_error`` (magnitude |x|), which also covers the float64 expected
    value's own few-ulp error. It pins the exact erf GELU at float64 and float32: the tanh
    approximation is off by up to 1.8e-4 |x|, 30 times the float32 tolerance (at most
    5.8e-6 |x|), and by over 10 times it for three quarters of 0.6 <= |x| <= 3.5 (it crosses
    the exact GELU near |x| = 2); at float16 and bfloat16 the tolerance (>= 0.018 |x|)
    exceeds that difference, so there it checks GELU's shape only, not which form it is."""
    x = held(backend, x)
    d = x.shape[-1]
    p = {"w_1": np.eye(d), "b_1": np.zeros(d), "w_2": np.eye(d), "b_2": np.zeros(d)}
    out = call_op(backend, "feed_forward", x, p, activation=activation, shape=x.shape)
    expected = np.maximum(x, 0.0) if activation == "relu" else x * normal_cdf(x)
    assert_close(out, expected, tol=tolerances.feed_forward_affine_error(backend.dtype, x, p, activation),
                 backend=backend, op="feed_forward", what=f"FFN(x; I, 0, I, 0) = {activation}(x)")
