"""Composition: a composite op equals the same backend's own parts composed, in its own dtype.

No reference model: each side is the backend's. With LN_i(x) = layer_norm(x, gamma_i, beta_i,
layer_norm_eps), MHA = multi_head_attention, FFN = feed_forward and the contract's defaults
(backends/CONTRACT.md):

- a sub-layer with function f is LN(x + f(x)) post-LN, x + f(LN(x)) pre-LN (norm_first);
  encoder_layer(x) = sub_2(sub_1(x, MHA(., ., self_attn, mask)), FFN) and
  decoder_layer(y, m) = sub_3(sub_2(sub_1(y, MHA(., ., self_attn, self_mask)),
  MHA(., m, cross_attn, cross_mask)), FFN);
- encode(src) = [LN_enc] encoder_layer_N(... encoder_layer_1(x_0, src_mask[:, None, :]))
  and decode(tgt, m) = [LN_dec] decoder_layer_N(... (y_0, m, causal AND tgt_mask[:, None, :],
  src_mask[:, None, :])), with x_0 = embedding(ids) [* sqrt(d_model)] + PE[:S], the final norm
  iff final_norm (default norm_first), the scaling iff scale_embedding;
- forward(src, tgt) = decode(tgt, encode(src)) W_gen + b_gen;
- greedy_decode appends, per row, an argmax of forward on the prefix, and stops only when every
  row has emitted eos or the length is max_len.

Every intermediate that the composition forms itself (a residual sum, the scaled embedding) is
rounded to the backend's dtype (``held``), as the backend would hold it, so the composition is
an evaluation in the dtype too. Both sides are then chains of roundings of the same function,
compared with the sum of their ``conditioned_error`` bounds: the chain bound, or the
differential tolerance where the layer norms' conditioning makes that larger (for the
generator see ``test_forward_is_decode_then_generator``). ``layer_norm_eps`` comes from
``configs``: 1e-5, 1e-6 or 1e-3, so a layer that ignores the config's eps shows in two
examples of three. Outputs at padded query positions are unspecified (CONTRACT.md) and never
compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference
from conformance.kit.assertions import assert_close, assert_true
from conformance.kit.harness import call_op
from conformance.kit.strategies import arrays, budget, padding_masks, sizes, token_ids
from properties import tolerances
from properties.plumbing import held
from properties.strategies import LAYER_SHARE, MODEL_SHARE, models
from properties.test_greedy import decodings, emitted_eos_before, greedy

ACTIVATION_SCALES = (1.0,)
"""Layer inputs and encoder memory are unit scale (embeddings are scaled to unit variance and
layer norm keeps activations of order one): the chain bounds' UNIT_SCALE assumption."""

Array = np.ndarray


# --- masks ---------------------------------------------------------------------------------

def real(mask: Array | None, shape: tuple[int, int]) -> Array:
    """The (B, S) padding mask, all True when there is none."""
    return np.ones(shape, dtype=bool) if mask is None else mask


def key_padding(mask: Array | None) -> Array | None:
    """(B, Sk) padding mask -> (B, 1, Sk) attention mask: no query attends to a padded key."""
    return None if mask is None else mask[:, None, :]


def causal_self_mask(tgt_mask: Array | None, seq_len: int) -> Array:
    """The decoder's self mask: key <= query AND tgt_mask[:, None, :].
    Shapes: (B, St) -> (B, St, St); without tgt_mask, (St, St)."""
    causal = np.tril(np.ones((seq_len, seq_len), dtype=bool))
    return causal if tgt_mask is None else causal & tgt_mask[:, None, :]


