"""Summation orders and matrix products for the correct zoo: pure functions on torch tensors.

A *fold* ``fold(x, dim)`` sums ``x`` along ``dim`` in one fixed order, each addition rounded
once in the accumulator precision (``accumulator``: float64 for float64, float32 otherwise, as
GPU and CPU kernels accumulate half-precision data), and returns the sum in ``x``'s dtype
(one more rounding for float16/bfloat16). ``folded_matmul`` forms the products of a matrix
product in the accumulator precision (each rounded once) and folds them; ``split_k_matmul``
and ``fma_matmul`` are the two other ways a GEMM kernel sums over K.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Tensor = torch.Tensor
Fold = Callable[[Tensor, int], Tensor]

MAX_PRODUCTS = 1 << 22
"""Products held at once by ``folded_matmul`` (rows of ``a`` are taken in chunks below it)."""

SPLIT_K_BLOCK = 4
"""Length of the K blocks of ``split_k_matmul`` and ``blocked``: small, so that the suite's
small shapes already span several blocks and a ragged last one."""


def accumulator(dtype: torch.dtype) -> torch.dtype:
    """The precision sums are accumulated in: float64 for float64, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _accumulate(fold: Fold) -> Fold:
    """``fold`` run in the accumulator precision, its result rounded back to ``x``'s dtype."""

    def wrapped(x: Tensor, dim: int) -> Tensor:
        return fold(x.to(accumulator(x.dtype)), dim % x.ndim).to(x.dtype)

    wrapped.__name__, wrapped.__doc__ = fold.__name__, fold.__doc__
    return wrapped


@_accumulate
def sequential(x: Tensor, dim: int) -> Tensor:
    """x_0 + x_1 + ... + x_{n-1}, left to right (a scalar loop)."""
    total = x.select(dim, 0)
    for i in range(1, x.shape[dim]):
        total = total + x.select(dim, i)
    return total


@_accumulate
def reversed_order(x: Tensor, dim: int) -> Tensor:
    """x_{n-1} + ... + x_1 + x_0, right to left."""
    n = x.shape[dim]
    total = x.select(dim, n - 1)
    for i in range(n - 2, -1, -1):
        total = total + x.select(dim, i)
    return total


@_accumulate
def pairwise(x: Tensor, dim: int) -> Tensor:
    """Pairwise (tree) summation: neighbours added in pairs, level by level; an odd last term
    is carried up unchanged."""
    while x.shape[dim] > 1:
        n = x.shape[dim]
        pairs = x.narrow(dim, 0, n - n % 2).unflatten(dim, (n // 2, 2))  # (..., n/2, 2, ...)
        summed = pairs.select(dim + 1, 0) + pairs.select(dim + 1, 1)
        x = torch.cat([summed, x.narrow(dim, n - 1, 1)], dim) if n % 2 else summed
    return x.select(dim, 0)


@_accumulate
def blocked(x: Tensor, dim: int) -> Tensor:
    """Blocks of SPLIT_K_BLOCK terms each summed by torch.sum, the block sums added in order."""
    n = x.shape[dim]
    total = x.narrow(dim, 0, min(SPLIT_K_BLOCK, n)).sum(dim)
    for start in range(SPLIT_K_BLOCK, n, SPLIT_K_BLOCK):
        total = total + x.narrow(dim, start, min(SPLIT_K_BLOCK, n - start)).sum(dim)
    return total


def _row_chunks(a: Tensor, b: Tensor) -> tuple[Tensor, ...]:
    """``a`` split along its rows so that each chunk's products with ``b`` stay under MAX_PRODUCTS."""
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]).numel()
    per_row = max(batch * a.shape[-1] * b.shape[-1], 1)
    return a.split(max(MAX_PRODUCTS // per_row, 1), dim=-2) if a.shape[-2] else (a,)


def folded_matmul(a: Tensor, b: Tensor, fold: Fold) -> Tensor:
    """a b with every product a_ik b_kj rounded once in the accumulator precision and the sum
    over k taken by ``fold``; the result in ``a``'s dtype.

    Shapes: (..., M, K), (..., K, N) -> (..., M, N).
    """
    acc = accumulator(a.dtype)
    out = [fold(chunk.to(acc)[..., :, :, None] * b.to(acc)[..., None, :, :], -2)  # (..., m, K, N) -> (..., m, N)
           for chunk in _row_chunks(a, b)]
    return torch.cat(out, dim=-2).to(a.dtype)


def split_k_matmul(a: Tensor, b: Tensor) -> Tensor:
    """Split-K GEMM: K cut into blocks of SPLIT_K_BLOCK, each block's partial product a library
    matmul in the accumulator precision, the partial products added in order, rounded once.

    Shapes: (..., M, K), (..., K, N) -> (..., M, N).
    """
    acc, dtype = accumulator(a.dtype), a.dtype
    a, b = a.to(acc), b.to(acc)
    total = a[..., :SPLIT_K_BLOCK] @ b[..., :SPLIT_K_BLOCK, :]
    for start in range(SPLIT_K_BLOCK, a.shape[-1], SPLIT_K_BLOCK):
        total = total + a[..., start:start + SPLIT_K_BLOCK] @ b[..., start:start + SPLIT_K_BLOCK, :]
    return total.to(dtype)


def fma_matmul(a: Tensor, b: Tensor) -> Tensor:
    """Sequential FMA-like accumulation: acc <- round(acc + a_ik b_kj), the product formed exactly
    in float64 (a float32, float16 or bfloat16 product is exact there) and the sum rounded to
    the float32 accumulator (via float64: a rare double rounding, hence FMA-*like*); the result
    rounded to ``a``'s dtype. Not for float64 inputs (no wider format holds their products).

    Shapes: (..., M, K), (..., K, N) -> (..., M, N).
    """
    if a.dtype == torch.float64:
        raise ValueError("fma_matmul needs inputs narrower than float64")
    a64, b64 = a.double(), b.double()
    total = torch.zeros(torch.broadcast_shapes(a.shape[:-1] + (1,), b.shape[:-2] + (1, b.shape[-1])),
                        dtype=torch.float32, device=a.device)
    for k in range(a.shape[-1]):
        total = (total.double() + a64[..., :, k:k + 1] * b64[..., k:k + 1, :]).float()
    return total.to(a.dtype)
