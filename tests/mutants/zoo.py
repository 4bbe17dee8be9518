"""The mutant zoo: broken backends, each a correct built-in backend with exactly ONE realistic
bug, named by its one-line docstring.

Every mutant subclasses the torch backend (backends/torch_backend.py) and overrides the one
small method the bug lives in. ``register`` turns the class into a factory (keyword arguments
``dtype``, ``device``; float64 on the cpu by default) stored in ``MUTANTS`` and as a module
attribute, so both spec forms load it::

    pytest properties --backend tests.mutants.zoo:softmax_wrong_axis --dtype float64
    pytest properties --backend tests/mutants/zoo.py:softmax_wrong_axis --dtype float64

To add a mutant: subclass ``TorchBackend``, override one method (a public op override keeps
``@torch.no_grad()``), write a one-line docstring naming the bug, decorate the class with
``@register("snake_case_name")``, and add the property or differential test that catches it
to ``tests/test_properties_catch_mutants.py`` (or its differential counterpart).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from backends.contract import with_defaults
from backends.torch_backend import TorchBackend

Tensor = torch.Tensor

MUTANTS: dict[str, Callable[..., TorchBackend]] = {}
"""name -> factory(dtype=..., device=...) of every mutant."""


def mutant_factory(cls: type[TorchBackend], name: str, dtype: str = "float64") -> Callable[..., TorchBackend]:
    """The factory ``name(dtype=..., device=...)`` of the mutant class ``cls``: its backends are
    named ``mutant:<name>``, its docstring is the bug's."""

    def factory(*, dtype: str = dtype, device: str = "cpu") -> TorchBackend:
        backend = cls(dtype=dtype, device=device)
        backend.name = f"mutant:{name}"
        return backend

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = cls.__doc__
    factory.mutant_class = cls  # type: ignore[attr-defined]
    return factory


def registrar(namespace: dict[str, Any], mutants: dict[str, Any], entry: Callable[..., Any], *,
              require_ops: bool) -> Callable[..., Callable[[type[TorchBackend]], type[TorchBackend]]]:
    """The class decorator ``register(name, *ops, dtype="float64")`` of a mutant module: it makes
    the factory ``name`` of the class (``mutant_factory``), stores ``entry(factory, ops, dtype)``
    in ``mutants`` and binds the factory in ``namespace`` (the module's globals, so that both spec
    forms load it). A name registered twice raises; so do no ops where ``require_ops``."""

    def register(name: str, *ops: str, dtype: str = "float64") -> Callable[[type[TorchBackend]], type[TorchBackend]]:
        if require_ops and not ops:
            raise ValueError(f"mutant {name!r} must name the op(s) its bug lives in")

        def decorate(cls: type[TorchBackend]) -> type[TorchBackend]:
            if name in mutants:
                raise ValueError(f"mutant {name!r} is registered twice")
            factory = mutant_factory(cls, name, dtype)
            mutants[name] = entry(factory, tuple(ops), dtype)
            namespace[name] = factory
            return cls

        return decorate

    return register


register = registrar(globals(), MUTANTS, lambda factory, ops, dtype: factory, require_ops=False)
"""``@register(name)``: the zoo's mutants; their ops are named in tests/mutants/catalog.py."""


# --- softmax -----------------------------------------------------------------------------------

@register("softmax_wrong_axis")
class SoftmaxWrongAxis(TorchBackend):
    """softmax normalises along axis 0 whatever axis it is asked for."""

    @torch.no_grad()
    def softmax(self, x: Tensor, axis: int = -1) -> Tensor:
        return super().softmax(x, axis=0)


@register("softmax_returns_log_softmax")
class SoftmaxReturnsLogSoftmax(TorchBackend):
    """softmax returns log-probabilities (log_softmax)."""

    @torch.no_grad()
    def softmax(self, x: Tensor, axis: int = -1) -> Tensor:
        out = torch.log_softmax(x, dim=axis)
        return out.masked_fill(torch.isneginf(x).all(dim=axis, keepdim=True), 0.0)


@register("softmax_without_max_subtraction")
class SoftmaxWithoutMaxSubtraction(TorchBackend):
    """softmax computes exp(x) / sum exp(x) without subtracting the row max first (overflows)."""

    @torch.no_grad()
    def softmax(self, x: Tensor, axis: int = -1) -> Tensor:
        e = torch.exp(x)
        return (e / e.sum(dim=axis, keepdim=True)).masked_fill(torch.isneginf(x).all(dim=axis, keepdim=True), 0.0)