@st.composite
def left_padded(draw: st.DrawFn, ids: Array, mask: Array | None, vocab_size: int) -> tuple[Array, Array | None]:
    """(ids', mask') with 0-2 padded positions (any ids, mask False) put BEFORE the sequence:
    behind the causal mask, only padding before real tokens is visible to the decoder. With
    none, (ids, mask) unchanged. Shapes: (B, S) -> (B, P + S)."""
    extra = draw(sizes(0, 2))
    if extra == 0:
        return ids, mask
    pad_ids = draw(token_ids(ids.shape[0], extra, vocab_size))
    pad_mask = np.zeros((ids.shape[0], extra), dtype=bool)
    return np.concatenate([pad_ids, ids], axis=1), np.concatenate([pad_mask, real(mask, ids.shape)], axis=1)


# --- the backend's parts, composed -----------------------------------------------------------

def norm(backend: Any, x: Array, params: dict, config: dict) -> Array:
    """LN(x) with ``params = {gamma, beta}`` and the config's eps. Shapes: (..., d) -> same."""
    eps = reference.as_config(config).layer_norm_eps
    return call_op(backend, "layer_norm", x, params["gamma"], params["beta"], eps, shape=x.shape)


def sublayer(backend: Any, x: Array, f: Callable[[Array], Array], params: dict, config: dict) -> Array:
    """Post-LN LN(x + f(x)), pre-LN x + f(LN(x)); the sum rounded to the dtype.
    Shapes: (B, S, d_model) -> same."""
    if reference.as_config(config).norm_first:
        return held(backend, x + f(norm(backend, x, params, config)))
    return norm(backend, held(backend, x + f(x)), params, config)


def attend(backend: Any, x_q: Array, x_kv: Array, p: dict, config: dict, mask: Array | None) -> Array:
    """MHA(x_q, x_kv). Shapes: (B, Sq, d_model), (B, Sk, d_model) -> (B, Sq, d_model)."""
    return call_op(backend, "multi_head_attention", x_q, x_kv, p, config["num_heads"], mask=mask, shape=x_q.shape)


def ffn(backend: Any, x: Array, p: dict, config: dict) -> Array:
    """FFN(x) with the config's activation. Shapes: (..., d_model) -> same."""
    return call_op(backend, "feed_forward", x, p, activation=reference.as_config(config).activation, shape=x.shape)


def encoder_layer_composed(backend: Any, x: Array, p: dict, config: dict, mask: Array | None) -> Array:
    """sub_2(sub_1(x, MHA(h, h, self_attn, mask)), FFN). Shapes: (B, S, d_model) -> same."""
    x = sublayer(backend, x, lambda h: attend(backend, h, h, p["self_attn"], config, mask), p["norm1"], config)
    return sublayer(backend, x, lambda h: ffn(backend, h, p["ffn"], config), p["norm2"], config)


def decoder_layer_composed(backend: Any, y: Array, memory: Array, p: dict, config: dict,
                           self_mask: Array | None, cross_mask: Array | None) -> Array:
    """Masked self-attention, cross-attention over memory (cross_attn), FFN; each a sub-layer.
    Shapes: (B, St, d_model), (B, Ss, d_model) -> (B, St, d_model)."""
    y = sublayer(backend, y, lambda h: attend(backend, h, h, p["self_attn"], config, self_mask), p["norm1"], config)
    y = sublayer(backend, y, lambda h: attend(backend, h, memory, p["cross_attn"], config, cross_mask), p["norm2"],
                 config)
    return sublayer(backend, y, lambda h: ffn(backend, h, p["ffn"], config), p["norm3"], config)


def embedded(backend: Any, ids: Array, table: Array, config: dict) -> Array:
    """embedding(ids, table) [* sqrt(d_model)] + PE[:S], each step rounded to the dtype.
    Shapes: (B, S), (V, d_model) -> (B, S, d_model)."""
    c = reference.as_config(config)
    x = call_op(backend, "embedding", ids, table, shape=ids.shape + (c.d_model,))
    if c.scale_embedding:
        x = held(backend, x * math.sqrt(c.d_model))
    pe = call_op(backend, "positional_encoding", ids.shape[1], c.d_model, shape=(ids.shape[1], c.d_model))
    return held(backend, x + pe)


