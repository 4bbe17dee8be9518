"""positional_encoding(seq_len, d_model) against the reference."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given

from conformance.differential._compare import OP_SHARE, compare
from conformance.kit.strategies import budget, sizes


@pytest.mark.op("positional_encoding")
@budget(OP_SHARE)
@given(seq_len=sizes(1, 64), half_d_model=sizes(1, 32))
def test_positional_encoding(backend: Any, seq_len: int, half_d_model: int) -> None:
    """PE(seq_len, d_model) for small sizes (d_model = 2 included): every element."""
    compare(backend, "positional_encoding", seq_len, 2 * half_d_model)


@pytest.mark.op("positional_encoding")
@pytest.mark.parametrize(("seq_len", "d_model"), [(512, 512), (2048, 64)])
def test_positional_encoding_realistic(backend: Any, seq_len: int, d_model: int) -> None:
    """PE at realistic sizes, long sequences included (angles up to 2047 rad): every element."""
    compare(backend, "positional_encoding", seq_len, d_model)
