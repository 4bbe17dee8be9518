"""More mutants, across every stage of the model: each the torch backend with exactly ONE
realistic bug, named by its one-line docstring (the companion of ``tests/mutants/zoo.py``).

Every mutant subclasses ``TorchBackend`` (backends/torch_backend.py) and overrides the one
small method the bug lives in (a public op override keeps ``@torch.no_grad()``). ``register``
records, next to the factory, the contract op(s) the bug lives in: the lowest public ops whose
results it changes, every one of which the suite must fail (tests/test_mutants_caught.py). It
also records the dtype the mutant is meant to run at: float64, so that no rounding can hide a
bug, except the precision mutants that claim float32 and compute part of an op in less.

Both spec forms load a mutant (``tests/mutants/catalog.py`` holds these and the zoo's)::

    python -m conformance run --backend tests.mutants.model:scores_unscaled --dtype float64
    python -m conformance run --backend tests/mutants/catalog.py:scores_unscaled --dtype float64

Sections follow the issue's categories; a docstring that starts "only ..." names a bug that
shows at some sizes alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from backends.contract import with_defaults
from backends.torch_backend import TorchBackend
from tests.mutants.zoo import registrar

Tensor = torch.Tensor


class Mutant(NamedTuple):
    """A registered mutant: its factory, the contract op(s) its bug lives in, and its dtype."""

    factory: Callable[..., TorchBackend]
    ops: tuple[str, ...]
    dtype: str = "float64"


MUTANTS: dict[str, Mutant] = {}
"""name -> Mutant of every mutant in this module."""


register = registrar(globals(), MUTANTS, Mutant, require_ops=True)
"""``@register(name, *ops, dtype=...)``: the factory ``name`` in MUTANTS and in this module, with
the op(s) its bug lives in and the dtype it runs at by default."""


# --- softmax numerics and axis -----------------------------------------------------------------

@register("softmax_online_no_rescale", "softmax")
class SoftmaxOnlineNoRescale(TorchBackend):
    """only rows longer than 8: online (blockwise) softmax forgets to rescale its running sum when the max grows."""

    BLOCK = 8

    @torch.no_grad()
    def softmax(self, x: Tensor, axis: int = -1) -> Tensor:
        x = x.movedim(axis, -1)
        running_max = torch.full(x.shape[:-1] + (1,), float("-inf"), dtype=x.dtype, device=x.device)
        total = torch.zeros_like(running_max)
        for start in range(0, x.shape[-1], self.BLOCK):
            block = x[..., start:start + self.BLOCK]
            new_max = torch.maximum(running_max, block.amax(dim=-1, keepdim=True))
            shift = torch.where(torch.isneginf(new_max), torch.zeros_like(new_max), new_max)
            total = total + torch.exp(block - shift).sum(dim=-1, keepdim=True)  # missing: total * exp(old - new max)
            running_max = new_max
        shift = torch.where(torch.isneginf(running_max), torch.zeros_like(running_max), running_max)
        out = (torch.exp(x - shift) / total).masked_fill(torch.isneginf(running_max), 0.0)
        return out.movedim(-1, axis)


# --- masks: convention, construction, value, where applied ---------------------------------------

@register("mask_applied_after_softmax", "attention_weights", "attention")
class MaskAppliedAfterSoftmax(TorchBackend):
    """the mask zeroes weights after the softmax instead of scores before it: rows no longer sum to 1."""

    @torch.no_grad()
    def attention_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        weights = self.softmax(self._scores(q, k), axis=-1)
        return weights if mask is None else weights * mask


@register("mask_multiplies_scores", "attention_weights", "attention")
class MaskMultipliesScores(TorchBackend):
    """the mask is multiplied into the scores (masked scores become 0, not -inf), so masked keys keep weight."""

    def _masked(self, scores: Tensor, mask: Tensor | None) -> Tensor:
        return scores if mask is None else scores * mask


@register("causal_mask_excludes_diagonal", "decode")
class CausalMaskExcludesDiagonal(TorchBackend):
    """the decoder's causal mask is strictly lower triangular: a position cannot attend to itself."""

    def _causal_mask(self, seq_len: int) -> Tensor:
        return torch.ones(seq_len, seq_len, dtype=torch.bool, device=self.torch_device).tril(diagonal=-1)