def final_norm(backend: Any, x: Array, params: dict, key: str, config: dict) -> Array:
    """LN(x) with ``params[key]`` iff final_norm (default norm_first), else x."""
    return norm(backend, x, params[key], config) if reference.as_config(config).final_norm else x


def encode_composed(backend: Any, src: Array, params: dict, config: dict, src_mask: Array | None) -> Array:
    """[LN_enc] encoder_layer_N(... encoder_layer_1(x_0, src_mask[:, None, :])).
    Shapes: (B, Ss) -> (B, Ss, d_model)."""
    x = embedded(backend, src, params["src_embedding"], config)
    for layer in params["encoder"]:
        x = call_op(backend, "encoder_layer", x, layer, config, mask=key_padding(src_mask), shape=x.shape)
    return final_norm(backend, x, params, "encoder_norm", config)


def decode_composed(backend: Any, tgt: Array, memory: Array, params: dict, config: dict, src_mask: Array | None,
                    tgt_mask: Array | None) -> Array:
    """[LN_dec] decoder_layer_N(... decoder_layer_1(y_0, memory, causal AND tgt padding, src padding)).
    Shapes: (B, St), (B, Ss, d_model) -> (B, St, d_model)."""
    y = embedded(backend, tgt, params["tgt_embedding"], config)
    masks = {"self_mask": causal_self_mask(tgt_mask, tgt.shape[1]), "cross_mask": key_padding(src_mask)}
    for layer in params["decoder"]:
        y = call_op(backend, "decoder_layer", y, memory, layer, config, **masks, shape=y.shape)
    return final_norm(backend, y, params, "decoder_norm", config)


# --- layers ----------------------------------------------------------------------------------

@pytest.mark.op("encoder_layer")
@budget(LAYER_SHARE)
@given(case=models(min_layers=1), data=st.data())
def test_encoder_layer_is_its_sublayers_composed(backend, case, data):
    """encoder_layer(x) = sub_2(sub_1(x, MHA), FFN) built from the backend's own
    multi_head_attention, feed_forward and layer_norm, post-LN LN(x + f(x)) or pre-LN
    x + f(LN(x)), key padding mask (B, 1, S), at the real positions."""
    config, p = case["config"], held(backend, case["params"]["encoder"][0])
    shape = case["src"].shape + (config["d_model"],)
    x = held(backend, data.draw(arrays(shape, scales=ACTIVATION_SCALES), label="x"))
    mask = data.draw(padding_masks(*case["src"].shape), label="mask")
    out = call_op(backend, "encoder_layer", x, p, config, mask=key_padding(mask), shape=shape)
    composed = encoder_layer_composed(backend, x, p, config, key_padding(mask))
    length = tolerances.encoder_layer_length(config, shape[1])
    tol = tolerances.difference(*(tolerances.conditioned_error(backend.dtype, length, y, "encoder_layer", x, p, config,
                                                               mask=key_padding(mask)) for y in (out, composed)))
    assert_close(out, composed, tol=tol, backend=backend, op="encoder_layer",
                 what=f"encoder_layer = its sub-layers composed (norm_first={config['norm_first']})",
                 where=real(mask, shape[:2])[..., None])


