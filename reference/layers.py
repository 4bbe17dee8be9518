"""The transformer's building blocks as the contract's ops (Vaswani et al., 2017): each
validates and converts its inputs at the boundary (ValueError naming the argument) and then
calls its equation in reference/equations.py. ``dtype`` is float64 for ground truth; a lower
precision gives the naive equations at that precision, the built-in ``numpy`` backend (see
reference/precision.py). Named alternative conventions (reference/variants.py) are hooked in
the equations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from reference import equations as eq
from reference._checks import (
    check_axis, check_even_width, check_heads, check_ids, check_int, check_mask, check_positive, float_tree, floats,
)
from reference.config import ACTIVATIONS
from reference.params import attention_shapes, ffn_shapes, norm_shapes
from reference.precision import as_float, check_dtype

Params = Mapping[str, Any]

__all__ = ["softmax", "positional_encoding", "embedding", "layer_norm", "attention_weights", "attention",
           "multi_head_attention", "feed_forward"]
"""The contract's ops defined here (a new one is added to this list: the package exports it)."""


# --- softmax -------------------------------------------------------------------------------

def softmax(x: Any, axis: int = -1, *, dtype: str = "float64") -> np.ndarray:
    """softmax(x)_i = exp(x_i - max_j x_j) / sum_j exp(x_j - max_j x_j).

    Choices: -inf entries get exactly 0; a slice that is all -inf gives zeros, not NaN.
    Shapes: any -> same.
    """
    x = as_float("x", x, check_dtype(dtype), neg_inf=True)
    axis = check_axis("axis", axis, x.ndim)
    if x.shape[axis] == 0:
        raise ValueError(f"x must have at least one entry along axis {axis}, got shape {x.shape}")
    if np.isposinf(x).any():
        raise ValueError("x contains +inf")
    return eq.softmax(x, axis, dtype)


# --- positional encoding and embedding -----------------------------------------------------

def positional_encoding(seq_len: int, d_model: int, *, dtype: str = "float64") -> np.ndarray:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))
    (sec. 3.5).

    Shapes: -> (seq_len, d_model).
    """
    check_int("seq_len", seq_len, minimum=0)
    d_model = check_even_width(check_int("d_model", d_model, minimum=2))
    return eq.positional_encoding(seq_len, d_model, check_dtype(dtype))


def embedding(ids: Any, table: Any, *, dtype: str = "float64") -> np.ndarray:
    """Embedding lookup: table[ids] (row ids of the (V, d) table).

    Shapes: ids (B, S) integer, table (V, d) -> (B, S, d).
    """
    table = floats("table", table, check_dtype(dtype), (None, None))
    return table[check_ids("ids", ids, table.shape[0])]


# --- layer norm ----------------------------------------------------------------------------

def layer_norm(x: Any, gamma: Any, beta: Any, eps: float, *, dtype: str = "float64") -> np.ndarray:
    """LayerNorm(x) = (x - mean) / sqrt(var + eps) * gamma + beta, over the last axis
    (Ba et al., 2016).

    Choices: biased variance (divide by d); eps inside the square root.
    Shapes: x (..., d), gamma (d,), beta (d,) -> (..., d).
    """
    check_dtype(dtype)
    x = as_float("x", x, dtype)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must have a non-empty last axis, got shape {x.shape}")
    eps = check_positive("eps", eps)
    norm = float_tree("norm", {"gamma": gamma, "beta": beta}, norm_shapes(x.shape[-1]), dtype)
    return eq.layer_norm(x, norm, float(eps), dtype)


# --- attention -----------------------------------------------------------------------------

def attention_weights(q: Any, k: Any, mask: Any = None, *, dtype: str = "float64") -> np.ndarray:
    """softmax(Q K^T / sqrt(d_k)), masked scores set to -inf before the softmax (eq. 1).

    Choices: mask True = may attend; a query row with every key masked gets zero weights.
    Shapes: q (..., Sq, d_k), k (..., Sk, d_k), mask broadcast to (..., Sq, Sk) -> (..., Sq, Sk).
    """
    q, k, _, mask = _attention_inputs(q, k, None, mask, check_dtype(dtype))
    return eq.attention_weights(q, k, mask, dtype)


def attention(q: Any, k: Any, v: Any, mask: Any = None, *, dtype: str = "float64") -> np.ndarray:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V (eq. 1), masked scores -inf.

    Choices: a query row with every key masked gives zeros.
    Shapes: q (..., Sq, d_k), k (..., Sk, d_k), v (..., Sk, d_v) -> (..., Sq, d_v).
    """
    q, k, v, mask = _attention_inputs(q, k, v, mask, check_dtype(dtype))
    return eq.attention(q, k, v, mask, dtype)