@register("decoder_self_attention_not_causal", "decode")
class DecoderSelfAttentionNotCausal(TorchBackend):
    """the decoder's self-attention mask is the target padding alone: targets attend to later targets."""

    def _target_mask(self, tgt_mask: Tensor | None, seq_len: int) -> Tensor | None:
        return self._key_padding_mask(tgt_mask)


@register("target_padding_mask_ignored", "decode")
class TargetPaddingMaskIgnored(TorchBackend):
    """the decoder's self-attention mask is causal alone: a real target attends to earlier padded targets."""

    def _target_mask(self, tgt_mask: Tensor | None, seq_len: int) -> Tensor:
        return self._causal_mask(seq_len)


@register("padding_mask_from_first_row", "encode", "decode")
class PaddingMaskFromFirstRow(TorchBackend):
    """only batch > 1: the key padding mask of the first sequence is broadcast to the whole batch."""

    def _key_padding_mask(self, pad_mask: Tensor | None) -> Tensor | None:
        return None if pad_mask is None else pad_mask[:1, None, :]


@register("padding_mask_on_queries", "encode", "decode")
class PaddingMaskOnQueries(TorchBackend):
    """the padding mask is laid out (B, S, 1): it masks padded queries instead of padded keys."""

    def _key_padding_mask(self, pad_mask: Tensor | None) -> Tensor | None:
        return None if pad_mask is None else pad_mask[:, :, None]


# --- attention scaling -------------------------------------------------------------------------

@register("scores_unscaled", "attention_weights", "attention")
class ScoresUnscaled(TorchBackend):
    """the scores are Q K^T without the 1/sqrt(d_k) factor."""

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(-2, -1)


@register("mha_scaled_by_sqrt_d_model", "multi_head_attention")
class MhaScaledBySqrtDModel(TorchBackend):
    """only with more than one head: multi-head attention scales the scores by 1/sqrt(d_model), not 1/sqrt(d_k)."""

    @torch.no_grad()
    def multi_head_attention(self, x_q: Tensor, x_kv: Tensor, p: Any, num_heads: int,
                             mask: Tensor | None = None) -> Tensor:
        q, k, v = self._project_heads(x_q, x_kv, p, num_heads)
        scores = q @ k.transpose(-2, -1) / math.sqrt(x_q.shape[-1])
        weights = self.softmax(self._masked(scores, self._head_mask(mask)), axis=-1)
        return self._linear(self._merge_heads(weights @ v), p["w_o"], p["b_o"])


@register("attention_scaled_by_sqrt_d_v", "attention")
class AttentionScaledBySqrtDV(TorchBackend):
    """only when d_v != d_k: attention scales the scores by 1/sqrt(d_v), the width of V."""

    @torch.no_grad()
    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        scores = q @ k.transpose(-2, -1) / math.sqrt(v.shape[-1])
        return self.softmax(self._masked(scores, mask), axis=-1) @ v


# --- head split and merge layout ---------------------------------------------------------------

@register("merge_heads_without_transpose", "multi_head_attention")
class MergeHeadsWithoutTranspose(TorchBackend):
    """only with more than one head: heads merged by reshaping (B, h, S, d_k) to (B, S, h d_k) without transposing."""

    def _merge_heads(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-3], x.shape[-2], x.shape[-3] * x.shape[-1])