@pytest.mark.op("decoder_layer")
@budget(LAYER_SHARE)
@given(case=models(min_layers=1), data=st.data())
def test_decoder_layer_is_its_sublayers_composed(backend, case, data):
    """decoder_layer(y, memory) = self-attention (self_attn, causal AND target padding), then
    cross-attention over memory (cross_attn, source padding), then FFN, each a sub-layer built
    from the backend's own ops; compared at the real target positions (each attends to itself,
    so no compared query row is fully masked)."""
    config, p = case["config"], held(backend, case["params"]["decoder"][0])
    (batch, s_tgt), s_src, d_model = case["tgt"].shape, case["src"].shape[1], config["d_model"]
    y = held(backend, data.draw(arrays((batch, s_tgt, d_model), scales=ACTIVATION_SCALES), label="y"))
    memory = held(backend, data.draw(arrays((batch, s_src, d_model), scales=ACTIVATION_SCALES), label="memory"))
    tgt_mask = data.draw(padding_masks(batch, s_tgt), label="tgt_mask")
    src_mask = data.draw(padding_masks(batch, s_src), label="src_mask")
    masks = {"self_mask": causal_self_mask(tgt_mask, s_tgt), "cross_mask": key_padding(src_mask)}
    out = call_op(backend, "decoder_layer", y, memory, p, config, **masks, shape=y.shape)
    composed = decoder_layer_composed(backend, y, memory, p, config, masks["self_mask"], masks["cross_mask"])
    length = tolerances.decoder_layer_length(config, s_tgt, s_src)
    tol = tolerances.difference(*(tolerances.conditioned_error(backend.dtype, length, z, "decoder_layer", y, memory, p,
                                                               config, **masks) for z in (out, composed)))
    assert_close(out, composed, tol=tol, backend=backend, op="decoder_layer",
                 what=f"decoder_layer = its sub-layers composed (norm_first={config['norm_first']})",
                 where=real(tgt_mask, (batch, s_tgt))[..., None])


# --- stacks and the generator ------------------------------------------------------------------

@pytest.mark.op("encode")
@budget(MODEL_SHARE)
@given(case=models(min_layers=1), data=st.data())
def test_encode_is_embedding_then_encoder_layers_then_final_norm(backend, case, data):
    """encode(src) = [LN_enc] encoder_layer(...(embedding(src) [* sqrt(d_model)] + PE)) with
    mask src_mask[:, None, :], from the backend's own embedding, positional_encoding,
    encoder_layer and layer_norm; at the real positions."""
    config, p, src = case["config"], held(backend, case["params"]), case["src"]
    src_mask = data.draw(padding_masks(*src.shape), label="src_mask")
    out = call_op(backend, "encode", src, p, config, src_mask=src_mask, shape=src.shape + (config["d_model"],))
    composed = encode_composed(backend, src, p, config, src_mask)
    length = tolerances.encode_length(config, src.shape[1])
    tol = tolerances.difference(*(tolerances.conditioned_error(backend.dtype, length, y, "encode", src, p, config,
                                                               src_mask=src_mask) for y in (out, composed)))
    assert_close(out, composed, tol=tol, backend=backend, op="encode",
                 what="encode = embedding, PE, encoder layers, final norm composed",
                 where=real(src_mask, src.shape)[..., None])


@pytest.mark.op("decode")
@budget(MODEL_SHARE)
@given(case=models(min_layers=1), data=st.data())
def test_decode_is_embedding_then_decoder_layers_then_final_norm(backend, case, data):
    """decode(tgt, memory) = [LN_dec] decoder_layer(...(embedding(tgt) [* sqrt(d_model)] + PE,
    memory)) with self mask causal AND tgt_mask[:, None, :] and cross mask src_mask[:, None, :],
    from the backend's own parts. Targets get 0-2 padded positions before them (padding after
    the real tokens hides behind the causal mask); compared at the real target positions."""
    config, p = case["config"], held(backend, case["params"])
    memory = held(backend, data.draw(arrays(case["src"].shape + (config["d_model"],), scales=ACTIVATION_SCALES),
                                     label="memory"))
    src_mask = data.draw(padding_masks(*case["src"].shape), label="src_mask")
    tgt, tgt_mask = data.draw(left_padded(case["tgt"], data.draw(padding_masks(*case["tgt"].shape), label="tgt_mask"),
                                          config["tgt_vocab_size"]), label="left-padded tgt")
    out = call_op(backend, "decode", tgt, memory, p, config, src_mask=src_mask, tgt_mask=tgt_mask,
                  shape=tgt.shape + (config["d_model"],))
    composed = decode_composed(backend, tgt, memory, p, config, src_mask, tgt_mask)
    length = tolerances.decode_length(config, tgt.shape[1], memory.shape[1])
    tol = tolerances.difference(*(tolerances.conditioned_error(backend.dtype, length, y, "decode", tgt, memory, p,
                                                               config, src_mask=src_mask, tgt_mask=tgt_mask)
                                  for y in (out, composed)))
    assert_close(out, composed, tol=tol, backend=backend, op="decode",
                 what="decode = embedding, PE, decoder layers (causal AND target padding), final norm composed",
                 where=real(tgt_mask, tgt.shape)[..., None])


