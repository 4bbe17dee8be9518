"""Backend plumbing for the tests: convert inputs, call an op, and check what came back.

Everything a backend does wrong while being called becomes a ``BackendFault`` (an
AssertionError, so pytest reports a failure and Hypothesis shrinks it) whose message says which
op, which backend/dtype, and what the inputs were.

Not implemented: an absent op, or one the backend declares unsupported as a whole
(``supports(op)`` false), skips the test with reason "not implemented". A call whose features
(conformance/kit/features.py) the backend declares unsupported, or that raises
NotImplementedError, is not implemented *for that input*: inside a Hypothesis test the example
is rejected (``hypothesis.reject``, not counted) and the test goes on drawing, so a failure
found by any other example stays a failure, shrinking included; the test is skipped as not
implemented only when no backend call has run after NOT_IMPLEMENTED_LIMIT rejected examples (or
when Hypothesis runs out of examples to try: conformance/kit/pytest_plugin.py). A fixed test skips.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import numpy as np
import pytest
from hypothesis import reject
from hypothesis.control import currently_in_test_context

from backends.ops import IDS, RECORDS
from conformance.kit import features, record, watchdog
from conformance.kit.failing_cases import array_label
from conformance.kit.verdicts import NOT_IMPLEMENTED
from reference.params import leaves, map_leaves

INTEGER_OPS = frozenset(op for op, r in RECORDS.items() if r.output == IDS)
"""Ops whose output is token ids, compared exactly (backends/ops.py)."""
NOT_IMPLEMENTED_LIMIT = 50
"""Rejected examples, with no backend call run, after which a Hypothesis test is skipped as not
implemented (Hypothesis itself would try 458)."""


class BackendFault(AssertionError):
    """The backend raised, or returned something that is not a valid result.

    Its message (on one line) is also the test's recorded failure, so that the gate's report
    shows it rather than the first line of the traceback (the backend's own exception)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        record.note_failure("; ".join(message.split("\n  ")).replace("\n", " "), 0.0)


def label(backend: Any, op: str) -> str:
    """``torch[float32, cpu].softmax``: who computed what."""
    return f"{getattr(backend, 'name', '?')}[{getattr(backend, 'dtype', '?')}, {getattr(backend, 'device', '?')}].{op}"


def describe(value: Any, dtype: str | None = None) -> str:
    """A short description of inputs: arrays as dtype(shape) (``failing_cases.array_label``:
    floating arrays in the backend's ``dtype``), containers summarised."""
    if isinstance(value, np.ndarray):
        return array_label(value, dtype)
    if isinstance(value, Mapping):
        if all(isinstance(v, np.ndarray) for v in value.values()) and len(value) > 4:
            return "{" + ", ".join(f"{k}: {describe(v, dtype)}" for k, v in list(value.items())[:4]) + ", ...}"
        return "{" + ", ".join(f"{k}: {describe(v, dtype)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return f"[{len(value)} x {describe(value[0], dtype)}]" if value else "[]"
    return repr(value)


def describe_call(args: Sequence[Any], kwargs: Mapping[str, Any], dtype: str | None = None) -> str:
    parts = [describe(a, dtype) for a in args] + [f"{k}={describe(v, dtype)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def to_native(backend: Any, tree: Any) -> Any:
    """Every NumPy array leaf of a nested dict/list converted with ``backend.asarray``."""
    return map_leaves(lambda a: backend.asarray(a) if isinstance(a, np.ndarray) else a, tree)


def require_op(backend: Any, op: str) -> None:
    """Skip with reason "not implemented" when the backend has no ``op``, or declares it
    unsupported (``supports(op)`` false)."""
    if not callable(getattr(backend, op, None)) or not features.supports(backend, op):
        skip(NOT_IMPLEMENTED, label(backend, op))


def not_implemented(backend: Any, op: str, why: str) -> None:
    """This input is not implemented: reject the example inside a Hypothesis test (skip the
    test once NOT_IMPLEMENTED_LIMIT examples were rejected and no backend call ran), else
    skip. Never returns."""
    reason = f"{label(backend, op)} {why}"
    if not currently_in_test_context():
        skip(NOT_IMPLEMENTED, reason)
    rec = record.note_not_implemented()
    if rec is not None and rec.calls == 0 and rec.not_implemented >= NOT_IMPLEMENTED_LIMIT:
        skip(NOT_IMPLEMENTED, f"{reason} (all {rec.not_implemented} examples drawn)")
    reject()


class Skip(pytest.skip.Exception):
    """A skip of a known kind (NOT_IMPLEMENTED or UNSUPPORTED): its reason reads ``kind: reason``
    and the pytest plugin puts the kind in the test's report (SKIP_KEY), which the gate reads."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind


def skip(kind: str, reason: str) -> NoReturn:
    """Skip the running test (or the fixture setting it up) as ``kind``."""
    raise Skip(kind, reason)


def call_op(backend: Any, op: str, *args: Any, shape: tuple[int, ...] | None = None, **kwargs: Any) -> np.ndarray:
    """``backend.<op>(*args, **kwargs)`` with NumPy in and NumPy out (see ``_call_op``); a
    BackendFault is booked under ``op`` (a property of one op may call others)."""
    try:
        return _call_op(backend, op, *args, shape=shape, **kwargs)
    except BackendFault:
        record.note_failed_op(op)
        raise


def _call_op(backend: Any, op: str, *args: Any, shape: tuple[int, ...] | None = None, **kwargs: Any) -> np.ndarray:
    """``backend.<op>(*args, **kwargs)`` with NumPy in and NumPy out.

    Returns float64 (int64 for greedy_decode). Fails with a BackendFault when the op raises,
    returns something that is not an array of the claimed dtype, the wrong shape (when
    ``shape`` is given), or changes its inputs in place.
    """
    require_op(backend, op)
    used = features.of_call(op, args, kwargs)
    if not features.supports(backend, op, **used):
        not_implemented(backend, op, "is declared unsupported for " + ", ".join(
            features.label(name, value) for name, value in used.items()))
    record.note_input(op, args, kwargs, dtype=backend.dtype)
    native_args, native_kwargs = to_native(backend, list(args)), to_native(backend, kwargs)
    before = _snapshot(backend, (native_args, native_kwargs))
    try:
        with watchdog.watch(backend, op, args, kwargs):
            result = getattr(backend, op)(*native_args, **native_kwargs)
    except watchdog.Hung as exc:  # past the per-call limit, or hung earlier in this run
        raise BackendFault(str(exc)) from exc
    except NotImplementedError:
        not_implemented(backend, op, "raised NotImplementedError")
    except Exception as exc:  # noqa: BLE001 - any exception of the backend's is a failure of the op
        record.note_call(op, used)
        raise BackendFault(f"{label(backend, op)} raised {type(exc).__name__}: {exc}\n"
                           f"  inputs: {describe_call(args, kwargs, backend.dtype)}") from exc
    record.note_call(op, used)
    _check_unchanged(backend, op, before, (native_args, native_kwargs))
    return _check_result(backend, op, result, shape, describe_call(args, kwargs, backend.dtype))


def _array_leaves(backend: Any, tree: Any) -> list[np.ndarray]:
    """Every native array leaf as NumPy (``to_numpy``: a view where the backend allows one)."""
    return [np.asarray(backend.to_numpy(x)) for x in leaves(tree)
            if not isinstance(x, (str, int, float, bool, type(None)))]


def _snapshot(backend: Any, tree: Any) -> list[np.ndarray]:
    """Copies of every native array leaf, to detect in-place mutation."""
    return [np.array(a, copy=True) for a in _array_leaves(backend, tree)]


def _same_bits(before: np.ndarray, after: np.ndarray) -> bool:
    """``after`` holds exactly the bits of ``before`` (NaNs included, -0.0 is not 0.0)."""
    if before.shape != after.shape or before.dtype != after.dtype:
        return False
    if before.dtype.itemsize in (1, 2, 4, 8) and not before.dtype.hasobject:  # bfloat16 too (kind V)
        unsigned = np.dtype(f"u{before.dtype.itemsize}")
        return np.array_equal(before.view(unsigned), after.view(unsigned))
    return np.array_equal(before, after, equal_nan=before.dtype.kind in "fc")


def _check_unchanged(backend: Any, op: str, before: list[np.ndarray], tree: Any) -> None:
    for i, (b, a) in enumerate(zip(before, _array_leaves(backend, tree))):
        if not _same_bits(b, a):
            raise BackendFault(f"{label(backend, op)} changed its input #{i} ({b.dtype}{b.shape}) in place")


def _check_result(backend: Any, op: str, result: Any, shape: tuple[int, ...] | None, inputs: str) -> np.ndarray:
    where = f"{label(backend, op)} on inputs {inputs}"
    if result is None or isinstance(result, (list, tuple, dict, str, int, float)):
        raise BackendFault(f"{where} returned {type(result).__name__}, expected an array")
    try:
        out = np.asarray(backend.to_numpy(result))
    except Exception as exc:  # noqa: BLE001
        raise BackendFault(f"{where}: to_numpy failed on its result ({type(result).__name__}): "
                           f"{type(exc).__name__}: {exc}") from exc
    if shape is not None and out.shape != tuple(shape):
        raise BackendFault(f"{where}: expected shape {tuple(shape)}, got {out.shape}")
    if op in INTEGER_OPS:
        if not np.issubdtype(out.dtype, np.integer):
            raise BackendFault(f"{where}: expected integer token ids, got dtype {out.dtype}")
        return out.astype(np.int64)
    allowed = {backend.dtype} | ({"float32"} if backend.dtype == "bfloat16" else set())
    if out.dtype.name not in allowed:
        raise BackendFault(f"{where}: returned dtype {out.dtype}, but the backend claims {backend.dtype}")
    return out.astype(np.float64)
