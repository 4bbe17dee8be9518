"""The built-in NumPy backends: the reference's own equations at a chosen precision.

``reference`` is the float64 ground truth itself; ``numpy`` evaluates the same functions in
float32, float16 or (emulated) bfloat16: the naive equations at that precision, a correct
implementation the suite must pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import reference
from backends.contract import OPS
from reference.precision import DTYPES, rounded


def _delegate(op: str) -> Callable[..., np.ndarray]:
    """A method that calls ``reference.<op>`` at the backend's dtype."""
    fn = getattr(reference, op)

    def method(self: NumpyBackend, *args: Any, **kwargs: Any) -> np.ndarray:
        return fn(*args, **kwargs, dtype=self.dtype)

    method.__name__, method.__doc__ = op, fn.__doc__
    return method


class NumpyBackend:
    """The reference's equations evaluated at ``dtype`` on the CPU."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype, self.device = name, dtype, "cpu"

    def asarray(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return rounded(a, self.dtype) if np.issubdtype(a.dtype, np.floating) else a

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)


for _op in OPS:  # every contract op: reference.<op> at the backend's dtype
    setattr(NumpyBackend, _op, _delegate(_op))


def _check_device(device: str) -> None:
    if device != "cpu":
        raise ValueError(f"device {device!r} is unsupported: the NumPy backends run on the cpu only")


def factory(*, dtype: str = "float32", device: str = "cpu") -> NumpyBackend:
    """``numpy``: the reference's equations at float32, float16 or bfloat16 (emulated)."""
    _check_device(device)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is unsupported by numpy; choose one of {DTYPES}")
    return NumpyBackend("numpy", dtype)


def reference_factory(*, dtype: str = "float64", device: str = "cpu") -> NumpyBackend:
    """``reference``: the float64 ground truth as a backend (float64 only)."""
    _check_device(device)
    if dtype != "float64":
        raise ValueError(f"dtype {dtype!r} is unsupported by reference: it is float64 only")
    return NumpyBackend("reference", "float64")
