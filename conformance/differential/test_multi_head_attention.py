"""multi_head_attention(x_q, x_kv, p, num_heads, mask) against the reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.differential._compare import LAYER_SHARE, compare, realistic_params
from conformance.kit.strategies import arrays, budget, key_padded_masks, seeds, sizes


@st.composite
def mha_inputs(draw: st.DrawFn, *, max_heads: int = 4, max_d_k: int = 4, max_batch: int = 3,
               max_seq: int = 8) -> dict[str, Any]:
    """Self- (x_kv = x_q) or cross-attention inputs: one head and d_k = 1 included; mask
    None, (B, Sq, Sk) patterns with fully masked rows, or key padding (B, 1, Sk) of every
    padding pattern."""
    num_heads, d_k = draw(sizes(1, max_heads)), draw(sizes(1, max_d_k))
    d_model = num_heads * d_k
    batch, s_q = draw(sizes(1, max_batch)), draw(sizes(1, max_seq))
    x_q = draw(arrays((batch, s_q, d_model)))
    x_kv = x_q if draw(st.booleans()) else draw(arrays((batch, draw(sizes(1, max_seq)), d_model)))
    return {"x_q": x_q, "x_kv": x_kv, "p": _attention_params(d_model, draw(seeds)), "num_heads": num_heads,
            "mask": draw(key_padded_masks(batch, s_q, x_kv.shape[1], argument="mask"))}


def _attention_params(d_model: int, seed: int) -> dict[str, np.ndarray]:
    """{w_q, b_q, ..., w_o, b_o} as reference.init_params makes them, for any d_model (odd
    ones included, which a whole model's config forbids but attention alone does not)."""
    rng, limit = np.random.default_rng(seed), (3.0 / d_model) ** 0.5
    return {f"{kind}_{x}": rng.uniform(-limit, limit, (d_model, d_model)) if kind == "w"
            else rng.normal(0.0, 0.1, d_model) for x in "qkvo" for kind in "wb"}


@pytest.mark.op("multi_head_attention")
@budget(LAYER_SHARE)
@given(case=mha_inputs())
def test_multi_head_attention(backend: Any, case: dict[str, Any]) -> None:
    """Concat(heads) W_o + b_o on small inputs: every output (rows with every key masked
    give b_o)."""
    compare(backend, "multi_head_attention", case["x_q"], case["x_kv"], case["p"], case["num_heads"],
            mask=case["mask"])


@pytest.mark.op("multi_head_attention")
@pytest.mark.parametrize("kind", ["self", "cross"])
def test_multi_head_attention_realistic(backend: Any, kind: str) -> None:
    """d_model 512, 8 heads, B=2: self-attention over 6 positions with a causal mask, or
    cross-attention from 6 to 8 positions with key padding: every output."""
    rng = np.random.default_rng(0)
    p = realistic_params(0)["encoder"][0]["self_attn"]
    x_q = rng.normal(0.0, 1.0, (2, 6, 512))
    if kind == "self":
        x_kv, mask = x_q, np.tril(np.ones((6, 6), dtype=bool))
    else:
        x_kv, mask = rng.normal(0.0, 1.0, (2, 8, 512)), (np.arange(8) < np.array([[8], [5]]))[:, None, :]
    compare(backend, "multi_head_attention", x_q, x_kv, p, 8, mask=mask)
