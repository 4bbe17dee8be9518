"""The equations of the transformer's building blocks (Vaswani et al., 2017), one function
each, on validated float arrays: what reference/layers.py calls after checking its inputs, and
what reference/model.py composes. They read like the paper; the shapes are in the public
functions' docstrings (reference/layers.py).

``dtype`` is float64 for ground truth; a lower precision gives the naive equations at that
precision (reference/precision.py). Where an equation has a named alternative convention
(reference/variants.py), the code calls the variant's hook only while one is active
(``if _variants.ACTIVE``): the gate's diagnosis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import special

from reference import variants as _variants
from reference.precision import arithmetic, rounded

Params = Mapping[str, Any]


def softmax(x: np.ndarray, axis: int, dtype: str) -> np.ndarray:
    """exp(x_i - max_j x_j) / sum_j exp(x_j - max_j x_j) along ``axis``."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isneginf(m), 0, m)  # all -inf: exp(-inf - 0) = 0 everywhere
    e = np.exp(x - m)
    s = np.sum(e, axis=axis, keepdims=True)
    out = rounded(e / np.where(s > 0, s, 1), dtype)
    return _variants.softmax_of_masked_rows(out, x, axis) if _variants.ACTIVE else out


def positional_encoding(seq_len: int, d_model: int, dtype: str) -> np.ndarray:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(same) (sec. 3.5)."""
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


def layer_norm(x: np.ndarray, norm: Params, eps: float, dtype: str) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis.

    Choices: the two-pass variance, mean((x - mean)^2) after the mean, not E[x^2] - E[x]^2 (which
    cancels for rows with a large mean: Flax's default, variant ``layer-norm-fast-variance``)."""
    mean = rounded(np.mean(x, axis=-1, keepdims=True), dtype)
    if _variants.ACTIVE:  # a named convention instead of the contract's (reference/variants.py)
        x_hat = _variants.x_hat(x, mean, eps, dtype)
    else:
        var = rounded(np.mean((x - mean) ** 2, axis=-1, keepdims=True), dtype)   # biased
        x_hat = rounded((x - mean) / np.sqrt(var + eps), dtype)
    return rounded(x_hat * norm["gamma"] + norm["beta"], dtype)


def attention_weights(q: np.ndarray, k: np.ndarray, mask: np.ndarray | None, dtype: str,
                       d_model: int | None = None) -> np.ndarray:
    """softmax(Q K^T / sqrt(d_k)) with masked scores -inf (eq. 1). ``d_model``: the model width,
    given inside multi-head attention (for a variant's scale).

    Choices: the scores are scaled after the matmul, (Q K^T) / sqrt(d_k); scaling Q first is as
    correct and rounds differently (the tolerance allows either)."""
    d_k = q.shape[-1]
    if _variants.ACTIVE:  # a named convention instead of the contract's (reference/variants.py)
        scores = rounded(_variants.scaled_scores(q @ np.swapaxes(k, -1, -2), d_k, d_model), dtype)
        return softmax(scores if mask is None else _variants.masked_scores(scores, mask, dtype), -1, dtype)
    scores = rounded(q @ np.swapaxes(k, -1, -2) / math.sqrt(d_k), dtype)   # (..., Sq, Sk)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    return softmax(scores, -1, dtype)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, dtype: str,
               d_model: int | None = None) -> np.ndarray:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V (eq. 1)."""
    return rounded(attention_weights(q, k, mask, dtype, d_model) @ v, dtype)


def multi_head_attention(x_q: np.ndarray, x_kv: np.ndarray, p: Params, num_heads: int,
                          mask: np.ndarray | None, dtype: str) -> np.ndarray:
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W_o + b_o, head_i = Attention(x_q W_q^i,
    x_kv W_k^i, x_kv W_v^i) (sec. 3.2.2)."""
    Q = split_heads(linear(x_q, p["w_q"], p["b_q"], dtype), num_heads)    # (B, h, Sq, d_k)
    K = split_heads(linear(x_kv, p["w_k"], p["b_k"], dtype), num_heads)   # (B, h, Sk, d_k)
    V = split_heads(linear(x_kv, p["w_v"], p["b_v"], dtype), num_heads)   # (B, h, Sk, d_k)
    head_mask = None if mask is None else mask[..., None, :, :]              # same for every head
    heads = attention(Q, K, V, head_mask, dtype, x_q.shape[-1])             # (B, h, Sq, d_k)
    return linear(merge_heads(heads), p["w_o"], p["b_o"], dtype)


def split_heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    """(B, S, h * d_k) -> (B, h, S, d_k): head i = columns [i*d_k:(i+1)*d_k]."""
    if _variants.ACTIVE and (interleaved := _variants.split_heads(x, num_heads)) is not None:
        return interleaved
    B, S, d_model = x.shape
    return x.reshape(B, S, num_heads, d_model // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, h, S, d_k) -> (B, S, h * d_k): Concat(head_1, ..., head_h)."""
    if _variants.ACTIVE and (interleaved := _variants.merge_heads(x)) is not None:
        return interleaved
    B, h, S, d_k = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, S, h * d_k)


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray, dtype: str) -> np.ndarray:
    """x W + b, W laid out (d_in, d_out)."""
    return rounded(x @ w + b, dtype)


def feed_forward(x: np.ndarray, p: Params, activation: str, dtype: str) -> np.ndarray:
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2 (eq. 2)."""
    hidden = ACTIVATION[activation](linear(x, p["w_1"], p["b_1"], dtype), dtype)   # (..., d_ff)
    return linear(hidden, p["w_2"], p["b_2"], dtype)


def relu(x: np.ndarray, dtype: str) -> np.ndarray:
    """ReLU(x) = max(0, x)."""
    return np.maximum(x, 0)


def gelu(x: np.ndarray, dtype: str) -> np.ndarray:
    """GELU(x) = x/2 * (1 + erf(x / sqrt(2))), exact (not the tanh approximation).

    Choices: erf's value is stored (rounded to ``dtype``) before 1 + erf, as a kernel holds it;
    for x < 0 that sum cancels, so erf's rounding sets GELU's error (conformance/tolerance/TOLERANCES.md).
    """
    if _variants.ACTIVE and _variants.on("gelu-tanh"):
        return _variants.gelu_tanh(x, dtype)
    phi = rounded(special.erf(x / math.sqrt(2.0)), dtype)                  # 2 Phi(x) - 1
    return rounded(0.5 * x * (1.0 + phi), dtype)


ACTIVATION: dict[str, Callable[[np.ndarray, str], np.ndarray]] = {"relu": relu, "gelu": gelu}
