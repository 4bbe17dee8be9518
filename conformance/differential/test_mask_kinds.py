"""Every mask argument of every op, with every kind of mask (conformance/kit/features.py), on one
fixed small case each: the guarantee that no padding pattern goes untested does not rest on the
draws of the Hypothesis tests (a layer's budget is a few dozen examples for the six kinds of
each of its masks). A key-padding mask that a kernel turns into a per-row key count is right
only for right padding; this module fails it on every op that takes padding.

The case: d_model 8, 2 heads, d_ff 16, one layer per stack, post-LN, vocabularies of 11, a
batch of 2, 5 source and 4 target positions, inputs from a generator seeded by the case's
name. Every other mask argument of the call is None. The masks, row 0 always padded:

    none        None
    all_real    all True
    right       row 0 real for the first S - 2 positions, row 1 all real
    left        row 0 real for the last S - 2 positions, row 1 for the last S - 1
    holes       row 0 real, padded, real, ..., real; row 1 left-padded by one
    arbitrary   causal: query i sees keys 0..i (every query sees a key)

Outputs at padded query positions are unspecified (encode, decode, forward) and not compared.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pytest

import reference
from conformance.differential._compare import compare, compare_greedy
from conformance.kit.features import MASK_ARGUMENTS, OP_FEATURES
from conformance.tolerance.model import query_positions

CONFIG: dict[str, Any] = {"d_model": 8, "num_heads": 2, "d_ff": 16, "num_encoder_layers": 1,
                          "num_decoder_layers": 1, "src_vocab_size": 11, "tgt_vocab_size": 11}
BATCH, S_SRC, S_TGT = 2, 5, 4


def padding_mask(kind: str, seq_len: int) -> np.ndarray | None:
    """A (BATCH, seq_len) padding mask of ``kind`` (the module docstring), True = real."""
    positions = np.arange(seq_len)
    if kind == "none":
        return None
    if kind == "all_real":
        return np.ones((BATCH, seq_len), dtype=bool)
    if kind == "right":
        return positions < np.array([[seq_len - 2], [seq_len]])
    if kind == "left":
        return positions >= np.array([[2], [1]])
    if kind == "holes":
        return np.stack([positions != 1, positions >= 1])
    raise ValueError(f"{kind!r} is not a padding kind")


def attention_mask(kind: str, s_q: int, s_k: int) -> np.ndarray | None:
    """A mask of ``kind`` for attention from s_q queries to s_k keys: a causal (BATCH, s_q, s_k)
    pattern for "arbitrary", key padding (BATCH, 1, s_k) for the padding kinds."""
    if kind == "arbitrary":
        return np.broadcast_to(np.tri(s_q, s_k, dtype=bool), (BATCH, s_q, s_k)).copy()
    mask = padding_mask(kind, s_k)
    return None if mask is None else mask[:, None, :]


def _rng(op: str, argument: str, kind: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{op}/{argument}/{kind}".encode()))


def _check(backend: Any, op: str, argument: str, kind: str) -> None:
    """Build the fixed case of (op, argument, kind) and compare the backend with the reference."""
    rng = _rng(op, argument, kind)
    d_model = CONFIG["d_model"]
    p = reference.init_params(CONFIG, int(rng.integers(2**32)))
    if op in ("attention", "attention_weights"):
        q, k, v = (rng.normal(0.0, 1.0, (BATCH, s, 4)) for s in (S_TGT, S_SRC, S_SRC))
        mask = attention_mask(kind, S_TGT, S_SRC)
        compare(backend, op, q, k, *([v] if op == "attention" else []), mask=mask)
    elif op == "multi_head_attention":
        x_q, x_kv = rng.normal(0.0, 1.0, (BATCH, S_TGT, d_model)), rng.normal(0.0, 1.0, (BATCH, S_SRC, d_model))
        compare(backend, op, x_q, x_kv, p["encoder"][0]["self_attn"], CONFIG["num_heads"],
                mask=attention_mask(kind, S_TGT, S_SRC))
    elif op == "encoder_layer":
        x = rng.normal(0.0, 1.0, (BATCH, S_SRC, d_model))
        compare(backend, op, x, p["encoder"][0], CONFIG, mask=attention_mask(kind, S_SRC, S_SRC))
    elif op == "decoder_layer":
        y, memory = rng.normal(0.0, 1.0, (BATCH, S_TGT, d_model)), rng.normal(0.0, 1.0, (BATCH, S_SRC, d_model))
        masks = {"self_mask": None, "cross_mask": None,
                 argument: attention_mask(kind, S_TGT, S_TGT if argument == "self_mask" else S_SRC)}
        compare(backend, op, y, memory, p["decoder"][0], CONFIG, **masks)
    else:
        _check_model(backend, op, argument, kind, rng, p)


def _check_model(backend: Any, op: str, argument: str, kind: str, rng: np.random.Generator,
                 p: dict[str, Any]) -> None:
    """encode, decode, forward and greedy_decode: padding masks, real query positions compared."""
    src = rng.integers(0, CONFIG["src_vocab_size"], (BATCH, S_SRC))
    tgt = rng.integers(0, CONFIG["tgt_vocab_size"], (BATCH, S_TGT))
    masks = {"src_mask": None, "tgt_mask": None,
             argument: padding_mask(kind, S_SRC if argument == "src_mask" else S_TGT)}
    if op == "encode":
        compare(backend, op, src, p, CONFIG, src_mask=masks["src_mask"],
                where=query_positions(masks["src_mask"]), what="real source positions")
    elif op == "greedy_decode":
        compare_greedy(backend, src, p, CONFIG, 6, 0, 1, src_mask=masks["src_mask"])
    else:
        memory = rng.normal(0.0, 1.0, (BATCH, S_SRC, CONFIG["d_model"]))
        args = (tgt, memory) if op == "decode" else (src, tgt)
        compare(backend, op, *args, p, CONFIG, **masks, where=query_positions(masks["tgt_mask"]),
                what="real target positions")


CASES = [pytest.param(op, argument, kind, marks=pytest.mark.op(op), id=f"{op}-{argument}-{kind}")
         for op, features in OP_FEATURES.items() for argument, kinds in features.items()
         if argument in MASK_ARGUMENTS for kind in kinds]


@pytest.mark.parametrize(("op", "argument", "kind"), CASES)
def test_mask_kind(backend: Any, op: str, argument: str, kind: str) -> None:
    """The op with ``argument`` of ``kind`` (the module docstring) and every other mask None."""
    _check(backend, op, argument, kind)
