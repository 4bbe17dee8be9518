"""The tolerance model of the differential tests: what a backend's result is compared with,
and how closely (derivation, constants and measurements: conformance/tolerance/TOLERANCES.md).

Per element i of an op's output, for a backend computing in ``dtype``::

    |actual_i - ref_i| <= tol_i = SAFETY * bound_i(dtype) + tiny(dtype)

- ``ref``: the float64 reference on the inputs *as the backend holds them* (every float input
  rounded to the backend's dtype first, ``rounded_inputs``), so input rounding is nobody's
  error.
- ``bound_i(dtype)``: the first-order forward error bound of a correct implementation that
  stores values in ``dtype`` and accumulates in it (float16 and bfloat16: in float32), propagated through the reference's equations in float64
  (``conformance.tolerance.error_bounds``): reductions charge ``min(n, LAMBDA sqrt(n)) u sum|terms|``,
  elementwise functions their condition number plus a few ulp, softmax amplifies logit errors
  by its weights, layer norm divides by sigma. It is a deterministic function of (op, inputs,
  dtype): nothing measured on the host (BLAS kernel, threads, library versions) enters it.
- ``SAFETY = 2``: the bound counts the roundings of the equations as written; a correct
  implementation may round more often (torch rounds ``x @ W`` and again ``+ b``; a
  half-precision kernel stores partial results), and a correctly rounded output alone can
  reach the bound of an output with nothing else to charge. Twice the bound keeps every
  correct implementation measured at or below half of its tolerance.
- the float64 reference's own rounding (it is float64, not exact) is added to every rounding
  the bound charges: at float64 it is half of the tolerance, below it is negligible.
- ``tiny(dtype)``: the dtype's smallest normal number, for results that underflow (a
  softmax weight of 1e-300 is 0 in float32, and flush-to-zero is a legitimate choice).

Over the whole compared tensor, a second check keeps the suite sensitive to small
*systematic* errors that stay inside every per-element bound (a tanh GELU, a misplaced eps,
a float32 table in a float64 backend): with at least ``MIN_COUNT`` compared elements,
``rms_i(|actual_i - ref_i| / tol_i) <= RMS_LIMIT`` (TOSA's conformance verifier bounds the sum
of squared normalised errors the same way).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import reference
from conformance.tolerance import error_bounds
from reference.params import map_floats
from reference.precision import arithmetic, rounded, smallest_normal

SAFETY = 2.0
"""Multiple of the first-order bound a correct implementation may reach (module doc)."""

RMS_LIMIT = 0.5
"""Largest root-mean-square of err/tol over a compared tensor (per element the limit is 1).
Every correct implementation stays within half of each element's tolerance (SAFETY = 2); on
average it must too, even one whose every element sat at that worst. A correctly rounded
output with nothing else to charge spreads over [0, 1/2]: 0.29; measured at most 0.26
(layer norm at bfloat16 on mean-offset rows)."""

MIN_COUNT = 64
"""Compared elements from which the root-mean-square check applies: below, one unlucky
element dominates the mean."""

HALF_PRECISIONS = ("float16", "bfloat16")
"""Precisions whose rounding can land on either side of layer norm's step over two features
(see ``min_d_model``)."""


@dataclass(frozen=True)
class Expected:
    """The value a backend must reproduce and its per-element tolerance (same shape)."""

    value: np.ndarray
    tol: np.ndarray


# --- inputs ------------------------------------------------------------------------------------

def rounded_inputs(tree: Any, dtype: str) -> Any:
    """Every float leaf rounded to ``dtype`` and held in float64: exactly representable in
    ``dtype``, so the backend's ``asarray`` is exact and backend and reference see the same
    numbers."""
    return map_floats(lambda a: rounded(a, dtype).astype(np.float64), tree)


# --- the rule ---------------------------------------------------------------------------------

def reference_value(op: str, args: list | tuple, kwargs: Mapping[str, Any] | None = None) -> np.ndarray:
    """``reference.<op>(*args, **kwargs)`` in float64."""
    return np.asarray(getattr(reference, op)(*args, **dict(kwargs or {})), dtype=np.float64)


def rounding(dtype: str) -> error_bounds.Rounding:
    """How a correct backend at ``dtype`` rounds, plus the float64 reference's own rounding."""
    u64 = reference.unit_roundoff("float64")
    return error_bounds.Rounding(store=reference.unit_roundoff(dtype) + u64,
                                 acc=reference.unit_roundoff(arithmetic(dtype)) + u64)