@register("softmax_nan_on_all_neg_inf_rows")
class SoftmaxNanOnAllNegInfRows(TorchBackend):
    """softmax is plain torch.softmax: a row that is all -inf gives NaN instead of zeros."""

    @torch.no_grad()
    def softmax(self, x: Tensor, axis: int = -1) -> Tensor:
        return torch.softmax(x, dim=axis)


# --- masks -------------------------------------------------------------------------------------

@register("mask_inverted")
class MaskInverted(TorchBackend):
    """boolean masks read with torch.nn's convention (True = masked out) instead of True = attend."""

    def _masked(self, scores: Tensor, mask: Tensor | None) -> Tensor:
        return scores if mask is None else scores.masked_fill(mask, float("-inf"))


@register("mask_fill_finfo_min")
class MaskFillFinfoMin(TorchBackend):
    """masked scores set to the dtype's most negative finite value, so a fully masked row averages V."""

    def _masked(self, scores: Tensor, mask: Tensor | None) -> Tensor:
        return scores if mask is None else scores.masked_fill(~mask, torch.finfo(scores.dtype).min)


@register("attention_always_causal")
class AttentionAlwaysCausal(TorchBackend):
    """attention applies a causal (key <= query) mask even when none is asked for."""

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        scores = super()._scores(q, k)
        causal = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        return scores.masked_fill(~causal, float("-inf"))


@register("causal_mask_includes_next")
class CausalMaskIncludesNext(TorchBackend):
    """the decoder's causal mask is off by one: position t also sees position t + 1."""

    def _causal_mask(self, seq_len: int) -> Tensor:
        return torch.ones(seq_len, seq_len, dtype=torch.bool, device=self.torch_device).tril(diagonal=1)


@register("key_padding_mask_ignored")
class KeyPaddingMaskIgnored(TorchBackend):
    """padding masks (src_mask, tgt_mask) are dropped: padded keys are attended to."""

    def _key_padding_mask(self, pad_mask: Tensor | None) -> Tensor | None:
        return None


