"""The encoder-decoder model (Vaswani et al., 2017, sec. 3.1): layers, stacks, generator and
greedy decoding, composed from the equations of reference/equations.py.

Choices: no dropout (the contract is inference: sec. 5.4's dropout is off at evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from reference import variants as _variants
from reference._checks import (
    check_ids, check_int, check_mask, check_padding_mask, check_positions, float_tree, floats,
)
from reference.config import Config, as_config
from reference import equations as eq
from reference.params import decoder_layer_shapes, encoder_layer_shapes, param_shapes
from reference.precision import check_dtype, rounded

Params = Mapping[str, Any]
ConfigLike = Mapping[str, Any] | Config

__all__ = ["encoder_layer", "decoder_layer", "encode", "decode", "forward", "greedy_decode", "causal_mask"]
"""The contract's ops defined here, and the causal mask (the package exports them)."""


# --- layers ---------------------------------------------------------------------------------

def encoder_layer(x: Any, p: Params, config: ConfigLike, mask: Any = None, *,
                  dtype: str = "float64") -> np.ndarray:
    """x = Sublayer_1(x, MultiHead(x, x, x)); x = Sublayer_2(x, FFN(x)) (sec. 3.1).

    Shapes: x (B, S, d_model), mask broadcast to (B, S, S) -> (B, S, d_model).
    """
    c = as_config(config)
    x = check_positions("x", floats("x", x, check_dtype(dtype), (None, None, c.d_model)))
    p = float_tree("p", p, encoder_layer_shapes(c), dtype)
    return _encoder_layer(x, p, c, check_mask("mask", mask, (x.shape[0], x.shape[1], x.shape[1])), dtype)


def decoder_layer(y: Any, memory: Any, p: Params, config: ConfigLike, self_mask: Any = None,
                  cross_mask: Any = None, *, dtype: str = "float64") -> np.ndarray:
    """y = Sublayer_1(y, MultiHead(y, y, y)); y = Sublayer_2(y, MultiHead(y, memory, memory));
    y = Sublayer_3(y, FFN(y)) (sec. 3.1).

    Shapes: y (B, St, d_model), memory (B, Ss, d_model), self_mask broadcast to (B, St, St),
    cross_mask broadcast to (B, St, Ss) -> (B, St, d_model).
    """
    c = as_config(config)
    y = check_positions("y", floats("y", y, check_dtype(dtype), (None, None, c.d_model)))
    B, St, _ = y.shape
    memory = check_positions("memory", floats("memory", memory, dtype, (B, None, c.d_model)))
    p = float_tree("p", p, decoder_layer_shapes(c), dtype)
    self_mask = check_mask("self_mask", self_mask, (B, St, St))
    cross_mask = check_mask("cross_mask", cross_mask, (B, St, memory.shape[1]))
    return _decoder_layer(y, memory, p, c, self_mask, cross_mask, dtype)


def _sublayer(x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], norm: Params, c: Config,
              dtype: str) -> np.ndarray:
    """Post-LN: LayerNorm(x + Sublayer(x)) (sec. 5.4); pre-LN (norm_first): x + Sublayer(LayerNorm(x))."""
    if (_variants.norm_first(c.norm_first) if _variants.ACTIVE else c.norm_first):
        return rounded(x + fn(eq.layer_norm(x, norm, c.layer_norm_eps, dtype)), dtype)
    return eq.layer_norm(rounded(x + fn(x), dtype), norm, c.layer_norm_eps, dtype)


def _encoder_layer(x: np.ndarray, p: Params, c: Config, mask: np.ndarray | None, dtype: str) -> np.ndarray:
    x = _sublayer(x, lambda h: eq.multi_head_attention(h, h, p["self_attn"], c.num_heads, mask, dtype), p["norm1"], c, dtype)
    return _sublayer(x, lambda h: eq.feed_forward(h, p["ffn"], c.activation, dtype), p["norm2"], c, dtype)


def _decoder_layer(y: np.ndarray, memory: np.ndarray, p: Params, c: Config, self_mask: np.ndarray | None,
                   cross_mask: np.ndarray | None, dtype: str) -> np.ndarray:
    y = _sublayer(y, lambda h: eq.multi_head_attention(h, h, p["self_attn"], c.num_heads, self_mask, dtype), p["norm1"], c, dtype)
    y = _sublayer(y, lambda h: eq.multi_head_attention(h, memory, p["cross_attn"], c.num_heads, cross_mask, dtype), p["norm2"], c, dtype)
    return _sublayer(y, lambda h: eq.feed_forward(h, p["ffn"], c.activation, dtype), p["norm3"], c, dtype)


