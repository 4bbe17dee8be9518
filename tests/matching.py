"""The adapter tests' one comparison: a backend's float64 result against the float64 reference."""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT64_TOLERANCE = {"rtol": 1e-12, "atol": 1e-12}
"""A float64 backend against the float64 reference on inputs with no edge case: a few float64
roundings of unit-scale values (errors ~1e-15), with room for a different summation order."""


def on_host(result: Any) -> np.ndarray:
    """A backend's result as a NumPy array: a torch tensor from any device, a JAX array as is."""
    return result.detach().cpu().numpy() if hasattr(result, "detach") else np.asarray(result)


def assert_matches_reference(actual: Any, expected: np.ndarray, *, op: str, where: np.ndarray | None = None) -> None:
    """``assert np.allclose(actual[where], expected[where])`` at ``FLOAT64_TOLERANCE`` for a
    float64 result of the right shape, naming the op; NaN fails, and np.testing reports the worst
    abs/rel error and how many elements failed."""
    __tracebackhide__ = True
    got = on_host(actual)
    assert got.dtype == np.float64, f"{op}: returned {got.dtype}, but should be float64"
    assert got.shape == expected.shape, f"{op}: shape {got.shape}, but should be {expected.shape}"
    if where is not None:
        got, expected = got[where], expected[where]
    np.testing.assert_allclose(got, expected, **FLOAT64_TOLERANCE, err_msg=f"[{op}]")


def assert_within_tolerance(actual: Any, op: str, args: list, kwargs: dict | None = None, *, dtype: str,
                            where: np.ndarray | None = None) -> None:
    """``assert |actual - reference| <= tol`` element by element, where the reference and tol
    are the tolerance model's for a backend at ``dtype`` (conformance/tolerance/model.py); ``args``
    and ``kwargs`` already rounded to ``dtype`` (``rounded_inputs``). Names the op, the worst
    element and how many failed."""
    __tracebackhide__ = True
    from conformance.tolerance.model import expected

    want = expected(op, args, kwargs, dtype=dtype)
    got = np.asarray(on_host(actual), dtype=np.float64)
    assert got.shape == want.value.shape, f"{op}: shape {got.shape}, but should be {want.value.shape}"
    err, tol = np.abs(got - want.value), want.tol
    if where is not None:  # a mask over the leading axes, as in assert_matches_reference
        err, tol = err[where], tol[where]
    bad = ~(err <= tol)  # NaN fails
    if bad.any():
        i = int(np.argmax(np.where(bad, err / np.maximum(tol, np.finfo(float).tiny), 0)))
        raise AssertionError(f"[{op} at {dtype}] {int(bad.sum())} of {bad.size} elements exceed their tolerance; "
                             f"worst: err {err.flat[i]:.3g} vs tol {tol.flat[i]:.3g}")
