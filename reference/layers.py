"""The transformer's building blocks, one function per equation (Vaswani et al., 2017).

Each public function validates and converts its inputs at the boundary (ValueError naming the
argument) and then calls the private ``_`` function that reads like the equation. ``dtype`` is
float64 for ground truth; a lower precision gives the naive equations at that precision, the
built-in ``numpy`` backend (see reference/precision.py).

Where an equation has a named alternative convention (reference/variants.py: PE halves,
finite masks, NaN rows, the variance, eps, GELU, head layout, score scale), the code calls
the variant's hook only while one is active (``if _variants.ACTIVE``): the gate's diagnosis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import special

from reference import variants as _variants
from reference._checks import check_axis, check_ids, check_int, check_mask, float_tree, floats
from reference.config import ACTIVATIONS
from reference.params import attention_shapes, ffn_shapes, norm_shapes
from reference.precision import arithmetic, as_float, check_dtype, rounded

Params = Mapping[str, Any]


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
    return _softmax(x, axis, dtype)


def _softmax(x: np.ndarray, axis: int, dtype: str) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isneginf(m), 0, m)  # all -inf: exp(-inf - 0) = 0 everywhere
    e = np.exp(x - m)
    s = np.sum(e, axis=axis, keepdims=True)
    out = rounded(e / np.where(s > 0, s, 1), dtype)
    return _variants.softmax_of_masked_rows(out, x, axis) if _variants.ACTIVE else out


# --- positional encoding and embedding -----------------------------------------------------

def positional_encoding(seq_len: int, d_model: int, *, dtype: str = "float64") -> np.ndarray:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))
    (sec. 3.5).

    Shapes: -> (seq_len, d_model).
    """
    check_int("seq_len", seq_len, minimum=0)
    d_model = check_int("d_model", d_model, minimum=2)
    if d_model % 2:
        raise ValueError(f"d_model must be even for the positional encoding, got {d_model}")
    return _positional_encoding(seq_len, d_model, check_dtype(dtype))


def _positional_encoding(seq_len: int, d_model: int, dtype: str) -> np.ndarray:
    at = arithmetic(dtype)                                                 # angles in >= float32
    pos = rounded(np.arange(seq_len), at)[:, None]                         # (S, 1)
    two_i = rounded(np.arange(0, d_model, 2), at)[None, :]                 # (1, d_model/2)
    angle = rounded(pos / rounded(10000.0 ** (two_i / d_model), at), at)   # (S, d_model/2)
    pe = np.empty((seq_len, d_model), dtype=angle.dtype)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle)
    if _variants.ACTIVE:  # a named convention instead of the contract's (reference/variants.py)
        pe = _variants.positional_encoding(angle, pe, dtype)
    return rounded(pe, dtype)


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
    if isinstance(eps, (bool, np.bool_)) or not (isinstance(eps, (int, float, np.floating)) and 0 < eps < math.inf):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    norm = float_tree("norm", {"gamma": gamma, "beta": beta}, norm_shapes(x.shape[-1]), dtype)
    return _layer_norm(x, norm, float(eps), dtype)


def _layer_norm(x: np.ndarray, norm: Params, eps: float, dtype: str) -> np.ndarray:
    mean = rounded(np.mean(x, axis=-1, keepdims=True), dtype)
    if _variants.ACTIVE:  # a named convention instead of the contract's (reference/variants.py)
        x_hat = _variants.x_hat(x, mean, eps, dtype)
    else:
        var = rounded(np.mean((x - mean) ** 2, axis=-1, keepdims=True), dtype)   # biased
        x_hat = rounded((x - mean) / np.sqrt(var + eps), dtype)
    return rounded(x_hat * norm["gamma"] + norm["beta"], dtype)


# --- attention -----------------------------------------------------------------------------

def attention_weights(q: Any, k: Any, mask: Any = None, *, dtype: str = "float64") -> np.ndarray:
    """softmax(Q K^T / sqrt(d_k)), masked scores set to -inf before the softmax (eq. 1).

    Choices: mask True = may attend; a query row with every key masked gets zero weights.
    Shapes: q (..., Sq, d_k), k (..., Sk, d_k), mask broadcast to (..., Sq, Sk) -> (..., Sq, Sk).
    """
    q, k, _, mask = _attention_inputs(q, k, None, mask, check_dtype(dtype))
    return _attention_weights(q, k, mask, dtype)


