"""A precision liar: a backend that claims float64 but computes in float32 inside.

``Float32Inside(inner)`` wraps a float32 backend (``numpy`` or ``torch``): it accepts and
returns float64 NumPy arrays, as a float64 backend does, but every op converts its inputs to
the inner backend's float32 and runs there. The tolerance model must reject it at float64 by
orders of magnitude (tests/test_tolerance_model.py, conformance/tolerance/TOLERANCES.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from backends.contract import OPS
from backends.registry import load_backend
from conformance.kit.harness import to_native


class Float32Inside:
    """Claims ``float64``; computes every op on ``inner`` (a float32 backend)."""

    dtype = "float64"

    def __init__(self, inner: Any) -> None:
        if inner.dtype != "float32":
            raise ValueError(f"the inner backend must compute in float32, got {inner.dtype}")
        self.inner, self.name, self.device = inner, f"{inner.name}-float32-inside", inner.device

    def asarray(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def __getattr__(self, op: str) -> Callable[..., np.ndarray]:
        if op not in OPS or not callable(getattr(self.inner, op, None)):
            raise AttributeError(op)

        def method(*args: Any, **kwargs: Any) -> np.ndarray:
            result = getattr(self.inner, op)(*to_native(self.inner, list(args)), **to_native(self.inner, kwargs))
            out = np.asarray(self.inner.to_numpy(result))
            return out if op == "greedy_decode" else out.astype(np.float64)

        method.__name__ = op
        return method


def factory(*, dtype: str = "float64", device: str = "cpu", inner: str = "numpy") -> Float32Inside:
    """The liar over the ``inner`` built-in backend's float32 (float64 only)."""
    if dtype != "float64":
        raise ValueError(f"dtype {dtype!r} is unsupported: this backend only claims float64")
    return Float32Inside(load_backend(inner, dtype="float32", device=device))


def torch_factory(*, dtype: str = "float64", device: str = "cpu") -> Float32Inside:
    """The liar over torch float32."""
    return factory(dtype=dtype, device=device, inner="torch")
