"""The built-in ``torch`` backend: the encoder-decoder transformer written with plain torch ops.

An implementation under test, independent of ``reference`` (it never imports it). Every op of
backends/CONTRACT.md is assembled from small methods (``_linear``, ``_split_heads``,
``_scores``, ``_matmul``, ``_sublayer``, ...) so that adapters (``torch-sdpa``, ``torch-nn``) and mutants
(one deliberate bug each) can subclass ``TorchBackend`` and override exactly one piece.
Public ops run under ``torch.no_grad()``; an override of a public op should do the same.

Choices (the contract's, made explicit): masked scores are ``-inf`` and a fully masked query
row gives zero weights; layer norm uses the biased variance with eps inside the square root;
GELU is the exact erf form; the positional encoding is computed in float32 (float64 for a
float64 backend) and then cast; argmax takes the lowest index on ties.

float16 on CPU: torch 2.13 implements every op used here for Half on CPU, so no op needs a
float32 detour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backends._torch_common import to_numpy, to_tensor, torch_device, torch_dtype
from backends.contract import with_defaults

Tensor = torch.Tensor
Params = Mapping[str, Any]
Config = Mapping[str, Any]

class TorchBackend:
    """The contract's ops on torch tensors of one dtype on one device."""

    name = "torch"

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

    # -- feed-forward and sub-layers --------------------------------------------------------

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

    def _norm(self, x: Tensor, norm: Params, config: Config) -> Tensor:
        """LN with the params ``{gamma, beta}`` and the config's ``layer_norm_eps``.

        Shapes: (..., d_model) -> (..., d_model).
        """
        return self.layer_norm(x, norm["gamma"], norm["beta"], config["layer_norm_eps"])

    def _sublayer(
        self, x: Tensor, fn: Callable[[Tensor], Tensor], norm: Params, config: Config
    ) -> Tensor:
        """Residual sub-layer: post-LN  LN(x + fn(x)),  or pre-LN  x + fn(LN(x))  (norm_first).

        Shapes: (B, S, d_model) -> (B, S, d_model).
        """
        if config["norm_first"]:
            return x + fn(self._norm(x, norm, config))
        return self._norm(x + fn(x), norm, config)

    # -- layers -----------------------------------------------------------------------------

    @torch.no_grad()
    def encoder_layer(self, x: Tensor, p: Params, config: Config, mask: Tensor | None = None) -> Tensor:
        """Self-attention sub-layer, then feed-forward sub-layer.

        Shapes: (B, S, d_model), mask -> (B, S, S) -> (B, S, d_model).
        """
        config = with_defaults(config)
        x = self._sublayer(x, lambda h: self._self_attention(h, p, config, mask), p["norm1"], config)
        return self._sublayer(x, lambda h: self._ffn(h, p, config), p["norm2"], config)

    @torch.no_grad()
    def decoder_layer(
        self,
        y: Tensor,
        memory: Tensor,
        p: Params,
        config: Config,
        self_mask: Tensor | None = None,
        cross_mask: Tensor | None = None,
    ) -> Tensor:
        """Masked self-attention, cross-attention over ``memory``, feed-forward; each a sub-layer.

        Shapes: (B, St, d_model), (B, Ss, d_model) -> (B, St, d_model).
        """
        config = with_defaults(config)
        y = self._sublayer(y, lambda h: self._self_attention(h, p, config, self_mask), p["norm1"], config)
        y = self._sublayer(
            y, lambda h: self._cross_attention(h, memory, p, config, cross_mask), p["norm2"], config
        )
        return self._sublayer(y, lambda h: self._ffn(h, p, config), p["norm3"], config)

    def _self_attention(self, x: Tensor, p: Params, config: Config, mask: Tensor | None) -> Tensor:
        """MHA(x, x) with the layer's ``self_attn`` params.

        Shapes: (B, S, d_model) -> (B, S, d_model).
        """
        return self.multi_head_attention(x, x, p["self_attn"], config["num_heads"], mask)

    def _cross_attention(
        self, y: Tensor, memory: Tensor, p: Params, config: Config, mask: Tensor | None
    ) -> Tensor:
        """MHA(y, memory): queries from the decoder, keys and values from the encoder output.

        Shapes: (B, St, d_model), (B, Ss, d_model) -> (B, St, d_model).
        """
        return self.multi_head_attention(y, memory, p["cross_attn"], config["num_heads"], mask)

    def _ffn(self, x: Tensor, p: Params, config: Config) -> Tensor:
        """FFN with the layer's ``ffn`` params and the config's activation.

        Shapes: (B, S, d_model) -> (B, S, d_model).
        """
        return self.feed_forward(x, p["ffn"], config["activation"])

    # -- stacks -----------------------------------------------------------------------------

    @torch.no_grad()
    def encode(
        self, src_ids: Tensor, params: Params, config: Config, src_mask: Tensor | None = None
    ) -> Tensor:
        """memory = [LN_enc] (EncoderLayer_N(... EncoderLayer_1(embed(src_ids)))).

        Shapes: (B, Ss) -> (B, Ss, d_model).
        """
        config = with_defaults(config)
        x = self._embed(src_ids, params["src_embedding"], config)
        mask = self._key_padding_mask(src_mask)  # (B, 1, Ss)
        for layer in params["encoder"]:
            x = self.encoder_layer(x, layer, config, mask)
        return self._final_norm(x, params, "encoder_norm", config)

    @torch.no_grad()
    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor,
        params: Params,
        config: Config,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> Tensor:
        """[LN_dec] (DecoderLayer_N(... DecoderLayer_1(embed(tgt_ids), memory), memory)).

        Shapes: (B, St), (B, Ss, d_model) -> (B, St, d_model).
        """
        config = with_defaults(config)
        y = self._embed(tgt_ids, params["tgt_embedding"], config)
        self_mask = self._target_mask(tgt_mask, tgt_ids.shape[-1])  # (St, St) or (B, St, St)
        cross_mask = self._key_padding_mask(src_mask)  # (B, 1, Ss)
        for layer in params["decoder"]:
            y = self.decoder_layer(y, memory, layer, config, self_mask, cross_mask)
        return self._final_norm(y, params, "decoder_norm", config)

    @torch.no_grad()
    def forward(
        self,
        src_ids: Tensor,
        tgt_ids: Tensor,
        params: Params,
        config: Config,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> Tensor:
        """logits = decode(tgt_ids, encode(src_ids)) W_gen + b_gen.

        Shapes: (B, Ss), (B, St) -> (B, St, tgt_vocab_size).
        """
        memory = self.encode(src_ids, params, config, src_mask)
        y = self.decode(tgt_ids, memory, params, config, src_mask, tgt_mask)
        return self._generator(y, params)

    def _embed(self, ids: Tensor, table: Tensor, config: Config) -> Tensor:
        """E[ids] * sqrt(d_model) (if ``scale_embedding``) + PE[:S].

        Shapes: (B, S), (V, d_model) -> (B, S, d_model).
        """
        x = self.embedding(ids, table)
        if config["scale_embedding"]:
            x = x * math.sqrt(config["d_model"])
        return x + self.positional_encoding(ids.shape[-1], config["d_model"])

    def _pe_angles(self, seq_len: int, d_model: int) -> Tensor:
        """p / 10000^(2i/d_model), in float32 (float64 for a float64 backend).

        Shapes: -> (seq_len, d_model/2).
        """
        dtype = torch.float64 if self.torch_dtype == torch.float64 else torch.float32
        position = torch.arange(seq_len, dtype=dtype, device=self.torch_device)
        two_i = torch.arange(0, d_model, 2, dtype=dtype, device=self.torch_device)
        return position[:, None] / 10000.0 ** (two_i / d_model)

    def _key_padding_mask(self, pad_mask: Tensor | None) -> Tensor | None:
        """Every query may attend to every real key: pad_mask[:, None, :].

        Shapes: (B, Sk) -> (B, 1, Sk).
        """
        if pad_mask is None:
            return None
        return pad_mask[:, None, :]

    def _causal_mask(self, seq_len: int) -> Tensor:
        """Query p may attend to key j iff j <= p (lower triangle, diagonal included).

        Shapes: -> (S, S).
        """
        return torch.ones(seq_len, seq_len, dtype=torch.bool, device=self.torch_device).tril()

    def _target_mask(self, tgt_mask: Tensor | None, seq_len: int) -> Tensor:
        """Decoder self-attention mask: causal AND target key padding.

        Shapes: (B, St) -> (B, St, St); without ``tgt_mask``, (St, St).
        """
        causal = self._causal_mask(seq_len)
        padding = self._key_padding_mask(tgt_mask)
        return causal if padding is None else causal & padding

    def _final_norm(self, x: Tensor, params: Params, key: str, config: Config) -> Tensor:
        """LN(x) with ``params[key]`` if ``final_norm``, else x unchanged.

        Shapes: (B, S, d_model) -> (B, S, d_model).
        """
        if not config["final_norm"]:
            return x
        return self._norm(x, params[key], config)

    def _generator(self, y: Tensor, params: Params) -> Tensor:
        """Output projection to vocabulary logits: y W_gen + b_gen.

        Shapes: (..., d_model) -> (..., tgt_vocab_size).
        """
        return self._linear(y, params["generator"]["w"], params["generator"]["b"])

    # -- greedy decoding --------------------------------------------------------------------

    @torch.no_grad()
    def greedy_decode(
        self,
        src_ids: Tensor,
        params: Params,
        config: Config,
        max_len: int,
        bos_id: int,
        eos_id: int,
        src_mask: Tensor | None = None,
    ) -> Tensor:
        """Start from bos; append argmax of the last position's logits until every row has
        emitted eos or the length is ``max_len``; rows past their eos are filled with eos.

        Shapes: (B, Ss) -> (B, L) int64, 1 <= L <= max_len.
        """
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        config = with_defaults(config)
        memory = self.encode(src_ids, params, config, src_mask)  # (B, Ss, d_model)
        batch = src_ids.shape[0]
        tokens = torch.full((batch, 1), bos_id, dtype=torch.int64, device=self.torch_device)
        finished = torch.zeros(batch, dtype=torch.bool, device=self.torch_device)
        while tokens.shape[1] < max_len and not bool(finished.all()):
            y = self.decode(tokens, memory, params, config, src_mask)  # (B, L, d_model)
            next_id = self._next_token(self._generator(y[:, -1], params))  # (B,)
            next_id = next_id.masked_fill(finished, eos_id)
            tokens = torch.cat([tokens, next_id[:, None]], dim=1)  # (B, L + 1)
            finished = finished | (next_id == eos_id)
        return tokens

    def _next_token(self, logits: Tensor) -> Tensor:
        """argmax over the vocabulary, lowest index on ties (torch.argmax does not promise
        that on every device); a NaN counts as the maximum, as in np.argmax.

        Shapes: (B, V) -> (B,) int64.
        """
        vocab = logits.shape[-1]
        is_max = (logits == logits.amax(dim=-1, keepdim=True)) | logits.isnan()
        index = torch.arange(vocab, device=logits.device).expand_as(logits)
        return index.masked_fill(~is_max, vocab).amin(dim=-1)


def factory(*, dtype: str = "float32", device: str = "cpu") -> TorchBackend:
    """The ``torch`` backend; ValueError (= unsupported) for an unknown dtype or absent device."""
    return TorchBackend(dtype=dtype, device=device)
