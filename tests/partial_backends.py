"""Partial backends, as real adapters are: an op implemented for some of its features only
(factories for ``--backend tests/partial_backends.py:NAME``; tests/test_partial_backends.py).
Each is the NumPy backend at float64 by default with one decoder_layer that supports post-LN
only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import reference
from backends.contract import supports_from
from backends.numpy_backend import NumpyBackend
from backends.numpy_backend import factory as numpy_factory


class CausalPostLNOnly(NumpyBackend):
    """decoder_layer: post-LN only (NotImplementedError for pre-LN, as CONTRACT.md allows), and
    a causal self-attention mask where the contract says "no mask" (the bug the gate must find)."""

    def decoder_layer(self, y: Any, memory: Any, p: Any, config: Any, self_mask: Any = None,
                      cross_mask: Any = None) -> Any:
        if reference.as_config(config).norm_first:
            raise NotImplementedError("pre-LN decoder layers are not supported")
        if self_mask is None:
            self_mask = reference.causal_mask(np.shape(y)[1])
        return super().decoder_layer(y, memory, p, config, self_mask, cross_mask)


class DeclaredPostLNOnly(NumpyBackend):
    """Correct post-LN decoder_layer, declared as post-LN only; a pre-LN call is an error (it
    must never be drawn)."""

    supports = staticmethod(supports_from({"decoder_layer": {"norm_first": [False]}}))

    def decoder_layer(self, y: Any, memory: Any, p: Any, config: Any, self_mask: Any = None,
                      cross_mask: Any = None) -> Any:
        if reference.as_config(config).norm_first:
            raise RuntimeError("a pre-LN decoder layer was drawn although the backend declares post-LN only")
        return super().decoder_layer(y, memory, p, config, self_mask, cross_mask)


def _make(cls: type[NumpyBackend], name: str) -> Any:
    def factory(*, dtype: str = "float64", device: str = "cpu") -> NumpyBackend:
        return cls(name, numpy_factory(dtype=dtype, device=device).dtype)
    factory.__doc__ = cls.__doc__
    return factory


causal_post_ln_only = _make(CausalPostLNOnly, "causal_post_ln_only")
declared_post_ln_only = _make(DeclaredPostLNOnly, "declared_post_ln_only")
