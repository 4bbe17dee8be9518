"""The tolerance model: what a backend's result is compared with, and how closely.

One rule for every op and dtype (derivation and measurements: conformance/TOLERANCES.md)::

    tol_i = FACTOR * max(E_base, E_pert)_row(i)  +  FLOOR * u * max|ref|_row(i)

- ``ref``: the float64 reference on the inputs *as the backend holds them* (every float input
  rounded to the backend's dtype first, ``rounded_inputs``), so input rounding is not charged
  to the backend.
- ``E_base = |ref(dtype) - ref|``: the error of the same-precision baseline, the reference's
  equations evaluated naively at the dtype (FlashAttention's rule).
- ``E_pert = max over DRAWS draws of |ref_perturbed - ref|``: the reference re-evaluated in
  float64 with every value it stores (its inputs and each function's result: exactly where
  the baseline rounds) multiplied by (1 + u r), r ~ U(-1, 1), fixed seed. Backward-error
  reasoning: a stable implementation is exact for data perturbed at this level at each stage,
  so this carries the conditioning (the softmax's amplification of score errors by |s_ij|)
  that a lucky baseline misses.
- ``_row``: the maximum over the row axis (one token's features, one query's keys, one
  position's logits), so one element's lucky small error never sets its bound.
- float64 has no higher precision to measure its own errors against: E_base and E_pert are
  measured at float32 and scaled by u(float64) / u(float32) = 2^-29 (first-order rounding
  error is proportional to u), times sqrt(n), n the longest axis of any float input: the
  float32 measurement used NumPy's BLAS, and libraries' summation orders differ in error by
  up to the probabilistic factor sqrt(n) of a length-n reduction (Higham & Mary 2019).

Measuring is staged: with ``actual`` given, ``expected`` stops as soon as ``actual`` is within
the tolerance computed so far (the floor, then + E_base, then + E_pert over 2 and then all
DRAWS draws). Each stage only raises the tolerance, so the verdict is the full rule's; the
tolerance returned may be smaller than the full rule's, and the reported error/tolerance
ratio is then an upper bound of the full rule's ratio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import reference
from reference.precision import perturbed, rounded

FACTOR = 4.0
"""Multiple of the measured error scale a correct backend may reach (FlashAttention uses 2-4)."""

FLOOR = 16.0
"""Floor in units of u times the row's largest |ref|: a handful of roundings of the output."""

DRAWS = 8
"""Perturbed re-evaluations; E_pert is the largest output change among them."""

DRAW_STAGES = (2, DRAWS)
"""How many draws are measured before each staged re-check."""

SEED = 20240605
"""Seed of the perturbation draws: the tolerance is a deterministic function of the inputs."""

PROXY = {"float64": "float32"}
"""Where the error scale of a dtype with no higher-precision ground truth is measured."""

HALF_PRECISIONS = ("float16", "bfloat16")
"""Precisions whose rounding can land on either side of layer norm's step over two features
(see ``min_d_model``)."""


@dataclass(frozen=True)
class Expected:
    """The value a backend must reproduce, its per-element tolerance (same shape), and the
    error scales measured for it (None when the staged check did not need them)."""

    value: np.ndarray
    tol: np.ndarray
    baseline_error: np.ndarray | None = None
    perturbation_error: np.ndarray | None = None
    draws: int = 0


# --- inputs ------------------------------------------------------------------------------------

