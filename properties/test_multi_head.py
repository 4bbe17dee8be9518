"""Multi-head attention properties: one head is plain attention on the projections; heads are
the contiguous column blocks of the projections, concatenated in order; relabelling the heads
consistently changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.kit.assertions import assert_close
from conformance.kit.harness import call_op
from conformance.kit.strategies import attention_masks, attention_params, budget
from properties import tolerances
from properties.plumbing import block_permutation, held
from properties.strategies import LAYER_SHARE, multi_head_cases, permutations

pytestmark = pytest.mark.op("multi_head_attention")


def projections(x_q: np.ndarray, x_kv: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q = x_q W_q + b_q, K = x_kv W_k + b_k, V = x_kv W_v + b_v, in float64."""
    return x_q @ p["w_q"] + p["b_q"], x_kv @ p["w_k"] + p["b_k"], x_kv @ p["w_v"] + p["b_v"]


def split_heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    """(B, S, h d_k) -> (B, h, S, d_k): head i is the column block [i d_k, (i + 1) d_k)."""
    B, S, d_model = x.shape
    return x.reshape(B, S, num_heads, d_model // num_heads).transpose(0, 2, 1, 3)


def concat_heads(heads: np.ndarray) -> np.ndarray:
    """(B, h, S, d_k) -> (B, S, h d_k): Concat(head_1, ..., head_h)."""
    B, h, S, d_k = heads.shape
    return heads.transpose(0, 2, 1, 3).reshape(B, S, h * d_k)


def _mha_tol(backend, case, *outputs: np.ndarray) -> np.ndarray:
    length = tolerances.attention_length(case["d_model"], case["num_heads"], case["x_kv"].shape[1])
    return tolerances.difference(*(tolerances.chain_error(backend.dtype, length, out) for out in outputs))


@budget(LAYER_SHARE)
@given(case=multi_head_cases(max_heads=1), data=st.data())
def test_one_head_equals_single_head_attention(backend, case, data):
    """MultiHead(x_q, x_kv, num_heads=1) = Attention(Q, K, V) W_o + b_o with Q = x_q W_q + b_q,
    K = x_kv W_k + b_k, V = x_kv W_v + b_v (d_k = d_model): the backend's own attention op on
    the same projections, formed in float64."""
    x_q, x_kv = held(backend, case["x_q"]), held(backend, case["x_kv"])
    p = held(backend, data.draw(attention_params(case["d_model"]), label="p"))
    mask = data.draw(attention_masks(x_q.shape[:-1] + (x_kv.shape[1],)), label="mask")
    out = call_op(backend, "multi_head_attention", x_q, x_kv, p, 1, mask=mask, shape=x_q.shape)
    q, k, v = projections(x_q, x_kv, p)
    expected = call_op(backend, "attention", q, k, v, mask=mask, shape=x_q.shape) @ p["w_o"] + p["b_o"]
    assert_close(out, expected, tol=_mha_tol(backend, case, out, expected), backend=backend,
                 op="multi_head_attention", what="one head = attention(Q, K, V) W_o + b_o")


@budget(LAYER_SHARE)
@given(case=multi_head_cases(min_heads=2), data=st.data())
def test_heads_are_contiguous_column_blocks(backend, case, data):
    """MultiHead(x_q, x_kv) = Concat_i Attention(Q_i, K_i, V_i) W_o + b_o where Q_i is the column
    block [i d_k, (i + 1) d_k) of Q = x_q W_q + b_q (K_i, V_i likewise) and the mask is the
    same for every head: a head-wise construction with the backend's attention op."""
    x_q, x_kv, num_heads = held(backend, case["x_q"]), held(backend, case["x_kv"]), case["num_heads"]
    p = held(backend, data.draw(attention_params(case["d_model"]), label="p"))
    mask = data.draw(attention_masks(x_q.shape[:-1] + (x_kv.shape[1],)), label="mask")
    out = call_op(backend, "multi_head_attention", x_q, x_kv, p, num_heads, mask=mask, shape=x_q.shape)
    q, k, v = (split_heads(a, num_heads) for a in projections(x_q, x_kv, p))      # (B, h, S, d_k)
    heads = call_op(backend, "attention", q, k, v, mask=None if mask is None else mask[:, None], shape=q.shape)
    expected = concat_heads(heads) @ p["w_o"] + p["b_o"]
    assert_close(out, expected, tol=_mha_tol(backend, case, out, expected), backend=backend,
                 op="multi_head_attention", what="heads = contiguous column blocks, concatenated in order")


@budget(LAYER_SHARE)
@given(case=multi_head_cases(min_heads=2), data=st.data())
def test_permuting_heads_consistently_leaves_output_unchanged(backend, case, data):
    """MultiHead with the column blocks of W_q, W_k, W_v (and b_q, b_k, b_v) and the row blocks
    of W_o permuted by one head permutation equals MultiHead with the original weights: the
    heads are computed the same, only their order in Concat changes, and W_o's rows follow."""
    x_q, x_kv, num_heads = held(backend, case["x_q"]), held(backend, case["x_kv"]), case["num_heads"]
    p = held(backend, data.draw(attention_params(case["d_model"]), label="p"))
    mask = data.draw(attention_masks(x_q.shape[:-1] + (x_kv.shape[1],)), label="mask")
    head_order = data.draw(permutations(num_heads), label="head order")
    order = block_permutation(num_heads, case["d_model"] // num_heads, head_order)
    relabelled = {**{f"w_{x}": p[f"w_{x}"][:, order] for x in "qkv"}, **{f"b_{x}": p[f"b_{x}"][order] for x in "qkv"},
                  "w_o": p["w_o"][order, :], "b_o": p["b_o"]}
    out = call_op(backend, "multi_head_attention", x_q, x_kv, p, num_heads, mask=mask, shape=x_q.shape)
    permuted = call_op(backend, "multi_head_attention", x_q, x_kv, relabelled, num_heads, mask=mask, shape=x_q.shape)
    assert_close(permuted, out, tol=_mha_tol(backend, case, out, permuted), backend=backend,
                 op="multi_head_attention", what=f"heads relabelled by {head_order.tolist()} give the same output")
