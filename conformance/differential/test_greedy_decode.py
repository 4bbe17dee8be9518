"""greedy_decode against the reference, token by token; a divergence at a near-tie (the
reference's logit margin within the logits tolerance) ends the comparison of that row with a
note instead of a failure."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.differential._compare import MODEL_SHARE, REALISTIC, compare_greedy, realistic_params
from conformance.kit.strategies import budget, configs, padding_masks, params, sizes, token_ids
from conformance.tolerance.model import min_d_model


@st.composite
def greedy_inputs(draw: st.DrawFn, *, min_d_model: int = 2, max_batch: int = 3, max_seq: int = 6,
                  max_len: int = 8) -> dict[str, Any]:
    """A drawn config and params, source ids with padding, max_len 1 to ``max_len`` and any
    bos/eos ids (equal ones included)."""
    config = draw(configs().filter(lambda c: c["d_model"] >= min_d_model))
    batch, s_s = draw(sizes(1, max_batch)), draw(sizes(1, max_seq))
    vocab = config["tgt_vocab_size"]
    return {"src": draw(token_ids(batch, s_s, config["src_vocab_size"])), "params": draw(params(config)),
            "config": config, "max_len": draw(sizes(1, max_len)), "bos_id": draw(st.integers(0, vocab - 1)),
            "eos_id": draw(st.integers(0, vocab - 1)), "src_mask": draw(padding_masks(batch, s_s, argument="src_mask"))}


@pytest.mark.op("greedy_decode")
@budget(MODEL_SHARE)
@given(data=st.data())
def test_greedy_decode(backend: Any, data: st.DataObject) -> None:
    """Token ids of every row up to its first legitimate near-tie divergence (all of them, and
    the length, when no row diverges)."""
    case = data.draw(greedy_inputs(min_d_model=min_d_model(backend.dtype)), label="case")
    compare_greedy(backend, case["src"], case["params"], case["config"], case["max_len"], case["bos_id"],
                   case["eos_id"], src_mask=case["src_mask"])


@pytest.mark.op("greedy_decode")
def test_greedy_decode_realistic(backend: Any) -> None:
    """d_model 512, 8 heads, 1 + 1 layers, vocabulary 1000: up to 4 steps (bos 0, eos 1) for
    2 source rows of 5 tokens, the first left-padded, the second right-padded (a kernel that
    handles right padding only, by a key count per row, is caught by the first)."""
    rng = np.random.default_rng(3)
    src_mask = np.array([[False, False, True, True, True], [True, True, True, False, False]])
    compare_greedy(backend, rng.integers(0, 1000, (2, 5)), realistic_params(3), REALISTIC, 4, 0, 1,
                   src_mask=src_mask)