# --- stacks -----------------------------------------------------------------------------------

def encode(src_ids: Any, params: Params, config: ConfigLike, src_mask: Any = None, *,
           dtype: str = "float64") -> np.ndarray:
    """memory = Encoder(Embed(src) + PE), with src padding keys masked (sec. 3.1, 3.4, 3.5).

    Shapes: src_ids (B, Ss), src_mask (B, Ss) -> (B, Ss, d_model).
    """
    c, params = _model_inputs(config, params, dtype)
    src_ids = check_ids("src_ids", src_ids, c.src_vocab_size, min_len=1)
    return _encode(src_ids, params, c, check_padding_mask("src_mask", src_mask, src_ids.shape), dtype)


def decode(tgt_ids: Any, memory: Any, params: Params, config: ConfigLike, src_mask: Any = None,
           tgt_mask: Any = None, *, dtype: str = "float64") -> np.ndarray:
    """Decoder(Embed(tgt) + PE, memory) with a causal self mask (sec. 3.1, 3.2.3).

    Choices: self mask = causal (key <= query) AND tgt padding; cross mask = src padding.
    Shapes: tgt_ids (B, St), memory (B, Ss, d_model), src_mask (B, Ss), tgt_mask (B, St)
    -> (B, St, d_model).
    """
    c, params = _model_inputs(config, params, dtype)
    tgt_ids, memory, src_mask, tgt_mask = _decoder_inputs(c, tgt_ids, memory, src_mask, tgt_mask, dtype)
    return _decode(tgt_ids, memory, params, c, src_mask, tgt_mask, dtype)


def forward(src_ids: Any, tgt_ids: Any, params: Params, config: ConfigLike, src_mask: Any = None,
            tgt_mask: Any = None, *, dtype: str = "float64") -> np.ndarray:
    """logits = Decoder(tgt, Encoder(src)) W_gen + b_gen (sec. 3.4; the softmax is left out).

    Choices: the source embedding, the target embedding and the generator are three separate
    matrices, where sec. 3.4 ties them (a backend that ties them takes the same params for all).

    Shapes: src_ids (B, Ss), tgt_ids (B, St) -> (B, St, tgt_vocab_size).
    """
    c, params = _model_inputs(config, params, dtype)
    src_ids = check_ids("src_ids", src_ids, c.src_vocab_size, min_len=1)
    src_mask = check_padding_mask("src_mask", src_mask, src_ids.shape)
    tgt_ids = check_ids("tgt_ids", tgt_ids, c.tgt_vocab_size, min_len=1)
    if tgt_ids.shape[0] != src_ids.shape[0]:
        raise ValueError(f"tgt_ids must have batch size {src_ids.shape[0]} like src_ids, got {tgt_ids.shape}")
    tgt_mask = check_padding_mask("tgt_mask", tgt_mask, tgt_ids.shape)
    memory = _encode(src_ids, params, c, src_mask, dtype)
    return _generator(_decode(tgt_ids, memory, params, c, src_mask, tgt_mask, dtype), params, dtype)


def _model_inputs(config: ConfigLike, params: Params, dtype: str) -> tuple[Config, Params]:
    c = as_config(config)
    return c, float_tree("params", params, param_shapes(c), check_dtype(dtype))


def _decoder_inputs(c: Config, tgt_ids: Any, memory: Any, src_mask: Any, tgt_mask: Any, dtype: str) -> tuple:
    tgt_ids = check_ids("tgt_ids", tgt_ids, c.tgt_vocab_size, min_len=1)
    memory = check_positions("memory", floats("memory", memory, dtype, (tgt_ids.shape[0], None, c.d_model)))
    src_mask = check_padding_mask("src_mask", src_mask, memory.shape[:2])
    return tgt_ids, memory, src_mask, check_padding_mask("tgt_mask", tgt_mask, tgt_ids.shape)


def _embed(ids: np.ndarray, table: np.ndarray, c: Config, dtype: str) -> np.ndarray:
    """Embed(ids) * sqrt(d_model) + PE (sec. 3.4, 3.5). Shapes: (B, S) -> (B, S, d_model)."""
    x = table[ids]
    if (_variants.scale_embedding(c.scale_embedding) if _variants.ACTIVE else c.scale_embedding):
        x = rounded(x * math.sqrt(c.d_model), dtype)
    return rounded(x + eq.positional_encoding(ids.shape[1], c.d_model, dtype), dtype)


def _key_padding(pad_mask: np.ndarray | None) -> np.ndarray | None:
    """(B, Sk) padding mask -> (B, 1, Sk) attention mask: no query attends to a padded key."""
    if pad_mask is not None and _variants.ACTIVE:
        pad_mask = _variants.key_padding(pad_mask)
    return None if pad_mask is None else pad_mask[:, None, :]