@pytest.mark.op("forward")
@budget(MODEL_SHARE)
@given(case=models(min_layers=1), data=st.data())
def test_forward_is_decode_then_generator(backend, case, data):
    """forward(src, tgt) = y W_gen + b_gen for y = decode(tgt, encode(src)) of the same backend,
    the linear map taken in float64. Tolerance: each side's y is off by at most e_y = the
    encode-then-decode ``chain_error``, carried through W (``through_linear``), plus forward's
    own generator rounding, a dot product of d_model terms and the bias in the dtype
    (``generator_error``). Compared at the real (left-padded) target positions."""
    config, p, src = case["config"], held(backend, case["params"]), case["src"]
    src_mask = data.draw(padding_masks(*src.shape), label="src_mask")
    tgt, tgt_mask = data.draw(left_padded(case["tgt"], data.draw(padding_masks(*case["tgt"].shape), label="tgt_mask"),
                                          config["tgt_vocab_size"]), label="left-padded tgt")
    d_model, w, b = config["d_model"], p["generator"]["w"], p["generator"]["b"]
    logits = call_op(backend, "forward", src, tgt, p, config, src_mask=src_mask, tgt_mask=tgt_mask,
                     shape=tgt.shape + (config["tgt_vocab_size"],))
    memory = call_op(backend, "encode", src, p, config, src_mask=src_mask, shape=src.shape + (d_model,))
    y = call_op(backend, "decode", tgt, memory, p, config, src_mask=src_mask, tgt_mask=tgt_mask,
                shape=tgt.shape + (d_model,))
    length = tolerances.encode_length(config, src.shape[1]) + tolerances.decode_length(config, tgt.shape[1],
                                                                                        src.shape[1])
    tol = (tolerances.through_linear(tolerances.chain_difference(backend.dtype, length, y, y), w)
           + tolerances.generator_error(backend.dtype, y, w, b))
    assert_close(logits, y @ w + b, tol=tol, backend=backend, op="forward",
                 what="forward = decode(tgt, encode(src)) W_gen + b_gen", where=real(tgt_mask, tgt.shape)[..., None])


# --- greedy decoding, batched ------------------------------------------------------------------

def _distinct_rows(src: Array, mask: Array, vocab_size: int) -> Array:
    """src with the first real token of row b > 0 set to (row 0's first real token + b) mod V,
    so that no two rows are the same source (requires B <= V). Shapes: (B, S) -> (B, S)."""
    src, first = src.copy(), np.argmax(mask, axis=1)
    rows = np.arange(1, src.shape[0])
    src[rows, first[rows]] = (src[0, first[0]] + rows) % vocab_size
    return src


@st.composite
def batched_decodings(draw: st.DrawFn) -> dict:
    """``decodings`` with 2-3 rows whose sources differ, a decoder layer (so the logits depend on
    the source), max_len >= 3, and 1-2 padded source positions appended (any ids, mask False)
    to the drawn padding mask, so that padded memory is always there to be masked."""
    case = draw(decodings(min_batch=2, max_batch=3, min_layers=1, min_max_len=3, max_max_len=5))
    src, vocab = case["src"], case["config"]["src_vocab_size"]
    extra = draw(sizes(1, 2))
    mask = np.concatenate([real(case["src_mask"], src.shape), np.zeros((src.shape[0], extra), dtype=bool)], axis=1)
    src = np.concatenate([src, draw(token_ids(src.shape[0], extra, vocab))], axis=1)
    return {**case, "src": _distinct_rows(src, mask, vocab), "src_mask": mask}


