"""Every op of the registry (backends/ops.py) against the reference on its record's seeded
cases (three seeds): an op added to the contract is compared with the reference from its
record on, before its own differential module exists. Token ids (greedy decoding) are compared
token by token as in test_greedy_decode.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from backends.contract import OPS
from backends.ops import IDS, RECORDS
from conformance.differential._compare import compare, compare_greedy

SEEDS = (0, 1, 2)


@pytest.mark.parametrize(("op", "seed"), [pytest.param(op, seed, marks=pytest.mark.op(op), id=f"{op}-{seed}")
                                          for op in OPS for seed in SEEDS])
def test_registered_case(backend: Any, op: str, seed: int) -> None:
    """The op record's case at ``seed``: every output the contract specifies."""
    case = RECORDS[op].sample(np.random.default_rng(seed))
    if RECORDS[op].output == IDS:
        compare_greedy(backend, *case.args, **case.kwargs)
    else:
        compare(backend, op, *case.args, where=case.where, what="the op record's case", **case.kwargs)
