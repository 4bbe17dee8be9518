"""Mutants that follow a named convention (reference/variants.py) instead of the contract.

Every variant of the catalogue has a mutant that implements exactly it: the torch backend
with one method overridden. Those not already in ``zoo.py`` or ``model.py`` are defined here
and registered like model.py's (op(s) and dtype); ``BY_VARIANT`` maps each variant id to its
mutant and the op whose failing differential tests the gate must diagnose as that variant
(tests/test_diagnosis.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from backends.torch_backend import TorchBackend
from tests.mutants.model import Mutant
from tests.mutants.zoo import registrar

Tensor = torch.Tensor

MUTANTS: dict[str, Mutant] = {}
"""name -> Mutant of every mutant in this module."""


register = registrar(globals(), MUTANTS, Mutant, require_ops=True)
"""``@register(name, *ops, dtype=...)``: as model.register, for this module."""


@register("pe_table_in_float32", "positional_encoding")
class PETableInFloat32(TorchBackend):
    """the sinusoid table is held in a float32 buffer inside a float64 model."""

    @torch.no_grad()
    def positional_encoding(self, seq_len: int, d_model: int) -> Tensor:
        return super().positional_encoding(seq_len, d_model).to(torch.float32).to(self.torch_dtype)


@register("mask_fill_minus_1e9", "attention_weights", "attention")
class MaskFillMinus1e9(TorchBackend):
    """masked scores are set to -1e9 (the Annotated Transformer), so a fully masked row averages V."""

    def _masked(self, scores: Tensor, mask: Tensor | None) -> Tensor:
        return scores if mask is None else scores.masked_fill(~mask, -1e9)


@register("mask_add_minus_1e4", "attention_weights", "attention")
class MaskAddMinus1e4(TorchBackend):
    """-10000 is added to masked scores (BERT's additive mask), so a fully masked row attends as if unmasked."""

    def _masked(self, scores: Tensor, mask: Tensor | None) -> Tensor:
        return scores if mask is None else scores + (~mask).to(scores.dtype) * -1e4


@register("layer_norm_fast_variance", "layer_norm", dtype="float32")
class LayerNormFastVariance(TorchBackend):
    """layer norm's variance is E[x^2] - E[x]^2 clamped at 0 (Flax's use_fast_variance), which cancels."""

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = ((x * x).mean(dim=-1, keepdim=True) - mean * mean).clamp_min(0.0)
        return (x - mean) / torch.sqrt(var + eps) * gamma + beta


@register("layer_norm_eps_in_float32", "layer_norm")
class LayerNormEpsInFloat32(TorchBackend):
    """layer norm's eps is held in float32 (an ONNX FLOAT attribute) inside a float64 model."""

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        return super().layer_norm(x, gamma, beta, float(np.float32(eps)))


@register("embedding_never_scaled", "encode", "decode")
class EmbeddingNeverScaled(TorchBackend):
    """the embeddings are never multiplied by sqrt(d_model), whatever scale_embedding says."""

    def _embed(self, ids: Tensor, table: Tensor, config: Any) -> Tensor:
        return super()._embed(ids, table, {**config, "scale_embedding": False})


@register("heads_interleaved", "multi_head_attention")
class HeadsInterleaved(TorchBackend):
    """only with more than one head: head h reads and writes the strided columns h::num_heads."""

    def _split_heads(self, x: Tensor, num_heads: int) -> Tensor:
        return x.unflatten(-1, (x.shape[-1] // num_heads, num_heads)).movedim(-1, -3)

    def _merge_heads(self, x: Tensor) -> Tensor:
        return x.movedim(-3, -1).flatten(-2)


@register("attention_scale_in_float32", "attention_weights", "attention")
class AttentionScaleInFloat32(TorchBackend):
    """the scores are multiplied by 1/sqrt(d_k) held in float32 (a C float softmax_scale) in a float64 model."""

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(-2, -1) * float(np.float32(1.0 / math.sqrt(q.shape[-1])))


@register("sublayer_pre_post_swapped", "encoder_layer", "decoder_layer")
class SublayerPrePostSwapped(TorchBackend):
    """the sub-layers read norm_first inverted: post-LN where the config says pre-LN and the reverse."""

    def _sublayer(self, x: Tensor, fn: Callable[[Tensor], Tensor], norm: Any, config: Any) -> Tensor:
        return super()._sublayer(x, fn, norm, {**config, "norm_first": not config["norm_first"]})


@register("final_norms_missing", "encode", "decode")
class FinalNormsMissing(TorchBackend):
    """the stacks never apply their final norms (nn.TransformerEncoder/Decoder built with norm=None)."""

    def _final_norm(self, x: Tensor, params: Any, key: str, config: Any) -> Tensor:
        return x


@register("key_padding_as_lengths", "encode", "decode")
class KeyPaddingAsLengths(TorchBackend):
    """only with left or inner padding: the padding mask becomes a per-row key count, keys j < count attend."""

    def _key_padding_mask(self, pad_mask: Tensor | None) -> Tensor | None:
        if pad_mask is None:
            return None
        lengths = pad_mask.sum(dim=-1, keepdim=True)  # (B, 1)
        return (torch.arange(pad_mask.shape[-1], device=pad_mask.device) < lengths)[:, None, :]


BY_VARIANT: dict[str, tuple[str, str]] = {
    "pe-sin-cos-halves": ("pe_concatenated_halves", "positional_encoding"),
    "pe-table-float32": ("pe_table_in_float32", "positional_encoding"),
    "mask-finfo-min": ("mask_fill_finfo_min", "attention"),
    "mask-fill-1e9": ("mask_fill_minus_1e9", "attention"),
    "mask-add-1e4": ("mask_add_minus_1e4", "attention"),
    "softmax-nan-all-masked": ("softmax_nan_on_all_neg_inf_rows", "softmax"),
    "layer-norm-eps-outside-sqrt": ("layer_norm_eps_outside_sqrt", "layer_norm"),
    "layer-norm-unbiased-variance": ("layer_norm_unbiased_variance", "layer_norm"),
    "layer-norm-fast-variance": ("layer_norm_fast_variance", "layer_norm"),
    "layer-norm-eps-float32": ("layer_norm_eps_in_float32", "layer_norm"),
    "gelu-tanh": ("gelu_tanh_approximation", "feed_forward"),
    "embedding-unscaled": ("embedding_never_scaled", "encode"),
    "embedding-always-scaled": ("embedding_scale_ignores_config", "encode"),
    "heads-interleaved": ("heads_interleaved", "multi_head_attention"),
    "attention-scale-sqrt-d-model": ("mha_scaled_by_sqrt_d_model", "multi_head_attention"),
    "attention-unscaled": ("scores_unscaled", "attention"),
    "attention-scale-float32": ("attention_scale_in_float32", "attention"),
    "causal-mask-hides-diagonal": ("causal_mask_excludes_diagonal", "decode"),
    "pre-post-ln-swapped": ("sublayer_pre_post_swapped", "encoder_layer"),
    "final-norm-missing": ("final_norms_missing", "encode"),
    "key-padding-as-lengths": ("key_padding_as_lengths", "decode"),
}
"""variant id -> (the mutant implementing it, an op whose failures the gate must name it for)."""

NO_CONVENTION: tuple[str, str] = ("keys_rolled_by_one", "attention")
"""A mutant whose bug is no known convention, and an op it fails."""
