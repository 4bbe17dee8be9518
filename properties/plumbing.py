"""Backend plumbing the properties share: inputs as the backend holds them, and the array
rearrangements (permutations, padding, head blocks) that properties apply to inputs and outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from conformance.tolerance.model import rounded_inputs


def held(backend: Any, tree: Any) -> Any:
    """Every float array of ``tree`` rounded to the backend's dtype and kept in float64.

    The backend's ``asarray`` is then exact, so a property's float64 bookkeeping (the expected
    row variance, a shifted input) is about the very numbers the backend computes with.
    """
    return rounded_inputs(tree, backend.dtype)


def take(a: np.ndarray | None, order: np.ndarray, axis: int) -> np.ndarray | None:
    """``a`` with its ``axis`` reordered by ``order`` (None stays None)."""
    return None if a is None else np.take(a, order, axis=axis)


def permute_square(mask: np.ndarray | None, order: np.ndarray) -> np.ndarray | None:
    """A (..., S, S) self-attention mask with queries and keys both reordered: P M P^T."""
    return take(take(mask, order, -2), order, -1)


def inverse(order: np.ndarray) -> np.ndarray:
    """The inverse permutation: inverse(order)[order[i]] = i."""
    return np.argsort(order)


def block_permutation(num_heads: int, d_k: int, head_order: np.ndarray) -> np.ndarray:
    """Feature order that moves whole head blocks: block h of the result is block
    head_order[h] of the input. Shapes: -> (num_heads * d_k,)."""
    return (np.asarray(head_order)[:, None] * d_k + np.arange(d_k)[None, :]).ravel()


def pad_sequence(a: np.ndarray, extra: np.ndarray, axis: int = 1) -> np.ndarray:
    """``a`` with ``extra`` appended along the sequence axis."""
    return np.concatenate([a, extra], axis=axis)
