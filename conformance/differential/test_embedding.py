"""embedding(ids, table) against the reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.differential._compare import OP_SHARE, compare
from conformance.kit.strategies import arrays, budget, sizes, token_ids


@st.composite
def embedding_inputs(draw: st.DrawFn, *, max_vocab: int = 12, max_d: int = 16, max_batch: int = 3,
                     max_seq: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(ids (B, S), table (V, d)): a one-row vocabulary and d = 1 included."""
    vocab, d = draw(sizes(1, max_vocab)), draw(sizes(1, max_d))
    ids = draw(token_ids(draw(sizes(1, max_batch)), draw(sizes(1, max_seq)), vocab))
    return ids, draw(arrays((vocab, d)))


@pytest.mark.op("embedding")
@budget(OP_SHARE)
@given(case=embedding_inputs())
def test_embedding(backend: Any, case: tuple[np.ndarray, np.ndarray]) -> None:
    """table[ids] for small tables: every element (a lookup; correct backends are exact)."""
    compare(backend, "embedding", *case)


@pytest.mark.op("embedding")
def test_embedding_realistic(backend: Any) -> None:
    """A (1000, 512) table looked up by (2, 16) ids: every element."""
    rng = np.random.default_rng(0)
    compare(backend, "embedding", rng.integers(0, 1000, (2, 16)), rng.normal(0.0, 512**-0.5, (1000, 512)))
