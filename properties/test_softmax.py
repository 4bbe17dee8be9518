"""Softmax properties: a probability distribution per row (short rows and rows of up to 128
entries), shift-invariant, order-preserving, exact zeros for -inf, and no overflow for large
finite inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.kit.assertions import assert_close, assert_equal, assert_true
from conformance.kit.harness import call_op
from conformance.kit.strategies import arrays, budget, seeds, shapes, sizes
from properties import tolerances
from properties.plumbing import held
from properties.strategies import OP_SHARE, grid_arrays, grid_steps, row_shifts

pytestmark = pytest.mark.op("softmax")

row_shapes = shapes(min_dims=1, max_dims=3, max_side=6)

long_rows = sizes(9, 128)
"""Row lengths past 8, one block of an online (blockwise) softmax, up to several blocks of
8-32: a softmax that keeps a running max and sum over blocks must rescale the sum whenever a
later block raises the max."""


@st.composite
def inputs(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """(x, axis): x of 1-3 dims, axis any of its axes (the last first). Short rows first; then
    rows of ``long_rows`` entries along the axis, as drawn or sorted ascending along it (the max
    grows with every block: the case where a blockwise softmax must rescale)."""
    shape = list(draw(row_shapes))
    axis = draw(st.sampled_from([-1] + list(range(len(shape) - 1))))
    rows = draw(st.sampled_from(["short", "long ascending", "long"]))
    if rows != "short":
        shape[axis] = draw(long_rows)
    x = draw(arrays(tuple(shape)))
    return (np.sort(x, axis=axis) if rows == "long ascending" else x), axis


@st.composite
def with_neg_inf(draw: st.DrawFn) -> np.ndarray:
    """(B, n) rows with some entries -inf: a random pattern, plus one row that is all -inf."""
    x = draw(arrays(draw(shapes(min_dims=2, max_dims=2, max_side=6))))
    rng = np.random.default_rng(draw(seeds))
    x[rng.random(x.shape) < 0.4] = -np.inf
    if draw(st.booleans()):
        x[draw(st.integers(0, x.shape[0] - 1))] = -np.inf
    return x


def softmax(backend, x: np.ndarray, axis: int = -1) -> np.ndarray:
    return call_op(backend, "softmax", x, axis=axis, shape=x.shape)


@budget(OP_SHARE)
@given(case=inputs())
def test_rows_sum_to_one(backend, case):
    """sum_i softmax(x)_i = 1 along the axis, within SAFETY u (2n + 2 + 2 max|x|) for n entries."""
    x, axis = case
    x = held(backend, x)
    p = softmax(backend, x, axis)
    tol = tolerances.softmax_row_sum(backend.dtype, x.shape[axis], np.moveaxis(x, axis, -1))
    assert_close(p.sum(axis=axis), np.ones(p.sum(axis=axis).shape), tol=tol,
                 backend=backend, op="softmax", what=f"rows sum to 1 (axis={axis})")


@budget(OP_SHARE)
@given(case=inputs())
def test_entries_in_unit_interval(backend, case):
    """0 <= softmax(x)_i <= 1 for every entry, exactly (0 and 1 are representable and
    rounding is monotone, so no correct evaluation leaves the interval)."""
    x, axis = case
    p = softmax(backend, held(backend, x), axis)
    assert_true((p >= 0) & (p <= 1), values=p, backend=backend, op="softmax", what="0 <= p <= 1")


@budget(OP_SHARE)
@given(step=grid_steps, data=st.data())
def test_invariant_to_a_constant_per_row(backend, step, data):
    """softmax(x + c) = softmax(x) for a constant c per row (exp(x_i + c) / sum_j exp(x_j + c)
    cancels exp(c)). x and c lie on a grid where x + c is exact in the backend's dtype, and
    c reaches 1e4 in float32/float64, beyond exp's overflow: max-subtraction is required."""
    x = data.draw(grid_arrays((3, 5), step=step), label="x")
    c = data.draw(row_shifts((x.shape[0],), dtype=backend.dtype, step=step), label="c")
    p = softmax(backend, x)
    shifted = softmax(backend, x + c)
    n = x.shape[-1]
    tol = tolerances.difference(tolerances.softmax_entry(backend.dtype, p, n, x),
                                tolerances.softmax_entry(backend.dtype, shifted, n, x + c))
    assert_close(shifted, p, tol=tol, backend=backend, op="softmax", what="softmax(x + c) = softmax(x)")


@budget(OP_SHARE)
@given(x=arrays((4, 6)))
def test_order_preserving(backend, x):
    """x_i <= x_j implies softmax(x)_i <= softmax(x)_j (exp is increasing and the denominator is
    shared), up to the two entries' rounding errors; so equal inputs get equal weights."""
    x = held(backend, x)
    p = softmax(backend, x)
    err = tolerances.softmax_entry(backend.dtype, p, x.shape[-1], x)
    ordered = x[:, :, None] <= x[:, None, :]                                    # (rows, i, j)
    excess = p[:, :, None] - p[:, None, :] - tolerances.difference(err[:, :, None], err[:, None, :])
    assert_true(~ordered | (excess <= 0), values=p[:, :, None] - p[:, None, :], backend=backend, op="softmax",
                what="x_i <= x_j => p_i <= p_j (value: p_i - p_j, index: row, i, j)")


@budget(OP_SHARE)
@given(x=with_neg_inf())
def test_neg_inf_entries_get_exactly_zero(backend, x):
    """softmax(x)_i = 0 exactly where x_i = -inf (exp(-inf) = 0), also in a row that is all
    -inf, which gives zeros (backends/CONTRACT.md) rather than 0/0 = NaN."""
    x = held(backend, x)
    p = softmax(backend, x)
    assert_equal(p, np.zeros_like(p), backend=backend, op="softmax", what="-inf entries give 0", where=np.isneginf(x))


@budget(OP_SHARE)
@given(x=arrays((3, 5), scales=(1e4, 1e3, 1e2)))
def test_large_inputs_stay_finite(backend, x):
    """For finite |x_i| up to ~3e4 (exp overflows beyond 88.7 in float32 and 709.8 in float64)
    the result is finite and still sums to 1 per row: the max is subtracted before exp."""
    x = held(backend, np.clip(x, -3e4, 3e4))
    p = softmax(backend, x)
    assert_true(np.isfinite(p), values=p, backend=backend, op="softmax", what="finite output for large inputs")
    assert_close(p.sum(axis=-1), np.ones(p.shape[0]), tol=tolerances.softmax_row_sum(backend.dtype, x.shape[-1], x),
                 backend=backend, op="softmax", what="rows sum to 1 for large inputs")