def attention(q: Any, k: Any, v: Any, mask: Any = None, *, dtype: str = "float64") -> np.ndarray:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V (eq. 1), masked scores -inf.

    Choices: a query row with every key masked gives zeros.
    Shapes: q (..., Sq, d_k), k (..., Sk, d_k), v (..., Sk, d_v) -> (..., Sq, d_v).
    """
    q, k, v, mask = _attention_inputs(q, k, v, mask, check_dtype(dtype))
    return _attention(q, k, v, mask, dtype)


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


def _attention_weights(q: np.ndarray, k: np.ndarray, mask: np.ndarray | None, dtype: str,
                       d_model: int | None = None) -> np.ndarray:
    """``d_model``: the model width, given inside multi-head attention (for a variant's scale)."""
    d_k = q.shape[-1]
    if _variants.ACTIVE:  # a named convention instead of the contract's (reference/variants.py)
        scores = rounded(_variants.scaled_scores(q @ np.swapaxes(k, -1, -2), d_k, d_model), dtype)
        return _softmax(scores if mask is None else _variants.masked_scores(scores, mask, dtype), -1, dtype)
    scores = rounded(q @ np.swapaxes(k, -1, -2) / math.sqrt(d_k), dtype)   # (..., Sq, Sk)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    return _softmax(scores, -1, dtype)


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, dtype: str,
               d_model: int | None = None) -> np.ndarray:
    return rounded(_attention_weights(q, k, mask, dtype, d_model) @ v, dtype)


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
    if d_model % num_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
    p = float_tree("p", p, attention_shapes(d_model), dtype)
    mask = check_mask("mask", mask, (B, Sq, x_kv.shape[1]))
    return _multi_head_attention(x_q, x_kv, p, num_heads, mask, dtype)


def _multi_head_attention(x_q: np.ndarray, x_kv: np.ndarray, p: Params, num_heads: int,
                          mask: np.ndarray | None, dtype: str) -> np.ndarray:
    Q = _split_heads(_linear(x_q, p["w_q"], p["b_q"], dtype), num_heads)    # (B, h, Sq, d_k)
    K = _split_heads(_linear(x_kv, p["w_k"], p["b_k"], dtype), num_heads)   # (B, h, Sk, d_k)
    V = _split_heads(_linear(x_kv, p["w_v"], p["b_v"], dtype), num_heads)   # (B, h, Sk, d_k)
    head_mask = None if mask is None else mask[..., None, :, :]              # same for every head
    heads = _attention(Q, K, V, head_mask, dtype, x_q.shape[-1])             # (B, h, Sq, d_k)
    return _linear(_merge_heads(heads), p["w_o"], p["b_o"], dtype)


def _split_heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    """(B, S, h * d_k) -> (B, h, S, d_k): head i = columns [i*d_k:(i+1)*d_k]."""
    if _variants.ACTIVE and (interleaved := _variants.split_heads(x, num_heads)) is not None:
        return interleaved
    B, S, d_model = x.shape
    return x.reshape(B, S, num_heads, d_model // num_heads).transpose(0, 2, 1, 3)


def _merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, h, S, d_k) -> (B, S, h * d_k): Concat(head_1, ..., head_h)."""
    if _variants.ACTIVE and (interleaved := _variants.merge_heads(x)) is not None:
        return interleaved
    B, h, S, d_k = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, S, h * d_k)


def _linear(x: np.ndarray, w: np.ndarray, b: np.ndarray, dtype: str) -> np.ndarray:
    """x W + b, W laid out (d_in, d_out)."""
    return rounded(x @ w + b, dtype)


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
    return _feed_forward(x, p, activation, dtype)


def _feed_forward(x: np.ndarray, p: Params, activation: str, dtype: str) -> np.ndarray:
    hidden = _ACTIVATION[activation](_linear(x, p["w_1"], p["b_1"], dtype), dtype)   # (..., d_ff)
    return _linear(hidden, p["w_2"], p["b_2"], dtype)


def _relu(x: np.ndarray, dtype: str) -> np.ndarray:
    """ReLU(x) = max(0, x)."""
    return np.maximum(x, 0)


def _gelu(x: np.ndarray, dtype: str) -> np.ndarray:
    """GELU(x) = x/2 * (1 + erf(x / sqrt(2))), exact (not the tanh approximation).

    Choices: erf's value is stored (rounded to ``dtype``) before 1 + erf, as a kernel holds it;
    for x < 0 that sum cancels, so erf's rounding sets GELU's error (conformance/tolerance/TOLERANCES.md).
    """
    if _variants.ACTIVE and _variants.on("gelu-tanh"):
        return _variants.gelu_tanh(x, dtype)
    phi = rounded(special.erf(x / math.sqrt(2.0)), dtype)                  # 2 Phi(x) - 1
    return rounded(0.5 * x * (1.0 + phi), dtype)


_ACTIVATION: dict[str, Callable[[np.ndarray, str], np.ndarray]] = {"relu": _relu, "gelu": _gelu}