def tiny(dtype: str) -> float:
    """The smallest normal number of ``dtype``: the absolute floor for underflowed results."""
    return smallest_normal(dtype)


def expected(op: str, args: list | tuple, kwargs: Mapping[str, Any] | None = None, *, dtype: str,
             value: np.ndarray | None = None) -> Expected:
    """The float64 reference of ``reference.<op>(*args, **kwargs)`` and the per-element
    tolerance of a backend computing in ``dtype`` (module doc). ``args``/``kwargs`` must
    already be rounded to ``dtype`` (``rounded_inputs``); ``value`` is the reference result if
    already known."""
    value = reference_value(op, args, kwargs) if value is None else value
    return Expected(value, tolerance(op, args, kwargs, dtype=dtype))


def tolerance(op: str, args: list | tuple, kwargs: Mapping[str, Any] | None = None, *, dtype: str) -> np.ndarray:
    """The per-element tolerance of a backend computing ``op`` in ``dtype`` on these inputs
    (already rounded to ``dtype``): SAFETY x the first-order bound + tiny (module doc)."""
    return SAFETY * error_bounds.bound(op, args, kwargs, rounding(dtype)).e + tiny(dtype)


def terms(op: str, args: list | tuple, kwargs: Mapping[str, Any] | None, *, dtype: str,
          index: tuple[int, ...]) -> str:
    """What set the tolerance of one output element (a failure's worst), by the rule's parts:
    ``SAFETY x bound + tiny``, and the bound split into what the reductions' accumulation
    (dot products, sums, means: ``Rounding.acc``) and the stored values' roundings
    (``Rounding.store``) contribute, each as a multiple of ``u |ref|``. A tolerance of many
    ``u |ref|`` comes from cancellation or amplification upstream (a large logit, a small
    sigma), one of a few from the element's own rounding: a real error exceeds either."""
    r = rounding(dtype)
    full = error_bounds.bound(op, args, kwargs, r)
    by_acc = error_bounds.bound(op, args, kwargs, error_bounds.Rounding(store=0.0, acc=r.acc)).e[index]
    by_store = error_bounds.bound(op, args, kwargs, error_bounds.Rounding(store=r.store, acc=0.0)).e[index]
    e, v, u = float(full.e[index]), float(full.v[index]), reference.unit_roundoff(dtype)
    scale = u * abs(v)
    share = "" if scale == 0 else f" = {e / scale:.3g} u |ref|"
    return (f"tolerance {SAFETY * e + tiny(dtype):.3g} = {SAFETY:g} x bound {e:.3g}{share} + tiny {tiny(dtype):.3g}; "
            f"the bound from the reductions' accumulation alone {float(by_acc):.3g}, from the stored roundings alone "
            f"{float(by_store):.3g} (u = {u:.3g}, |ref| = {abs(v):.3g})")


def error_ratio(actual: np.ndarray, expected: np.ndarray, tol: np.ndarray | float) -> np.ndarray:
    """|actual - expected| / tol per element (``tol`` broadcasts): 0 where the two are equal
    (equal infinities included), inf where the error is NaN or exceeds a zero tolerance."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = np.where(actual == expected, 0.0, np.abs(actual - expected))
        ratio = np.where(err == 0, 0.0, err / tol)
    return np.where(np.isnan(ratio), np.inf, ratio)


def rms_ratio(ratio: np.ndarray) -> float:
    """Root mean square of the compared elements' err/tol (0 for none)."""
    return float(np.sqrt(np.mean(np.square(ratio)))) if ratio.size else 0.0


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
    backend: each may move by its tolerance in opposite directions, so at most twice the
    largest tolerance of the position's logits. Shapes: (V,) -> scalar."""
    return float(2.0 * np.max(logits_tol))


def describe() -> str:
    """The rule in one line, for reports."""
    return (f"tol = {SAFETY:g} x the first-order error bound of the reference's equations at u(dtype) + u(float64) "
            f"(reductions: min(n, {error_bounds.LAMBDA:g} sqrt(n)) u sum|terms|; libm {error_bounds.LIBM:g} u, "
            f"erf {error_bounds.ERF:g} u) "
            f"+ tiny(dtype); rms(err/tol) <= {RMS_LIMIT:g} over >= {MIN_COUNT} elements")
