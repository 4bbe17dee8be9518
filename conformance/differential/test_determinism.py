"""Determinism: every op called twice with the same inputs returns the same bits.

A backend whose result changes from call to call (a reduction whose order depends on thread
timing, atomics on a GPU, state kept between calls) may still pass every tolerance; the
gate reports it with its own status, "nondeterministic" (conformance/gate/REPORT.md), rather than
as an accuracy failure. One fixed case per op, its op record's (backends/ops.py): a small but not
trivial size (B=2, up to 5 positions, d_model=8, two heads, one layer per stack, masks included).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from backends.contract import OPS
from backends.ops import RECORDS
from conformance.kit import record
from conformance.kit.harness import call_op, describe_call, label
from conformance.kit.verdicts import NONDETERMINISTIC

CALLS = 2

SEED = 8


def _case(op: str) -> tuple[list[Any], dict[str, Any]]:
    """The op record's case (backends/ops.py) drawn from a fixed seed: (args, kwargs)."""
    case = RECORDS[op].sample(np.random.default_rng(SEED))
    return case.args, case.kwargs


CASES: dict[str, Callable[[], tuple[list[Any], dict[str, Any]]]] = {op: functools.partial(_case, op) for op in OPS}


def assert_deterministic(backend: Any, op: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """``assert all(np.array_equal(op(*args), op(*args)) ...)`` over ``CALLS`` calls, bitwise (NaN
    equal to NaN); on failure the message names the first differing element and both values,
    and the test's status is "nondeterministic"."""
    __tracebackhide__ = True
    first = call_op(backend, op, *args, **kwargs)
    for call in range(2, CALLS + 1):
        again = call_op(backend, op, *args, **kwargs)
        same = first.shape == again.shape and np.array_equal(first, again, equal_nan=True)
        if same:
            continue
        if first.shape != again.shape:
            where = f"the first call returned shape {first.shape}, call {call} {again.shape}"
        else:
            differ = ~((first == again) | (np.isnan(first) & np.isnan(again)))
            i = int(np.argmax(differ))
            index = ", ".join(str(n) for n in np.unravel_index(i, first.shape))
            where = (f"out[{index}] = {first.flat[i].item()!r} on the first call but {again.flat[i].item()!r} on "
                     f"call {call}; {int(differ.sum())} of {differ.size} elements differ")
        message = f"{label(backend, op)} is {NONDETERMINISTIC}: the same inputs {describe_call(args, kwargs, backend.dtype)} " \
                  f"gave different results: {where}"
        record.note_verdict(NONDETERMINISTIC, message)
        raise AssertionError(message)


@pytest.mark.parametrize("op", [pytest.param(op, marks=pytest.mark.op(op), id=op) for op in OPS])
def test_same_inputs_give_the_same_result(backend: Any, op: str) -> None:
    """op(*args) called twice on one fixed case returns bitwise equal results."""
    args, kwargs = CASES[op]()
    record.note_example()
    assert_deterministic(backend, op, args, kwargs)
