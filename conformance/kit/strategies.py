"""Hypothesis strategies for the suite: configs, params, float arrays, token ids and masks.

Every strategy takes keyword-only size caps and draws its simplest option first, so failures
shrink to small, readable examples (one head, length-1 sequences, unit scale, no mask).
Config variants and mask kinds are drawn only among those the running test's backend supports
for its op (conformance/kit/features.py; all of them for a backend that declares nothing).
On a backend that compiles a program per shape, each example's sizes and static options are
one of ``FAMILIES`` fixed structures (``Family``), so that its compiled programs are reused.
Float arrays are drawn as (scale, seed, rounded) and made with NumPy's generator, so large
arrays stay cheap to generate. ``rounded`` is the third choice, simplest first: the first
example, one in ROUNDED_ONE_IN of the others and every one the shrinker tries has its values
rounded to two decimals of its scale, so a shrunk failure reads ``[0.53, -1.27]`` rather than
seventeen digits. Rounded, not integers or zeros: a degenerate array (constant rows, ties)
would let the shrinker trade the failure it found for another one.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference
from conformance.kit import features
from conformance.kit.harness import not_implemented

NO_SHRINK_VARIABLE = "PROPERTIES_NO_SHRINK"
"""Environment variable: when set (to anything but "" or "0"), tests skip Hypothesis' shrink and
explain phases and report the first failing example as found. For runs where only the verdict
matters (tests/test_properties_catch_mutants.py), where shrinking dominates."""


def budget(share: float) -> settings:
    """Settings running ``share`` of the active profile's max_examples (at least 10), so that a
    suite's tests are sized by their cost (each suite sets its shares: properties/strategies.py,
    conformance/differential/_compare.py). Applied at import (collection) time, after the
    profile is loaded."""
    phases = settings.default.phases
    if os.environ.get(NO_SHRINK_VARIABLE, "") not in ("", "0"):
        phases = tuple(phase for phase in phases if phase not in (Phase.shrink, Phase.explain))
    return settings(max_examples=max(10, math.ceil(settings.default.max_examples * share)), phases=phases)


FAMILIES = 8
"""How many structures a compiled backend's examples are drawn from (``Family``)."""


class Family:
    """The structure of one example on a backend that compiles a program per shape
    (``compiles_per_shape``, backends/CONTRACT.md): every size and static choice the example
    draws (``sizes``, ``shapes``, ``choices``) is a fixed function of the family's number, of
    the options offered and of how many times the same options were offered before in the
    example. So examples of one family, in any test that draws the same way, meet the same
    shapes and config flags, and one compiled program serves all of them; the array values
    are drawn freshly either way.

    Family 0 picks the simplest option everywhere (a failure shrinks towards it). The others
    come in blocks of as many families as there are options: within a block the pick steps
    through every option, from an offset that a hash of (block, options, occurrence) sets, so
    that every option occurs and the pairings of one choice with another vary from block to
    block."""

    def __init__(self, number: int) -> None:
        self.number = number
        self._offered: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Family({self.number})"

    def pick(self, options: Sequence[Any]) -> Any:
        """One of ``options`` (non-empty), as this family picks it at this point of the example."""
        key = repr(tuple(options))
        occurrence = self._offered.get(key, 0)
        self._offered[key] = occurrence + 1
        if self.number == 0:
            return options[0]
        block, step = divmod(self.number - 1, len(options))
        offset = int.from_bytes(hashlib.sha256(f"{block}/{occurrence}/{key}".encode()).digest()[:8], "big")
        return options[(offset + step) % len(options)]


_family = st.shared(st.builds(Family, st.integers(0, FAMILIES - 1)), key="conformance.kit.strategies.Family")


@st.composite
def _picked(draw: st.DrawFn, options: tuple[Any, ...]) -> Any:
    return draw(_family).pick(options)


def choices(options: Sequence[Any]) -> st.SearchStrategy[Any]:
    """One of ``options`` (the first the simplest): ``st.sampled_from``, or on a backend that
    compiles per shape the example's ``Family`` pick. For the options that key a compiled
    program (config flags, head counts); call it at draw time, inside a composite."""
    return _picked(tuple(options)) if features.compiled() else st.sampled_from(options)


@functools.cache
def sizes(lo: int, hi: int) -> st.SearchStrategy[int]:
    """A size (a batch, a length, a width, a count) in [lo, hi]: any of them, or for a backend
    that compiles a program per shape (``compiles_per_shape``, backends/CONTRACT.md) one of
    ``size_menu(lo, hi)`` as the example's ``Family`` picks it, so that each compiled program
    serves many examples. The values drawn into arrays of those shapes vary as much either
    way. Strategies are cached: building one inside every draw made the gate 40 % slower."""
    return _sizes(lo, hi)


@st.composite
def _sizes(draw: st.DrawFn, lo: int, hi: int) -> int:
    return draw(_family).pick(size_menu(lo, hi)) if features.compiled() else draw(_integers(lo, hi))


@functools.cache
def _integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


