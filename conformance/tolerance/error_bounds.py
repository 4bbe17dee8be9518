"""First-order forward error bounds, propagated through the reference's equations.

For every contract op this computes, in float64 and from the inputs alone, a *bounds
tensor*: per output element, how far a correct implementation computing at unit roundoff
``u`` may land from the exact result (Higham, *Accuracy and Stability of Numerical
Algorithms*, ch. 3; the TOSA conformance verifier's design). Each value is carried as a
``Bounded(v, e)``: its exact value ``v`` and a bound ``e`` on the absolute error that the
computation so far may have put into it, for an implementation that rounds stored values at
unit roundoff ``u`` and its accumulations at ``Rounding.acc`` (float32's for the half
precisions). Every equation propagates the incoming ``e``
through its derivative (its condition) and adds what its own arithmetic may round:

- a reduction of length ``n`` (dot product, sum, mean) adds ``u * acc(n) * sum |terms|``
  with ``acc(n) = min(n, LAMBDA sqrt(n)) + 1``: worst case ``gamma_n`` for short reductions,
  the probabilistic ``LAMBDA sqrt(n) u`` (Higham & Mary 2019; Ipsen & Zhou 2020) for long
  ones, whatever the summation order (sequential, pairwise, blocked split-K, FMA);
- an elementwise rounding adds ``u |value|``; a libm function ``LIBM u |value|`` (erf:
  ``ERF u |erf|``, vectorized kernels are coarser);
- softmax turns logit errors into weight errors ``y_i (e_i + sum_j y_j e_j)``, which is the
  amplification of a logit's rounding ``u |s_ij|`` that a large logit suffers;
- layer norm divides incoming errors by sigma and charges the rounded mean and variance.

The derivation of every term and the measurements that set the constants are in
conformance/tolerance/TOLERANCES.md. Nothing here depends on the host's BLAS, CPU, thread count or
library versions: the bound is a deterministic function of (op, inputs, u). The values
``v`` are the reference's (tests/test_tolerance_model.py checks they agree).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

import reference
from reference import variants
from reference.config import Config, as_config
from reference.params import map_floats

LAMBDA = 2.0
"""Probabilistic reduction constant: a length-n reduction rounds by at most LAMBDA sqrt(n) u
times the sum of its |terms| (worst case n u where that is smaller)."""

LIBM = 4.0
"""Error of exp, sin, cos, sqrt and rsqrt from any maintained math library, in units of u:
2 ulp (glibc, SLEEF, CUDA's fast-math free versions are within 1-2 ulp)."""

ERF = 16.0
"""Error of erf, in units of u |erf|: vectorized kernels approximate it to an absolute error,
which near |erf| = 1 (where GELU's 1 + erf cancels) is several ulp. torch's CPU GELU
(ATen's ``Vectorized<float>::erf``, an Abramowitz-Stegun 7.1.26-style approximation) is off
by up to 12 u at float32 (x = +-2.95, erf = 0.997; 2M points of [-8, 8], AVX512), and its
scalar path by 1.5 u; 16 covers the vectorized kernel by 4/3 before SAFETY
(TOLERANCES.md, "GELU")."""

ROUNDINGS_PER_NORMALISATION = 4.0
"""Roundings in x_hat = (x - mean) / sqrt(var + eps): the subtraction, sqrt (or rsqrt), the
division (or multiply), the store."""

PE_ANGLE = 4.0
"""Roundings of PE's angle besides its exponent: pos, 2i/d_model, the division (or a multiply
by a stored reciprocal), and a phase shift (cos(a) = sin(a + pi/2))."""

Array = np.ndarray


@dataclass(frozen=True)
class Bounded:
    """An exact float64 value and a bound on the absolute error of a computed copy of it
    (``e`` broadcasts against ``v``; a scalar 0 means exact)."""

    v: Array
    e: Array | float = 0.0


@dataclass(frozen=True)
class Rounding:
    """How a correct implementation at one dtype rounds: ``store``, the unit roundoff of every
    value it stores and of each elementwise operation's result (its dtype's); ``acc``, that of
    its accumulators (sums, dot products, means) and of the positional encoding's angles:
    float32's for float16 and bfloat16, which accumulate in float32 and store in half
    precision (backends/CONTRACT.md), the dtype's own otherwise."""

    store: float
    acc: float


def exact(a: Any) -> Bounded:
    """An input the backend holds exactly (already rounded to its dtype)."""
    return Bounded(np.asarray(a, dtype=np.float64))


def acc(n: int) -> float:
    """Roundings charged to a length-n reduction, in units of u times sum |terms|."""
    return min(float(n), LAMBDA * math.sqrt(n)) + 1.0


def independent(worst: Array | float, square: Array | float, spread: float = 1.0) -> Array | float:
    """A bound on a sum of independent errors: ``spread`` times their quadrature sum
    (``square`` is the sum of their squared bounds), at most the worst case (``worst``, the
    sum of their bounds); where every square underflowed to 0 (errors below 1e-154, e.g.
    those of softmax weights of e^-600), the worst case, which a correct float64 backend
    otherwise exceeds on a tiny result. ``spread = LAMBDA`` for the errors of stored values
    (``stored_errors``); 1 for the softmax's exponent errors, whose bounds are worst cases
    several times what a correct exp realizes (TOLERANCES.md, "Propagation")."""
    return np.where(np.asarray(square) > 0.0, np.minimum(worst, spread * np.sqrt(square)), worst)


def stored_errors(worst: Array | float, square: Array | float) -> Array | float:
    """A bound on a sum of the independent errors of n stored values (each up to one or two
    roundings, which a correct backend realizes in full): LAMBDA times their quadrature sum,
    at most the worst case, the reduction rule's min(n, LAMBDA sqrt(n)) for incoming errors."""
    return independent(worst, square, LAMBDA)


# --- elementwise and reductions ---------------------------------------------------------------

def stored(x: Bounded, r: Rounding, roundings: float = 1.0) -> Bounded:
    """x after ``roundings`` elementwise roundings of its value."""
    return Bounded(x.v, x.e + roundings * r.store * np.abs(x.v))


def add(a: Bounded, b: Bounded, r: Rounding) -> Bounded:
    """a + b, rounded."""
    return stored(Bounded(a.v + b.v, a.e + b.e), r)


def matmul(a: Bounded, b: Bounded, r: Rounding) -> Bounded:
    """a @ b over the last axis of a (length n): own rounding u acc(n) |a| |b|; incoming
    errors, independent across the n terms, add as the reduction's own do:
    min(worst case, LAMBDA sqrt(e_a^2 b^2 + a^2 e_b^2)) (``stored_errors``).
    Shapes: (..., m, n) @ (..., n, p) -> (..., m, p)."""
    e = r.acc * acc(a.v.shape[-1]) * (np.abs(a.v) @ np.abs(b.v))
    worst, square = 0.0, 0.0
    if np.any(a.e):
        e_a = np.broadcast_to(a.e, a.v.shape)
        worst, square = worst + e_a @ np.abs(b.v), square + np.square(e_a) @ np.square(b.v)
    if np.any(b.e):
        e_b = np.broadcast_to(b.e, b.v.shape)
        worst, square = worst + np.abs(a.v) @ e_b, square + np.square(a.v) @ np.square(e_b)
    return Bounded(a.v @ b.v, e + stored_errors(worst, square))


def linear(x: Bounded, w: Array, b: Array, r: Rounding) -> Bounded:
    """x W + b, the product stored before the bias is added (as eager frameworks do).
    Shapes: (..., d_in) -> (..., d_out)."""
    return add(stored(matmul(x, exact(w), r), r), exact(b), r)


# --- the equations --------------------------------------------------------------------------

def _logit_errors(x: Bounded, axis: int, r: Rounding) -> tuple[Array, Array, Array]:
    """(y, live, e_in) of softmax(x): the weights, where x is not -inf, and each live logit's
    error in the exponent: incoming, its rounding, that of x_i - m and of a scale folded into
    the exponent (u (|x_i| + 2 |x_i - m|)), and exp's own (LIBM u, relative)."""
    live = np.isfinite(x.v)
    y = reference.softmax(x.v, axis=axis)
    xs = np.where(live, x.v, 0.0)
    m = np.max(np.where(live, x.v, -np.inf), axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e_in = np.where(live, x.e + r.store * (np.abs(xs) + 2.0 * np.abs(xs - m) + LIBM), 0.0)
    return y, live, e_in


def _normalisation(x: Bounded, live: Array, axis: int, r: Rounding) -> Array:
    """Relative error of normalising the row's weights, the same for every weight: the sum of
    its n live exponentials (u_acc min(n, LAMBDA sqrt n)), the division and the store
    (3 u), and, for weights recomputed from a stored log-sum-exp lse = m + log(sum) as
    FlashAttention does, lse's rounding u (|m| + log n), m the row's largest logit."""
    n = np.sum(live, axis=axis, keepdims=True)
    m = np.max(np.where(live, np.abs(x.v), 0.0), axis=axis, keepdims=True)
    return r.acc * np.minimum(n, LAMBDA * np.sqrt(n)) + r.store * (3.0 + m + np.log(np.maximum(n, 1)))


def _moved_log_weights(y: Array, e_in: Array, axis: int) -> Array:
    """|d_i - sum_j y_j d_j|, the first-order change of log y_i, for independent exponent
    errors |d_j| <= e_j, in quadrature: sqrt((1 - y_i)^2 e_i^2 + sum_{j != i} y_j^2 e_j^2) (the
    weights still sum to one, so a saturated weight barely moves); where the squares
    underflow, the worst case (1 - y_i) e_i + sum_{j != i} y_j e_j (``independent``)."""
    worst = np.sum(y * e_in, axis=axis, keepdims=True) + e_in * (1.0 - 2.0 * y)
    square = np.sum(np.square(y * e_in), axis=axis, keepdims=True) + np.square(e_in) * (1.0 - 2.0 * y)
    return independent(np.maximum(worst, 0.0), np.maximum(square, 0.0))


MAX_LOG_CHANGE = 700.0
"""Where log y_i may move by more, exp overflows; the weight, in [0, 1], is then bounded by 1."""


def softmax(x: Bounded, axis: int, r: Rounding) -> Bounded:
    """y_i = exp(x_i - m) / sum_j exp(x_j - m), -inf entries exactly 0: exponent errors
    (``_logit_errors``) move log y_i by ``_moved_log_weights``, the normalisation by
    ``_normalisation``; y_i moves by y_i expm1(their sum), at most 1. The expm1 is the first
    order's y_i L where L is small; where the logits' errors are O(1) (bfloat16 scores of
    several hundred, ulp 4) it is the exponential a correct backend's weight does move by:
    e^3.2 - 1 = 23 times a weight of 8.5e-11 on one drawn case. Shapes: any -> same.
    """
    y, live, e_in = _logit_errors(x, axis, r)
    log_change = np.minimum(_moved_log_weights(y, e_in, axis) + _normalisation(x, live, axis, r), MAX_LOG_CHANGE)
    return Bounded(y, np.minimum(y * np.expm1(log_change), 1.0))


def layer_norm(x: Bounded, gamma: Array, beta: Array, eps: float, r: Rounding) -> Bounded:
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis (d features).

    x_hat_i = c_i / sigma (c = x - mean, sigma = sqrt(var + eps)) moves by
    sum_j A_ij d_j / sigma, A_ij = [i = j] - (1 + x_hat_i x_hat_j) / d, for incoming errors d_j
    (``stored_errors``); the mean's rounding (u acc(d) mean|x| accumulated, u |mean|
    stored) shifts every c_i; the variance's (u acc(d) var for the squares and their sum,
    u 2 acc(d) |mean| mean|c| for a running (Welford) mean, u (var + eps) for a stored var and
    eps) scales x_hat by half its relative size.
    Shapes: (..., d) -> same.
    """
    d = x.v.shape[-1]
    mean = np.mean(x.v, axis=-1, keepdims=True)
    c = x.v - mean
    var = np.mean(c * c, axis=-1, keepdims=True)
    sigma = np.sqrt(var + eps)
    x_hat = c / sigma
    e_hat = 0.0
    if np.any(x.e):
        e_hat = stored_errors(*_normalisation_products(x_hat, np.broadcast_to(x.e, x.v.shape))) / sigma
    e_mean = r.acc * acc(d) * np.mean(np.abs(x.v), axis=-1, keepdims=True) + r.store * np.abs(mean)
    if variants.on("layer-norm-fast-variance"):  # the diagnosis measures a variant with its own rounding
        e_var = _fast_variance_error(x.v, mean, var, eps, e_mean, r)
    else:
        e_var = (r.acc * ((acc(d) + 1.0) * var + 2.0 * acc(d) * np.abs(mean) * np.mean(np.abs(c), axis=-1, keepdims=True))
                 + r.store * (var + eps))
    e_hat = e_hat + e_mean / sigma + np.abs(x_hat) * (e_var / (2.0 * sigma**2) + r.store * (ROUNDINGS_PER_NORMALISATION + 1.0))
    scaled = Bounded(x_hat * gamma, e_hat * np.abs(gamma) + r.store * np.abs(x_hat * gamma))
    return add(scaled, exact(beta), r)


def _normalisation_products(b: Array, e: Array) -> tuple[Array, Array]:
    """(|A| e, A^2 e^2) per row for layer norm's Jacobian A_ij = [i = j] - (1 + b_i b_j) / d
    (b = x_hat), without forming A: O(d log d) per row instead of O(d^2).

    |A| e: off the diagonal |A_ij| = |1 + b_i b_j| / d, and sum_j |1 + b_i b_j| e_j is
    sum_j (1 + b_i b_j) e_j less twice the terms with 1 + b_i b_j < 0: those j with
    b_j < -1 / b_i for b_i > 0 (b_j > -1 / b_i for b_i < 0), a prefix (suffix) of b sorted, summed
    from prefix sums of e and b e (a term equal to the threshold is 0 either way). The
    diagonal's |1 - (1 + b_i^2) / d| replaces its (1 + b_i^2) / d.
    A^2 e^2: A_ij^2 = [i = j] (1 - 2 (1 + b_i^2) / d) + (1 + b_i b_j)^2 / d^2, and
    sum_j (1 + b_i b_j)^2 e_j^2 = F0 + 2 b_i F1 + b_i^2 F2 with F_k = sum_j b_j^k e_j^2.
    Shapes: b, e (..., d) -> (..., d), (..., d)."""
    d = b.shape[-1]
    order = np.argsort(b, axis=-1, kind="stable")
    b_sorted, e_sorted = np.take_along_axis(b, order, -1), np.take_along_axis(e, order, -1)
    zero = np.zeros(b.shape[:-1] + (1,))
    c0 = np.concatenate([zero, np.cumsum(e_sorted, -1)], -1)                # (..., d + 1)
    c1 = np.concatenate([zero, np.cumsum(b_sorted * e_sorted, -1)], -1)
    e0, e1 = c0[..., -1:], c1[..., -1:]
    with np.errstate(divide="ignore"):
        threshold = np.where(b == 0.0, np.inf, -1.0 / b)
    below = _count_below(b_sorted, threshold)                              # j with b_j < threshold_i
    n0, n1 = np.take_along_axis(c0, below, -1), np.take_along_axis(c1, below, -1)
    negative = np.where(b > 0.0, n0 + b * n1, np.where(b < 0.0, (e0 - n0) + b * (e1 - n1), 0.0))
    off_and_diagonal = (e0 + b * e1) - 2.0 * negative                      # sum_j |1 + b_i b_j| e_j
    diagonal = 1.0 + b * b
    worst = np.maximum(off_and_diagonal - diagonal * e, 0.0) / d + np.abs(1.0 - diagonal / d) * e
    f0, f1, f2 = (np.sum(b**k * e * e, axis=-1, keepdims=True) for k in (0, 1, 2))
    square = np.maximum((f0 + 2.0 * b * f1 + b * b * f2) / d**2 + (1.0 - 2.0 * diagonal / d) * e * e, 0.0)
    return worst, square


def _count_below(sorted_values: Array, thresholds: Array) -> Array:
    """Per row, how many of ``sorted_values`` (ascending) are below each threshold: a batched
    ``np.searchsorted``, by one stable sort of thresholds and values together (a threshold
    before an equal value). Shapes: (..., d), (..., m) -> (..., m) int."""
    m = thresholds.shape[-1]
    keys = np.concatenate([thresholds, sorted_values], -1)
    order = np.argsort(keys, axis=-1, kind="stable")
    is_value = order >= m
    values_before = np.cumsum(is_value, -1) - is_value
    counts = np.empty(thresholds.shape, dtype=np.intp)
    np.put_along_axis(counts, order[~is_value].reshape(thresholds.shape),
                      values_before[~is_value].reshape(thresholds.shape), -1)
    return counts


def _fast_variance_error(x: Array, mean: Array, var: Array, eps: float, e_mean: Array, r: Rounding) -> Array:
    """The rounding error of var = E[x^2] - E[x]^2 (variant ``layer-norm-fast-variance``): the
    mean of the squares (u acc(d) E[x^2] accumulated, u E[x^2] stored), the squared mean
    (2 |mean| e_mean, u mean^2), the subtraction and eps (u (var + eps)). Both terms are of
    size E[x^2] = var + mean^2, so a row whose |mean| is large against its spread loses
    mean^2 / var of its accuracy: the cancellation this formula is known for.
    Shapes: x (..., d), mean, var (..., 1) -> (..., 1)."""
    squares = np.mean(x * x, axis=-1, keepdims=True)
    return (r.acc * (acc(x.shape[-1]) + 1.0) * squares + 2.0 * np.abs(mean) * e_mean
            + r.store * (mean * mean + var + eps))


def _scores(q: Bounded, k: Bounded, mask: Array | None, r: Rounding) -> Bounded:
    """q k^T / sqrt(d_k), masked scores -inf: the dot product's bound over d_k plus the
    scaling (before or after the matmul: two more roundings). Shapes: -> (..., Sq, Sk)."""
    d_k = q.v.shape[-1]
    kt = Bounded(np.swapaxes(k.v, -1, -2), np.swapaxes(np.broadcast_to(k.e, k.v.shape), -1, -2))
    s = matmul(q, kt, r)
    scale = 1.0 / math.sqrt(d_k)
    scores = stored(Bounded(s.v * scale, s.e * scale), r, 2.0)
    if mask is None:
        return scores
    mask = np.broadcast_to(mask, scores.v.shape)
    return Bounded(np.where(mask, scores.v, -np.inf), np.where(mask, scores.e, 0.0))


def attention_weights(q: Bounded, k: Bounded, mask: Array | None, r: Rounding) -> Bounded:
    """softmax(q k^T / sqrt(d_k)). Shapes: (..., Sq, d_k), (..., Sk, d_k) -> (..., Sq, Sk)."""
    return softmax(_scores(q, k, mask, r), -1, r)


def attention(q: Bounded, k: Bounded, v: Bounded, mask: Array | None, r: Rounding) -> Bounded:
    """out_i = sum_j y_ij v_j, y = softmax(q k^T / sqrt(d_k)).

    Exponent errors d_j move out_i by sum_j y_ij (d_j - sum_l y_il d_l) v_j
    = sum_j y_ij d_j (v_j - out_i): independent across keys, in quadrature over the terms
    y_ij e_j |v_j - out_i| (``independent``: a weighted average of similar values barely
    moves); the normalisation and the
    accumulation over the Sk keys (either order: normalised weights times V, or
    FlashAttention's running sums divided at the end) add u (acc(Sk) + ...) sum_j y_ij |v_j|,
    V's errors (``stored_errors`` of y e_v), and the store. Shapes: -> (..., Sq, d_v).
    """
    scores = _scores(q, k, mask, r)
    y, live, e_in = _logit_errors(scores, -1, r)
    out = y @ v.v
    deviation = np.abs(v.v[..., None, :, :] - out[..., :, None, :])                 # (..., Sq, Sk, d_v)
    moved = independent(np.einsum("...qk,...qkd->...qd", y * e_in, deviation),
                        np.einsum("...qk,...qkd->...qd", np.square(y * e_in), np.square(deviation)))
    own = (_normalisation(scores, live, -1, r) + r.acc * acc(v.v.shape[-2])) * (y @ np.abs(v.v))
    e_v = np.broadcast_to(v.e, v.v.shape)
    e = moved + own + (stored_errors(y @ e_v, np.square(y) @ np.square(e_v)) if np.any(v.e) else 0.0)
    return stored(Bounded(out, e), r)


def multi_head_attention(x_q: Bounded, x_kv: Bounded, p: Mapping[str, Array], num_heads: int,
                         mask: Array | None, r: Rounding) -> Bounded:
    """Concat(head_1..h) W_o + b_o, head_i = Attention(Q W_q, K W_k, V W_v) on columns of
    head i. Shapes: (B, Sq, d_model), (B, Sk, d_model) -> (B, Sq, d_model)."""
    Q, K, V = (_split_heads(linear(x, p[f"w_{n}"], p[f"b_{n}"], r), num_heads)
               for x, n in ((x_q, "q"), (x_kv, "k"), (x_kv, "v")))
    head_mask = None if mask is None else np.asarray(mask)[..., None, :, :]
    heads = attention(Q, K, V, head_mask, r)                                       # (B, h, Sq, d_k)
    return linear(_merge_heads(heads), p["w_o"], p["b_o"], r)


def _split_heads(x: Bounded, num_heads: int) -> Bounded:
    """(B, S, h d_k) -> (B, h, S, d_k)."""
    def split(a: Array) -> Array:
        B, S, d_model = a.shape
        return a.reshape(B, S, num_heads, d_model // num_heads).transpose(0, 2, 1, 3)
    return Bounded(split(x.v), split(np.broadcast_to(x.e, x.v.shape)))


def _merge_heads(x: Bounded) -> Bounded:
    """(B, h, S, d_k) -> (B, S, h d_k)."""
    def merge(a: Array) -> Array:
        B, h, S, d_k = a.shape
        return a.transpose(0, 2, 1, 3).reshape(B, S, h * d_k)
    return Bounded(merge(x.v), merge(np.broadcast_to(x.e, x.v.shape)))


def relu(x: Bounded, r: Rounding) -> Bounded:
    """max(0, x): 1-Lipschitz, exact; an element within its error of 0 may come out as
    anything in [0, e]."""
    return Bounded(np.maximum(x.v, 0.0), np.where(x.v + x.e > 0, x.e, 0.0))


def gelu(x: Bounded, r: Rounding) -> Bounded:
    """x/2 (1 + erf(x/sqrt 2)): incoming errors times |Phi(x) + x phi(x)|; erf's own error
    (ERF u |erf|, and its argument's rounding, 2 phi(x) u |x|) times |x|/2, which for x < 0
    is large against the cancelled result; 1 + erf, the halving product and the store."""
    v = x.v
    erf = special.erf(v / math.sqrt(2.0))
    phi = np.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)
    y = 0.5 * v * (1.0 + erf)
    slope = np.abs(0.5 * (1.0 + erf) + v * phi)
    e_erf = r.store * (ERF * np.abs(erf) + 2.0 * phi * np.abs(v) + np.abs(1.0 + erf))
    return Bounded(y, slope * x.e + 0.5 * np.abs(v) * e_erf + 2.0 * r.store * np.abs(y))


ACTIVATIONS: dict[str, Callable[[Bounded, Rounding], Bounded]] = {"relu": relu, "gelu": gelu}


def feed_forward(x: Bounded, p: Mapping[str, Array], activation: str, r: Rounding) -> Bounded:
    """act(x W_1 + b_1) W_2 + b_2. Shapes: (..., d_model) -> same."""
    return linear(ACTIVATIONS[activation](linear(x, p["w_1"], p["b_1"], r), r), p["w_2"], p["b_2"], r)


def positional_encoding(seq_len: int, d_model: int, r: Rounding) -> Bounded:
    """sin / cos of angle = pos / 10000^(2i/d_model). The angle is off by
    u |angle| (|z| + PE_ANGLE), z = (2i/d_model) ln 10000 being the exponent (its rounding
    is amplified by ln 10000, whether 10000^t is a pow or exp(-z) a stored reciprocal); sin
    and cos pass it on with slope |cos| resp. |sin| (plus its square over 2) and add LIBM u.
    Shapes: -> (seq_len, d_model)."""
    pe = reference.positional_encoding(seq_len, d_model)
    two_i = np.arange(0, d_model, 2, dtype=np.float64)
    z = two_i / d_model * math.log(10000.0)                                     # (d_model/2,)
    angle = np.arange(seq_len, dtype=np.float64)[:, None] * np.exp(-z)[None, :]  # (S, d_model/2)
    e_angle = r.acc * np.abs(angle) * (z + PE_ANGLE)
    e = np.empty_like(pe)
    e[:, 0::2] = np.abs(np.cos(angle)) * e_angle
    e[:, 1::2] = np.abs(np.sin(angle)) * e_angle
    e = e + 0.5 * np.repeat(e_angle, 2, axis=1) ** 2 + r.acc * LIBM * np.abs(pe)
    return stored(Bounded(pe, e), r)


# --- layers and the model ----------------------------------------------------------------------

def _sublayer(x: Bounded, fn: Callable[[Bounded], Bounded], norm: Mapping[str, Array], c: Config,
              r: Rounding) -> Bounded:
    """Post-LN LN(x + f(x)) or pre-LN x + f(LN(x))."""
    if c.norm_first:
        return add(x, fn(layer_norm(x, norm["gamma"], norm["beta"], c.layer_norm_eps, r)), r)
    return layer_norm(add(x, fn(x), r), norm["gamma"], norm["beta"], c.layer_norm_eps, r)


def encoder_layer(x: Bounded, p: Mapping[str, Any], c: Config, mask: Array | None, r: Rounding) -> Bounded:
    x = _sublayer(x, lambda h: multi_head_attention(h, h, p["self_attn"], c.num_heads, mask, r), p["norm1"], c, r)
    return _sublayer(x, lambda h: feed_forward(h, p["ffn"], c.activation, r), p["norm2"], c, r)


def decoder_layer(y: Bounded, memory: Bounded, p: Mapping[str, Any], c: Config, self_mask: Array | None,
                  cross_mask: Array | None, r: Rounding) -> Bounded:
    y = _sublayer(y, lambda h: multi_head_attention(h, h, p["self_attn"], c.num_heads, self_mask, r), p["norm1"], c, r)
    y = _sublayer(y, lambda h: multi_head_attention(h, memory, p["cross_attn"], c.num_heads, cross_mask, r),
                  p["norm2"], c, r)
    return _sublayer(y, lambda h: feed_forward(h, p["ffn"], c.activation, r), p["norm3"], c, r)


def _embed(ids: Array, table: Array, c: Config, r: Rounding) -> Bounded:
    """table[ids] (* sqrt(d_model): the product and the stored constant round) + PE."""
    x = exact(np.asarray(table, dtype=np.float64)[np.asarray(ids)])
    if c.scale_embedding:
        x = stored(Bounded(x.v * math.sqrt(c.d_model)), r, 2.0)
    return add(x, positional_encoding(np.shape(ids)[1], c.d_model, r), r)


def _key_padding(pad: Any) -> Array | None:
    return None if pad is None else np.asarray(pad, dtype=bool)[:, None, :]


def _final_norm(x: Bounded, params: Mapping[str, Any], key: str, c: Config, r: Rounding) -> Bounded:
    if not c.final_norm:
        return x
    return layer_norm(x, params[key]["gamma"], params[key]["beta"], c.layer_norm_eps, r)


def encode(src_ids: Array, params: Mapping[str, Any], c: Config, src_mask: Any, r: Rounding) -> Bounded:
    x = _embed(src_ids, params["src_embedding"], c, r)
    for p in params["encoder"]:
        x = encoder_layer(x, p, c, _key_padding(src_mask), r)
    return _final_norm(x, params, "encoder_norm", c, r)


def decode(tgt_ids: Array, memory: Bounded, params: Mapping[str, Any], c: Config, src_mask: Any,
           tgt_mask: Any, r: Rounding) -> Bounded:
    y = _embed(tgt_ids, params["tgt_embedding"], c, r)
    self_mask = reference.causal_mask(np.shape(tgt_ids)[1])
    if tgt_mask is not None:
        self_mask = self_mask & _key_padding(tgt_mask)
    for p in params["decoder"]:
        y = decoder_layer(y, memory, p, c, self_mask, _key_padding(src_mask), r)
    return _final_norm(y, params, "decoder_norm", c, r)


def forward(src_ids: Array, tgt_ids: Array, params: Mapping[str, Any], c: Config, src_mask: Any, tgt_mask: Any,
            r: Rounding) -> Bounded:
    memory = encode(src_ids, params, c, src_mask, r)
    y = decode(tgt_ids, memory, params, c, src_mask, tgt_mask, r)
    return linear(y, params["generator"]["w"], params["generator"]["b"], r)


# --- one entry point per contract op -----------------------------------------------------------

def _mask(m: Any) -> Array | None:
    return None if m is None else np.asarray(m, dtype=bool)


OPS: dict[str, Callable[..., Bounded]] = {
    "softmax": lambda a, r: softmax(exact(a["x"]), a["axis"], r),
    "positional_encoding": lambda a, r: positional_encoding(a["seq_len"], a["d_model"], r),
    "embedding": lambda a, r: exact(np.asarray(a["table"], dtype=np.float64)[np.asarray(a["ids"])]),
    "layer_norm": lambda a, r: layer_norm(exact(a["x"]), a["gamma"], a["beta"], float(a["eps"]), r),
    "attention_weights": lambda a, r: attention_weights(exact(a["q"]), exact(a["k"]), _mask(a["mask"]), r),
    "attention": lambda a, r: attention(exact(a["q"]), exact(a["k"]), exact(a["v"]), _mask(a["mask"]), r),
    "multi_head_attention": lambda a, r: multi_head_attention(exact(a["x_q"]), exact(a["x_kv"]), a["p"],
                                                              a["num_heads"], _mask(a["mask"]), r),
    "feed_forward": lambda a, r: feed_forward(exact(a["x"]), a["p"], a["activation"], r),
    "encoder_layer": lambda a, r: encoder_layer(exact(a["x"]), a["p"], as_config(a["config"]), _mask(a["mask"]), r),
    "decoder_layer": lambda a, r: decoder_layer(exact(a["y"]), exact(a["memory"]), a["p"], as_config(a["config"]),
                                                _mask(a["self_mask"]), _mask(a["cross_mask"]), r),
    "encode": lambda a, r: encode(a["src_ids"], a["params"], as_config(a["config"]), a["src_mask"], r),
    "decode": lambda a, r: decode(a["tgt_ids"], exact(a["memory"]), a["params"], as_config(a["config"]),
                                  a["src_mask"], a["tgt_mask"], r),
    "forward": lambda a, r: forward(a["src_ids"], a["tgt_ids"], a["params"], as_config(a["config"]),
                                    a["src_mask"], a["tgt_mask"], r),
}
"""op -> its bound, from the op's arguments bound to the reference's signature."""


def bound(op: str, args: list | tuple, kwargs: Mapping[str, Any] | None, r: Rounding) -> Bounded:
    """The exact value and first-order error bound of ``reference.<op>(*args, **kwargs)`` for a
    correct implementation that rounds as ``r`` says; the arguments as the reference takes them
    (already validated by it: call the reference first)."""
    bound_args = inspect.signature(getattr(reference, op)).bind(*args, **dict(kwargs or {}))
    bound_args.apply_defaults()
    out = OPS[op](_to_float64(bound_args.arguments), r)
    return Bounded(out.v, np.broadcast_to(out.e, out.v.shape))


def _to_float64(tree: Any) -> Any:
    """Float leaves as float64 arrays (params arrive as nested lists from some callers)."""
    return map_floats(lambda a: a.astype(np.float64, copy=False), tree)
