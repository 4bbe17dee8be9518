"""Layer norm properties: normalised rows have mean 0 and variance var / (var + eps); the
result is invariant to x -> a x + c per row (a > 0) once eps is rescaled; gamma and beta act
feature by feature."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.kit.assertions import assert_close
from conformance.kit.harness import call_op
from conformance.kit.strategies import arrays, budget, sizes
from properties import tolerances
from properties.plumbing import held
from properties.strategies import OP_SHARE, grid_arrays, layer_norm_rows, powers_of_two

pytestmark = pytest.mark.op("layer_norm")

epsilons = st.sampled_from([1e-5, 1e-6, 1e-3])
row_shapes = st.tuples(sizes(1, 2), sizes(1, 3), sizes(1, 16))
fine_grid_steps = st.sampled_from([2.0**-8, 2.0**-2, 2.0**-10])
"""Grid steps for the affine property: values from 2^-10 up (squares stay normal in float16)
to 8, so that eps matters in some rows and not in others."""


def layer_norm(backend, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    return call_op(backend, "layer_norm", x, gamma, beta, eps, shape=x.shape)


@budget(OP_SHARE)
@given(shape=row_shapes, eps=epsilons, data=st.data())
def test_normalised_rows_have_mean_zero_and_variance_var_over_var_plus_eps(backend, shape, eps, data):
    """With gamma = 1, beta = 0: mean_j LN(x)_j = 0 and mean_j LN(x)_j^2 - 0 = var / (var + eps)
    (biased variance, eps inside the square root), also for rows whose variance is near eps or
    whose mean dwarfs their spread. The variance is *not* 1: it falls below 1 where eps
    matters, which a backend dividing by std + eps gets wrong."""
    x = held(backend, data.draw(layer_norm_rows(shape, eps=eps), label="x"))
    d = shape[-1]
    y = layer_norm(backend, x, np.ones(d), np.zeros(d), eps)
    var = np.var(x, axis=-1, keepdims=True)
    assert_close(np.mean(y, axis=-1, keepdims=True), np.zeros(var.shape),
                 tol=tolerances.normalised_mean_error(backend.dtype, x, eps), backend=backend, op="layer_norm",
                 what="normalised rows have mean 0")
    assert_close(np.var(y, axis=-1, keepdims=True), var / (var + eps),
                 tol=tolerances.normalised_variance_error(backend.dtype, x, eps), backend=backend, op="layer_norm",
                 what="normalised rows have variance var / (var + eps)")


@budget(OP_SHARE)
@given(shape=row_shapes, eps=epsilons, step=fine_grid_steps, a=powers_of_two(), data=st.data())
def test_invariant_to_positive_affine_maps_per_row(backend, shape, eps, step, a, data):
    """LN(a x + c; eps) = LN(x; eps / a^2) for a > 0 and c constant per row: the mean moves to
    a mean + c and the variance to a^2 var, so (a x + c - a mean - c) / sqrt(a^2 var + eps)
    = (x - mean) / sqrt(var + eps / a^2). x and c lie on a grid and a is a power of two, so
    a x + c is exact in the backend's dtype."""
    x = data.draw(grid_arrays(shape, step=step), label="x")
    c = data.draw(grid_arrays(shape[:-1] + (1,), step=step), label="c")
    gamma, beta = (held(backend, data.draw(arrays((shape[-1],)), label=name)) for name in ("gamma", "beta"))
    moved = layer_norm(backend, a * x + c, gamma, beta, eps)
    rescaled = layer_norm(backend, x, gamma, beta, eps / a**2)
    tol = tolerances.difference(tolerances.layer_norm_error(backend.dtype, a * x + c, gamma, beta, eps),
                                tolerances.layer_norm_error(backend.dtype, x, gamma, beta, eps / a**2))
    assert_close(moved, rescaled, tol=tol, backend=backend, op="layer_norm",
                 what=f"LN(a x + c; eps) = LN(x; eps / a^2), a = {a}")


@budget(OP_SHARE)
@given(shape=row_shapes, eps=epsilons, data=st.data())
def test_gamma_and_beta_act_per_feature(backend, shape, eps, data):
    """LN(x; gamma, beta)_j = LN(x; 1, 0)_j gamma_j + beta_j: the affine parameters scale and
    shift each feature j, the same for every row."""
    x = held(backend, data.draw(layer_norm_rows(shape, eps=eps), label="x"))
    gamma, beta = (held(backend, data.draw(arrays((shape[-1],)), label=name)) for name in ("gamma", "beta"))
    ones, zeros = np.ones(shape[-1]), np.zeros(shape[-1])
    plain = layer_norm(backend, x, ones, zeros, eps)
    affine = layer_norm(backend, x, gamma, beta, eps)
    tol = tolerances.difference(tolerances.layer_norm_error(backend.dtype, x, gamma, beta, eps),
                                tolerances.layer_norm_error(backend.dtype, x, ones, zeros, eps) * np.abs(gamma))
    assert_close(affine, plain * gamma + beta, tol=tol, backend=backend, op="layer_norm",
                 what="LN(x; gamma, beta) = LN(x; 1, 0) gamma + beta")
