"""Causality: the decoder's output at target position t is a function of the targets up to t
only (the causal self-attention mask), so changing later targets changes nothing up to t."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.kit.assertions import assert_close
from conformance.kit.harness import call_op
from conformance.kit.strategies import arrays, budget, padding_masks, seeds
from properties import tolerances
from properties.plumbing import held
from properties.strategies import MODEL_SHARE, models


@st.composite
def later_changes(draw: st.DrawFn, tgt: np.ndarray, vocab_size: int) -> tuple[int, np.ndarray]:
    """(t, tgt'): a position t and tgt with every token after t redrawn (each changed)."""
    t = draw(st.integers(0, tgt.shape[1] - 1))
    changed = tgt.copy()
    shift = np.random.default_rng(draw(seeds)).integers(1, vocab_size, changed[:, t + 1:].shape)
    changed[:, t + 1:] = (changed[:, t + 1:] + shift) % vocab_size
    return t, changed


@pytest.mark.op("decode")
@budget(MODEL_SHARE)
@given(case=models(min_layers=1), data=st.data())
def test_decoder_output_at_t_ignores_later_targets(backend, case, data):
    """decode(tgt')[:, :t+1] = decode(tgt)[:, :t+1] when tgt' differs from tgt only after t:
    position s <= t attends to keys <= s, and every other step acts position-wise."""
    config, p, tgt = case["config"], held(backend, case["params"]), case["tgt"]
    memory = held(backend, data.draw(arrays(case["src"].shape + (config["d_model"],), scales=(1.0,)), label="memory"))
    src_mask = data.draw(padding_masks(*case["src"].shape), label="src_mask")
    t, changed = data.draw(later_changes(tgt, config["tgt_vocab_size"]), label="t, tgt'")
    shape = tgt.shape + (config["d_model"],)
    out = call_op(backend, "decode", tgt, memory, p, config, src_mask=src_mask, shape=shape)
    out2 = call_op(backend, "decode", changed, memory, p, config, src_mask=src_mask, shape=shape)
    length = tolerances.decode_length(config, tgt.shape[1], memory.shape[1])
    tol = tolerances.difference(*(tolerances.conditioned_error(backend.dtype, length, y, "decode", ids, memory, p,
                                                               config, src_mask=src_mask)
                                  for y, ids in ((out, tgt), (out2, changed))))
    assert_close(out2[:, :t + 1], out[:, :t + 1], tol=tol[:, :t + 1], backend=backend, op="decode",
                 what=f"decode at positions <= t={t} ignores targets after t")


@pytest.mark.op("forward")
@budget(MODEL_SHARE)
@given(case=models(min_layers=1), data=st.data())
def test_forward_logits_at_t_ignore_later_targets(backend, case, data):
    """forward(src, tgt')[:, :t+1] = forward(src, tgt)[:, :t+1] when tgt' differs from tgt
    only after t: the logits at t are the generator applied to decode's output at t."""
    config, p, src, tgt = case["config"], held(backend, case["params"]), case["src"], case["tgt"]
    src_mask = data.draw(padding_masks(*src.shape), label="src_mask")
    t, changed = data.draw(later_changes(tgt, config["tgt_vocab_size"]), label="t, tgt'")
    shape = tgt.shape + (config["tgt_vocab_size"],)
    out = call_op(backend, "forward", src, tgt, p, config, src_mask=src_mask, shape=shape)
    out2 = call_op(backend, "forward", src, changed, p, config, src_mask=src_mask, shape=shape)
    length = tolerances.forward_length(config, src.shape[1], tgt.shape[1])
    tol = tolerances.difference(*(tolerances.conditioned_error(backend.dtype, length, y, "forward", src, ids, p,
                                                               config, src_mask=src_mask)
                                  for y, ids in ((out, tgt), (out2, changed))))
    assert_close(out2[:, :t + 1], out[:, :t + 1], tol=tol[:, :t + 1], backend=backend, op="forward",
                 what=f"logits at positions <= t={t} ignore targets after t")
