"""Masking properties of attention (mask True = may attend): masked keys get exactly zero
weight, so their keys and values cannot matter; a query with every key masked gives zeros; an
all-True mask is no mask."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conformance.kit.assertions import assert_close, assert_equal
from conformance.kit.harness import call_op
from conformance.kit.strategies import arrays, attention_masks, attention_params, budget
from properties import tolerances
from properties.plumbing import held
from properties.strategies import LAYER_SHARE, OP_SHARE, attention_inputs, multi_head_cases


@st.composite
def masks_with_dead_keys(draw: st.DrawFn, batch: int, s_q: int, s_k: int) -> np.ndarray:
    """A (B, Sq, Sk) mask in which some keys are masked for every query ("dead" keys, as
    padding makes them): ``attention_masks`` AND a random keep pattern per key."""
    mask = draw(attention_masks((batch, s_q, s_k)))
    mask = np.ones((batch, s_q, s_k), dtype=bool) if mask is None else mask
    return mask & draw(hnp.arrays(np.bool_, (batch, s_k)))[:, None, :]


def _replace_dead(a: np.ndarray, fresh: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """``a`` (B, Sk, d) with the rows of dead keys (B, Sk) taken from ``fresh``."""
    return np.where(dead[..., None], fresh, a)


@pytest.mark.op("attention_weights")
@budget(OP_SHARE)
@given(case=attention_inputs(), data=st.data())
def test_masked_keys_get_exactly_zero_weight(backend, case, data):
    """A_ij = 0 exactly wherever mask_ij is False: the score is -inf and exp(-inf) = 0 (a row
    with every key masked is all zeros too)."""
    q, k = held(backend, case["q"]), held(backend, case["k"])
    shape = q.shape[:-1] + (k.shape[-2],)
    mask = data.draw(attention_masks(shape), label="mask")
    weights = call_op(backend, "attention_weights", q, k, mask=mask, shape=shape)
    where = np.zeros(shape, bool) if mask is None else ~mask
    assert_equal(weights, np.zeros(shape), backend=backend, op="attention_weights",
                 what="masked keys get weight 0", where=where)


@pytest.mark.op("attention")
@budget(OP_SHARE)
@given(case=attention_inputs(), data=st.data())
def test_keys_and_values_at_masked_positions_do_not_matter(backend, case, data):
    """Attention(Q, K', V', M) = Attention(Q, K, V, M) when K', V' differ from K, V only at keys
    that M masks for every query: those keys get weight exactly 0, whatever their values."""
    q, k, v = (held(backend, case[name]) for name in "qkv")
    mask = data.draw(masks_with_dead_keys(*q.shape[:-1], k.shape[-2]), label="mask")
    dead = ~mask.any(axis=-2)                                                    # (B, Sk)
    k2 = _replace_dead(k, held(backend, data.draw(arrays(k.shape), label="k'")), dead)
    v2 = _replace_dead(v, held(backend, data.draw(arrays(v.shape), label="v'")), dead)
    shape = q.shape[:-1] + (v.shape[-1],)
    out = call_op(backend, "attention", q, k, v, mask=mask, shape=shape)
    changed = call_op(backend, "attention", q, k2, v2, mask=mask, shape=shape)
    tol = tolerances.difference(tolerances.attention_output_error(backend.dtype, q, k, v),
                                tolerances.attention_output_error(backend.dtype, q, k2, v2))
    assert_close(changed, out, tol=tol, backend=backend, op="attention", what="masked keys/values do not matter")


@pytest.mark.op("attention")
@budget(OP_SHARE)
@given(case=attention_inputs(), data=st.data())
def test_fully_masked_query_row_gives_zeros(backend, case, data):
    """Attention(Q, K, V, M)_i = 0 exactly for a query i whose every key is masked
    (backends/CONTRACT.md: zero weights, not the NaN of 0/0 nor a uniform average)."""
    q, k, v = (held(backend, case[name]) for name in "qkv")
    shape = q.shape[:-1] + (k.shape[-2],)
    mask = data.draw(attention_masks(shape), label="mask")
    mask = np.ones(shape, dtype=bool) if mask is None else mask
    mask[..., data.draw(st.integers(0, shape[-2] - 1), label="masked query"), :] = False
    out = call_op(backend, "attention", q, k, v, mask=mask, shape=q.shape[:-1] + (v.shape[-1],))
    fully_masked = ~mask.any(axis=-1)                                            # (B, Sq)
    assert_equal(out, np.zeros(out.shape), backend=backend, op="attention",
                 what="a fully masked query row gives zeros", where=fully_masked[..., None])


@pytest.mark.op("attention")
@budget(OP_SHARE)
@given(case=attention_inputs())
def test_all_true_mask_equals_no_mask(backend, case):
    """Attention(Q, K, V, all True) = Attention(Q, K, V): a mask that allows everything masks
    nothing."""
    q, k, v = (held(backend, case[name]) for name in "qkv")
    shape = q.shape[:-1] + (v.shape[-1],)
    unmasked = call_op(backend, "attention", q, k, v, shape=shape)
    all_true = call_op(backend, "attention", q, k, v, mask=np.ones(q.shape[:-1] + (k.shape[-2],), bool), shape=shape)
    err = tolerances.attention_output_error(backend.dtype, q, k, v)
    assert_close(all_true, unmasked, tol=tolerances.difference(err, err), backend=backend, op="attention",
                 what="all-True mask = no mask")


@pytest.mark.op("multi_head_attention")
@budget(LAYER_SHARE)
@given(case=multi_head_cases(), data=st.data())
def test_multi_head_attention_ignores_masked_keys_and_values(backend, case, data):
    """MultiHead(x_q, x_kv', M) = MultiHead(x_q, x_kv, M) when x_kv' differs from x_kv only at
    keys that M masks for every query: the mask is applied in every head."""
    x_q, x_kv = held(backend, case["x_q"]), held(backend, case["x_kv"])
    p = held(backend, data.draw(attention_params(case["d_model"]), label="p"))
    mask = data.draw(masks_with_dead_keys(*x_q.shape[:-1], x_kv.shape[-2]), label="mask")
    dead = ~mask.any(axis=-2)
    x_kv2 = _replace_dead(x_kv, held(backend, data.draw(arrays(x_kv.shape), label="x_kv'")), dead)
    out = call_op(backend, "multi_head_attention", x_q, x_kv, p, case["num_heads"], mask=mask, shape=x_q.shape)
    changed = call_op(backend, "multi_head_attention", x_q, x_kv2, p, case["num_heads"], mask=mask, shape=x_q.shape)
    length = tolerances.attention_length(case["d_model"], case["num_heads"], x_kv.shape[-2])
    tol = tolerances.chain_difference(backend.dtype, length, out, changed)
    assert_close(changed, out, tol=tol, backend=backend, op="multi_head_attention",
                 what="masked keys/values do not matter in any head")
