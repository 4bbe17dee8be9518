"""attention(q, k, v, mask) and attention_weights(q, k, mask) against the reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.differential._compare import OP_SHARE, compare
from conformance.kit.strategies import arrays, attention_masks, budget, choices, sizes

D_K = (1, 2, 3, 4, 8, 16, 64)


@st.composite
def attention_inputs(draw: st.DrawFn, *, max_batch: int = 3, max_seq: int = 8) -> dict[str, Any]:
    """q (..., Sq, d_k), k (..., Sk, d_k), v (..., Sk, d_v) with no, one or two leading axes;
    q and k share a scale up to 10 (logits up to ~100); the mask is None, all True, random,
    random with a fully masked query row, or one of those broadcast from (Sq, Sk) or
    (..., 1, Sk) (key padding)."""
    lead = tuple(draw(st.lists(sizes(1, max_batch), max_size=2)))
    s_q, s_k = draw(sizes(1, max_seq)), draw(sizes(1, max_seq))
    d_k, d_v = draw(choices(D_K)), draw(choices(D_K))
    scale = draw(st.sampled_from([1.0, 0.1, 10.0]))
    q = draw(arrays((*lead, s_q, d_k), scales=(scale,)))
    k = draw(arrays((*lead, s_k, d_k), scales=(scale,)))
    broadcast = draw(st.sampled_from(["full", "2d", "key_padding"]))
    mask_shape = {"full": (*lead, s_q, s_k), "2d": (s_q, s_k), "key_padding": (*lead, 1, s_k)}[broadcast]
    return {"q": q, "k": k, "v": draw(arrays((*lead, s_k, d_v))), "mask": draw(attention_masks(mask_shape))}


@pytest.mark.op("attention_weights")
@budget(OP_SHARE)
@given(case=attention_inputs())
def test_attention_weights(backend: Any, case: dict[str, Any]) -> None:
    """softmax(q k^T / sqrt(d_k)) with masking: every weight; fully masked rows must be zeros."""
    compare(backend, "attention_weights", case["q"], case["k"], mask=case["mask"])


@pytest.mark.op("attention")
@budget(OP_SHARE)
@given(case=attention_inputs())
def test_attention(backend: Any, case: dict[str, Any]) -> None:
    """softmax(q k^T / sqrt(d_k)) v with masking: every output; fully masked rows must be zeros."""
    compare(backend, "attention", case["q"], case["k"], case["v"], mask=case["mask"])


def _realistic(seed: int) -> dict[str, np.ndarray]:
    """(B=2, h=8, S=32, d_k=64) heads of scale 1 (q, k scaled by 3: logits ~ 9), causal mask."""
    rng = np.random.default_rng(seed)
    q, k, v = (rng.normal(0.0, 1.0, (2, 8, 32, 64)) for _ in range(3))
    return {"q": 3 * q, "k": 3 * k, "v": v, "mask": np.tril(np.ones((32, 32), dtype=bool))}


@pytest.mark.op("attention_weights")
def test_attention_weights_realistic(backend: Any) -> None:
    """Causal attention weights of 8 heads of width 64 over 32 positions: every weight."""
    case = _realistic(0)
    compare(backend, "attention_weights", case["q"], case["k"], mask=case["mask"])


@pytest.mark.op("attention")
def test_attention_realistic(backend: Any) -> None:
    """Causal attention of 8 heads of width 64 over 32 positions: every output."""
    case = _realistic(1)
    compare(backend, "attention", case["q"], case["k"], case["v"], mask=case["mask"])
