"""Correct implementations that change a formula for an equivalent one: the score scale, the
softmax (FlashAttention's online form), the variance, the normalisation, erf, the frequencies
of the positional encoding.

Each is the torch backend (backends/torch_backend.py) with the one method the algorithm lives
in overridden.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy import special

from backends.torch_backend import TorchBackend
from tests.correct import flash
from tests.correct.arithmetic import normalized
from tests.correct.registry import ATTENTION, register
from tests.correct.summation import accumulator

Tensor = torch.Tensor

FLOAT_DTYPES = ("float64", "float32", "bfloat16")
"""The torch backend's dtypes the zoo runs these members at (float16 shares bfloat16's code path)."""


# --- attention --------------------------------------------------------------------------------

@register("scale_queries_first", changes=ATTENTION, dtypes=FLOAT_DTYPES)
class ScaleQueriesFirst(TorchBackend):
    """scores as (Q / sqrt(d_k)) K^T: the queries scaled before the matmul instead of the products after."""

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        return self._matmul(q / math.sqrt(q.shape[-1]), k.transpose(-2, -1))


@register("flash_attention", changes=("softmax", *ATTENTION), dtypes=("float64", "float32", "float16", "bfloat16"))
class FlashAttention(TorchBackend):
    """FlashAttention: online softmax over key blocks of 3, exp2 with log2(e) in the scale, P from the log-sum-exp."""

    @torch.no_grad()
    def softmax(self, x: Tensor, axis: int = -1) -> Tensor:
        return flash.softmax(x, axis)

    @torch.no_grad()
    def attention_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        return flash.attention_weights(q, k, mask)

    @torch.no_grad()
    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        return flash.attention(q, k, v, mask)


# --- layer norm -------------------------------------------------------------------------------

LAYER_NORM = ("layer_norm",)


def welford_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Welford's one-pass mean and biased variance over the last axis, in the accumulator
    precision: delta = x_i - mean; mean += delta / i; M2 += delta (x_i - mean); var = M2 / d.

    Shapes: (..., d) -> (..., 1), (..., 1).
    """
    x = x.to(accumulator(x.dtype))
    mean = torch.zeros_like(x[..., :1])
    m2 = torch.zeros_like(mean)
    for i in range(x.shape[-1]):
        delta = x[..., i:i + 1] - mean
        mean = mean + delta / (i + 1)
        m2 = m2 + delta * (x[..., i:i + 1] - mean)
    return mean, m2 / x.shape[-1]


@register("layer_norm_welford", changes=LAYER_NORM, dtypes=FLOAT_DTYPES)
class LayerNormWelford(TorchBackend):
    """layer norm with the mean and variance from Welford's one-pass update (float32 accumulator for bfloat16)."""

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        mean, var = welford_statistics(x)
        return normalized(x, mean, var, eps, gamma, beta)


@register("layer_norm_two_pass", changes=LAYER_NORM, dtypes=FLOAT_DTYPES)
class LayerNormTwoPass(TorchBackend):
    """layer norm with the textbook two-pass variance: mean first, then the mean of squared deviations (torch.mean)."""

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        return normalized(x, mean, ((x - mean) ** 2).mean(dim=-1, keepdim=True), eps, gamma, beta)


@register("layer_norm_rsqrt", changes=LAYER_NORM, dtypes=FLOAT_DTYPES)
class LayerNormRsqrt(TorchBackend):
    """layer norm as (x - mean) * rsqrt(var + eps): a reciprocal square root then a multiply, not a divide."""

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        var, mean = torch.var_mean(x, dim=-1, correction=0, keepdim=True)
        return normalized(x, mean, var, eps, gamma, beta, rsqrt=True)


# --- GELU: erf from three libraries -----------------------------------------------------------

FEED_FORWARD = ("feed_forward",)
Erf = Callable[[Tensor], Tensor]


def _erf_math(z: Tensor) -> Tensor:
    """Python's math.erf (the C library's, in double precision), rounded to z's dtype."""
    values = np.frompyfunc(math.erf, 1, 1)(z.double().cpu().numpy()).astype(np.float64)
    return torch.from_numpy(values).to(dtype=z.dtype, device=z.device)


def _erf_scipy(z: Tensor) -> Tensor:
    """scipy.special.erf at z's precision (its float32 loop for float32)."""
    values = special.erf(z.cpu().numpy())
    return torch.from_numpy(np.asarray(values)).to(dtype=z.dtype, device=z.device)


def gelu(x: Tensor, erf: Erf) -> Tensor:
    """GELU(x) = x/2 (1 + erf(x / sqrt(2))) with the given erf, in float32 for float16/bfloat16
    (as a kernel computes it), rounded once to x's dtype.

    Shapes: any -> same.
    """
    z = x.to(accumulator(x.dtype))
    return (0.5 * z * (1.0 + erf(z * math.sqrt(0.5)))).to(x.dtype)


class _GeluErf(TorchBackend):
    """GELU with the erf of ``ERF`` instead of F.gelu's kernel."""

    ERF: Erf = staticmethod(torch.erf)

    def _activation(self, x: Tensor, name: str) -> Tensor:
        return gelu(x, self.ERF) if name == "gelu" else super()._activation(x, name)


@register("gelu_torch_erf", changes=FEED_FORWARD, dtypes=FLOAT_DTYPES)
class GeluTorchErf(_GeluErf):
    """GELU spelled out as x/2 (1 + torch.erf(x / sqrt(2))) instead of F.gelu's fused kernel."""

    ERF = staticmethod(torch.erf)


@register("gelu_math_erf", changes=FEED_FORWARD, dtypes=FLOAT_DTYPES)
class GeluMathErf(_GeluErf):
    """GELU with erf from Python's math.erf (the C library's double-precision erf), rounded to the dtype."""

    ERF = staticmethod(_erf_math)


@register("gelu_scipy_erf", changes=FEED_FORWARD, dtypes=FLOAT_DTYPES)
class GeluScipyErf(_GeluErf):
    """GELU with erf from scipy.special.erf at the working precision."""

    ERF = staticmethod(_erf_scipy)


# --- positional encoding ----------------------------------------------------------------------

@register("pe_exp_log", changes=("positional_encoding",), dtypes=FLOAT_DTYPES)
class PEExpLog(TorchBackend):
    """positional-encoding frequencies as exp(-2i ln(10000) / d_model) (the Annotated Transformer's) instead of pow."""

    def _pe_angles(self, seq_len: int, d_model: int) -> Tensor:
        dtype = torch.float64 if self.torch_dtype == torch.float64 else torch.float32
        position = torch.arange(seq_len, dtype=dtype, device=self.torch_device)
        two_i = torch.arange(0, d_model, 2, dtype=dtype, device=self.torch_device)
        return position[:, None] * torch.exp(two_i * (-math.log(10000.0) / d_model))
