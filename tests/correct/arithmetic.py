"""Correct implementations that change the arithmetic, not the formulas: summation orders,
FMA-like products, half-precision storage, thread counts, a correctly rounded result.

Each is the torch backend (backends/torch_backend.py) with the smallest pieces overridden
(``_matmul``, ``softmax``, ``layer_norm``, ...), or the NumPy backend around the reference.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

import reference
from backends.contract import OPS
from backends.numpy_backend import NumpyBackend, _check_device
from backends.torch_backend import TorchBackend
from reference.precision import rounded
from tests.correct import summation
from tests.correct.registry import MATMULS, register
from tests.correct.summation import Fold

Tensor = torch.Tensor

FOLDED_OPS = ("softmax", "layer_norm", *MATMULS)
"""What a summation order changes: every matrix product, the softmax's sum, layer norm's means."""
WORKING_PRECISIONS = ("float64", "float32")
"""The summation orders' dtypes: those that are their own accumulator. At float16/bfloat16 a
kernel accumulates in float32 and rounds once (``half_storage_float32_compute``), which hides
the order of the float32 sum under one half-precision rounding."""


# --- shared pieces ----------------------------------------------------------------------------

def folded_softmax(x: Tensor, dim: int, total: Fold) -> Tensor:
    """exp(x - max x) / sum exp(x - max x) with the sum taken by ``total``; all -inf -> zeros.

    Shapes: any -> same.
    """
    m = x.amax(dim=dim, keepdim=True)
    e = torch.exp(x - torch.where(torch.isneginf(m), torch.zeros_like(m), m))
    s = total(e, dim).unsqueeze(dim)
    return e / torch.where(s > 0, s, torch.ones_like(s))


def normalized(x: Tensor, mean: Tensor, var: Tensor, eps: float, gamma: Tensor, beta: Tensor, *,
               rsqrt: bool = False) -> Tensor:
    """(x - mean) / sqrt(var + eps) * gamma + beta, or with ``rsqrt`` (x - mean) * rsqrt(var + eps).

    Shapes: (..., d), (..., 1), (..., 1), (d,), (d,) -> (..., d).
    """
    centred = x - mean.to(x.dtype)
    var = var.to(x.dtype)
    scaled = centred * torch.rsqrt(var + eps) if rsqrt else centred / torch.sqrt(var + eps)
    return scaled * gamma + beta


def two_pass_statistics(x: Tensor, total: Fold) -> tuple[Tensor, Tensor]:
    """mean = sum(x) / d, then var = sum((x - mean)^2) / d, the sums by ``total``.

    Shapes: (..., d) -> (..., 1), (..., 1).
    """
    d = x.shape[-1]
    mean = total(x, -1).unsqueeze(-1) / d
    centred = x - mean
    return mean, total(centred * centred, -1).unsqueeze(-1) / d


def library_sum(x: Tensor, dim: int) -> Tensor:
    """torch.sum (the library's own order) in the accumulator precision, back in ``x``'s dtype."""
    return x.to(summation.accumulator(x.dtype)).sum(dim).to(x.dtype)


# --- summation orders -------------------------------------------------------------------------

class _Folded(TorchBackend):
    """Every matrix product, softmax sum and layer-norm sum (two-pass) in the order ``FOLD``."""

    FOLD: Callable[[Tensor, int], Tensor] = staticmethod(summation.sequential)

    def _matmul(self, a: Tensor, b: Tensor) -> Tensor:
        return summation.folded_matmul(a, b, self.FOLD)

    @torch.no_grad()
    def softmax(self, x: Tensor, axis: int = -1) -> Tensor:
        return folded_softmax(x, axis, self.FOLD)

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        mean, var = two_pass_statistics(x, self.FOLD)
        return normalized(x, mean, var, eps, gamma, beta)


@register("sum_sequential", changes=FOLDED_OPS, dtypes=WORKING_PRECISIONS)
class SumSequential(_Folded):
    """every sum (matmuls, softmax, layer norm) left to right, one rounding per product and per addition."""

    FOLD = staticmethod(summation.sequential)


@register("sum_reversed", changes=FOLDED_OPS, dtypes=WORKING_PRECISIONS)
class SumReversed(_Folded):
    """every sum (matmuls, softmax, layer norm) right to left, one rounding per product and per addition."""

    FOLD = staticmethod(summation.reversed_order)


@register("sum_pairwise", changes=FOLDED_OPS, dtypes=WORKING_PRECISIONS)
class SumPairwise(_Folded):
    """every sum (matmuls, softmax, layer norm) by pairwise (tree) summation."""

    FOLD = staticmethod(summation.pairwise)


@register("sum_blocked_split_k", changes=FOLDED_OPS, dtypes=WORKING_PRECISIONS)
class SumBlockedSplitK(_Folded):
    """split-K matmuls (K in blocks of 4, partial products added in order); softmax, layer-norm sums blocked."""

    FOLD = staticmethod(summation.blocked)

    def _matmul(self, a: Tensor, b: Tensor) -> Tensor:
        return summation.split_k_matmul(a, b)


@register("fma_float64_products", changes=MATMULS, dtypes=("float32", "float16", "bfloat16"))
class FmaFloat64Products(TorchBackend):
    """matmuls by sequential FMA-like steps: each product exact in float64, one rounding per step to float32."""

    def _matmul(self, a: Tensor, b: Tensor) -> Tensor:
        return summation.fma_matmul(a, b)


# --- half-precision storage, float32 arithmetic -----------------------------------------------

def in_float32(method: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``method`` run on float32 copies of its tensor arguments, its result rounded once to the
    backend's dtype: a kernel that loads half-precision data, computes in float32 and stores."""

    def wide(a: Any) -> Any:
        return a.float() if isinstance(a, Tensor) and a.is_floating_point() else a

    @functools.wraps(method)
    def wrapped(self: TorchBackend, *args: Any, **kwargs: Any) -> Tensor:
        out = method(self, *map(wide, args), **{key: wide(a) for key, a in kwargs.items()})
        return out.to(self.torch_dtype)

    return wrapped


@register("half_storage_float32_compute", changes=("softmax", "layer_norm", *MATMULS),
          dtypes=("bfloat16", "float16"))
class HalfStorageFloat32Compute(TorchBackend):
    """half-precision storage; each kernel (matmul+bias, scores, softmax, norm, GELU) in float32, rounded once."""

    softmax = torch.no_grad()(in_float32(TorchBackend.softmax))
    layer_norm = torch.no_grad()(in_float32(TorchBackend.layer_norm))
    _scores = in_float32(TorchBackend._scores)
    _linear = in_float32(TorchBackend._linear)
    _activation = in_float32(TorchBackend._activation)

    @torch.no_grad()
    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        weights = self.attention_weights(q, k, mask)  # stored at the half precision
        return (weights.float() @ v.float()).to(self.torch_dtype)


# --- thread counts ----------------------------------------------------------------------------
# torch splits softmax and layer norm over rows, never inside one row's sums, so a thread count
# can only change the matrix products (the GEMM library's blocking).

@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` within the block (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _with_threads(op: Callable[..., Any], n: int) -> Callable[..., Any]:
    """The method ``op`` run with ``n`` torch threads."""

    @functools.wraps(op)
    def method(self: TorchBackend, *args: Any, **kwargs: Any) -> Any:
        with torch_threads(n):
            return op(self, *args, **kwargs)

    return method


def threaded(n: int) -> Callable[[type[TorchBackend]], type[TorchBackend]]:
    """Class decorator: every public op of the class runs with ``n`` torch threads."""

    def decorate(cls: type[TorchBackend]) -> type[TorchBackend]:
        for op in OPS:
            setattr(cls, op, _with_threads(getattr(cls, op), n))
        return cls

    return decorate


@register("torch_threads_1", changes=MATMULS, dtypes=("float64", "float32", "bfloat16"))
@threaded(1)
class TorchThreads1(TorchBackend):
    """the torch backend with one intra-op thread (torch.set_num_threads(1) around every op)."""


@register("torch_threads_2", changes=MATMULS, dtypes=("float64", "float32", "bfloat16"))
@threaded(2)
class TorchThreads2(TorchBackend):
    """the torch backend with two intra-op threads (torch.set_num_threads(2) around every op)."""


# --- correctly rounded ------------------------------------------------------------------------

def _rounded_once(op: str) -> Callable[..., np.ndarray]:
    """A method computing ``reference.<op>`` in float64 and rounding the result once to the dtype."""
    fn = getattr(reference, op)

    def method(self: NumpyBackend, *args: Any, **kwargs: Any) -> np.ndarray:
        out = fn(*args, **kwargs)
        return out if op == "greedy_decode" else rounded(out, self.dtype)

    method.__name__, method.__doc__ = op, fn.__doc__
    return method


def rounded_once(cls: type[NumpyBackend]) -> type[NumpyBackend]:
    """Class decorator: every public op of the class computed in float64 and rounded once."""
    for op in OPS:
        setattr(cls, op, _rounded_once(op))
    return cls


@register("numpy_rounded_once", changes=tuple(op for op in OPS if op != "greedy_decode"),
          dtypes=("float32", "float16", "bfloat16"))
@rounded_once
class NumpyRoundedOnce(NumpyBackend):
    """every op by the float64 reference, rounded once to the dtype (correctly rounded: the most accurate)."""

    # greedy_decode returns token ids, which are not rounded: it decides on float64 logits,
    # and forward checks those logits rounded once.

    def __init__(self, *, dtype: str, device: str = "cpu") -> None:
        _check_device(device)
        super().__init__("numpy_rounded_once", dtype)
