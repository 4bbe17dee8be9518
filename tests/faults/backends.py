"""Fault-injecting backends: the correct ``numpy`` backend (float32 by default) with ONE op
broken in ONE way. Each module-level factory is a spec for the gate:

    python -m conformance run --backend tests/faults/backends.py:raising --dtype float32 \
        --ops embedding,layer_norm

``FAULTS`` lists them with the op each breaks; tests/test_reliability_gate.py runs them all
through the gate and checks the verdict and message of the broken op, and that the other op
still passes. Nothing here is imported by the suite itself.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import reference
from backends.numpy_backend import NumpyBackend
from backends.numpy_backend import factory as numpy_factory


class Raising(NumpyBackend):
    """embedding raises an arbitrary (non-NotImplementedError) exception."""

    def embedding(self, ids: Any, table: Any) -> Any:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


class NanOutput(NumpyBackend):
    """embedding returns NaN in its first element."""

    def embedding(self, ids: Any, table: Any) -> Any:
        out = np.array(table[ids])
        out.flat[0] = np.nan
        return out


class InfOutput(NumpyBackend):
    """embedding returns +inf in its last element."""

    def embedding(self, ids: Any, table: Any) -> Any:
        out = np.array(table[ids])
        out.flat[-1] = np.inf
        return out


class WrongShape(NumpyBackend):
    """embedding returns (B, d, S) instead of (B, S, d): the last two axes swapped."""

    def embedding(self, ids: Any, table: Any) -> Any:
        return np.swapaxes(table[ids], -1, -2)


class ReturnsList(NumpyBackend):
    """embedding returns a nested Python list instead of an array."""

    def embedding(self, ids: Any, table: Any) -> Any:
        return table[ids].tolist()


class ReturnsNone(NumpyBackend):
    """embedding returns None (a forgotten ``return``)."""

    def embedding(self, ids: Any, table: Any) -> Any:
        table[ids]  # noqa: B018 - computed and dropped


class Float64Result(NumpyBackend):
    """Claims float32, but embedding computes and returns float64."""

    def embedding(self, ids: Any, table: Any) -> Any:
        return reference.embedding(ids, table)  # the float64 reference: float64 out


class MutatesInput(NumpyBackend):
    """layer_norm centres its input in place (``x -= mean``) before normalising: the result is
    right, the caller's array is changed."""

    def layer_norm(self, x: Any, gamma: Any, beta: Any, eps: float) -> Any:
        x -= x.mean(axis=-1, keepdims=True, dtype=x.dtype)
        return reference.layer_norm(x, gamma, beta, eps, dtype=self.dtype)


class Nondeterministic(NumpyBackend):
    """layer_norm moves one output element by one ulp on every other call (like a reduction
    whose order depends on thread timing): within tolerance, but not repeatable."""

    calls = 0

    def layer_norm(self, x: Any, gamma: Any, beta: Any, eps: float) -> Any:
        out = np.array(reference.layer_norm(x, gamma, beta, eps, dtype=self.dtype))
        Nondeterministic.calls += 1
        if Nondeterministic.calls % 2 and out.size:
            i = Nondeterministic.calls % out.size
            out.flat[i] = np.nextafter(out.flat[i], np.inf, dtype=out.dtype)
        return out


class Hanging(NumpyBackend):
    """embedding never returns (sleeping in Python)."""

    def embedding(self, ids: Any, table: Any) -> Any:
        time.sleep(3600)


class HangingInNative(NumpyBackend):
    """embedding never returns, stuck in native code that holds the GIL (as a blocking device
    synchronisation can be): a signal-based timeout would never get to run."""

    def embedding(self, ids: Any, table: Any) -> Any:
        ctypes.PyDLL(None).sleep(3600)  # libc sleep(3) called without releasing the GIL


class Segfaulting(NumpyBackend):
    """embedding dereferences a NULL pointer in native code: SIGSEGV."""

    def embedding(self, ids: Any, table: Any) -> Any:
        ctypes.string_at(0)


class Exiting(NumpyBackend):
    """embedding ends its process (``os._exit``), as a native library's ``abort`` would."""

    def embedding(self, ids: Any, table: Any) -> Any:
        os._exit(3)


def _factory(cls: type[NumpyBackend], name: str) -> Callable[..., NumpyBackend]:
    def factory(*, dtype: str = "float32", device: str = "cpu") -> NumpyBackend:
        base = numpy_factory(dtype=dtype, device=device)  # the numpy backend's own refusals (ValueError)
        return cls(name, base.dtype)
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = cls.__doc__
    return factory


FAULTS: dict[str, tuple[type[NumpyBackend], str]] = {
    "raising": (Raising, "embedding"),
    "nan_output": (NanOutput, "embedding"),
    "inf_output": (InfOutput, "embedding"),
    "wrong_shape": (WrongShape, "embedding"),
    "returns_list": (ReturnsList, "embedding"),
    "returns_none": (ReturnsNone, "embedding"),
    "float64_result": (Float64Result, "embedding"),
    "mutates_input": (MutatesInput, "layer_norm"),
    "nondeterministic": (Nondeterministic, "layer_norm"),
    "hanging": (Hanging, "embedding"),
    "hanging_in_native": (HangingInNative, "embedding"),
    "segfaulting": (Segfaulting, "embedding"),
    "exiting": (Exiting, "embedding"),
}
"""factory name -> (backend class, the one op it breaks)."""

raising = _factory(Raising, "raising")
nan_output = _factory(NanOutput, "nan_output")
inf_output = _factory(InfOutput, "inf_output")
wrong_shape = _factory(WrongShape, "wrong_shape")
returns_list = _factory(ReturnsList, "returns_list")
returns_none = _factory(ReturnsNone, "returns_none")
float64_result = _factory(Float64Result, "float64_result")
mutates_input = _factory(MutatesInput, "mutates_input")
nondeterministic = _factory(Nondeterministic, "nondeterministic")
hanging = _factory(Hanging, "hanging")
hanging_in_native = _factory(HangingInNative, "hanging_in_native")
segfaulting = _factory(Segfaulting, "segfaulting")
exiting = _factory(Exiting, "exiting")


def factory_raising(*, dtype: str = "float32", device: str = "cpu") -> NumpyBackend:
    """A factory that fails for a reason other than an unsupported dtype/device: a set-up error."""
    raise RuntimeError("libcudart.so.12: cannot open shared object file: No such file or directory")


def factory_refusing(*, dtype: str = "float32", device: str = "cpu") -> NumpyBackend:
    """A factory that refuses every dtype with ValueError: "unsupported", not an error."""
    raise ValueError(f"dtype {dtype!r} is unsupported: this backend is still being written")