def size_menu(lo: int, hi: int) -> list[int]:
    """The sizes a compiled backend meets in [lo, hi]: the smallest, the largest and the one
    halfway (an odd one where the range allows), simplest first."""
    middle = (lo + hi) // 2
    if hi - lo > 2:
        middle |= 1  # odd: 1..16 gives 9, not 8
    return sorted({lo, middle, hi})


@functools.cache
def shapes(*, min_dims: int, max_dims: int, max_side: int) -> st.SearchStrategy[tuple[int, ...]]:
    """An array shape of min_dims..max_dims axes of 1..max_side each (``hnp.array_shapes``), or
    on a compiled backend the example's ``Family`` pick of the number of axes and of each side
    (from ``size_menu(1, max_side)``)."""
    return _shapes(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side),
                   min_dims, max_dims, max_side)


@st.composite
def _shapes(draw: st.DrawFn, any_shape: st.SearchStrategy[tuple[int, ...]], min_dims: int, max_dims: int,
            max_side: int) -> tuple[int, ...]:
    if not features.compiled():
        return draw(any_shape)
    family = draw(_family)
    ndim = family.pick(range(min_dims, max_dims + 1))
    return tuple(family.pick(size_menu(1, max_side)) for _ in range(ndim))


SCALES = (1.0, 0.1, 10.0)
seeds = st.integers(0, 2**32 - 1)


ROUNDED_ONE_IN = 16
"""One drawn array in this many (and the simplest) has two-decimal values (the module docstring)."""


@st.composite
def arrays(draw: st.DrawFn, shape: tuple[int, ...], *, scales: tuple[float, ...] = SCALES) -> np.ndarray:
    """float64 N(0, scale^2) values of the given shape; scale drawn from ``scales`` (first =
    simplest); the simplest choice, and one in ROUNDED_ONE_IN, rounded to two decimals of it."""
    scale = draw(st.sampled_from(scales))
    values = np.random.default_rng(draw(seeds)).normal(0.0, scale, shape)
    return two_decimals(values, scale) if draw(st.integers(0, ROUNDED_ONE_IN - 1)) == 0 else values


def two_decimals(values: np.ndarray, scale: float) -> np.ndarray:
    """``values`` rounded to multiples of scale / 100: ``[0.53, -1.27]`` at scale 1."""
    return np.round(values / scale, 2) * scale


