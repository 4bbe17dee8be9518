"""Validation at the reference's boundary: every message names the argument and the value."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reference.precision import as_float


def as_array(name: str, a: object) -> np.ndarray:
    """``np.asarray(a)``; a ValueError naming ``name`` for what is not an array (a ragged list)."""
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} is not an array: {exc}") from None


def check_int(name: str, value: object, *, minimum: int) -> int:
    """An integer (not a bool) >= minimum."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(name: str, value: object) -> float:
    """A finite number > 0 (not a bool): ``eps``, ``layer_norm_eps``."""
    if isinstance(value, (bool, np.bool_)) or not (isinstance(value, (int, float, np.floating))
                                                   and 0 < value < float("inf")):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_even_width(d_model: int) -> int:
    """d_model even: the positional encoding pairs (sin, cos) per frequency."""
    if d_model % 2:
        raise ValueError(f"d_model must be even for the positional encoding, got {d_model}")
    return d_model


def check_heads(d_model: int, num_heads: int) -> None:
    """d_model splits into num_heads heads of equal width."""
    if d_model % num_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")


def check_shape(name: str, a: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    """``a.shape`` matches ``shape`` (None matches any size)."""
    ok = a.ndim == len(shape) and all(s is None or s == n for s, n in zip(shape, a.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    return a


def check_positions(name: str, a: np.ndarray) -> np.ndarray:
    """``a`` (B, S, ...) has at least one position: attention needs a key to attend to."""
    if a.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one position (S >= 1), got shape {a.shape}")
    return a


def floats(name: str, a: object, dtype: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """A floating input converted to ``dtype`` with the given shape."""
    return check_shape(name, as_float(name, a, dtype), shape)


def check_ids(name: str, ids: object, vocab_size: int, *, min_len: int = 0) -> np.ndarray:
    """Token ids: a (B, S) integer array, S >= min_len, with every id in [0, vocab_size)."""
    ids = as_array(name, ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {ids.dtype}")
    check_shape(name, ids, (None, None))
    if ids.shape[1] < min_len:
        raise ValueError(f"{name} must have at least {min_len} position(s), got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)].flat[0]
        raise ValueError(f"{name} must lie in [0, {vocab_size}), got id {bad}")
    return ids.astype(np.int64)


def check_mask(name: str, mask: object, shape: tuple[int, ...]) -> np.ndarray | None:
    """A boolean attention mask (True = may attend) that broadcasts to ``shape``."""
    if mask is None:
        return None
    mask = as_array(name, mask)
    if mask.dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean array (True = may attend), got dtype {mask.dtype}")
    try:
        ok = np.broadcast_shapes(mask.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} of shape {mask.shape} does not broadcast to {tuple(shape)}")
    return np.broadcast_to(mask, shape)


def check_padding_mask(name: str, mask: object, shape: tuple[int, int]) -> np.ndarray | None:
    """A (B, S) boolean padding mask, True = real token, at least one real token per row."""
    if mask is None:
        return None
    mask = as_array(name, mask)
    if mask.dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean array (True = real token), got dtype {mask.dtype}")
    check_shape(name, mask, shape)
    empty = np.flatnonzero(~mask.any(axis=-1))
    if empty.size:
        raise ValueError(f"{name} row {empty[0]} has no real token")
    return mask


def check_axis(name: str, axis: object, ndim: int) -> int:
    """An axis index valid for an array of ``ndim`` dimensions."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral) or not -ndim <= axis < ndim:
        raise ValueError(f"{name} must be an integer in [{-ndim}, {ndim}), got {axis!r}")
    return int(axis)


def float_tree(name: str, tree: Any, shapes: Any, dtype: str) -> Any:
    """Convert a nested dict/list of arrays to ``dtype``, checking keys and shapes against
    ``shapes`` (the same nesting with shape tuples as leaves)."""
    if isinstance(shapes, tuple):
        return floats(name, tree, dtype, shapes)
    if isinstance(shapes, Mapping):
        if not isinstance(tree, Mapping):
            raise ValueError(f"{name} must be a dict with keys {sorted(shapes)}, got {type(tree).__name__}")
        missing = sorted(set(shapes) - set(tree))
        if missing:
            raise ValueError(f"{name} is missing keys {missing}")
        return {key: float_tree(f"{name}[{key!r}]", tree[key], sub, dtype) for key, sub in shapes.items()}
    assert isinstance(shapes, Sequence)
    if not isinstance(tree, Sequence) or isinstance(tree, (str, bytes)) or len(tree) != len(shapes):
        got = len(tree) if isinstance(tree, Sequence) and not isinstance(tree, (str, bytes)) else type(tree).__name__
        raise ValueError(f"{name} must be a list of {len(shapes)} layers, got {got}")
    return [float_tree(f"{name}[{i}]", t, s, dtype) for i, (t, s) in enumerate(zip(tree, shapes))]
