"""Tolerances of the property suite: how far a correct backend's *own* outputs may stray from an
invariant, in its own dtype. The one place where property tolerances are defined.

A property compares the backend with itself (its softmax row sums with 1, its output on a
permuted input with its permuted output), so a tolerance bounds the rounding error of one
evaluation in the backend's dtype; where two evaluations are compared, ``difference`` adds
their bounds (|a - b| <= |a - x| + |x - b|). Every bound has the form

    tol = u(dtype) * (size factor) * (magnitude)

- ``u``: the dtype's unit roundoff (``reference.unit_roundoff``): 2^-53 float64, 2^-24
  float32, 2^-11 float16, 2^-8 bfloat16.
- size factor: how many roundings a value accumulates on its way. For one op, the classical
  first-order worst-case bound (Higham, *Accuracy and Stability of Numerical Algorithms*,
  ch. 3): a sum or dot product of n terms is off by at most ``gamma(n) * sum |terms|`` with
  gamma(n) = n u. For a chain of ops (multi-head attention, a layer, the whole model) the
  worst case is vacuous at low precision (it exceeds 1 in bfloat16 for a single layer), so
  chains use the probabilistic bound of Higham & Mary (SIAM J. Sci. Comput. 41(5), 2019):
  ``gamma_tilde(n) = LAMBDA * sqrt(n) * u``, which rounding errors of independent sign exceed
  with probability below 2 exp(-LAMBDA^2 (1 - u)^2 / 2). A chain's length does not see the
  conditioning of its equations (layer norm divides its input's errors by sigma), so the
  layer and model ops' bounds are floored by the differential tolerance of the same call
  (``conditioned_error``; conformance/tolerance/TOLERANCES.md derives it): a correct backend
  is within it of the exact result, whatever the chain.
- magnitude: the size of the values involved, measured on the inputs as the backend holds
  them (already rounded to its dtype, see ``properties.plumbing.held``).
- ``SAFETY`` multiplies every single-op bound: first-order bounds drop O(u^2) terms, and a
  kernel may store intermediates (exp values, partial sums) in the dtype, a few more roundings
  per element than the textbook algorithm.

Exactness properties (masked weights exactly 0, -inf -> 0, embedding lookup, positional
encoding determinism and PE(0)) use no tolerance: they compare bitwise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import reference
from conformance.tolerance import model as differential_model
from conformance.tolerance.error_bounds import ERF
from reference.precision import rounded, smallest_normal

SAFETY = 4.0
"""Multiple of a first-order single-op bound that a correct backend may reach. Measured on the
built-in targets in the ``thorough`` profile: worst error / tolerance 0.29 (layer norm's
variance, numpy float16)."""

LAMBDA = 8.0
"""lambda of the probabilistic chain bound: P(exceeded) < 2 exp(-32) per inner product with
independent errors. Larger than the 3-5 one inner product needs, because the model length of a
chain does not model the (modest, at unit scale) amplification of errors by softmax and layer
norm. Measured in the ``thorough`` profile: worst error / tolerance 0.14 (encode with appended
padding, reference float64, where different sequence lengths change the BLAS blocking)."""

UNIT_SCALE = 1.0
"""Magnitude floor of chained activations: inputs are drawn at unit scale and layer norm keeps
activations of order one, so a row whose output cancels to tiny values is still charged for
the O(1) intermediates it was computed from."""

SCORE_SLOPE_CAP = 30.0
"""exp(2 * Delta) is evaluated with Delta capped here (beyond it the bound is vacuous anyway)."""


# --- building blocks -------------------------------------------------------------------------

def u(dtype: str) -> float:
    """The unit roundoff u = 2^-p of a dtype with a p-bit significand."""
    return reference.unit_roundoff(dtype)


def significand_bits(dtype: str) -> int:
    """p with u = 2^-p: every integer of magnitude <= 2^p is exact in the dtype."""
    return round(-math.log2(u(dtype)))


def gamma(dtype: str, n: float) -> float:
    """gamma(n) = n u: first-order worst-case relative error of n roundings (Higham, Lemma 3.1)."""
    return n * u(dtype)


def gamma_tilde(dtype: str, n: float) -> float:
    """LAMBDA sqrt(n) u: probabilistic relative error of n roundings (Higham & Mary 2019, Thm 3.1)."""
    return LAMBDA * math.sqrt(n) * u(dtype)


def underflow(dtype: str, n: float) -> float:
    """n u lambda: the absolute error n products can add below the smallest normal lambda
    (gradual underflow, Higham eq. 2.8: fl(x y) = x y (1 + delta) + eta, |eta| <= u lambda),
    which no relative bound covers (float16's subnormal spacing is 6e-8)."""
    return n * u(dtype) * smallest_normal(dtype)


def difference(*errors: Any) -> Any:
    """Bound on |a - b| for two evaluations with error bounds e_a, e_b: e_a + e_b (triangle)."""
    return sum(errors)


def _row_max(a: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.max(np.abs(a), axis=axis, keepdims=True)


# --- softmax -------------------------------------------------------------------------------

def softmax_entry(dtype: str, p: np.ndarray, n: int, logits: np.ndarray | None = None) -> np.ndarray:
    """|fl(p_i) - p_i| <= SAFETY u ((n + 2) p_i + 1 + 2 p_i max_j |x_j|) for p = softmax(x) over
    n entries (the last term with ``logits`` = x given).

    Derivation: x_i - max rounds with relative error u, which exp turns into a relative error
    |x_i - max| u of e_i = exp(x_i - max), an absolute error |t| e^-|t| u <= u / e; exp itself
    adds u; the sum s of n terms adds (n - 1) u (relative, all terms >= 0); the division adds
    u. So |dp_i| <= (n + 2) u p_i + u / s, and s >= 1 (the max term is exp(0) = 1). An
    implementation that folds a scale into the exponent (exp2 of x log2 e, as FlashAttention
    does) rounds x_i itself: a relative error u |x_i| of e_i, at most 2 u max|x| p_i once
    normalised (the same term in the differential model, conformance/tolerance/error_bounds.py).
    """
    p = np.nan_to_num(np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0), nan=1.0)
    folded = 0.0 if logits is None else 2.0 * p * _row_max(np.where(np.isfinite(logits), logits, 0.0))
    return SAFETY * u(dtype) * ((n + 2) * p + 1.0 + folded)


def softmax_row_sum(dtype: str, n: int, logits: np.ndarray | None = None) -> Any:
    """|sum_i fl(p_i) - 1| <= SAFETY u (2n + 2 + 2 max_j |x_j|): the entry bound summed over the
    row (sum p_i = 1), the sum itself taken exactly in float64 by the test (weights recomputed
    from a rounded log-sum-exp, as FlashAttention does, are all scaled by 1 + u |lse|).
    Shapes: logits (rows, n) -> (rows,) (a scalar without logits)."""
    folded = 0.0 if logits is None else 2.0 * np.max(np.abs(np.where(np.isfinite(logits), logits, 0.0)), axis=-1)
    return SAFETY * u(dtype) * (2 * n + 2 + folded)


# --- attention -----------------------------------------------------------------------------

def score_slope(dtype: str, q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Delta_i = max_j |fl(s_ij) - s_ij| for s = Q K^T / sqrt(d_k):
    (d_k + 1) u (|Q| |K|^T)_ij / sqrt(d_k) (a dot product of d_k terms, then the scaling).
    Shapes: (..., Sq, d_k), (..., Sk, d_k) -> (..., Sq, 1)."""
    d_k = q.shape[-1]
    magnitude = np.abs(q) @ np.swapaxes(np.abs(k), -1, -2) / math.sqrt(d_k)
    return gamma(dtype, d_k + 1) * np.max(magnitude, axis=-1, keepdims=True)


def _amplified(delta: np.ndarray) -> np.ndarray:
    """exp(2 Delta) - 1: the largest relative change of a softmax entry when every score of its
    row moves by at most Delta (numerator and denominator each by a factor exp(+-Delta))."""
    return np.expm1(2.0 * np.minimum(delta, SCORE_SLOPE_CAP))


def attention_weights_error(dtype: str, q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """|fl(A_ij) - A_ij| for A = softmax(Q K^T / sqrt(d_k)), any mask:
    SAFETY (u (Sk + 3) + exp(2 Delta_i) - 1), from ``softmax_entry`` with p <= 1 and the score
    errors ``score_slope`` amplified by the softmax. Shapes: -> (..., Sq, 1)."""
    sk = k.shape[-2]
    return SAFETY * (u(dtype) * (sk + 3) + _amplified(score_slope(dtype, q, k)))


def attention_output_error(dtype: str, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|fl(O) - O| for O = A V: SAFETY max_j |V_j| (u (3 Sk + 2) + exp(2 Delta_i) - 1).

    Derivation: O_i = sum_j A_ij V_j, so |dO_i| <= max|V| sum_j |dA_ij| + Sk u sum_j A_ij |V_j|;
    sum_j |dA_ij| <= (2 Sk + 2) u + exp(2 Delta_i) - 1 (``softmax_entry`` summed, sum A_ij <= 1).
    Shapes: q (..., Sq, d_k), k (..., Sk, d_k), v (..., Sk, d_v) -> (..., Sq, d_v).
    """
    sk = k.shape[-2]
    v_max = np.max(np.abs(v), axis=-2, keepdims=True)                          # (..., 1, d_v)
    return SAFETY * v_max * (u(dtype) * (3 * sk + 2) + _amplified(score_slope(dtype, q, k)))


# --- layer norm ----------------------------------------------------------------------------

def _row_stats(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x_hat, var, kappa) in float64; kappa = mean|x| / sqrt(var + eps) is the row's
    conditioning: how large its values are against the scale it is normalised by."""
    mean = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=-1, keepdims=True)
    scale = np.sqrt(var + eps)
    return (x - mean) / scale, var, np.mean(np.abs(x), axis=-1, keepdims=True) / scale


def eps_rounding(dtype: str, eps: float) -> float:
    """Relative error of eps as the dtype holds it: u, or more where eps is subnormal
    (1e-6 in float16 is off by ~3 %)."""
    return abs(float(rounded(np.float64(eps), dtype)) - eps) / eps + u(dtype)


def _eps_effect(dtype: str, var: np.ndarray, eps: float) -> np.ndarray:
    """Relative change of 1 / sqrt(var + eps) when eps is held with relative error e:
    e eps / (2 (var + eps)), which vanishes where var >> eps. Shapes: (..., 1) -> same."""
    return eps_rounding(dtype, eps) * eps / (2 * (var + eps))


def layer_norm_error(dtype: str, x: np.ndarray, gamma_: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """|fl(LN(x)) - LN(x)| elementwise:
    SAFETY u ((d kappa + (d/2 + 4) |x_hat|) |gamma| + 2 |beta|) + |x_hat gamma| eps_effect.

    Derivation (d features, x_hat = (x - mean) / sqrt(var + eps)): the mean is off by
    <= d u mean|x|, which shifts every x - mean of the row by that much, i.e. x_hat by
    d u kappa; the variance is off by (d + 2) u relative, the square root halves it;
    subtraction, division and the output rounding add 4 u |x_hat|; gamma and beta add 2 u
    each; eps as the dtype holds it moves x_hat by ``_eps_effect``.
    Shapes: x (..., d), gamma (d,), beta (d,) -> (..., d).
    """
    d = x.shape[-1]
    x_hat, var, kappa = _row_stats(x, eps)
    normalised = u(dtype) * (d * kappa + (d / 2 + 4) * np.abs(x_hat))
    return (SAFETY * (normalised * np.abs(gamma_) + 2 * u(dtype) * np.abs(beta))
            + np.abs(x_hat * gamma_) * _eps_effect(dtype, var, eps))


def normalised_mean_error(dtype: str, x: np.ndarray, eps: float) -> np.ndarray:
    """|mean(fl(x_hat))| <= SAFETY u (d kappa + 3): the row's mean error shifts every entry by
    d u kappa; relative errors shared by the row (the factor 1/sqrt(var + eps), eps) average
    to zero with x_hat; the rest (division, output rounding) is <= 3 u |x_hat| per entry and
    mean|x_hat| <= 1. Shapes: (..., d) -> (..., 1)."""
    d = x.shape[-1]
    _, _, kappa = _row_stats(x, eps)
    return SAFETY * u(dtype) * (d * kappa + 3)


def normalised_variance_error(dtype: str, x: np.ndarray, eps: float) -> np.ndarray:
    """|var(fl(x_hat)) - var / (var + eps)| <= SAFETY u (d + 8) + SAFETY running_mean
    + (SAFETY d u kappa)^2 + 2 eps_effect.

    Derivation: a shift common to the row leaves a variance unchanged; the shared relative
    error of 1/sqrt(var + eps) ((d + 2) u / 2 + 2 u) counts twice in a variance; per-entry
    errors 2 u |x_hat| add 4 u x_hat^2; the mean error enters the two-pass variance squared
    (sum_j c_j = 0 cancels its linear part); a one-pass variance (Welford, torch's) forms
    each update from a running mean that is off by up to d u |mean|, and that error enters
    linearly (``_running_mean_effect``); target var / (var + eps) <= 1. Shapes: (..., d) ->
    (..., 1).
    """
    d = x.shape[-1]
    _, var, kappa = _row_stats(x, eps)
    return (SAFETY * (u(dtype) * (d + 8) + _running_mean_effect(dtype, x, var, eps))
            + (SAFETY * gamma(dtype, d) * kappa) ** 2 + 2 * _eps_effect(dtype, var, eps))


def _running_mean_effect(dtype: str, x: np.ndarray, var: np.ndarray, eps: float) -> np.ndarray:
    """2 d u |mean| mean|c| var / (var + eps)^2, c = x - mean: a one-pass update adds
    (x_j - m')(x_j - m'') with running means off by up to d u |mean|, so the variance is off
    by 2 d u |mean| mean|c| (the differential rule's Welford charge, TOLERANCES.md), and
    var(x_hat) = var / (var + eps) by var / (var + eps)^2 times that. It is at most
    2 d u kappa, first order in the row's conditioning; the two-pass variance's error is
    second order (``(d u kappa)^2``). Shapes: x (..., d), var (..., 1) -> (..., 1)."""
    mean = np.mean(x, axis=-1, keepdims=True)
    spread = np.mean(np.abs(x - mean), axis=-1, keepdims=True)
    return 2 * gamma(dtype, x.shape[-1]) * np.abs(mean) * spread * var / (var + eps) ** 2


# --- positional encoding -------------------------------------------------------------------

def positional_encoding_error(dtype: str, positions: np.ndarray) -> np.ndarray:
    """|fl(PE[p, j]) - PE[p, j]| <= SAFETY u (3 p + 2): the angle p / 10000^(2i/d) <= p is
    formed with three roundings (power, division and the position itself), which sin and cos
    pass on as an absolute error 3 p u; sin/cos and the output rounding add 2 u.
    Shapes: (S,) -> (S, 1)."""
    return SAFETY * u(dtype) * (3 * np.asarray(positions, dtype=np.float64)[:, None] + 2)


def rotation_error(dtype: str, p: np.ndarray, k: np.ndarray) -> np.ndarray:
    """|sin(p w) cos(k w) + cos(p w) sin(k w) - sin((p+k) w)| (and the cos analogue) with every
    factor taken from the computed PE: e(p + k) + 2 e(p) + 2 e(k), e = positional_encoding_error,
    since each product of two entries (|entry| <= 1) inherits both entries' errors.
    Shapes: p, k (...) -> (..., 1)."""
    e = positional_encoding_error(dtype, np.arange(int(np.max(p + k)) + 1))[:, 0]
    return (e[p + k] + 2 * e[p] + 2 * e[k])[..., None]


MAX_ORDER_LENGTH = 6
"""Longest sequence in the "order matters" property (see ``PE_MIN_SEPARATION``)."""

PE_MIN_SEPARATION = math.sqrt(2.0) * math.sin(0.5)
"""min over positions p != q < MAX_ORDER_LENGTH of max_j |PE[p, j] - PE[q, j]|, bounded below by
the first (sin, cos) pair alone (frequency 1): its two entries move along the unit circle by
the chord 2 sin(|p - q| / 2) >= 2 sin(1/2) for 1 <= |p - q| <= 5 (5 < 2 pi - 1), and the
larger of a chord's two coordinates is at least chord / sqrt(2): 0.678."""


def order_signal_threshold() -> float:
    """PE_MIN_SEPARATION / 2: two encodings of one token at different positions must differ by
    more than this. The other half is left to rounding, far more than it needs: the first pair's
    angle p * 1 is exact, so its entries carry only the roundings of sin/cos and of the sum
    x = e + PE, u (|x_1| + |x_2| + 2) < 0.05 even in bfloat16 for |x| <= 5."""
    return PE_MIN_SEPARATION / 2


def unit_circle_error(dtype: str) -> float:
    """|PE[p, 2i]^2 + PE[p, 2i+1]^2 - 1| <= SAFETY u 3: sin and cos of the *same* rounded
    angle satisfy s^2 + c^2 = 1 whatever the angle's error, so only the roundings of s and c
    (u each, 2 u |s| + 2 u |c| <= 2 sqrt(2) u in the sum of squares) remain."""
    return SAFETY * u(dtype) * 3


# --- feed-forward --------------------------------------------------------------------------

def feed_forward_error(dtype: str, x: np.ndarray, w_1: np.ndarray, w_2: np.ndarray) -> np.ndarray:
    """|fl(FFN(x)) - FFN(x)| <= SAFETY (u (d_model + d_ff + 2) (|x| |W_1|) |W_2| + floor) (zero
    biases): two matrix products (Higham eq. 3.13, |fl(AB) - AB| <= gamma(n) |A| |B|), the
    second inheriting the first's error; ReLU is exact. floor: the products' ``underflow``, the
    first's carried through |W_2|. Shapes: (..., d_model) -> (..., d_model)."""
    d_model, d_ff = w_1.shape
    floor = underflow(dtype, d_model) * np.sum(np.abs(w_2), axis=0) + underflow(dtype, d_ff)
    return SAFETY * (gamma(dtype, d_model + d_ff + 2) * ((np.abs(x) @ np.abs(w_1)) @ np.abs(w_2)) + floor)


# --- chains: multi-head attention, layers, the model ---------------------------------------

def attention_length(d_model: int, num_heads: int, s_k: int) -> int:
    """Roundings along multi-head attention: the projections (d_model), the scores (d_k + 1),
    the softmax (s_k + 2), the weighted sum of values (s_k) and the output projection (d_model)."""
    return 2 * d_model + d_model // num_heads + 2 * s_k + 3


def _layer_norm_length(d_model: int) -> int:
    """Roundings along layer norm: mean (d), variance (d + 2), normalisation and affine (4)."""
    return 2 * d_model + 6


def encoder_layer_length(config: dict[str, Any], s: int) -> int:
    """Self-attention, FFN (d_model + d_ff + 2) and two layer norms."""
    d = config["d_model"]
    return (attention_length(d, config["num_heads"], s) + d + config["d_ff"] + 2
            + 2 * _layer_norm_length(d))


def decoder_layer_length(config: dict[str, Any], s_tgt: int, s_src: int) -> int:
    """Self- and cross-attention, FFN and three layer norms."""
    d = config["d_model"]
    return (attention_length(d, config["num_heads"], s_tgt) + attention_length(d, config["num_heads"], s_src)
            + d + config["d_ff"] + 2 + 3 * _layer_norm_length(d))


def encode_length(config: dict[str, Any], s_src: int) -> int:
    """Embedding and PE (3), the encoder layers, the final norm."""
    layers = config["num_encoder_layers"] * encoder_layer_length(config, s_src)
    return 3 + layers + _layer_norm_length(config["d_model"])


def decode_length(config: dict[str, Any], s_tgt: int, s_src: int) -> int:
    """Embedding and PE (3), the decoder layers, the final norm (memory's own error: see
    ``forward_length``)."""
    layers = config["num_decoder_layers"] * decoder_layer_length(config, s_tgt, s_src)
    return 3 + layers + _layer_norm_length(config["d_model"])


def forward_length(config: dict[str, Any], s_src: int, s_tgt: int) -> int:
    """encode, decode (memory carries the encoder's error into it), the generator (d_model + 1)."""
    return encode_length(config, s_src) + decode_length(config, s_tgt, s_src) + config["d_model"] + 1


def chain_error(dtype: str, length: int, out: np.ndarray) -> np.ndarray:
    """|fl(y) - y| <= gamma_tilde(length) max(max_row |y|, UNIT_SCALE) for the output y of a
    chain of ``length`` roundings on unit-scale inputs; rows are the last axis.
    Shapes: (..., n) -> (..., 1)."""
    magnitude = np.maximum(np.nan_to_num(_row_max(out), nan=UNIT_SCALE, posinf=UNIT_SCALE), UNIT_SCALE)
    return gamma_tilde(dtype, length) * magnitude


def conditioned_error(dtype: str, length: int, out: np.ndarray, op: str, *args: Any, **kwargs: Any) -> np.ndarray:
    """|fl(y) - y| for y = op(*args, **kwargs) (inputs as the backend holds them): the larger of
    ``chain_error`` and the row's largest differential tolerance (conformance/tolerance/model.py,
    the bound propagated through the equations), which charges what a chain's length does not
    see: layer norm's 1 / sigma on a row whose features nearly agree (a d_model = 2 row with
    sigma = |x| / 170 amplifies its input's rounding 170 times) and softmax's large logits. A
    correct backend is within its differential tolerance of the exact result, so the floor is
    sound; where that tolerance is not finite the chain bound alone stands. ``out`` may be the
    first positions of op's output (a prefix compared with a shorter sequence's output): the
    floor is taken at those positions. Shapes: out (..., S, n), op's output (..., S', n),
    S <= S' -> (..., S, 1)."""
    model = differential_model.tolerance(op, args, kwargs, dtype=dtype)
    floor = np.max(np.where(np.isfinite(model), model, 0.0), axis=-1, keepdims=True)[..., :out.shape[-2], :]
    return np.maximum(chain_error(dtype, length, out), floor)


def chain_difference(dtype: str, length: int, *outputs: np.ndarray) -> np.ndarray:
    """Bound on |a - b| for two evaluations a, b of one chain of ``length`` roundings: the
    ``difference`` of their ``chain_error`` bounds. Shapes: (..., n) each -> (..., 1)."""
    return difference(*(chain_error(dtype, length, out) for out in outputs))


# --- feed-forward with biases and either activation ----------------------------------------

ACTIVATION_SLOPE: dict[str, float] = {"relu": 1.0, "gelu": 1.13}
"""max |act'(h)|: how much an activation can magnify an error of its input. ReLU 1; GELU
x Phi(x) has derivative Phi(x) + x phi(x), largest at x = sqrt(2): 1.1289."""

ACTIVATION_ROUNDINGS: dict[str, int] = {"relu": 0, "gelu": math.ceil(ERF / 2 + 3.25)}
"""Rounding error of evaluating the activation, in units of u |h|: ReLU is exact. GELU
h/2 (1 + erf(h / sqrt 2)), with |GELU(h)| <= |h|: erf's value within ERF u (16: vectorized
kernels approximate erf to an absolute error of several ulp, conformance/tolerance/error_bounds.py;
once stored, 1 + erf keeps it as an absolute error where it cancels for h < 0), times |h|/2:
(ERF / 2) u |h|; the argument h / sqrt 2, damped by erf's slope:
(|h| / 2) (2 / sqrt(pi)) exp(-h^2 / 2) u |h| / sqrt 2 <= 0.25 u |h|; 1 + erf: u |1 + erf| |h| / 2
<= u |h|; the two products: u |h| each. ERF / 2 + 3.25, rounded up: 12."""


def feed_forward_affine_error(dtype: str, x: np.ndarray, p: dict[str, np.ndarray], activation: str) -> np.ndarray:
    """|fl(FFN(x)) - FFN(x)| for FFN(x) = act(x W_1 + b_1) W_2 + b_2, any biases, ReLU or GELU:
    SAFETY u ((L (d_model + 1) + c + d_ff + 1) H |W_2| + (d_ff + 1) |b_2|), H = |x| |W_1| + |b_1|,
    L = ACTIVATION_SLOPE, c = ACTIVATION_ROUNDINGS.

    Derivation: h = x W_1 + b_1 is off by gamma(d_model + 1) H (Higham eq. 3.13, the bias one
    more term); the activation multiplies that by at most L and adds c u |h| <= c u H; the
    second product and bias add gamma(d_ff + 1) (|act(h)| |W_2| + |b_2|) with |act(h)| <= |h|
    <= H. With zero biases and ReLU it is ``feed_forward_error``.
    Shapes: x (..., d_model), w_1 (d_model, d_ff), b_1 (d_ff,), w_2 (d_ff, d_model), b_2 (d_model,)
    -> (..., d_model).
    """
    d_model, d_ff = p["w_1"].shape
    hidden = np.abs(x) @ np.abs(p["w_1"]) + np.abs(p["b_1"])                     # H: (..., d_ff)
    first = ACTIVATION_SLOPE[activation] * (d_model + 1) + ACTIVATION_ROUNDINGS[activation]
    return SAFETY * u(dtype) * ((first + d_ff + 1) * (hidden @ np.abs(p["w_2"])) + (d_ff + 1) * np.abs(p["b_2"]))


# --- the generator, composed on a backend's own decoder output -----------------------------

def generator_error(dtype: str, y: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|fl(y W + b) - (y W + b)| <= SAFETY gamma(d_model + 1) (|y| |W| + |b|): one dot product
    of d_model terms and the bias in the dtype (Higham eq. 3.13).
    Shapes: y (..., d_model), w (d_model, V), b (V,) -> (..., V)."""
    return SAFETY * gamma(dtype, w.shape[0] + 1) * (np.abs(y) @ np.abs(w) + np.abs(b))


def through_linear(row_error: np.ndarray, w: np.ndarray) -> np.ndarray:
    """|dy W| <= max_k |dy_k| sum_k |W_kv|: an error of at most ``row_error`` in every entry of
    y, carried through y W. Shapes: (..., 1), (d_in, d_out) -> (..., d_out)."""
    return row_error * np.sum(np.abs(w), axis=0)
