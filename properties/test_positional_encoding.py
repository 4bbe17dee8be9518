"""Positional encoding properties, PE[p, 2i] = sin(p w_i), PE[p, 2i+1] = cos(p w_i),
w_i = 10000^(-2i/d_model): deterministic, prefix-consistent, bounded, one point of the unit
circle per frequency pair, [0, 1, 0, 1, ...] at position 0, and a fixed rotation per offset."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.kit.assertions import assert_close, assert_equal, assert_true
from conformance.kit.harness import call_op
from conformance.kit.strategies import budget, sizes
from properties import tolerances
from properties.strategies import OP_SHARE

pytestmark = pytest.mark.op("positional_encoding")

lengths = sizes(1, 24)
widths = sizes(1, 8).map(lambda half: 2 * half)

MAX_OFFSET = 24
"""Offsets k < MAX_OFFSET in the rotation property: every offset of a short table, and
S x MAX_OFFSET pairs (not S^2) of a long one."""

rotation_lengths = st.one_of(sizes(2, MAX_OFFSET), sizes(MAX_OFFSET + 1, 2048))
"""Short tables first; then, about half the time, up to 2048 positions (the op is cheap): past
256, the last integer bfloat16 holds exactly, and 2048, float16's."""


def positional_encoding(backend, seq_len: int, d_model: int) -> np.ndarray:
    return call_op(backend, "positional_encoding", seq_len, d_model, shape=(seq_len, d_model))


def pairs(pe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sin part, cos part): PE[..., 0::2] and PE[..., 1::2], each (..., d_model / 2)."""
    return pe[..., 0::2], pe[..., 1::2]


@budget(OP_SHARE)
@given(seq_len=lengths, d_model=widths)
def test_deterministic(backend, seq_len, d_model):
    """PE(S, d) computed twice is bitwise the same table: it is a function of (S, d) alone."""
    first = positional_encoding(backend, seq_len, d_model)
    second = positional_encoding(backend, seq_len, d_model)
    assert_equal(second, first, backend=backend, op="positional_encoding", what="two calls are bitwise equal")


@budget(OP_SHARE)
@given(seq_len=lengths, longer_by=sizes(1, 8), d_model=widths)
def test_longer_sequence_starts_with_the_shorter_one(backend, seq_len, longer_by, d_model):
    """PE(S + n, d)[:S] = PE(S, d): row p depends on p alone, not on the table's length."""
    short = positional_encoding(backend, seq_len, d_model)
    long = positional_encoding(backend, seq_len + longer_by, d_model)[:seq_len]
    err = tolerances.positional_encoding_error(backend.dtype, np.arange(seq_len))
    assert_close(long, short, tol=tolerances.difference(err, err), backend=backend, op="positional_encoding",
                 what="PE(S + n)[:S] = PE(S)")


@budget(OP_SHARE)
@given(seq_len=lengths, d_model=widths)
def test_values_in_unit_interval(backend, seq_len, d_model):
    """-1 <= PE[p, j] <= 1, exactly: sin and cos lie in [-1, 1] and +-1 are representable."""
    pe = positional_encoding(backend, seq_len, d_model)
    assert_true(np.abs(pe) <= 1, values=pe, backend=backend, op="positional_encoding", what="|PE| <= 1")


@budget(OP_SHARE)
@given(seq_len=lengths, d_model=widths)
def test_sin_cos_pairs_lie_on_the_unit_circle(backend, seq_len, d_model):
    """PE[p, 2i]^2 + PE[p, 2i+1]^2 = sin^2 + cos^2 = 1: features 2i and 2i+1 share one angle."""
    sin, cos = pairs(positional_encoding(backend, seq_len, d_model))
    assert_close(sin**2 + cos**2, np.ones(sin.shape), tol=tolerances.unit_circle_error(backend.dtype),
                 backend=backend, op="positional_encoding", what="PE[p, 2i]^2 + PE[p, 2i+1]^2 = 1")


@budget(OP_SHARE)
@given(seq_len=lengths, d_model=widths)
def test_position_zero_is_zero_one_alternating(backend, seq_len, d_model):
    """PE[0] = [sin 0, cos 0, ...] = [0, 1, 0, 1, ...], exactly (the angle 0 / w is exact)."""
    pe = positional_encoding(backend, seq_len, d_model)
    assert_equal(pe[0], np.tile([0.0, 1.0], d_model // 2), backend=backend, op="positional_encoding",
                 what="PE[0] = [0, 1, 0, 1, ...]")


@budget(OP_SHARE)
@given(seq_len=rotation_lengths, d_model=widths)
def test_offset_acts_as_a_fixed_rotation_per_frequency_pair(backend, seq_len, d_model):
    """PE(p + k) is PE(p) rotated by the angle k w_i in each pair i (relative position is a
    linear map that depends on k only, sec. 3.5):
        sin((p+k) w) = sin(p w) cos(k w) + cos(p w) sin(k w)
        cos((p+k) w) = cos(p w) cos(k w) - sin(p w) sin(k w)
    with the rotation read off the backend's own PE(k), for all p + k < S with k < MAX_OFFSET
    (every pair when S <= MAX_OFFSET). Long tables reach positions where a position held in a
    narrower type than the backend's dtype is rounded (bfloat16: 257 -> 256), which the
    rotation exposes: PE(p) rotated by PE(k) lands on p + k, the table's row on the rounded
    position."""
    sin, cos = pairs(positional_encoding(backend, seq_len, d_model))            # (S, d/2) each
    p, k = np.meshgrid(np.arange(seq_len), np.arange(min(seq_len, MAX_OFFSET)), indexing="ij")
    valid = p + k < seq_len                                                      # (S, K)
    target = np.minimum(p + k, seq_len - 1)
    rotated_sin = sin[p] * cos[k] + cos[p] * sin[k]                              # (S, K, d/2)
    rotated_cos = cos[p] * cos[k] - sin[p] * sin[k]
    tol = tolerances.rotation_error(backend.dtype, np.where(valid, p, 0), np.where(valid, k, 0))
    for name, actual, expected in (("sin", rotated_sin, sin[target]), ("cos", rotated_cos, cos[target])):
        assert_close(actual, expected, tol=tol, backend=backend, op="positional_encoding",
                     what=f"{name}((p + k) w) from PE(p) rotated by PE(k) (index: p, k, i)", where=valid[..., None])
