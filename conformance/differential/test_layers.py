"""encoder_layer and decoder_layer against the reference, post-LN and pre-LN."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference
from conformance.differential._compare import LAYER_SHARE, REALISTIC, compare, realistic_params
from conformance.kit.strategies import arrays, budget, configs, key_padded_masks, params, sizes
from conformance.tolerance.model import min_d_model


@st.composite
def encoder_layer_inputs(draw: st.DrawFn, *, min_d_model: int = 2, max_batch: int = 3,
                         max_seq: int = 8) -> dict[str, Any]:
    """x (B, S, d_model), one layer's params of a drawn config, and a self-attention mask."""
    config = {**draw(configs().filter(lambda c: c["d_model"] >= min_d_model)), "num_encoder_layers": 1}
    batch, s = draw(sizes(1, max_batch)), draw(sizes(1, max_seq))
    return {"x": draw(arrays((batch, s, config["d_model"]))), "p": draw(params(config))["encoder"][0],
            "config": config, "mask": draw(key_padded_masks(batch, s, s, argument="mask"))}


@st.composite
def decoder_layer_inputs(draw: st.DrawFn, *, min_d_model: int = 2, max_batch: int = 3,
                         max_seq: int = 8) -> dict[str, Any]:
    """y (B, St, d_model), memory (B, Ss, d_model), one layer's params, self and cross masks."""
    config = {**draw(configs().filter(lambda c: c["d_model"] >= min_d_model)), "num_decoder_layers": 1}
    batch, s_t, s_s = draw(sizes(1, max_batch)), draw(sizes(1, max_seq)), draw(sizes(1, max_seq))
    return {"y": draw(arrays((batch, s_t, config["d_model"]))), "memory": draw(arrays((batch, s_s, config["d_model"]))),
            "p": draw(params(config))["decoder"][0], "config": config,
            "self_mask": draw(key_padded_masks(batch, s_t, s_t, argument="self_mask")),
            "cross_mask": draw(key_padded_masks(batch, s_t, s_s, argument="cross_mask"))}


@pytest.mark.op("encoder_layer")
@budget(LAYER_SHARE)
@given(data=st.data())
def test_encoder_layer(backend: Any, data: st.DataObject) -> None:
    """One encoder layer on small inputs (every config variant; d_model >= 4 at half
    precision, see tolerances.min_d_model): every output."""
    case = data.draw(encoder_layer_inputs(min_d_model=min_d_model(backend.dtype)), label="case")
    compare(backend, "encoder_layer", case["x"], case["p"], case["config"], mask=case["mask"])


@pytest.mark.op("decoder_layer")
@budget(LAYER_SHARE)
@given(data=st.data())
def test_decoder_layer(backend: Any, data: st.DataObject) -> None:
    """One decoder layer on small inputs (every config variant; d_model >= 4 at half
    precision, see tolerances.min_d_model): every output."""
    case = data.draw(decoder_layer_inputs(min_d_model=min_d_model(backend.dtype)), label="case")
    compare(backend, "decoder_layer", case["y"], case["memory"], case["p"], case["config"],
            self_mask=case["self_mask"], cross_mask=case["cross_mask"])


def _realistic(*, norm_first: bool) -> tuple[dict[str, Any], dict[str, Any], np.random.Generator]:
    config = {**REALISTIC, "norm_first": norm_first, "activation": "gelu" if norm_first else "relu"}
    params = realistic_params(0, norm_first=norm_first, activation=config["activation"])
    return config, params, np.random.default_rng(int(norm_first))


@pytest.mark.op("encoder_layer")
def test_encoder_layer_realistic(backend: Any) -> None:
    """Post-LN, ReLU; d_model 512, 8 heads, d_ff 2048, (2, 5) positions with key padding:
    every output."""
    config, p, rng = _realistic(norm_first=False)
    mask = (np.arange(5) < np.array([[5], [3]]))[:, None, :]
    compare(backend, "encoder_layer", rng.normal(0.0, 1.0, (2, 5, 512)), p["encoder"][0], config, mask=mask)


@pytest.mark.op("decoder_layer")
@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_ln_causal", "post_ln_unmasked"])
def test_decoder_layer_realistic(backend: Any, norm_first: bool) -> None:
    """d_model 512, 8 heads, d_ff 2048, 4 target positions over 5 source positions (key
    padding): pre-LN, GELU with a causal self mask, or post-LN, ReLU with no self mask (the
    contract's "no mask": a layer that masks causally anyway is caught): every output."""
    config, p, rng = _realistic(norm_first=norm_first)
    y, memory = rng.normal(0.0, 1.0, (2, 4, 512)), rng.normal(0.0, 1.0, (2, 5, 512))
    cross = (np.arange(5) < np.array([[5], [3]]))[:, None, :]
    compare(backend, "decoder_layer", y, memory, p["decoder"][0], config,
            self_mask=reference.causal_mask(4) if norm_first else None, cross_mask=cross)
