"""Property stand-ins: softmax rows sum to one; layer_norm output has zero mean."""

import numpy as np
import pytest
from hypothesis import given

from conformance.kit.assertions import assert_close
from conformance.kit.harness import call_op
from conformance.kit.strategies import arrays
from reference import unit_roundoff


@pytest.mark.op("softmax")
@given(x=arrays((3, 4)))
def test_softmax_rows_sum_to_one(backend, x):
    out = call_op(backend, "softmax", x, shape=x.shape)
    assert_close(out.sum(axis=-1), np.ones(3), tol=64 * unit_roundoff(backend.dtype), backend=backend,
                 op="softmax", what="rows sum to 1")


@pytest.mark.op("layer_norm")
@given(x=arrays((2, 6)))
def test_layer_norm_zero_mean(backend, x):
    out = call_op(backend, "layer_norm", x, np.ones(6), np.zeros(6), 1e-5, shape=x.shape)
    assert_close(out.mean(axis=-1), np.zeros(2), tol=64 * unit_roundoff(backend.dtype), backend=backend,
                 op="layer_norm", what="mean 0")
