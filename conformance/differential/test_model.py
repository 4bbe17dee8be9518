"""encode, decode and forward against the reference; outputs at padded query positions are
unspecified by the contract and not compared."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.differential._compare import MODEL_SHARE, REALISTIC, compare, realistic_params
from conformance.kit.strategies import arrays, budget, configs, padding_masks, params, sizes, token_ids
from conformance.tolerance.model import min_d_model, query_positions


@st.composite
def model_inputs(draw: st.DrawFn, *, min_d_model: int = 2, max_batch: int = 3, max_seq: int = 8) -> dict[str, Any]:
    """A drawn config (0 to 2 layers per stack, every variant) with its params, source and
    target ids of lengths 1 to ``max_seq``, padding masks (or None) and a unit-scale memory."""
    config = draw(configs().filter(lambda c: c["d_model"] >= min_d_model))
    batch, s_s, s_t = draw(sizes(1, max_batch)), draw(sizes(1, max_seq)), draw(sizes(1, max_seq))
    return {"config": config, "params": draw(params(config)),
            "src": draw(token_ids(batch, s_s, config["src_vocab_size"])),
            "tgt": draw(token_ids(batch, s_t, config["tgt_vocab_size"])),
            "src_mask": draw(padding_masks(batch, s_s, argument="src_mask")),
            "tgt_mask": draw(padding_masks(batch, s_t, argument="tgt_mask")),
            "memory": draw(arrays((batch, s_s, config["d_model"]), scales=(1.0,)))}


@pytest.mark.op("encode")
@budget(MODEL_SHARE)
@given(data=st.data())
def test_encode(backend: Any, data: st.DataObject) -> None:
    """The encoder stack: every output at real (not padded) source positions."""
    case = data.draw(model_inputs(min_d_model=min_d_model(backend.dtype)), label="case")
    compare(backend, "encode", case["src"], case["params"], case["config"], src_mask=case["src_mask"],
            where=query_positions(case["src_mask"]), what="real source positions")


@pytest.mark.op("decode")
@budget(MODEL_SHARE)
@given(data=st.data())
def test_decode(backend: Any, data: st.DataObject) -> None:
    """The decoder stack over a given memory: every output at real target positions."""
    case = data.draw(model_inputs(min_d_model=min_d_model(backend.dtype)), label="case")
    compare(backend, "decode", case["tgt"], case["memory"], case["params"], case["config"],
            src_mask=case["src_mask"], tgt_mask=case["tgt_mask"],
            where=query_positions(case["tgt_mask"]), what="real target positions")


@pytest.mark.op("forward")
@budget(MODEL_SHARE)
@given(data=st.data())
def test_forward(backend: Any, data: st.DataObject) -> None:
    """The logits of the whole model: every logit at real target positions."""
    case = data.draw(model_inputs(min_d_model=min_d_model(backend.dtype)), label="case")
    compare(backend, "forward", case["src"], case["tgt"], case["params"], case["config"],
            src_mask=case["src_mask"], tgt_mask=case["tgt_mask"],
            where=query_positions(case["tgt_mask"]), what="real target positions")


def _realistic(seed: int, src_left_padded: bool = False, **variant: Any) -> dict[str, Any]:
    """The REALISTIC config (post-LN) updated with ``variant``, with (3, 5) source and (3, 4)
    target ids; the second row's source is right-padded and its target left-padded (as
    batched prompts are), so a real target has padded targets before it that its
    self-attention must not see; the third row's source is left-padded (a key-padding mask
    turned into a per-row key count is right only for right padding). With
    ``src_left_padded`` every padded source row is left-padded."""
    rng = np.random.default_rng(seed)
    return {"config": {**REALISTIC, **variant}, "params": realistic_params(seed, **variant),
            "src": rng.integers(0, 1000, (3, 5)), "tgt": rng.integers(0, 1000, (3, 4)),
            "src_mask": np.stack([np.arange(5) < 5, np.arange(5) >= 2 if src_left_padded else np.arange(5) < 3,
                                  np.arange(5) >= 2]),
            "tgt_mask": np.arange(4) >= np.array([[0], [2], [0]]),
            "memory": rng.normal(0.0, 1.0, (3, 5, 512))}


@pytest.mark.op("encode")
def test_encode_realistic(backend: Any) -> None:
    """d_model 512, 8 heads, one encoder layer (no decoder: its params are not needed):
    every output at real source positions."""
    case = _realistic(0, num_decoder_layers=0)
    compare(backend, "encode", case["src"], case["params"], case["config"], src_mask=case["src_mask"],
            where=query_positions(case["src_mask"]), what="real source positions")


@pytest.mark.op("decode")
def test_decode_realistic(backend: Any) -> None:
    """d_model 512, 8 heads, one decoder layer (no encoder) over a given memory: every output
    at real target positions."""
    case = _realistic(1, num_encoder_layers=0)
    compare(backend, "decode", case["tgt"], case["memory"], case["params"], case["config"],
            src_mask=case["src_mask"], tgt_mask=case["tgt_mask"],
            where=query_positions(case["tgt_mask"]), what="real target positions")


@pytest.mark.op("forward")
def test_forward_realistic(backend: Any) -> None:
    """d_model 512, 8 heads, 1 + 1 layers, vocabulary 1000, left-padded sources: every logit at
    real target positions."""
    case = _realistic(2, src_left_padded=True)
    compare(backend, "forward", case["src"], case["tgt"], case["params"], case["config"],
            src_mask=case["src_mask"], tgt_mask=case["tgt_mask"],
            where=query_positions(case["tgt_mask"]), what="real target positions")
