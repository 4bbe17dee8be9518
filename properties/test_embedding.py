"""Embedding property: the lookup is the one-hot matrix product, exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.kit.assertions import assert_equal
from conformance.kit.harness import call_op
from conformance.kit.strategies import arrays, budget, sizes, token_ids
from properties.plumbing import held
from properties.strategies import OP_SHARE

pytestmark = pytest.mark.op("embedding")


@st.composite
def lookups(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """(ids (B, S), table (V, d))."""
    vocab, d = draw(sizes(1, 10)), draw(sizes(1, 8))
    ids = draw(token_ids(draw(sizes(1, 3)), draw(sizes(1, 5)), vocab))
    return ids, draw(arrays((vocab, d)))


@budget(OP_SHARE)
@given(case=lookups())
def test_embedding_equals_one_hot_times_table(backend, case):
    """embedding(ids, E) = one_hot(ids) E, bitwise in the backend's dtype: each output element
    is 1 * E[id, j] plus zeros, which no rounding changes."""
    ids, table = case
    table = held(backend, table)
    out = call_op(backend, "embedding", ids, table, shape=ids.shape + (table.shape[1],))
    one_hot = np.eye(table.shape[0])[ids]                                         # (B, S, V)
    assert_equal(out, one_hot @ table, backend=backend, op="embedding", what="embedding = one_hot(ids) @ table")
