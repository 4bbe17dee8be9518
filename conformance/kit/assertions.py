"""Assertion helpers that explain themselves.

Each stands for a plain ``assert`` (given in its docstring) and, on failure, names the op, the
backend and dtype, the worst element and its index, both values, the absolute and relative
error against the tolerance, and how many elements failed, e.g.::

    torch[float32, cpu].softmax: out[1, 2] = 0.3 but should be 0.5 (abs err 0.2, rel err 0.4,
    tolerance 1.2e-07, 200 x over); 3 of 24 elements exceed their tolerance [rows sum to 1]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from conformance.kit import record
from conformance.tolerance import model
from conformance.kit.harness import label


class ToleranceExceeded(AssertionError):
    """``assert_close`` failed; ``index`` is the worst element's (multi-)index."""

    def __init__(self, message: str, index: tuple[int, ...]) -> None:
        super().__init__(message)
        self.index = index


def _index(flat_index: int, shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in np.unravel_index(flat_index, shape)) + "]" if shape else ""


def assert_close(actual: np.ndarray, expected: np.ndarray, *, tol: np.ndarray | float, backend: Any,
                 op: str, what: str = "", where: np.ndarray | None = None) -> float:
    """``assert np.all(|actual - expected| <= tol)`` elementwise (``tol`` broadcasts), comparing
    only where ``where`` is True (e.g. real, not padded, query positions). NaN never passes
    (equal infinities pass).

    Returns the worst error/tolerance ratio (<= 1 on success) and records it for the report.
    """
    __tracebackhide__ = True
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{label(backend, op)}: expected shape {expected.shape}, got {actual.shape} {_tag(what)}")
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), expected.shape)
    mask = np.ones(expected.shape, bool) if where is None else np.broadcast_to(where, expected.shape)
    ratio = np.where(mask, model.error_ratio(actual, expected, tol), 0.0)
    worst = int(np.argmax(ratio)) if ratio.size else 0
    worst_ratio = float(ratio.flat[worst]) if ratio.size else 0.0
    record.note_ratio(worst_ratio)
    if worst_ratio <= 1.0:
        return worst_ratio
    failing = int(np.count_nonzero(ratio > 1.0))
    a, e, t = (float(v.flat[worst]) for v in (actual, expected, tol))
    d = abs(a - e)
    rel = d / abs(e) if e != 0 else np.inf
    element = f"out{_index(worst, expected.shape)}"
    found = (f"{element} is NaN, and so is the value it is compared with (NaN never conforms: the op "
             f"returned NaN on both sides)" if np.isnan(a) and np.isnan(e) else
             f"{element} = {a!r} but should be {e!r} (abs err {d:.3g}, rel err {rel:.3g}, "
             f"tolerance {t:.3g}, {worst_ratio:.3g} x over)")
    message = (f"{label(backend, op)}: {found}; "
               f"{failing} of {int(mask.sum())} compared elements exceed their tolerance {_tag(what)}")
    record.note_failure(message, worst_ratio, element=element)
    raise ToleranceExceeded(message, tuple(int(i) for i in np.unravel_index(worst, expected.shape)))


def assert_no_systematic_error(actual: np.ndarray, expected: np.ndarray, *, tol: np.ndarray, backend: Any,
                               op: str, what: str = "", where: np.ndarray | None = None) -> float:
    """``assert rms(|actual - expected| / tol) <= RMS_LIMIT`` over the compared elements, when
    there are at least MIN_COUNT of them (conformance/tolerance/model.py): errors that each stay
    inside their bound but add up to a consistent deviation (a tanh GELU, a misplaced eps).
    Returns the root-mean-square ratio."""
    __tracebackhide__ = True
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    mask = np.ones(expected.shape, bool) if where is None else np.broadcast_to(where, expected.shape)
    ratio = model.error_ratio(actual, expected, tol)[mask]
    rms = model.rms_ratio(ratio)
    if ratio.size < model.MIN_COUNT or rms <= model.RMS_LIMIT:
        return rms
    with np.errstate(invalid="ignore"):
        signed = np.where(actual == expected, 0.0, (actual - expected) / np.broadcast_to(tol, expected.shape))[mask]
    message = (f"{label(backend, op)}: systematic error: every element is within its tolerance, but the "
               f"root mean square of err/tol over the {ratio.size} compared elements is {rms:.3g} "
               f"(limit {model.RMS_LIMIT:g}; mean signed err/tol {float(np.mean(signed)):+.3g}): a small "
               f"consistent deviation from the equation (an approximation, a misplaced constant, a lower "
               f"precision somewhere) rather than rounding {_tag(what)}")
    record.note_failure(message, rms / model.RMS_LIMIT)
    raise AssertionError(message)


def assert_equal(actual: np.ndarray, expected: np.ndarray, *, backend: Any, op: str, what: str = "",
                 where: np.ndarray | None = None) -> None:
    """``assert np.array_equal(actual, expected)`` (bitwise, on the compared elements)."""
    __tracebackhide__ = True
    assert_close(actual, expected, tol=0.0, backend=backend, op=op, what=what, where=where)


def assert_true(condition: np.ndarray, *, values: np.ndarray, backend: Any, op: str, what: str,
                name: str = "out") -> None:
    """``assert np.all(condition)``, naming the first element where it fails and its value
    (``name``: what ``values`` holds, when it is not the op's output)."""
    __tracebackhide__ = True
    condition = np.asarray(condition)
    if condition.all():
        return
    first = int(np.argmin(condition.ravel()))
    value = np.broadcast_to(values, condition.shape).flat[first].item()
    element = f"{name}{_index(first, condition.shape)}"
    message = (f"{label(backend, op)}: {element} = {value!r} violates {what}; "
               f"{int(np.count_nonzero(~condition))} of {condition.size} elements do")
    record.note_failure(message, np.inf, element=element)
    raise AssertionError(message)


def _tag(what: str) -> str:
    return f"[{what}]" if what else ""