@st.composite
def configs(draw: st.DrawFn, *, max_d_model: int = 16, max_heads: int = 4, max_d_ff: int = 16,
            max_layers: int = 2, max_vocab: int = 12, min_layers: int = 0) -> dict[str, Any]:
    """A valid config dict (backends/CONTRACT.md): d_model even and divisible by num_heads."""
    d_model = 2 * draw(sizes(1, max_d_model // 2))
    num_heads = draw(choices([h for h in range(1, max_heads + 1) if d_model % h == 0]))
    config: dict[str, Any] = {
        "d_model": d_model,
        "num_heads": num_heads,
        "d_ff": draw(sizes(1, max_d_ff)),
        "num_encoder_layers": draw(sizes(min_layers, max_layers)),
        "num_decoder_layers": draw(sizes(min_layers, max_layers)),
        "src_vocab_size": draw(sizes(3, max_vocab)),
        "tgt_vocab_size": draw(sizes(3, max_vocab)),
        "layer_norm_eps": draw(choices([1e-5, 1e-6, 1e-3])),
        "norm_first": draw(supported("norm_first", [False, True])),
        "scale_embedding": draw(supported("scale_embedding", [True, False])),
        "activation": draw(supported("activation", ["relu", "gelu"])),
    }
    final_norms = features.allowed("final_norm", [True, False])
    options = [f for f in (None, True, False) if (config["norm_first"] if f is None else f) in final_norms]
    final_norm = draw(choices(options) if options else _none_supported("final_norm"))
    if final_norm is not None:
        config["final_norm"] = final_norm
    return config


def supported(feature: str, values: list[Any]) -> st.SearchStrategy[Any]:
    """One of ``values`` of the feature that the running test's backend supports for its op
    (all of them outside a test); the first supported one is the simplest."""
    options = features.allowed(feature, values)
    return choices(options) if options else _none_supported(feature)


def _none_supported(feature: str) -> st.SearchStrategy[Any]:
    """Drawing it rejects the example: the backend supports no value of ``feature`` for the
    test's op (not implemented)."""
    return st.builds(_not_supported, st.just(feature))


def _not_supported(feature: str) -> None:
    backend, op = features.current()
    not_implemented(backend, op, f"supports no value of {feature}")


@st.composite
def params(draw: st.DrawFn, config: dict[str, Any]) -> dict[str, Any]:
    """A float64 parameter set for ``config`` (reference.init_params with a drawn seed)."""
    return reference.init_params(config, draw(seeds))


@st.composite
def attention_params(draw: st.DrawFn, d_model: int) -> dict[str, np.ndarray]:
    """{w_q, b_q, ..., w_o, b_o} for multi-head attention of width d_model."""
    config = {"d_model": d_model, "num_heads": 1, "d_ff": 1, "num_encoder_layers": 1,
              "num_decoder_layers": 0, "src_vocab_size": 1, "tgt_vocab_size": 1}
    return draw(params(config))["encoder"][0]["self_attn"]


@st.composite
def token_ids(draw: st.DrawFn, batch: int, seq_len: int, vocab_size: int) -> np.ndarray:
    """(B, S) int64 ids in [0, vocab_size)."""
    return draw(hnp.arrays(np.int64, (batch, seq_len), elements=st.integers(0, vocab_size - 1)))


MIN_LENGTH = {"none": 1, "all_real": 1, "right": 2, "left": 2, "holes": 3}
"""The shortest sequence on which each padding kind exists (a hole: real, padded, real)."""


@st.composite
def padding_masks(draw: st.DrawFn, batch: int, seq_len: int, *, argument: str | None = None) -> np.ndarray | None:
    """None, or a (B, S) bool mask, True = real token, each row with at least one real token:
    every token real, right padding (lengths), left padding, or holes (row 0 real, padded,
    ..., real; the other rows any pattern). The kind is drawn among those the sequence length
    allows and the backend supports for ``argument`` of the test's op (conformance/kit/features.py),
    so that every op taking padding masks meets every pattern."""
    kinds = features.allowed_masks([k for k in features.PADDING_KINDS if seq_len >= MIN_LENGTH[k]],
                                   argument=argument)
    kind = draw(st.sampled_from(kinds) if kinds else _none_supported(argument or "mask"))
    return None if kind == "none" else _padding(draw, kind, batch, seq_len)


def _padding(draw: st.DrawFn, kind: str, batch: int, seq_len: int) -> np.ndarray:
    """A (B, S) padding mask of ``kind`` (not "none"; seq_len >= MIN_LENGTH[kind])."""
    if kind == "all_real":
        return np.ones((batch, seq_len), dtype=bool)
    if kind in ("right", "left"):
        lengths = draw(hnp.arrays(np.int64, (batch,), elements=st.integers(1, seq_len)))
        lengths[0] = min(lengths[0], seq_len - 1)                       # row 0 is padded
        positions = np.arange(seq_len)[None, :]
        return positions < lengths[:, None] if kind == "right" else positions >= seq_len - lengths[:, None]
    mask = draw(hnp.arrays(np.bool_, (batch, seq_len)))
    mask[np.arange(batch), draw(hnp.arrays(np.int64, (batch,), elements=st.integers(0, seq_len - 1)))] = True
    mask[0, [0, 1, -1]] = True, False, True                             # row 0 has a hole
    return mask


@st.composite
def key_padded_masks(draw: st.DrawFn, batch: int, s_q: int, s_k: int, *,
                     argument: str | None = None) -> np.ndarray | None:
    """A mask of multi-head attention or a layer: None, key padding (B, 1, Sk) of every
    padding pattern, or a (B, Sq, Sk) pattern (random, or with a fully masked query row), each
    kind as likely, among those the backend supports for ``argument`` of the test's op."""
    padding = features.allowed_masks([k for k in features.PADDING_KINDS[1:] if s_k >= MIN_LENGTH[k]],
                                     argument=argument)
    patterns = ["random", "fully_masked_row"] if features.allowed_masks(["arbitrary"], argument=argument) else []
    kinds = (["none"] if features.allowed_masks(["none"], argument=argument) else []) + padding + patterns
    kind = draw(st.sampled_from(kinds) if kinds else _none_supported(argument or "mask"))
    if kind == "none":
        return None
    if kind in padding:
        return _padding(draw, kind, batch, s_k)[:, None, :]
    return _attention(draw, kind, (batch, s_q, s_k))


ATTENTION_MASK_KINDS = {"none": "none", "all": "all_real", "random": "arbitrary", "fully_masked_row": "arbitrary"}
"""How attention_masks' kinds are named among the features."""


@st.composite
def attention_masks(draw: st.DrawFn, shape: tuple[int, ...], *, argument: str | None = None) -> np.ndarray | None:
    """None, all True, random (70 % True), or random with one fully masked query row; the
    mask has exactly ``shape`` (..., Sq, Sk). Only kinds the backend supports for ``argument``
    of the test's op are drawn."""
    supported_kinds = features.allowed_masks(sorted(set(ATTENTION_MASK_KINDS.values())), argument=argument)
    kinds = [k for k, feature in ATTENTION_MASK_KINDS.items() if feature in supported_kinds]
    kind = draw(st.sampled_from(kinds) if kinds else _none_supported(argument or "mask"))
    return None if kind == "none" else _attention(draw, kind, shape)


def _attention(draw: st.DrawFn, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """An (..., Sq, Sk) attention mask of one of attention_masks' kinds (not "none")."""
    if kind == "all":
        return np.ones(shape, dtype=bool)
    mask = np.random.default_rng(draw(seeds)).random(shape) < 0.7
    if kind == "fully_masked_row":
        mask[..., draw(st.integers(0, shape[-2] - 1)), :] = False
    return mask