@register("split_heads_strided", "multi_head_attention")
class SplitHeadsStrided(TorchBackend):
    """only with more than one head: head h takes the strided columns h::num_heads, not a contiguous block."""

    def _split_heads(self, x: Tensor, num_heads: int) -> Tensor:
        d_model = x.shape[-1]
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        return x.unflatten(-1, (d_model // num_heads, num_heads)).movedim(-1, -3)


@register("merge_heads_uses_key_length", "multi_head_attention")
class MergeHeadsUsesKeyLength(TorchBackend):
    """only when Sq != Sk: the merged heads are reshaped with the key length instead of the query length."""

    @torch.no_grad()
    def multi_head_attention(self, x_q: Tensor, x_kv: Tensor, p: Any, num_heads: int,
                             mask: Tensor | None = None) -> Tensor:
        q, k, v = self._project_heads(x_q, x_kv, p, num_heads)
        heads = self.attention(q, k, v, self._head_mask(mask))  # (B, h, Sq, d_k)
        concat = heads.transpose(-3, -2).reshape(x_kv.shape[0], x_kv.shape[1], -1)
        return self._linear(concat, p["w_o"], p["b_o"])


# --- projections, biases, output projection ----------------------------------------------------

@register("mha_output_bias_dropped", "multi_head_attention")
class MhaOutputBiasDropped(TorchBackend):
    """the attention output projection has no bias (out_proj built with bias=False): b_o is ignored."""

    @torch.no_grad()
    def multi_head_attention(self, x_q: Tensor, x_kv: Tensor, p: Any, num_heads: int,
                             mask: Tensor | None = None) -> Tensor:
        return super().multi_head_attention(x_q, x_kv, {**p, "b_o": torch.zeros_like(p["b_o"])}, num_heads, mask)


@register("linear_weight_transposed", "multi_head_attention", "feed_forward")
class LinearWeightTransposed(TorchBackend):
    """linear layers read W in torch.nn.Linear's (d_out, d_in) layout: x W^T + b instead of x W + b."""

    def _linear(self, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return x @ w.transpose(-2, -1) + b


# --- positional encoding: formula and how it is added ------------------------------------------

@register("pe_frequency_per_feature", "positional_encoding")
class PEFrequencyPerFeature(TorchBackend):
    """the positional encoding's frequency uses the feature index j, 10000^(-j/d), so cos features get the wrong one."""

    @torch.no_grad()
    def positional_encoding(self, seq_len: int, d_model: int) -> Tensor:
        if d_model % 2:
            raise ValueError(f"d_model must be even for the positional encoding, got {d_model}")
        dtype = torch.float64 if self.torch_dtype == torch.float64 else torch.float32
        position = torch.arange(seq_len, dtype=dtype, device=self.torch_device)[:, None]
        j = torch.arange(d_model, dtype=dtype, device=self.torch_device)
        angles = position / 10000.0 ** (j / d_model)  # (seq_len, d_model)
        even = torch.arange(d_model, device=self.torch_device) % 2 == 0
        return torch.where(even, torch.sin(angles), torch.cos(angles)).to(self.torch_dtype)


@register("pe_added_before_embedding_scale", "encode", "decode")
class PEAddedBeforeEmbeddingScale(TorchBackend):
    """the positional encoding is added before the sqrt(d_model) scaling, so it is scaled too."""

    def _embed(self, ids: Tensor, table: Tensor, config: Any) -> Tensor:
        x = self.embedding(ids, table) + self.positional_encoding(ids.shape[-1], config["d_model"])
        return x * math.sqrt(config["d_model"]) if config["scale_embedding"] else x


# --- embedding ---------------------------------------------------------------------------------

@register("embedding_scale_ignores_config", "encode", "decode")
class EmbeddingScaleIgnoresConfig(TorchBackend):
    """embeddings are multiplied by sqrt(d_model) even when scale_embedding is false."""

    def _embed(self, ids: Tensor, table: Tensor, config: Any) -> Tensor:
        x = self.embedding(ids, table) * math.sqrt(config["d_model"])
        return x + self.positional_encoding(ids.shape[-1], config["d_model"])


@register("embedding_ids_off_by_one", "embedding")
class EmbeddingIdsOffByOne(TorchBackend):
    """the embedding looks up row id - 1 (ids taken as 1-based; id 0 wraps around to the last row)."""

    @torch.no_grad()
    def embedding(self, ids: Tensor, table: Tensor) -> Tensor:
        return table[ids - 1]


# --- layer norm statistics, axis, eps ----------------------------------------------------------

@register("layer_norm_unbiased_variance", "layer_norm")
class LayerNormUnbiasedVariance(TorchBackend):
    """layer norm uses the unbiased variance (divides by d - 1, torch.var's default) instead of d."""

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        var, mean = torch.var_mean(x, dim=-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + eps) * gamma + beta


@register("model_norm_ignores_config_eps", "encoder_layer", "decoder_layer")
class ModelNormIgnoresConfigEps(TorchBackend):
    """the model's layer norms use eps = 1e-5 (nn.LayerNorm's default) whatever layer_norm_eps says."""

    def _norm(self, x: Tensor, norm: Any, config: Any) -> Tensor:
        return self.layer_norm(x, norm["gamma"], norm["beta"], 1e-5)


# --- residual and norm ordering ----------------------------------------------------------------

@register("sublayer_always_post_ln", "encoder_layer", "decoder_layer")
class SublayerAlwaysPostLN(TorchBackend):
    """every sub-layer is post-LN, LN(x + f(x)), whatever norm_first says."""

    def _sublayer(self, x: Tensor, fn: Callable[[Tensor], Tensor], norm: Any, config: Any) -> Tensor:
        return self._norm(x + fn(x), norm, config)


@register("pre_ln_residual_from_normed_input", "encoder_layer", "decoder_layer")
class PreLNResidualFromNormedInput(TorchBackend):
    """pre-LN sub-layers add the residual to the normalised input, LN(x) + f(LN(x)), not to x."""

    def _sublayer(self, x: Tensor, fn: Callable[[Tensor], Tensor], norm: Any, config: Any) -> Tensor:
        if config["norm_first"]:
            h = self._norm(x, norm, config)
            return h + fn(h)
        return super()._sublayer(x, fn, norm, config)


@register("sublayer_without_residual", "encoder_layer", "decoder_layer")
class SublayerWithoutResidual(TorchBackend):
    """the sub-layers drop the residual connection: LN(f(x)) post-LN, f(LN(x)) pre-LN."""

    def _sublayer(self, x: Tensor, fn: Callable[[Tensor], Tensor], norm: Any, config: Any) -> Tensor:
        if config["norm_first"]:
            return fn(self._norm(x, norm, config))
        return self._norm(fn(x), norm, config)


@register("final_norm_follows_norm_first", "encode", "decode")
class FinalNormFollowsNormFirst(TorchBackend):
    """the stacks' final norm is applied iff norm_first, ignoring an explicit final_norm."""

    def _final_norm(self, x: Tensor, params: Any, key: str, config: Any) -> Tensor:
        return self._norm(x, params[key], config) if config["norm_first"] else x


@register("decoder_final_norm_missing", "decode")
class DecoderFinalNormMissing(TorchBackend):
    """the decoder stack never applies its final norm (decoder_norm); the encoder's is applied."""

    def _final_norm(self, x: Tensor, params: Any, key: str, config: Any) -> Tensor:
        return x if key == "decoder_norm" else super()._final_norm(x, params, key, config)


# --- feed-forward ------------------------------------------------------------------------------

@register("gelu_tanh_approximation", "feed_forward")
class GeluTanhApproximation(TorchBackend):
    """GELU is the tanh approximation, not the exact erf form the contract asks for."""

    def _activation(self, x: Tensor, name: str) -> Tensor:
        return F.gelu(x, approximate="tanh") if name == "gelu" else super()._activation(x, name)


@register("ffn_activation_on_output", "feed_forward")
class FfnActivationOnOutput(TorchBackend):
    """the feed-forward applies its activation after the second linear layer too."""

    @torch.no_grad()
    def feed_forward(self, x: Tensor, p: Any, activation: str = "relu") -> Tensor:
        hidden = self._activation(self._linear(x, p["w_1"], p["b_1"]), activation)
        return self._activation(self._linear(hidden, p["w_2"], p["b_2"]), activation)


# --- decoder: cross-attention wiring -----------------------------------------------------------

@register("cross_attention_attends_to_decoder", "decoder_layer")
class CrossAttentionAttendsToDecoder(TorchBackend):
    """cross-attention takes its keys and values from the decoder stream instead of the encoder memory."""

    def _cross_attention(self, y: Tensor, memory: Tensor, p: Any, config: Any, mask: Tensor | None) -> Tensor:
        return self.multi_head_attention(y, y, p["cross_attn"], config["num_heads"], mask)


@register("cross_attention_uses_self_attn_params", "decoder_layer")
class CrossAttentionUsesSelfAttnParams(TorchBackend):
    """cross-attention uses the layer's self-attention weights (self_attn) instead of cross_attn."""

    def _cross_attention(self, y: Tensor, memory: Tensor, p: Any, config: Any, mask: Tensor | None) -> Tensor:
        return self.multi_head_attention(y, memory, p["self_attn"], config["num_heads"], mask)


# --- generator ---------------------------------------------------------------------------------

@register("generator_log_softmax", "forward")
class GeneratorLogSoftmax(TorchBackend):
    """the generator returns log-probabilities (log_softmax of the logits), as the Annotated Transformer's does."""

    def _generator(self, y: Tensor, params: Any) -> Tensor:
        return torch.log_softmax(super()._generator(y, params), dim=-1)


@register("generator_tied_to_embedding", "forward")
class GeneratorTiedToEmbedding(TorchBackend):
    """the generator's weight is tied to the target embedding (E^T) instead of generator.w."""

    def _generator(self, y: Tensor, params: Any) -> Tensor:
        return self._linear(y, params["tgt_embedding"].transpose(-2, -1), params["generator"]["b"])


# --- greedy decoding ---------------------------------------------------------------------------

class _GreedyHooks(TorchBackend):
    """The torch backend's greedy loop with its decisions as methods, for the greedy mutants;
    unchanged, it decodes exactly as ``TorchBackend.greedy_decode`` (tests/test_mutants_caught.py)."""

    @torch.no_grad()
    def greedy_decode(self, src_ids: Tensor, params: Any, config: Any, max_len: int, bos_id: int, eos_id: int,
                      src_mask: Tensor | None = None) -> Tensor:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        config = with_defaults(config)
        memory = self.encode(src_ids, params, config, src_mask)  # (B, Ss, d_model)
        tokens = torch.full((src_ids.shape[0], 1), bos_id, dtype=torch.int64, device=self.torch_device)
        finished = self._initially_finished(tokens, eos_id)  # (B,)
        while self._keep_going(tokens, finished, max_len):
            y = self._decode_prefix(tokens, memory, params, config, src_mask)  # (B, L, d_model)
            next_id = self._next_token(self._generator(y[:, -1], params)).masked_fill(finished, eos_id)
            tokens = torch.cat([tokens, next_id[:, None]], dim=1)  # (B, L + 1)
            finished = finished | (next_id == eos_id)
        return tokens

    def _initially_finished(self, tokens: Tensor, eos_id: int) -> Tensor:
        """No row has emitted eos yet: the bos column is not an emission."""
        return torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)

    def _keep_going(self, tokens: Tensor, finished: Tensor, max_len: int) -> bool:
        """Another step while the length is below max_len and some row is still running."""
        return tokens.shape[1] < max_len and not bool(finished.all())

    def _decode_prefix(self, tokens: Tensor, memory: Tensor, params: Any, config: Any,
                       src_mask: Tensor | None) -> Tensor:
        """The decoder over the tokens so far, cross-attending to the real source positions."""
        return self.decode(tokens, memory, params, config, src_mask)


@register("greedy_stops_when_any_row_finishes", "greedy_decode")
class GreedyStopsWhenAnyRowFinishes(_GreedyHooks):
    """greedy decoding stops the whole batch as soon as any row has emitted eos."""

    def _keep_going(self, tokens: Tensor, finished: Tensor, max_len: int) -> bool:
        return tokens.shape[1] < max_len and not bool(finished.any())


@register("greedy_bos_counts_as_eos", "greedy_decode")
class GreedyBosCountsAsEos(_GreedyHooks):
    """greedy decoding counts the bos column as an emission: with bos_id == eos_id it stops at once."""

    def _initially_finished(self, tokens: Tensor, eos_id: int) -> Tensor:
        return tokens[:, 0] == eos_id


@register("greedy_max_len_off_by_one", "greedy_decode")
class GreedyMaxLenOffByOne(_GreedyHooks):
    """greedy decoding stops one token early: at most max_len - 1 tokens (bos counted twice)."""

    def _keep_going(self, tokens: Tensor, finished: Tensor, max_len: int) -> bool:
        return tokens.shape[1] < max_len - 1 and not bool(finished.all())


@register("greedy_decode_forgets_src_mask", "greedy_decode")
class GreedyDecodeForgetsSrcMask(_GreedyHooks):
    """the decoding loop encodes with the source padding mask but decodes without it: cross-attention sees padding."""

    def _decode_prefix(self, tokens: Tensor, memory: Tensor, params: Any, config: Any,
                       src_mask: Tensor | None) -> Tensor:
        return self.decode(tokens, memory, params, config)


@register("next_token_argmax_flattened", "greedy_decode")
class NextTokenArgmaxFlattened(TorchBackend):
    """only batch > 1: the next token is the argmax over the flattened batch (no dim=), shared by every row."""

    def _next_token(self, logits: Tensor) -> Tensor:
        flat = int(torch.argmax(logits)) % logits.shape[-1]
        return torch.full(logits.shape[:1], flat, dtype=torch.int64, device=logits.device)


# --- precision: part of an op computed in less than the claimed dtype ---------------------------

@register("softmax_in_float32", "softmax")
class SoftmaxInFloat32(TorchBackend):
    """softmax is computed in float32 and cast back, in a backend that claims float64."""

    @torch.no_grad()
    def softmax(self, x: Tensor, axis: int = -1) -> Tensor:
        return super().softmax(x.to(torch.float32), axis).to(x.dtype)


@register("attention_scores_in_float32", "attention_weights", "attention")
class AttentionScoresInFloat32(TorchBackend):
    """the scores Q K^T are multiplied in float32 (as TF32 matmuls do), in a backend that claims float64."""

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        scores = q.to(torch.float32) @ k.to(torch.float32).transpose(-2, -1)
        return scores.to(q.dtype) / math.sqrt(q.shape[-1])


@register("layer_norm_statistics_in_float32", "layer_norm")
class LayerNormStatisticsInFloat32(TorchBackend):
    """layer norm computes its mean and variance in float32, in a backend that claims float64."""

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        var, mean = torch.var_mean(x.to(torch.float32), dim=-1, correction=0, keepdim=True)
        return (x - mean.to(x.dtype)) / torch.sqrt(var.to(x.dtype) + eps) * gamma + beta


@register("pe_positions_in_bfloat16", "positional_encoding")
class PEPositionsInBfloat16(TorchBackend):
    """only long sequences: positions are held in bfloat16, so positions past 256 collide (257 -> 256)."""

    def _pe_angles(self, seq_len: int, d_model: int) -> Tensor:
        dtype = torch.float64 if self.torch_dtype == torch.float64 else torch.float32
        position = torch.arange(seq_len, device=self.torch_device).to(torch.bfloat16).to(dtype)
        two_i = torch.arange(0, d_model, 2, dtype=dtype, device=self.torch_device)
        return position[:, None] / 10000.0 ** (two_i / d_model)


@register("scores_in_bfloat16", "attention_weights", "attention", dtype="float32")
class ScoresInBfloat16(TorchBackend):
    """the scores Q K^T are multiplied in bfloat16 (autocast left on), in a backend that claims float32."""

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        scores = q.to(torch.bfloat16) @ k.to(torch.bfloat16).transpose(-2, -1)
        return scores.to(q.dtype) / math.sqrt(q.shape[-1])


@register("feed_forward_in_float16", "feed_forward", dtype="float32")
class FeedForwardInFloat16(TorchBackend):
    """the feed-forward runs in float16 (a half-precision kernel), in a backend that claims float32."""

    @torch.no_grad()
    def feed_forward(self, x: Tensor, p: Any, activation: str = "relu") -> Tensor:
        half = {name: value.to(torch.float16) for name, value in p.items()}
        return super().feed_forward(x.to(torch.float16), half, activation).to(x.dtype)


# --- small systematic errors: a few tens of roundings, at the precision users run ---------------
# Each stays inside most per-element bounds; the tolerance model's root-mean-square check must
# catch them (conformance/tolerance/TOLERANCES.md, "Resolution"; benchmarks/resolution.py).

@register("gelu_tanh_at_float32", "feed_forward", dtype="float32")
class GeluTanhAtFloat32(TorchBackend):
    """the GELU is the tanh approximation (BERT, GPT-2, FastGelu fusions), at float32."""

    def _activation(self, x: Tensor, name: str) -> Tensor:
        return F.gelu(x, approximate="tanh") if name == "gelu" else super()._activation(x, name)


@register("layer_norm_eps_read_tenfold_small", "layer_norm", dtype="float32")
class LayerNormEpsReadTenfoldSmall(TorchBackend):
    """layer norm uses eps / 10 (1e-5 read as 1e-6), at float32."""

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        return super().layer_norm(x, gamma, beta, eps / 10)


@register("scores_biased_64u", "attention_weights", "attention", dtype="float32")
class ScoresBiased64u(TorchBackend):
    """the attention scores are scaled by 1 + 64 u (a scale constant rounded badly), at float32."""

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(-2, -1) * ((1.0 + 64 * 2.0**-24) / math.sqrt(q.shape[-1]))
