"""Attention scale properties: scores are Q K^T / sqrt(d_k), so scaling Q up and K down by
the same factor changes nothing, the weights depend on d_k exactly through 1/sqrt(d_k), and
they do not depend on V at all, so attention acts on V's columns one at a time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.kit.assertions import assert_close
from conformance.kit.harness import call_op
from conformance.kit.strategies import arrays, budget
from properties import tolerances
from properties.plumbing import held
from properties.strategies import OP_SHARE, attention_inputs, powers_of_two


@pytest.mark.op("attention")
@budget(OP_SHARE)
@given(case=attention_inputs(), c=powers_of_two())
def test_invariant_to_scaling_queries_up_and_keys_down(backend, case, c):
    """Attention(c Q, K / c, V) = Attention(Q, K, V) for c > 0: (c Q)(K / c)^T = Q K^T. c is a
    power of two, so c Q and K / c are exact in the backend's dtype."""
    q, k, v = (held(backend, case[name]) for name in "qkv")
    shape = q.shape[:-1] + (v.shape[-1],)
    out = call_op(backend, "attention", q, k, v, shape=shape)
    scaled = call_op(backend, "attention", c * q, k / c, v, shape=shape)
    tol = tolerances.difference(tolerances.attention_output_error(backend.dtype, q, k, v),
                                tolerances.attention_output_error(backend.dtype, c * q, k / c, v))
    assert_close(scaled, out, tol=tol, backend=backend, op="attention",
                 what=f"attention(c q, k / c) = attention(q, k), c = {c}")


@pytest.mark.op("attention_weights")
@budget(OP_SHARE)
@given(case=attention_inputs(), m=st.sampled_from([2, 4]), data=st.data())
def test_weights_depend_on_d_k_through_inverse_sqrt(backend, case, m, data):
    """softmax(Q' K'^T / sqrt(m^2 d_k)) = softmax((Q / m) K^T / sqrt(d_k)) for Q' = [Q, 0] and
    K' = [K, R] of width m^2 d_k (any R): the zero columns leave Q' K'^T = Q K^T, so growing
    d_k by m^2 must shrink the scores by exactly m. A scale of 1/d_k, 1/sqrt(S) or none fails."""
    q, k = held(backend, case["q"]), held(backend, case["k"])
    width = m * m * q.shape[-1]
    filler = held(backend, data.draw(arrays(k.shape[:-1] + (width - k.shape[-1],)), label="R"))
    wide_q = np.concatenate([q, np.zeros(q.shape[:-1] + (width - q.shape[-1],))], axis=-1)
    wide_k = np.concatenate([k, filler], axis=-1)
    shape = q.shape[:-1] + (k.shape[-2],)
    wide = call_op(backend, "attention_weights", wide_q, wide_k, shape=shape)
    narrow = call_op(backend, "attention_weights", q / m, k, shape=shape)
    tol = tolerances.difference(tolerances.attention_weights_error(backend.dtype, wide_q, wide_k),
                                tolerances.attention_weights_error(backend.dtype, q / m, k))
    assert_close(wide, narrow, tol=tol, backend=backend, op="attention_weights",
                 what=f"weights at width {m}^2 d_k = weights of q / {m} at width d_k")


@pytest.mark.op("attention")
@budget(OP_SHARE)
@given(case=attention_inputs())
def test_acts_on_the_columns_of_v_one_at_a_time(backend, case):
    """Attention(Q, K, V)[..., j] = Attention(Q, K, V[..., j:j+1])[..., 0] for every column j:
    the weights softmax(Q K^T / sqrt(d_k)) depend on Q and K alone, and A V takes each column
    of V separately. A scale (or anything else) taken from V's width d_v breaks it. Each
    column's error bound ``attention_output_error`` is the same in both calls (it depends on
    that column's max |V| only), so the tolerance is twice it."""
    q, k, v = (held(backend, case[name]) for name in "qkv")
    shape = q.shape[:-1] + (v.shape[-1],)
    out = call_op(backend, "attention", q, k, v, shape=shape)
    columns = np.concatenate([call_op(backend, "attention", q, k, v[..., j:j + 1], shape=shape[:-1] + (1,))
                              for j in range(v.shape[-1])], axis=-1)
    err = tolerances.attention_output_error(backend.dtype, q, k, v)
    assert_close(out, columns, tol=tolerances.difference(err, err), backend=backend, op="attention",
                 what="attention(q, k, v)[..., j] = attention(q, k, v[..., j])")