@pytest.mark.op("greedy_decode")
@budget(MODEL_SHARE)
@given(case=batched_decodings())
def test_batched_tokens_are_argmaxes_of_forward_with_padded_sources(backend, case):
    """tokens[b, t] maximises forward(src, tokens[:, :-1], src_mask)[b, t - 1] for every row b
    still running at step t, in a batch of different, padded sources: each row takes its own
    argmax, cross-attending to its real source positions only. One forward call on the whole
    sequence serves every step: its logits at t - 1 are those of the prefix tokens[:, :t] by
    causality (test_causality.py checks it; test_greedy.py calls forward on each prefix),
    and a compiled backend compiles one length, not one per prefix. A near-tie may go
    either way: the chosen logit must be within ``difference`` of two forward
    ``conditioned_error`` bounds of the largest."""
    tokens = greedy(backend, case)
    if tokens.shape[1] < 2:
        return                                  # no step taken (test_greedy.py checks the length)
    config, p, src, src_mask = case["config"], held(backend, case["params"]), case["src"], case["src_mask"]
    running = ~emitted_eos_before(tokens, case["eos"])[:, 1:]                          # (B, L - 1)
    prefix = tokens[:, :-1]                                                             # (B, L - 1)
    logits = call_op(backend, "forward", src, prefix, p, config, src_mask=src_mask,
                     shape=(*prefix.shape, config["tgt_vocab_size"]))                  # (B, L - 1, V)
    err = tolerances.conditioned_error(backend.dtype, tolerances.forward_length(config, src.shape[1], prefix.shape[1]),
                                       logits, "forward", src, prefix, p, config, src_mask=src_mask)
    gap = logits.max(axis=-1) - np.take_along_axis(logits, tokens[:, 1:, None], axis=-1)[..., 0]  # (B, L - 1)
    assert_true(~running | (gap <= tolerances.difference(err, err).max(axis=-1)), values=gap, backend=backend,
                op="greedy_decode", what="row's own argmax of forward with src_mask at each step (value: max logit - chosen)")


def early_finisher_token(tokens: Array, default: int) -> int:
    """The earliest token tokens[r, s], 1 <= s < L - 1, that some other row never generates (in a
    first run), so that with it as eos row r finishes before the last step while that row runs
    on; else ``default``. Shapes: (B, L) -> id."""
    if tokens.ndim != 2:
        return default
    for column in tokens[:, 1:-1].T:
        for token in column:
            if any(token not in row for row in tokens[:, 1:]):
                return int(token)
    return default


@pytest.mark.op("greedy_decode")
@budget(MODEL_SHARE)
@given(case=batched_decodings())
def test_stops_only_when_every_row_has_emitted_eos_or_at_max_len(backend, case):
    """L = max_len unless every row has emitted eos (bos is not an emission). To exercise it,
    eos is a token that one row generates before the last step and another row never generates
    (read from a first run, ``early_finisher_token``), if any: the one row finishes early while
    the other runs on to max_len (>= 3). Exact: no tolerance."""
    case = {**case, "eos": early_finisher_token(greedy(backend, case), case["eos"])}
    tokens = greedy(backend, case)
    finished = (tokens[:, 1:] == case["eos"]).any(axis=1) if tokens.ndim == 2 else np.zeros(1, bool)
    length = tokens.shape[1] if tokens.ndim == 2 else -1
    assert_true(finished | (length == case["max_len"]), values=finished, backend=backend, op="greedy_decode",
                what=f"stopping at L = {length} < max_len = {case['max_len']} only when every row has emitted "
                     f"eos = {case['eos']} (value: row emitted eos)")
