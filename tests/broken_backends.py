"""Deliberately broken backends for the gate's tests (factories for ``--backend
tests/broken_backends.py:NAME``). Each is the NumPy reference with one defect."""

from __future__ import annotations

import os
import time

import numpy as np

from backends.numpy_backend import NumpyBackend
from backends.numpy_backend import factory as numpy_factory


class WrongSoftmax(NumpyBackend):
    """softmax divides by (sum + 0.01): visibly wrong, shrinks to the simplest input."""

    def softmax(self, x, axis=-1):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / (e.sum(axis=axis, keepdims=True) + 0.01)


class NoEmbedding(NumpyBackend):
    """Correct, but embedding is not implemented."""

    def embedding(self, ids, table):
        raise NotImplementedError


class CrashingSoftmax(NumpyBackend):
    """softmax kills its process (as a segfault in native code would)."""

    def softmax(self, x, axis=-1):
        os._exit(3)


class HangingLayerNorm(NumpyBackend):
    """layer_norm never returns."""

    def layer_norm(self, *args, **kwargs):
        time.sleep(3600)


def _make(cls):
    def factory(*, dtype: str = "float64", device: str = "cpu"):
        base = numpy_factory(dtype=dtype, device=device)  # same refusals as the numpy backend
        return cls(cls.__name__, base.dtype)
    return factory


wrong_softmax = _make(WrongSoftmax)
no_embedding = _make(NoEmbedding)
crashing = _make(CrashingSoftmax)
hanging = _make(HangingLayerNorm)


def raising_factory(*, dtype: str = "float64", device: str = "cpu"):
    """A factory that fails for a reason other than an unsupported dtype/device."""
    raise RuntimeError("libfoo.so: cannot open shared object file")