@register("right_padding_only")
class RightPaddingOnly(TorchBackend):
    """masks become a per-row key count (a fused kernel's lengths): right only for right padding."""

    def _masked(self, scores: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            return scores
        lengths = mask.expand(scores.shape).sum(dim=-1, keepdim=True)  # keys kept per query row
        keys = torch.arange(scores.shape[-1], device=scores.device)
        return super()._masked(scores, keys < lengths)


@register("cross_attention_unmasked")
class CrossAttentionUnmasked(TorchBackend):
    """cross-attention ignores the source padding mask: queries attend to padded memory."""

    def _cross_attention(self, y: Tensor, memory: Tensor, p: Any, config: Any, mask: Tensor | None) -> Tensor:
        return super()._cross_attention(y, memory, p, config, None)


# --- attention scores and heads ----------------------------------------------------------------

@register("scores_query_query")
class ScoresQueryQuery(TorchBackend):
    """the scores use the queries twice, Q Q^T / sqrt(d_k), instead of Q K^T (copy-paste slip)."""

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        return super()._scores(q, q)


@register("scale_by_d_k")
class ScaleByDK(TorchBackend):
    """the scores are divided by d_k instead of sqrt(d_k)."""

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(-2, -1) / q.shape[-1]


@register("attention_softmax_over_queries")
class AttentionSoftmaxOverQueries(TorchBackend):
    """the attention softmax normalises over the queries (dim -2) instead of the keys."""

    @torch.no_grad()
    def attention_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.softmax(self._masked(self._scores(q, k), mask), axis=-2)


@register("keys_rolled_by_one")
class KeysRolledByOne(TorchBackend):
    """query i is scored against key i + 1 (keys rolled by one position, a cache off-by-one)."""

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        return super()._scores(q, torch.roll(k, shifts=-1, dims=-2))


@register("split_heads_without_transpose")
class SplitHeadsWithoutTranspose(TorchBackend):
    """heads split with reshape(B, h, S, d_k) instead of reshape(B, S, h, d_k).transpose(1, 2)."""

    def _split_heads(self, x: Tensor, num_heads: int) -> Tensor:
        batch, seq_len, d_model = x.shape
        return x.reshape(batch, num_heads, seq_len, d_model // num_heads)


@register("key_projection_uses_w_v")
class KeyProjectionUsesWV(TorchBackend):
    """multi-head attention projects the keys with W_v, b_v instead of W_k, b_k."""

    @torch.no_grad()
    def multi_head_attention(self, x_q: Tensor, x_kv: Tensor, p: Any, num_heads: int,
                             mask: Tensor | None = None) -> Tensor:
        return super().multi_head_attention(x_q, x_kv, {**p, "w_k": p["w_v"], "b_k": p["b_v"]}, num_heads, mask)


# --- layer norm --------------------------------------------------------------------------------

@register("layer_norm_eps_outside_sqrt")
class LayerNormEpsOutsideSqrt(TorchBackend):
    """layer norm divides by std + eps instead of sqrt(var + eps) (the Annotated Transformer's form)."""

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        var, mean = torch.var_mean(x, dim=-1, correction=0, keepdim=True)
        return (x - mean) / (torch.sqrt(var) + eps) * gamma + beta


@register("layer_norm_without_centering")
class LayerNormWithoutCentering(TorchBackend):
    """layer norm does not subtract the mean: x / sqrt(mean(x^2) + eps) (RMSNorm)."""

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * gamma + beta


@register("layer_norm_gamma_beta_swapped")
class LayerNormGammaBetaSwapped(TorchBackend):
    """layer norm swaps its affine parameters: x_hat * beta + gamma."""

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        return super().layer_norm(x, beta, gamma, eps)


@register("norm_over_batch")
class NormOverBatch(TorchBackend):
    """the model's layer norms pool their statistics over the batch too (batch-norm style)."""

    def _norm(self, x: Tensor, norm: Any, config: Any) -> Tensor:
        var, mean = torch.var_mean(x, dim=(0, -1), correction=0, keepdim=True)
        return (x - mean) / torch.sqrt(var + config["layer_norm_eps"]) * norm["gamma"] + norm["beta"]


@register("norm_over_sequence")
class NormOverSequence(TorchBackend):
    """the model's layer norms normalise over (sequence, d_model), like nn.LayerNorm(x.shape[1:])."""

    def _norm(self, x: Tensor, norm: Any, config: Any) -> Tensor:
        var, mean = torch.var_mean(x, dim=(-2, -1), correction=0, keepdim=True)
        return (x - mean) / torch.sqrt(var + config["layer_norm_eps"]) * norm["gamma"] + norm["beta"]


# --- positional encoding and embedding ---------------------------------------------------------

@register("pe_dropout_left_on")
class PEDropoutLeftOn(TorchBackend):
    """the positional encoding goes through dropout(p=0.1) in training mode (inference is not set)."""

    @torch.no_grad()
    def positional_encoding(self, seq_len: int, d_model: int) -> Tensor:
        return F.dropout(super().positional_encoding(seq_len, d_model), p=0.1, training=True)


@register("pe_positions_normalised")
class PEPositionsNormalised(TorchBackend):
    """the positional encoding uses positions p / seq_len (in [0, 1)) instead of p."""

    def _pe_angles(self, seq_len: int, d_model: int) -> Tensor:
        return super()._pe_angles(seq_len, d_model) / max(seq_len, 1)


@register("pe_scaled_by_sqrt_d_model")
class PEScaledBySqrtDModel(TorchBackend):
    """the positional encoding is multiplied by sqrt(d_model) (the embedding's scale applied to it)."""

    @torch.no_grad()
    def positional_encoding(self, seq_len: int, d_model: int) -> Tensor:
        return super().positional_encoding(seq_len, d_model) * math.sqrt(d_model)


@register("pe_concatenated_halves")
class PEConcatenatedHalves(TorchBackend):
    """the positional encoding is [sin..., cos...] (tensor2tensor layout) instead of interleaved."""

    @torch.no_grad()
    def positional_encoding(self, seq_len: int, d_model: int) -> Tensor:
        angles = self._pe_angles(seq_len, d_model)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).to(self.torch_dtype)


@register("pe_sin_cos_swapped")
class PESinCosSwapped(TorchBackend):
    """the positional encoding puts cos at even and sin at odd features."""

    @torch.no_grad()
    def positional_encoding(self, seq_len: int, d_model: int) -> Tensor:
        angles = self._pe_angles(seq_len, d_model)
        return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1).flatten(-2).to(self.torch_dtype)


@register("pe_positions_start_at_one")
class PEPositionsStartAtOne(TorchBackend):
    """the positional encoding counts positions from 1 instead of 0."""

    def _pe_angles(self, seq_len: int, d_model: int) -> Tensor:
        return super()._pe_angles(seq_len + 1, d_model)[1:]


