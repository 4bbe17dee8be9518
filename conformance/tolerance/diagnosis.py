"""Diagnosis on failure: name the convention a failing backend follows.

When a differential comparison fails (conformance/differential/_compare.py), the failing
case's inputs and the backend's output are kept; at the end of the test (only the last
failure's: the shrunk example, which Hypothesis replays last) the case is re-evaluated under
the named variants of the reference (reference/variants.py, listed in conformance/tolerance/VARIANTS.md):

1. every variant that can change this op at this dtype (its ops lie under the op) is
   evaluated once in float64; a structural one that leaves the compared values bit for bit
   unchanged cannot explain the failure and is dropped (a numerical one is kept: its own
   rounding, which the tolerance charges, may differ where its float64 value does not);
2. in catalogue order, each remaining variant is measured with the tolerance model itself
   (the contract's per-element tolerance and root-mean-square check, conformance/tolerance/model.py,
   against the variant's value: a variant changes what is computed, not how it rounds); a
   structural variant is only
   measured when its values are closer to the backend's than the contract's are. The first
   under which the backend's output conforms is the diagnosis (a NaN where the variant has
   a NaN counts as agreeing; where nothing else is left to compare, the diagnosis says that
   the case cannot tell the variant from another cause of NaN: ``nan_only``);
3. for the layers, the model ops and the positional encoding, when no single variant explains
   it, pairs of the remaining variants are tried the same way.

Variants of the explaining one's equation under which the output conforms too (``alike``:
e.g. ``mask-fill-1e9`` and ``mask-finfo-min``, which agree unless a score is below -1e9) are
reported with it. ``CONFORMANCE_DIAGNOSIS=off``
turns the diagnosis off (for timing it).
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.ops import RECORDS
from conformance.tolerance.model import MIN_COUNT, RMS_LIMIT, error_ratio, expected, reference_value, rms_ratio
from reference import variants
from reference.config import as_config
from reference.precision import unit_roundoff
from reference.variants import CATALOGUE, Variant


@dataclass(frozen=True)
class Diagnosis:
    """What the diagnosis of a failing comparison found (``diagnose``): the
    variant id(s) under which the backend's output conforms (empty: no known convention),
    other variants of that equation the output also conforms under, whether that agreement
    rests on NaNs alone (every compared element NaN on both sides), how many variant
    evaluations were measured, the seconds it took, an error if it could not run, and the
    sentence for reports."""

    op: str
    variants: tuple[str, ...] = ()
    alike: tuple[str, ...] = ()
    nan_only: bool = False
    tried: int = 0
    seconds: float = 0.0
    error: str = ""
    text: str = ""

    def explains(self, variant: str) -> bool:
        """Whether ``variant`` explains the failure (it, or another of its equation it also conforms under)."""
        return variant in self.variants or variant in self.alike

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diagnosis:
        return cls(**{**data, "variants": tuple(data.get("variants", ())), "alike": tuple(data.get("alike", ()))})


PARTS: dict[str, tuple[str, ...]] = {op: r.parts for op, r in RECORDS.items() if r.parts}
"""op -> the contract ops the reference builds it from (directly), from the op records."""

PAIR_OPS = frozenset({"positional_encoding", "encoder_layer", "decoder_layer", "encode", "decode", "forward"})
"""Ops whose failures may need two conventions at once: the model-level ops, and the positional
encoding (a table layout and its storage precision: Marian's [sin | cos] halves in float32)."""

SCREEN = 1000.0
"""A variant is measured only if it brings the backend's output within SCREEN times the
contract's largest tolerance, or of u times the output's largest magnitude (a variant's own
tolerance is of that order: both come from the same rounding model), and, for a structural
variant, nearer than the contract's value."""

OFF = "off"


def enabled() -> bool:
    """False when ``CONFORMANCE_DIAGNOSIS=off``."""
    return os.environ.get("CONFORMANCE_DIAGNOSIS", "").strip().lower() != OFF


def parts(op: str) -> frozenset[str]:
    """``op`` and every op it is built from, transitively."""
    found = {op}
    for part in PARTS.get(op, ()):
        found |= parts(part)
    return frozenset(found)


def candidates(op: str, dtype: str) -> list[Variant]:
    """The variants that can change ``op``'s result at ``dtype``, in catalogue order."""
    under = parts(op)
    return [v for v in CATALOGUE.values() if dtype in v.dtypes and under & set(v.ops)]


def diagnose(op: str, args: Sequence[Any], kwargs: Mapping[str, Any], actual: np.ndarray, want: Any,
             *, dtype: str, where: np.ndarray | None = None) -> Diagnosis | None:
    """The variant(s) of the reference under which ``actual`` (the backend's float64 result on
    the dtype-rounded ``args``/``kwargs``) conforms; ``want`` is the contract's Expected
    (``.value``, ``.tol``) it failed against (see the module docstring). None when the
    diagnosis is off."""
    contract = np.asarray(want.value, np.float64)
    if not enabled() or np.shape(actual) != contract.shape:
        return None
    start = time.perf_counter()
    compared = np.ones(contract.shape, bool) if where is None else np.broadcast_to(where, contract.shape)
    tol = np.broadcast_to(np.asarray(want.tol, np.float64), contract.shape)
    scale = np.where(np.isfinite(actual), np.abs(actual), 0.0)[compared].max(initial=0.0)
    reach = SCREEN * max(float(np.where(np.isfinite(tol), tol, 0.0)[compared].max(initial=0.0)),
                         unit_roundoff(dtype) * float(scale))  # a case whose tolerance is 0 (all-zero rows)
    case = _Case(op, list(args), dict(kwargs), np.asarray(actual, np.float64), contract, tol, dtype, compared, reach)
    try:
        found, alike, nan_only, tried = case.search()
    except Exception as exc:  # noqa: BLE001 - a diagnosis never hides the failure it explains
        return Diagnosis(op=op, error=f"{type(exc).__name__}: {exc}", text="diagnosis failed",
                         seconds=round(time.perf_counter() - start, 3))
    return Diagnosis(op=op, variants=found, alike=alike, nan_only=nan_only, tried=tried,
                     text=describe(found, alike, tried, nan_only=nan_only), seconds=round(time.perf_counter() - start, 3))


def describe(found: Sequence[str], alike: Sequence[str] = (), tried: int = 0, *, nan_only: bool = False) -> str:
    """``conforms under variant `pe-sin-cos-halves` (...)``, or ``no known convention``; with
    ``nan_only``, that the case's NaNs are all it rests on."""
    if not found:
        return f"no known convention ({tried} variant evaluation(s) measured)"
    names = " + ".join(CATALOGUE[i].describe() for i in found)
    same = f"; indistinguishable here from {', '.join(f'`{i}`' for i in alike)}" if alike else ""
    if nan_only:
        return (f"NaN where the reference under variant{'s' if len(found) > 1 else ''} {names} is NaN{same}; "
                "every compared element is NaN, so this case cannot tell that variant from another cause of NaN")
    return f"conforms under variant{'s' if len(found) > 1 else ''} {names}{same}"


def _row_max(tol: np.ndarray) -> np.ndarray:
    """Each element's tolerance replaced by its row's (last axis) largest."""
    return np.broadcast_to(np.max(tol, axis=-1, keepdims=True), tol.shape) if tol.ndim else tol


def relevant(v: Variant, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    """False when the case's config makes ``v`` a no-op (saves evaluating a model-level op
    for nothing): GELU variants under ReLU, embedding-scale variants against the config's
    choice, the final-norm variant without final norms, head layouts with one head."""
    config = next((a for a in [*args, *kwargs.values()] if isinstance(a, Mapping) and "d_model" in a), None)
    if config is None:
        return True
    c = as_config(config)
    return {"gelu-tanh": c.activation == "gelu", "embedding-unscaled": c.scale_embedding,
            "embedding-always-scaled": not c.scale_embedding, "final-norm-missing": c.final_norm,
            "heads-interleaved": c.num_heads > 1, "attention-scale-sqrt-d-model": c.num_heads > 1}.get(v.id, True)


class _Case:
    """One failing comparison and its re-evaluations."""

    def __init__(self, op: str, args: list, kwargs: dict, actual: np.ndarray, contract: np.ndarray, tol: np.ndarray,
                 dtype: str, compared: np.ndarray, reach: float) -> None:
        self.op, self.args, self.kwargs, self.actual, self.contract = op, args, kwargs, actual, contract
        self.tol, self.dtype, self.compared, self.reach = tol, dtype, compared, reach
        self.contract_distance = self.distance(contract)

    def search(self) -> tuple[tuple[str, ...], tuple[str, ...], bool, int]:
        """(explaining ids, alike ids, whether only NaNs agree, measured evaluations): singles
        lazily, in catalogue order, stopping at the first that explains; then pairs."""
        changed: list[tuple[Variant, np.ndarray]] = []
        tried = 0
        for v in candidates(self.op, self.dtype):
            value = self.value((v.id,)) if relevant(v, self.args, self.kwargs) else None
            if value is None or (not v.numerical and self.same(value, self.contract)):
                continue  # a numerical variant may round differently where its float64 value is the contract's
            changed.append((v, value))
            if self.promising(value, v.numerical):
                tried += 1
                if self.conforms((v.id,), value):
                    return (v.id,), self.alike(v, value), self.nan_only(value), tried
        if self.op in PAIR_OPS:
            halfway = {v.id for v, value in changed if self.distance(value) <= self.contract_distance / 2}
            for (a, value_a), (b, value_b) in itertools.combinations(changed, 2):
                if not {a.id, b.id} & halfway:
                    continue  # a pair worth trying has a member that alone halves the distance
                value = self.value((a.id, b.id))
                if self.same(value, value_a) or self.same(value, value_b):
                    continue  # one overrides the other (one equation), or the second adds nothing here
                if self.promising(value, a.numerical and b.numerical):
                    tried += 1
                    if self.conforms((a.id, b.id), value):
                        return (a.id, b.id), (), self.nan_only(value), tried
        return (), (), False, tried

    def alike(self, found: Variant, value: np.ndarray) -> tuple[str, ...]:
        """The other variants of ``found``'s equation under which the output conforms too (on
        a shrunk case, e.g. a lone fully masked row, finite fills and additive masks agree)."""
        return tuple(v.id for v in candidates(self.op, self.dtype)
                     if v is not found and v.equation == found.equation and relevant(v, self.args, self.kwargs)
                     and (self.same(other := self.value((v.id,)), value)
                          or (self.promising(other, v.numerical) and self.conforms((v.id,), other))))

    def value(self, ids: tuple[str, ...]) -> np.ndarray:
        """The float64 reference of the case under the variants ``ids``."""
        with variants.active(*ids), np.errstate(all="ignore"):
            return reference_value(self.op, self.args, self.kwargs)

    def conforms(self, ids: tuple[str, ...], value: np.ndarray) -> bool:
        """Whether the backend's output is within the tolerance model of ``value``, the case's
        reference under the variants ``ids``: every element, and the root mean square of
        err/tol; positions where both are NaN agree. For a variant that changes rounding only
        (``numerical``) the tolerance is the bound model's for the variant's own equations
        (conformance/tolerance/error_bounds.py charges e.g. the fast variance's cancellation), per
        element; otherwise the contract's, taken as its row's largest (a structural variant
        may move values along the row: PE halves, heads), and at least the row's largest of
        the same case without its masks (``unmasked_tol``): a masking convention reduces over
        at most every key, so that bound covers its rounding where the contract's is 0 (a
        fully masked row is exactly b_o by the contract; averaged values under finfo.min)."""
        where = self.compared & ~(np.isnan(self.actual) & np.isnan(value))
        numerical = [i for i in ids if CATALOGUE[i].numerical]
        own = self.own_tol(ids, value) if numerical else np.zeros_like(self.tol)
        if len(numerical) == len(ids):
            tol = own
        else:  # structural, with a numerical one's rounding if paired (Marian's [sin | cos] table in float32)
            tol = np.maximum.reduce([_row_max(self.tol), _row_max(self.unmasked_tol), _row_max(own)])
        ratio = error_ratio(self.actual, value, tol)[where]
        return bool(np.all(ratio <= 1.0)) and (ratio.size < MIN_COUNT or rms_ratio(ratio) <= RMS_LIMIT)

    def nan_only(self, value: np.ndarray) -> bool:
        """Every compared element is NaN in both the backend's output and ``value``: their
        agreement says only that both are NaN (a d = 1 layer-norm row without eps is 0/0, and
        so is the unbiased variance's d - 1 = 0)."""
        return bool(np.all((np.isnan(self.actual) & np.isnan(value))[self.compared]))

    def own_tol(self, ids: tuple[str, ...], value: np.ndarray) -> np.ndarray:
        """The tolerance model of the variants' own equations (the bound charges what they round)."""
        with variants.active(*ids), np.errstate(all="ignore"):
            return np.broadcast_to(expected(self.op, self.args, self.kwargs, dtype=self.dtype, value=value).tol,
                                   value.shape)

    @functools.cached_property
    def unmasked_tol(self) -> np.ndarray:
        """The contract's tolerance of the case with every mask argument dropped (0 without masks)."""
        masks = [k for k, v in self.kwargs.items() if k.endswith("mask") and v is not None]
        if not masks:
            return np.zeros_like(self.tol)
        return np.broadcast_to(expected(self.op, self.args, {**self.kwargs, **dict.fromkeys(masks)},
                                        dtype=self.dtype).tol, self.tol.shape)

    def same(self, a: np.ndarray, b: np.ndarray) -> bool:
        """``a`` and ``b`` agree bit for bit at the compared positions (NaN agreeing with NaN)."""
        return a.shape == b.shape and bool(np.array_equal(a[self.compared], b[self.compared], equal_nan=True))

    def distance(self, value: np.ndarray) -> float:
        """The largest |actual - value| at the compared positions (NaN or inf against a number: inf)."""
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(self.actual - value)
        diff = np.where((self.actual == value) | (np.isnan(self.actual) & np.isnan(value)), 0.0,
                        np.where(np.isnan(diff), np.inf, diff))
        return float(diff[self.compared].max(initial=0.0))

    def promising(self, value: np.ndarray, numerical: bool) -> bool:
        """Worth measuring: within reach of the backend's output and, unless it only changes
        rounding, nearer to it than the contract's value."""
        return self.distance(value) <= self.reach and (numerical or self.closer(value))

    def closer(self, value: np.ndarray) -> bool:
        """The backend's output is nearer ``value`` than the contract's value (a screen: a
        structural variant that explains the failure is)."""
        return self.distance(value) < self.contract_distance
