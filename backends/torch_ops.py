"""The built-in ``torch`` backend's elementary ops, attention and feed-forward network
(``TorchOps``), with the small methods they are assembled from (``_linear``, ``_split_heads``,
``_scores``, ``_matmul``, ``_masked``, ...); backends/torch_backend.py composes them into the
layers, the stacks and greedy decoding (``TorchBackend(TorchOps)``, which adapters and mutants
subclass). Its choices are in torch_backend.py's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backends._torch_common import to_numpy, to_tensor, torch_device, torch_dtype

Tensor = torch.Tensor
Params = Mapping[str, Any]
Config = Mapping[str, Any]


class TorchOps:
    """The elementary ops, attention and the feed-forward network on torch tensors of one dtype
    on one device, with the small methods they are assembled from."""

    def __init__(self, *, dtype: str = "float32", device: str = "cpu") -> None:
        self.dtype = dtype
        self.device = device
        self.torch_dtype = torch_dtype(dtype)
        self.torch_device = torch_device(device)

    # -- conversion -------------------------------------------------------------------------

    def asarray(self, a: np.ndarray) -> Tensor:
        """Floating arrays -> ``dtype`` on ``device``; int64 ids and bool masks keep their kind."""
        return to_tensor(a, self.torch_dtype, self.torch_device)

    def to_numpy(self, x: Tensor) -> np.ndarray:
        """Back to NumPy on the host (bfloat16 comes back as float32)."""
        return to_numpy(x)

    # -- elementary ops ---------------------------------------------------------------------

    @torch.no_grad()
    def softmax(self, x: Tensor, axis: int = -1) -> Tensor:
        """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x); -inf entries give exactly 0
        and a row that is all -inf gives zeros (torch.softmax would give NaN there).

        Shapes: any -> same.
        """
        weights = torch.softmax(x, dim=axis)
        all_masked = torch.isneginf(x).all(dim=axis, keepdim=True)
        return weights.masked_fill(all_masked, 0.0)

    @torch.no_grad()
    def positional_encoding(self, seq_len: int, d_model: int) -> Tensor:
        """PE[p, 2i] = sin(p / 10000^(2i/d_model)), PE[p, 2i+1] = cos(p / 10000^(2i/d_model)).

        Shapes: -> (seq_len, d_model).
        """
        if d_model % 2:
            raise ValueError(f"d_model must be even for the positional encoding, got {d_model}")
        angles = self._pe_angles(seq_len, d_model)  # (seq_len, d_model/2)
        pe = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)  # (seq_len, d_model/2, 2)
        return pe.flatten(-2).to(self.torch_dtype)  # interleave: (seq_len, d_model)

    @torch.no_grad()
    def embedding(self, ids: Tensor, table: Tensor) -> Tensor:
        """E[ids]: one row of the table per token id.

        Shapes: (B, S), (V, d) -> (B, S, d).
        """
        return table[ids]

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        """LN(x) = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta over the last axis.

        Choices: biased variance (divide by d), eps inside the square root.
        Shapes: (..., d), (d,), (d,) -> (..., d).
        """
        var, mean = torch.var_mean(x, dim=-1, correction=0, keepdim=True)
        return (x - mean) / torch.sqrt(var + eps) * gamma + beta

    # -- attention --------------------------------------------------------------------------

    @torch.no_grad()
    def attention_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """A = softmax(Q K^T / sqrt(d_k)) with masked scores set to -inf; fully masked row -> 0.

        Shapes: (..., Sq, d_k), (..., Sk, d_k), mask -> (..., Sq, Sk) -> (..., Sq, Sk).
        """
        return self.softmax(self._masked(self._scores(q, k), mask), axis=-1)

    @torch.no_grad()
    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V.

        Shapes: (..., Sq, d_k), (..., Sk, d_k), (..., Sk, d_v) -> (..., Sq, d_v).
        """
        return self._matmul(self.attention_weights(q, k, mask), v)

    @torch.no_grad()
    def multi_head_attention(
        self, x_q: Tensor, x_kv: Tensor, p: Params, num_heads: int, mask: Tensor | None = None
    ) -> Tensor:
        """MultiHead(x_q, x_kv) = Concat(head_1..head_h) W_o + b_o,
        head_h = Attention(Q_h, K_h, V_h) on column block h of Q = x_q W_q + b_q, K, V.

        Shapes: (B, Sq, d_model), (B, Sk, d_model), mask -> (B, Sq, Sk) -> (B, Sq, d_model).
        """
        q, k, v = self._project_heads(x_q, x_kv, p, num_heads)
        heads = self.attention(q, k, v, self._head_mask(mask))  # (B, h, Sq, d_k)
        return self._linear(self._merge_heads(heads), p["w_o"], p["b_o"])

    def _project_heads(self, x_q: Tensor, x_kv: Tensor, p: Params, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
        """Q = x_q W_q + b_q, K = x_kv W_k + b_k, V = x_kv W_v + b_v, each split into heads.

        Shapes: (B, Sq, d_model), (B, Sk, d_model) -> (B, h, Sq, d_k), (B, h, Sk, d_k), (B, h, Sk, d_k).
        """
        q = self._split_heads(self._linear(x_q, p["w_q"], p["b_q"]), num_heads)
        k = self._split_heads(self._linear(x_kv, p["w_k"], p["b_k"]), num_heads)
        v = self._split_heads(self._linear(x_kv, p["w_v"], p["b_v"]), num_heads)
        return q, k, v

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        """Scaled dot products Q K^T / sqrt(d_k).

        Shapes: (..., Sq, d_k), (..., Sk, d_k) -> (..., Sq, Sk).
        """
        return self._matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])

    def _matmul(self, a: Tensor, b: Tensor) -> Tensor:
        """The matrix product a b, every sum over the shared axis: scores, weights times values,
        projections (one method, so that another summation order overrides one piece).

        Shapes: (..., M, K), (..., K, N) -> (..., M, N).
        """
        return a @ b

    def _masked(self, scores: Tensor, mask: Tensor | None) -> Tensor:
        """Scores with every entry where ``mask`` is False replaced by -inf.

        Shapes: (..., Sq, Sk), mask broadcasting to it -> (..., Sq, Sk).
        """
        if mask is None:
            return scores
        return scores.masked_fill(~mask, float("-inf"))

    def _head_mask(self, mask: Tensor | None) -> Tensor | None:
        """The same mask for every head: a head axis is inserted before (Sq, Sk).

        Shapes: (B, Sq, Sk) -> (B, 1, Sq, Sk); masks of rank < 3 already broadcast.
        """
        if mask is None or mask.dim() < 3:
            return mask
        return mask.unsqueeze(-3)

    def _split_heads(self, x: Tensor, num_heads: int) -> Tensor:
        """Head h = contiguous columns [h*d_k:(h+1)*d_k], d_k = d_model / num_heads.

        Shapes: (B, S, d_model) -> (B, h, S, d_k).
        """
        d_model = x.shape[-1]
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        return x.unflatten(-1, (num_heads, d_model // num_heads)).transpose(-3, -2)

    def _merge_heads(self, x: Tensor) -> Tensor:
        """Concatenate the heads in order (inverse of ``_split_heads``).

        Shapes: (B, h, S, d_k) -> (B, S, h * d_k).
        """
        return x.transpose(-3, -2).flatten(-2)

    # -- feed-forward -----------------------------------------------------------------------

    @torch.no_grad()
    def feed_forward(self, x: Tensor, p: Params, activation: str = "relu") -> Tensor:
        """FFN(x) = act(x W_1 + b_1) W_2 + b_2.

        Shapes: (..., d_model) -> (..., d_ff) -> (..., d_model).
        """
        hidden = self._activation(self._linear(x, p["w_1"], p["b_1"]), activation)
        return self._linear(hidden, p["w_2"], p["b_2"])

    def _linear(self, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        """x W + b with W laid out (d_in, d_out).

        Shapes: (..., d_in), (d_in, d_out), (d_out,) -> (..., d_out).
        """
        return self._matmul(x, w) + b

    def _activation(self, x: Tensor, name: str) -> Tensor:
        """relu(x) = max(x, 0), or gelu(x) = x * Phi(x) = x/2 * (1 + erf(x / sqrt(2))).

        Choices: exact erf GELU, not the tanh approximation.
        Shapes: any -> same.
        """
        if name == "relu":
            return torch.relu(x)
        if name == "gelu":
            return F.gelu(x, approximate="none")
        raise ValueError(f"activation must be 'relu' or 'gelu', got {name!r}")