def causal_mask(seq_len: int) -> np.ndarray:
    """mask[i, j] = j <= i: position i may attend to positions up to i (sec. 3.2.3).
    Shapes: -> (seq_len, seq_len) bool."""
    seq_len = check_int("seq_len", seq_len, minimum=0)
    return np.tril(np.ones((seq_len, seq_len), dtype=bool), k=_variants.causal_diagonal() if _variants.ACTIVE else 0)


def _encode(src_ids: np.ndarray, params: Params, c: Config, src_mask: np.ndarray | None, dtype: str) -> np.ndarray:
    x = _embed(src_ids, params["src_embedding"], c, dtype)                  # (B, Ss, d_model)
    for p in params["encoder"]:
        x = _encoder_layer(x, p, c, _key_padding(src_mask), dtype)
    return eq.layer_norm(x, params["encoder_norm"], c.layer_norm_eps, dtype) if _final_norm(c) else x


def _decode(tgt_ids: np.ndarray, memory: np.ndarray, params: Params, c: Config, src_mask: np.ndarray | None,
            tgt_mask: np.ndarray | None, dtype: str) -> np.ndarray:
    y = _embed(tgt_ids, params["tgt_embedding"], c, dtype)                  # (B, St, d_model)
    self_mask = causal_mask(tgt_ids.shape[1])                               # (St, St)
    if tgt_mask is not None:
        self_mask = self_mask & _key_padding(tgt_mask)                      # (B, St, St)
    for p in params["decoder"]:
        y = _decoder_layer(y, memory, p, c, self_mask, _key_padding(src_mask), dtype)
    return eq.layer_norm(y, params["decoder_norm"], c.layer_norm_eps, dtype) if _final_norm(c) else y


def _final_norm(c: Config) -> bool:
    """Whether the stacks end with a layer norm (the config's ``final_norm``)."""
    return _variants.final_norm(c.final_norm) if _variants.ACTIVE else c.final_norm


def _generator(y: np.ndarray, params: Params, dtype: str) -> np.ndarray:
    """logits = y W_gen + b_gen. Shapes: (B, St, d_model) -> (B, St, tgt_vocab_size)."""
    return eq.linear(y, params["generator"]["w"], params["generator"]["b"], dtype)


# --- greedy decoding --------------------------------------------------------------------------

def greedy_decode(src_ids: Any, params: Params, config: ConfigLike, max_len: int, bos_id: int,
                  eos_id: int, src_mask: Any = None, *, dtype: str = "float64") -> np.ndarray:
    """y_0 = bos; y_t = argmax_v logits(src, y_<t)[t-1, v], until every row has emitted eos or
    the length is max_len.

    Choices: ties go to the lowest index (np.argmax); once a row has emitted eos it is filled
    with eos; bos counts towards max_len (max_len = 1 returns the bos column alone).
    Shapes: src_ids (B, Ss), src_mask (B, Ss) -> (B, L) int64, 1 <= L <= max_len.
    """
    c, params = _model_inputs(config, params, dtype)
    src_ids = check_ids("src_ids", src_ids, c.src_vocab_size, min_len=1)
    src_mask = check_padding_mask("src_mask", src_mask, src_ids.shape)
    max_len = check_int("max_len", max_len, minimum=1)
    for name, token in (("bos_id", bos_id), ("eos_id", eos_id)):
        if check_int(name, token, minimum=0) >= c.tgt_vocab_size:
            raise ValueError(f"{name} must lie in [0, {c.tgt_vocab_size}), got {token}")
    memory = _encode(src_ids, params, c, src_mask, dtype)
    return _greedy_loop(memory, params, c, src_mask, max_len, bos_id, eos_id, dtype)


def _greedy_loop(memory: np.ndarray, params: Params, c: Config, src_mask: np.ndarray | None,
                 max_len: int, bos_id: int, eos_id: int, dtype: str) -> np.ndarray:
    ys = np.full((memory.shape[0], 1), bos_id, dtype=np.int64)              # (B, 1)
    done = np.zeros(memory.shape[0], dtype=bool)
    while ys.shape[1] < max_len and not done.all():
        logits = _generator(_decode(ys, memory, params, c, src_mask, None, dtype)[:, -1:], params, dtype)
        next_token = np.where(done, eos_id, np.argmax(logits[:, 0], axis=-1))   # (B,)
        ys = np.concatenate([ys, next_token[:, None]], axis=1)
        done |= next_token == eos_id
    return ys
