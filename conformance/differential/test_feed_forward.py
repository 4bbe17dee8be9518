"""feed_forward(x, p, activation) against the reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from conformance.differential._compare import LAYER_SHARE, compare, realistic_params
from conformance.kit.strategies import arrays, budget, configs, params, sizes


@st.composite
def ffn_inputs(draw: st.DrawFn, *, max_batch: int = 3, max_seq: int = 8) -> dict[str, Any]:
    """x (B, S, d_model) and the FFN params of a drawn config (d_ff = 1 included); relu or gelu."""
    config = {**draw(configs()), "num_encoder_layers": 1}
    x = draw(arrays((draw(sizes(1, max_batch)), draw(sizes(1, max_seq)), config["d_model"])))
    return {"x": x, "p": draw(params(config))["encoder"][0]["ffn"], "activation": config["activation"]}


GELU_CANCELLATION = {
    "x": np.array([[[-1.09985291, 1.83125031]]]),
    "p": {"w_1": np.array([[0.47519912, -0.08782934], [-0.8915383, -0.77002032]]),
          "b_1": np.array([-0.02616906, -0.07166608]),
          "w_2": np.array([[0.95721584, -0.5572326], [0.40159469, 0.90071557]]),
          "b_2": np.array([0.10274645, 0.09165673])},
    "activation": "gelu",
}
"""Found by benchmarks/bench_tolerances.py: both GELU inputs negative, so 1 + erf cancels and
erf's few-ulp error (torch float32) dominates, then the output cancels too (0.006 from terms
of 0.1). torch float32 exceeded a model without erf's rounding (1.25 x); see TOLERANCES.md."""


@pytest.mark.op("feed_forward")
@budget(LAYER_SHARE)
@given(case=ffn_inputs())
@example(case=GELU_CANCELLATION)
def test_feed_forward(backend: Any, case: dict[str, Any]) -> None:
    """act(x W_1 + b_1) W_2 + b_2 on small inputs: every output."""
    compare(backend, "feed_forward", case["x"], case["p"], case["activation"])


@pytest.mark.op("feed_forward")
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_feed_forward_realistic(backend: Any, activation: str) -> None:
    """d_model 512, d_ff 2048 on (2, 4) positions: every output."""
    x = np.random.default_rng(0).normal(0.0, 1.0, (2, 4, 512))
    compare(backend, "feed_forward", x, realistic_params(0)["encoder"][0]["ffn"], activation)
