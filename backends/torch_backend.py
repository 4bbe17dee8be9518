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

import torch

from backends.contract import with_defaults
from backends.torch_ops import TorchOps

Tensor = torch.Tensor
Params = Mapping[str, Any]
Config = Mapping[str, Any]


class TorchBackend(TorchOps):
    """The contract's ops on torch tensors of one dtype on one device: the elementary ones of
    ``TorchOps``, composed into sub-layers, layers, stacks and greedy decoding."""

    name = "torch"

    # -- sub-layers -------------------------------------------------------------------------

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
