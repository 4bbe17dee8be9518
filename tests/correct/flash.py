"""FlashAttention's arithmetic (Dao et al., 2022; Milakov & Gimelshein, 2018), as pure functions.

Scores are taken in base 2: ``s2 = s * log2(e)``, with log2(e) folded into the score scale
(``exp2(s2) = exp(s)``). One pass over the keys in blocks of ``block`` keeps, per query row, a
running maximum ``m`` and a running sum ``l`` of ``exp2(s2 - m)``, rescaling ``l`` (and the
output accumulator) by ``exp2(m_old - m_new)`` whenever the maximum grows. The weights are then
*recomputed* from the log-sum-exp ``lse = m + log2(l)``, ``P = exp2(s2 - lse)``, as
FlashAttention's backward pass recomputes P, so numerator and denominator see the scores
through different roundings. A row whose entries are all -inf gets zero weights and zero
output (the contract's choice).

Arithmetic runs in ``x``'s dtype, float32 for float16/bfloat16 inputs (as the kernels
accumulate), and ``P`` is rounded to the input dtype before ``P V``, as the kernels feed it to
the second matmul.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

LOG2E = math.log2(math.e)
BLOCK = 3
"""Keys per block: small, so that the suite's short rows span several blocks and a ragged one."""


def _compute(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _finite(m: Tensor) -> Tensor:
    """The running max with -inf (no key seen yet, or all masked) replaced by 0, so that
    ``exp2(-inf - m)`` is 0 and not NaN."""
    return torch.where(torch.isneginf(m), torch.zeros_like(m), m)


def online_pass(s2: Tensor, v: Tensor | None = None, block: int = BLOCK) -> tuple[Tensor, Tensor, Tensor | None]:
    """The running max ``m``, running sum ``l`` and, given ``v``, the unnormalised output
    ``acc = sum_j exp2(s2_j - m) v_j``, over key blocks of ``block``.

    Shapes: s2 (..., Sq, Sk), v (..., Sk, d_v) -> m, l (..., Sq, 1), acc (..., Sq, d_v).
    """
    m = torch.full(s2.shape[:-1] + (1,), float("-inf"), dtype=s2.dtype, device=s2.device)
    l = torch.zeros_like(m)
    acc = None if v is None else torch.zeros(torch.broadcast_shapes(s2.shape[:-1], v.shape[:-2] + (1,))
                                             + v.shape[-1:], dtype=s2.dtype, device=s2.device)
    for start in range(0, s2.shape[-1], block):
        s_block = s2[..., start:start + block]
        m_new = torch.maximum(m, s_block.amax(dim=-1, keepdim=True))
        rescale = torch.exp2(m - _finite(m_new))  # 0 while nothing was seen
        p = torch.exp2(s_block - _finite(m_new))
        l = l * rescale + p.sum(dim=-1, keepdim=True)
        if acc is not None:
            p_stored = p.to(v.dtype).to(s2.dtype)  # P enters the second matmul at the input dtype
            acc = acc * rescale + p_stored @ _compute(v[..., start:start + block, :])
        m = m_new
    return m, l, acc


def recomputed_weights(s2: Tensor, m: Tensor, l: Tensor) -> Tensor:
    """P = exp2(s2 - lse), lse = m + log2(l); rows with l = 0 (all -inf) give zeros.

    Shapes: (..., Sq, Sk), (..., Sq, 1), (..., Sq, 1) -> (..., Sq, Sk).
    """
    empty = l == 0
    lse = torch.where(empty, torch.zeros_like(m), m + torch.log2(torch.where(empty, torch.ones_like(l), l)))
    return torch.exp2(s2 - lse).masked_fill(empty, 0.0)


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """softmax along ``dim`` by the online pass over blocks and recomputed weights.

    Shapes: any -> same.
    """
    s2 = _compute(x).movedim(dim, -1) * LOG2E
    m, l, _ = online_pass(s2)
    return recomputed_weights(s2, m, l).movedim(-1, dim).to(x.dtype)


def base2_scores(q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
    """s2 = (Q K^T) * (log2(e) / sqrt(d_k)), one multiply by the folded scale; masked -> -inf.

    Shapes: (..., Sq, d_k), (..., Sk, d_k), mask -> (..., Sq, Sk).
    """
    s2 = (_compute(q) @ _compute(k).transpose(-2, -1)) * (LOG2E / math.sqrt(q.shape[-1]))
    return s2 if mask is None else s2.masked_fill(~mask, float("-inf"))


def attention_weights(q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(Q K^T / sqrt(d_k)) as FlashAttention's backward recomputes it.

    Shapes: (..., Sq, d_k), (..., Sk, d_k), mask -> (..., Sq, Sk).
    """
    s2 = base2_scores(q, k, mask)
    m, l, _ = online_pass(s2)
    return recomputed_weights(s2, m, l).to(q.dtype)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(Q K^T / sqrt(d_k)) V in one online pass: acc / l at the end (0 for empty rows).

    Shapes: (..., Sq, d_k), (..., Sk, d_k), (..., Sk, d_v), mask -> (..., Sq, d_v).
    """
    m, l, acc = online_pass(base2_scores(q, k, mask), v)
    return (acc / torch.where(l == 0, torch.ones_like(l), l)).to(v.dtype)