def _attention_inputs(q: Any, k: Any, v: Any, mask: Any, dtype: str) -> tuple:
    q, k = as_float("q", q, dtype), as_float("k", k, dtype)
    if q.ndim < 2 or k.ndim < 2 or q.shape[-1] != k.shape[-1] or q.shape[-1] < 1:
        raise ValueError(f"q (..., Sq, d_k) and k (..., Sk, d_k) must share d_k >= 1, got {q.shape} and {k.shape}")
    if k.shape[-2] < 1:
        raise ValueError(f"k must hold at least one key (Sk >= 1), got shape {k.shape}")
    if v is not None:
        v = as_float("v", v, dtype)
        if v.ndim < 2 or v.shape[-2] != k.shape[-2]:
            raise ValueError(f"v must have shape (..., Sk={k.shape[-2]}, d_v), got {v.shape}")
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], () if v is None else v.shape[:-2])
    except ValueError:
        raise ValueError(f"the leading axes of q {q.shape}, k {k.shape} and v do not broadcast") from None
    return q, k, v, check_mask("mask", mask, (*batch, q.shape[-2], k.shape[-2]))


# --- multi-head attention ------------------------------------------------------------------

def multi_head_attention(x_q: Any, x_kv: Any, p: Params, num_heads: int, mask: Any = None, *,
                         dtype: str = "float64") -> np.ndarray:
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W_o + b_o,
    head_i = Attention(Q W_q + b_q, K W_k + b_k, V W_v + b_v) restricted to head i (sec. 3.2.2).

    Choices: head i uses the contiguous columns [i*d_k:(i+1)*d_k]; the mask is the same for
    every head.
    Shapes: x_q (B, Sq, d_model), x_kv (B, Sk, d_model), mask broadcast to (B, Sq, Sk)
    -> (B, Sq, d_model).
    """
    x_q = floats("x_q", x_q, check_dtype(dtype), (None, None, None))
    B, Sq, d_model = x_q.shape
    x_kv = floats("x_kv", x_kv, dtype, (B, None, d_model))
    if x_kv.shape[1] < 1:
        raise ValueError(f"x_kv must hold at least one position (Sk >= 1), got shape {x_kv.shape}")
    num_heads = check_int("num_heads", num_heads, minimum=1)
    check_heads(d_model, num_heads)
    p = float_tree("p", p, attention_shapes(d_model), dtype)
    mask = check_mask("mask", mask, (B, Sq, x_kv.shape[1]))
    return eq.multi_head_attention(x_q, x_kv, p, num_heads, mask, dtype)


# --- feed-forward --------------------------------------------------------------------------

def feed_forward(x: Any, p: Params, activation: str = "relu", *, dtype: str = "float64") -> np.ndarray:
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2 (eq. 2, with act = ReLU in the paper).

    Choices: ``gelu`` is the exact GELU, x * Phi(x) = x/2 * (1 + erf(x / sqrt(2))).
    Shapes: x (..., d_model), W_1 (d_model, d_ff), W_2 (d_ff, d_model) -> (..., d_model).
    """
    x = as_float("x", x, check_dtype(dtype))
    if x.ndim < 1:
        raise ValueError(f"x must have shape (..., d_model), got {x.shape}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    try:
        d_ff = np.shape(p.get("w_1")) if isinstance(p, Mapping) else ()
    except (ValueError, TypeError) as exc:  # e.g. a ragged nested list
        raise ValueError(f"p['w_1'] is not an array: {exc}") from None
    if len(d_ff) != 2:
        raise ValueError(f"p['w_1'] must have shape ({x.shape[-1]}, d_ff), got {d_ff}")
    p = float_tree("p", p, ffn_shapes(x.shape[-1], d_ff[1]), dtype)
    return eq.feed_forward(x, p, activation, dtype)


