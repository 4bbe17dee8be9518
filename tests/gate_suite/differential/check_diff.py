"""Differential stand-ins: softmax and embedding against the reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.differential._compare import compare
from conformance.kit.strategies import arrays


@pytest.mark.op("softmax")
@given(x=arrays((2, 5)))
def test_softmax_matches_reference(backend, x):
    compare(backend, "softmax", x)


@pytest.mark.op("embedding")
@given(table=arrays((7, 4)), seed=st.integers(0, 100))
def test_embedding_matches_reference(backend, table, seed):
    ids = np.random.default_rng(seed).integers(0, 7, (2, 3))
    compare(backend, "embedding", ids, table)