def map_floats(fn: Callable[[np.ndarray], np.ndarray], tree: Any) -> Any:
    """``tree`` (nested dicts, lists, tuples) with ``fn`` applied to every floating array leaf;
    ids, masks, configs and Python scalars pass through unchanged."""
    if isinstance(tree, np.ndarray) and np.issubdtype(tree.dtype, np.floating):
        return fn(tree)
    if isinstance(tree, Mapping):
        return {k: map_floats(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(map_floats(fn, v) for v in tree)
    return tree


def rounded_inputs(tree: Any, dtype: str) -> Any:
    """Every float leaf rounded to ``dtype`` and held in float64: exactly representable in
    ``dtype``, so the backend's ``asarray`` is exact and backend and reference see the same
    numbers."""
    return map_floats(lambda a: rounded(a, dtype).astype(np.float64), tree)


# --- the rule ---------------------------------------------------------------------------------

def reference_value(op: str, args: list | tuple, kwargs: Mapping[str, Any] | None = None) -> np.ndarray:
    """``reference.<op>(*args, **kwargs)`` in float64."""
    return np.asarray(getattr(reference, op)(*args, **dict(kwargs or {})), dtype=np.float64)


def expected(op: str, args: list | tuple, kwargs: Mapping[str, Any] | None = None, *, dtype: str,
             axis: int = -1, value: np.ndarray | None = None, actual: np.ndarray | None = None,
             where: np.ndarray | None = None) -> Expected:
    """The float64 reference of ``reference.<op>(*args, **kwargs)`` and the tolerance of a
    backend computing in ``dtype``.

    ``args``/``kwargs`` must already be rounded to ``dtype`` (``rounded_inputs``); ``axis`` is
    the output's row axis (the softmax axis for softmax, else the last). ``value`` is the
    reference result if already known. With ``actual`` (the backend's float64 result, compared
    where ``where`` is True), measuring stops at the first stage that accepts it (module doc).
    """
    fn, kwargs = getattr(reference, op), dict(kwargs or {})
    value = reference_value(op, args, kwargs) if value is None else value
    floor = FLOOR * reference.unit_roundoff(dtype) * row_max(_magnitude(value), axis)
    floor = np.broadcast_to(floor, value.shape)
    if _accepts(actual, value, floor, where):
        return Expected(value, floor)
    measured_at = PROXY.get(dtype, dtype)
    u = reference.unit_roundoff(measured_at)
    scale = reference.unit_roundoff(dtype) / u
    if dtype in PROXY:
        scale *= np.sqrt(longest_axis([args, kwargs]))
    with np.errstate(all="ignore"):
        baseline_error = _abs_diff(np.asarray(fn(*args, **kwargs, dtype=measured_at), dtype=np.float64), value) * scale
    tol = floor + FACTOR * row_max(baseline_error, axis)
    if _accepts(actual, value, tol, where):
        return Expected(value, tol, baseline_error)
    rng, perturbation_error, done = np.random.default_rng(SEED), np.zeros_like(value), 0
    for draws in DRAW_STAGES:
        for _ in range(draws - done):
            with np.errstate(all="ignore"), perturbed(lambda a: a * (1.0 + u * rng.uniform(-1.0, 1.0, np.shape(a)))):
                moved = np.asarray(fn(*args, **kwargs), dtype=np.float64)
            perturbation_error = np.maximum(perturbation_error, _abs_diff(moved, value) * scale)
        done = draws
        tol = floor + FACTOR * row_max(np.maximum(baseline_error, perturbation_error), axis)
        if _accepts(actual, value, tol, where):
            break
    return Expected(value, tol, baseline_error, perturbation_error, done)


def longest_axis(tree: Any) -> int:
    """The longest axis of any float array in ``tree`` (1 if none): a bound on the length of
    the reductions an op can perform over its inputs' axes."""
    lengths: list[int] = [1]
    map_floats(lambda a: lengths.append(max(a.shape, default=1)) or a, tree)
    return max(lengths)


def row_max(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """max over ``axis``, kept as a length-1 axis; a 0-d or empty array is its own row max."""
    a = np.asarray(a, dtype=np.float64)
    return a if a.ndim == 0 or a.size == 0 else np.max(a, axis=axis, keepdims=True)


def _magnitude(value: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(value), np.abs(value), 0.0)


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b|; 0 where a == b (equal infinities included), inf where exactly one is not finite."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
    return np.where(a == b, 0.0, np.where(np.isnan(diff), np.inf, diff))


def _accepts(actual: np.ndarray | None, value: np.ndarray, tol: np.ndarray, where: np.ndarray | None) -> bool:
    """Whether ``actual`` is within ``tol`` of ``value`` at every compared position (False
    without an ``actual``: then every stage is measured)."""
    if actual is None:
        return False
    inside = _abs_diff(np.asarray(actual, dtype=np.float64), value) <= tol
    if where is not None:
        inside |= ~np.broadcast_to(np.asarray(where, dtype=bool), value.shape)
    return bool(inside.all())


# --- compared positions -----------------------------------------------------------------------

def query_positions(padding_mask: np.ndarray | None) -> np.ndarray | None:
    """The ``where`` mask of an op's (B, S, features) output under a (B, S) padding mask: the
    contract leaves outputs at padded query positions unspecified, so only real positions are
    compared. None (compare everything) without a mask."""
    return None if padding_mask is None else np.asarray(padding_mask, dtype=bool)[:, :, None]


def min_d_model(dtype: str) -> int:
    """The smallest d_model drawn for the layer and model ops at ``dtype``: 4 at float16 and
    bfloat16, else 2. Layer norm over two features is +-gamma + beta, a step in x0 - x1; in
    the residual stream a correct half-precision backend's rounding can land on the wrong
    side of the step (measured: 5 of 1,600 bfloat16 cases, TOLERANCES.md part 7), and no
    error estimate from a few samples sees which rows."""
    return 4 if dtype in HALF_PRECISIONS else 2


def margin_tolerance(logits_tol: np.ndarray) -> float:
    """How far apart two logits of one position may be and still swap order in a correct
    backend: each may move by its tolerance in opposite directions, so 2 * tol (the tolerance
    is constant along the vocabulary axis). Shapes: (V,) -> scalar."""
    return float(2.0 * np.max(logits_tol))


def describe() -> str:
    """The rule in one line, for reports."""
    return (f"tol = {FACTOR:g} * max(E_base, E_pert)_row + {FLOOR:g} * u * max|ref|_row "
            f"(E_pert: max over {DRAWS} perturbed re-evaluations; float64 measured at float32, "
            "scaled by 2^-29 sqrt(n))")
