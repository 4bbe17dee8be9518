"""Backends that declare ``compiles_per_shape`` (backends/CONTRACT.md, "Compiled backends"), for
tests/test_compiled_sizes.py: the NumPy backend (correct) and mutants of tests/mutants/catalog.py,
each loadable as the spec ``tests.compiled_backends:NAME``. They compile nothing: the attribute
only makes the suite draw its sizes from ``size_menu`` and its structures from the ``Family``s
(conformance/kit/strategies.py), as it does for the ``jax`` backend."""

from __future__ import annotations

import functools
from typing import Any

from backends import numpy_backend
from tests.mutants import catalog

MUTANTS = ("scale_by_d_k", "layer_norm_eps_outside_sqrt", "pe_positions_normalised", "norm_over_batch",
           "causal_mask_includes_next", "key_padding_mask_ignored")
"""One mutant per stage of the model: attention, layer norm, positional encoding, the layers,
the decoder's causal mask, the stacks' padding masks."""


def compiled(factory: Any) -> Any:
    """A factory whose backends declare ``compiles_per_shape = True``."""

    @functools.wraps(factory)
    def make(**kwargs: Any) -> Any:
        backend = factory(**kwargs)
        backend.compiles_per_shape = True
        return backend

    return make


numpy = compiled(numpy_backend.factory)
scale_by_d_k = compiled(catalog.ALL["scale_by_d_k"].factory)
layer_norm_eps_outside_sqrt = compiled(catalog.ALL["layer_norm_eps_outside_sqrt"].factory)
pe_positions_normalised = compiled(catalog.ALL["pe_positions_normalised"].factory)
norm_over_batch = compiled(catalog.ALL["norm_over_batch"].factory)
causal_mask_includes_next = compiled(catalog.ALL["causal_mask_includes_next"].factory)
key_padding_mask_ignored = compiled(catalog.ALL["key_padding_mask_ignored"].factory)
