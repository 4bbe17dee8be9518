"""Seeded masks for the adapter tests (the Hypothesis suites use conformance.kit.strategies)."""

from __future__ import annotations

import numpy as np


def padding_mask(rng: np.random.Generator, batch: int, seq_len: int, *, right: bool = False) -> np.ndarray:
    """(batch, seq_len), True = real token, at least one per row; ``right``: real tokens first."""
    if right:
        return np.arange(seq_len)[None, :] < rng.integers(1, seq_len + 1, (batch, 1))
    mask = rng.random((batch, seq_len)) < 0.6
    mask[np.arange(batch), rng.integers(seq_len, size=batch)] = True
    return mask


def random_mask(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A random (..., Sq, Sk) mask in which every query row keeps at least one key."""
    mask = rng.random(shape) < 0.6
    mask[..., 0] = True
    return mask
