"""Independence: a batch item's outputs depend on that item alone (no batch-norm-style mixing),
and appending padded positions (marked in the padding mask) changes nothing at the real
positions, in the encoder, the decoder's self-attention and its cross-attention."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.kit.assertions import assert_close
from conformance.kit.harness import call_op
from conformance.kit.strategies import arrays, budget, padding_masks, sizes, token_ids
from properties import tolerances
from properties.plumbing import held, pad_sequence
from properties.strategies import MODEL_SHARE, models

MEMORY_SCALES = (1.0,)
"""Encoder outputs are layer-normed (or sums of unit-scale terms): unit-scale memory."""


def _real(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The (B, S) padding mask, all True when there is none."""
    return np.ones(shape, dtype=bool) if mask is None else mask


def _item(a: np.ndarray | None, b: int) -> np.ndarray | None:
    """Batch item b as a batch of one."""
    return None if a is None else a[b:b + 1]


@st.composite
def paddings(draw: st.DrawFn, batch: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (B, P), mask (B, P)) for 1 <= P <= 3 appended padded positions: any ids, mask False."""
    extra = draw(sizes(1, 3))
    return draw(token_ids(batch, extra, vocab_size)), np.zeros((batch, extra), dtype=bool)


@pytest.mark.op("encode")
@budget(MODEL_SHARE)
@given(case=models(min_layers=1, min_batch=2), data=st.data())
def test_encode_batch_items_are_independent(backend, case, data):
    """encode(src)[b] = encode(src[b:b+1])[0] at real positions: the encoder mixes positions
    within a sequence only, never across the batch."""
    config, p, src = case["config"], held(backend, case["params"]), case["src"]
    src_mask = data.draw(padding_masks(*src.shape), label="src_mask")
    b = data.draw(st.integers(0, src.shape[0] - 1), label="b")
    shape = src.shape + (config["d_model"],)
    batch = call_op(backend, "encode", src, p, config, src_mask=src_mask, shape=shape)
    alone = call_op(backend, "encode", _item(src, b), p, config, src_mask=_item(src_mask, b), shape=(1,) + shape[1:])
    length = tolerances.encode_length(config, src.shape[1])
    err = tolerances.conditioned_error(backend.dtype, length, batch, "encode", src, p, config, src_mask=src_mask)
    err_alone = tolerances.conditioned_error(backend.dtype, length, alone, "encode", _item(src, b), p, config,
                                             src_mask=_item(src_mask, b))
    assert_close(alone, batch[b:b + 1], tol=tolerances.difference(err[b:b + 1], err_alone), backend=backend,
                 op="encode", what=f"item {b} encoded alone = in the batch",
                 where=_real(src_mask, src.shape)[b:b + 1, :, None])


@pytest.mark.op("decode")
@budget(MODEL_SHARE)
@given(case=models(min_layers=1, min_batch=2), data=st.data())
def test_decode_batch_items_are_independent(backend, case, data):
    """decode(tgt, memory)[b] = decode(tgt[b:b+1], memory[b:b+1])[0] at real positions."""
    config, p, tgt = case["config"], held(backend, case["params"]), case["tgt"]
    memory = held(backend, data.draw(arrays(case["src"].shape + (config["d_model"],), scales=MEMORY_SCALES),
                                     label="memory"))
    src_mask = data.draw(padding_masks(*case["src"].shape), label="src_mask")
    tgt_mask = data.draw(padding_masks(*tgt.shape), label="tgt_mask")
    b = data.draw(st.integers(0, tgt.shape[0] - 1), label="b")
    shape = tgt.shape + (config["d_model"],)
    batch = call_op(backend, "decode", tgt, memory, p, config, src_mask=src_mask, tgt_mask=tgt_mask, shape=shape)
    alone = call_op(backend, "decode", _item(tgt, b), _item(memory, b), p, config, src_mask=_item(src_mask, b),
                    tgt_mask=_item(tgt_mask, b), shape=(1,) + shape[1:])
    length = tolerances.decode_length(config, tgt.shape[1], memory.shape[1])
    err = tolerances.conditioned_error(backend.dtype, length, batch, "decode", tgt, memory, p, config,
                                       src_mask=src_mask, tgt_mask=tgt_mask)
    err_alone = tolerances.conditioned_error(backend.dtype, length, alone, "decode", _item(tgt, b), _item(memory, b),
                                             p, config, src_mask=_item(src_mask, b), tgt_mask=_item(tgt_mask, b))
    assert_close(alone, batch[b:b + 1], tol=tolerances.difference(err[b:b + 1], err_alone), backend=backend,
                 op="decode", what=f"item {b} decoded alone = in the batch",
                 where=_real(tgt_mask, tgt.shape)[b:b + 1, :, None])


@pytest.mark.op("encode")
@budget(MODEL_SHARE)
@given(case=models(min_layers=1), data=st.data())
def test_encode_ignores_appended_padding(backend, case, data):
    """encode([src, pad], [mask, False])[:, :S] = encode(src, mask) at real positions: padded
    keys are masked in every encoder layer, and the PE of the first S positions is unchanged."""
    config, p, src = case["config"], held(backend, case["params"]), case["src"]
    src_mask = data.draw(padding_masks(*src.shape), label="src_mask")
    pad_ids, pad_mask = data.draw(paddings(src.shape[0], config["src_vocab_size"]), label="padding")
    longer, longer_mask = pad_sequence(src, pad_ids), pad_sequence(_real(src_mask, src.shape), pad_mask)
    out = call_op(backend, "encode", src, p, config, src_mask=src_mask, shape=src.shape + (config["d_model"],))
    padded = call_op(backend, "encode", longer, p, config, src_mask=longer_mask,
                     shape=longer.shape + (config["d_model"],))[:, :src.shape[1]]
    short_length, long_length = (tolerances.encode_length(config, ids.shape[1]) for ids in (src, longer))
    tol = tolerances.difference(
        tolerances.conditioned_error(backend.dtype, short_length, out, "encode", src, p, config, src_mask=src_mask),
        tolerances.conditioned_error(backend.dtype, long_length, padded, "encode", longer, p, config,
                                     src_mask=longer_mask))
    assert_close(padded, out, tol=tol, backend=backend, op="encode", what="appended padding changes nothing",
                 where=_real(src_mask, src.shape)[..., None])


@pytest.mark.op("decode")
@budget(MODEL_SHARE)
@given(case=models(min_layers=1), data=st.data())
def test_decode_ignores_appended_target_padding(backend, case, data):
    """decode([tgt, pad], tgt_mask=[mask, False])[:, :St] = decode(tgt, tgt_mask) at real
    positions: padded target keys are masked (and lie in the future anyway), and nothing
    else in the decoder looks across positions."""
    config, p, tgt = case["config"], held(backend, case["params"]), case["tgt"]
    memory = held(backend, data.draw(arrays(case["src"].shape + (config["d_model"],), scales=MEMORY_SCALES),
                                     label="memory"))
    tgt_mask = data.draw(padding_masks(*tgt.shape), label="tgt_mask")
    pad_ids, pad_mask = data.draw(paddings(tgt.shape[0], config["tgt_vocab_size"]), label="padding")
    longer, longer_mask = pad_sequence(tgt, pad_ids), pad_sequence(_real(tgt_mask, tgt.shape), pad_mask)
    out = call_op(backend, "decode", tgt, memory, p, config, tgt_mask=tgt_mask, shape=tgt.shape + (config["d_model"],))
    padded = call_op(backend, "decode", longer, memory, p, config, tgt_mask=longer_mask,
                     shape=longer.shape + (config["d_model"],))[:, :tgt.shape[1]]
    short_length, long_length = (tolerances.decode_length(config, ids.shape[1], memory.shape[1])
                                 for ids in (tgt, longer))
    tol = tolerances.difference(
        tolerances.conditioned_error(backend.dtype, short_length, out, "decode", tgt, memory, p, config,
                                     tgt_mask=tgt_mask),
        tolerances.conditioned_error(backend.dtype, long_length, padded, "decode", longer, memory, p, config,
                                     tgt_mask=longer_mask))
    assert_close(padded, out, tol=tol, backend=backend, op="decode", what="appended target padding changes nothing",
                 where=_real(tgt_mask, tgt.shape)[..., None])


@pytest.mark.op("decode")
@budget(MODEL_SHARE)
@given(case=models(min_layers=1), data=st.data())
def test_cross_attention_ignores_appended_memory_padding(backend, case, data):
    """decode(tgt, [memory, m'], src_mask=[mask, False]) = decode(tgt, memory, src_mask) for
    any appended memory rows m': cross-attention masks padded source keys."""
    config, p, tgt = case["config"], held(backend, case["params"]), case["tgt"]
    d_model, src_shape = config["d_model"], case["src"].shape
    memory = held(backend, data.draw(arrays(src_shape + (d_model,), scales=MEMORY_SCALES), label="memory"))
    src_mask = data.draw(padding_masks(*src_shape), label="src_mask")
    extra = data.draw(sizes(1, 3), label="padded positions")
    more = held(backend, data.draw(arrays((src_shape[0], extra, d_model), scales=MEMORY_SCALES), label="m'"))
    longer, longer_mask = pad_sequence(memory, more), pad_sequence(_real(src_mask, src_shape),
                                                                  np.zeros((src_shape[0], extra), dtype=bool))
    shape = tgt.shape + (d_model,)
    out = call_op(backend, "decode", tgt, memory, p, config, src_mask=src_mask, shape=shape)
    padded = call_op(backend, "decode", tgt, longer, p, config, src_mask=longer_mask, shape=shape)
    short_length, long_length = (tolerances.decode_length(config, tgt.shape[1], m.shape[1]) for m in (memory, longer))
    tol = tolerances.difference(
        tolerances.conditioned_error(backend.dtype, short_length, out, "decode", tgt, memory, p, config,
                                     src_mask=src_mask),
        tolerances.conditioned_error(backend.dtype, long_length, padded, "decode", tgt, longer, p, config,
                                     src_mask=longer_mask))
    assert_close(padded, out, tol=tol, backend=backend, op="decode", what="appended memory padding changes nothing")