@register("no_positional_encoding")
class NoPositionalEncoding(TorchBackend):
    """the embedding layer forgets to add the positional encoding."""

    def _embed(self, ids: Tensor, table: Tensor, config: Any) -> Tensor:
        x = self.embedding(ids, table)
        return x * math.sqrt(config["d_model"]) if config["scale_embedding"] else x


@register("embedding_scaled")
class EmbeddingScaled(TorchBackend):
    """the embedding op itself multiplies the looked-up rows by sqrt(d)."""

    @torch.no_grad()
    def embedding(self, ids: Tensor, table: Tensor) -> Tensor:
        return table[ids] * math.sqrt(table.shape[-1])


# --- feed-forward ------------------------------------------------------------------------------

@register("activation_always_gelu")
class ActivationAlwaysGelu(TorchBackend):
    """the feed-forward activation is GELU whatever the config asks for."""

    def _activation(self, x: Tensor, name: str) -> Tensor:
        return super()._activation(x, "gelu")


# --- greedy decoding ---------------------------------------------------------------------------

@register("greedy_drops_bos")
class GreedyDropsBos(TorchBackend):
    """greedy decoding returns only the generated tokens, without the bos column."""

    @torch.no_grad()
    def greedy_decode(self, src_ids: Tensor, params: Any, config: Any, max_len: int, bos_id: int, eos_id: int,
                      src_mask: Tensor | None = None) -> Tensor:
        return super().greedy_decode(src_ids, params, config, max_len, bos_id, eos_id, src_mask)[:, 1:]


@register("greedy_max_len_excludes_bos")
class GreedyMaxLenExcludesBos(TorchBackend):
    """greedy decoding does not count bos towards max_len (returns up to max_len + 1 tokens)."""

    @torch.no_grad()
    def greedy_decode(self, src_ids: Tensor, params: Any, config: Any, max_len: int, bos_id: int, eos_id: int,
                      src_mask: Tensor | None = None) -> Tensor:
        return super().greedy_decode(src_ids, params, config, max_len + 1, bos_id, eos_id, src_mask)


class _GreedyLoop(TorchBackend):
    """The torch backend's greedy loop with its steps as methods, for the greedy mutants."""

    @torch.no_grad()
    def greedy_decode(self, src_ids: Tensor, params: Any, config: Any, max_len: int, bos_id: int, eos_id: int,
                      src_mask: Tensor | None = None) -> Tensor:
        config = with_defaults(config)
        memory = self.encode(src_ids, params, config, src_mask)
        tokens = torch.full((src_ids.shape[0], 1), bos_id, dtype=torch.int64, device=self.torch_device)
        finished = torch.zeros(src_ids.shape[0], dtype=torch.bool, device=self.torch_device)
        while tokens.shape[1] < max_len and not bool(finished.all()):
            y = self.decode(tokens, memory, params, config, src_mask)
            next_id = self._fill_finished(self._next_token(self._generator(self._step_state(y), params)),
                                          finished, eos_id)
            tokens = torch.cat([tokens, next_id[:, None]], dim=1)
            finished = finished | (next_id == eos_id)
        return tokens

    def _step_state(self, y: Tensor) -> Tensor:
        """The decoder state the next token is predicted from: the last position. (B, L, d) -> (B, d)."""
        return y[:, -1]

    def _fill_finished(self, next_id: Tensor, finished: Tensor, eos_id: int) -> Tensor:
        """Rows that have emitted eos keep emitting it."""
        return next_id.masked_fill(finished, eos_id)


@register("greedy_continues_after_eos")
class GreedyContinuesAfterEos(_GreedyLoop):
    """greedy decoding keeps generating in rows that have already emitted eos."""

    def _fill_finished(self, next_id: Tensor, finished: Tensor, eos_id: int) -> Tensor:
        return next_id


@register("greedy_uses_first_position")
class GreedyUsesFirstPosition(_GreedyLoop):
    """greedy decoding predicts each next token from the first position's logits, not the last's."""

    def _step_state(self, y: Tensor) -> Tensor:
        return y[:, 0]


@register("greedy_samples")
class GreedySamples(TorchBackend):
    """greedy decoding samples from softmax(logits) instead of taking the argmax (do_sample left on)."""

    def _next_token(self, logits: Tensor) -> Tensor:
        return torch.multinomial(torch.softmax(logits.double(), dim=-1), 1)[:, 0]
