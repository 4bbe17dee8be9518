"""Op features: the config variants and mask kinds a call of a contract op uses, what a backend
declares it supports (the optional ``supports(op, **features)`` of backends/CONTRACT.md), and
which of them a test exercised (for the report's coverage).

A feature is a keyword of one op with a few values (``OP_FEATURES``): the config's
``norm_first``, ``final_norm``, ``scale_embedding`` and ``activation``, and for every mask
argument (``mask``, ``self_mask``, ``cross_mask``, ``src_mask``, ``tgt_mask``) its kind:

    none        the argument is None
    all_real    a mask that is True everywhere (every token real, every key visible)
    right       key padding, real tokens first in every row (as lengths give it)
    left        key padding, real tokens last in every row (as left-padded prompts give it)
    holes       key padding of any other pattern: a padded token between real ones, or rows
                padded on different sides
    arbitrary   a full (..., Sq, Sk) attention pattern (causal, random, fully masked rows)

A padding mask is (B, S); a key-padding attention mask is one whose query axis has size 1
(B, 1, Sk). ``of_call`` reads the features off an actual call (conformance/kit/harness.py calls it
for every op call), so the report states what ran, not what a strategy meant to draw.

The strategies (conformance/kit/strategies.py) ask ``allowed`` which values they may draw: those
the backend of the running test supports for the test's op (``start`` is called by
conformance/kit/pytest_plugin.py around each test).
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import reference
from backends.contract import OPS
from backends.ops import ATTENTION_KINDS, KEY_PADDED_KINDS, PADDING_KINDS, RECORDS  # noqa: F401 - the kinds, for importers

FeatureValue = bool | str

OP_FEATURES: dict[str, dict[str, tuple[FeatureValue, ...]]] = {
    op: dict(r.features) for op, r in RECORDS.items() if r.features}
"""op -> feature -> its values (simplest first), from the op records (backends/ops.py). Ops not
listed have no features."""

MASK_ARGUMENTS = frozenset({"mask", "self_mask", "cross_mask", "src_mask", "tgt_mask"})
CONFIG_FEATURES = ("norm_first", "final_norm", "scale_embedding", "activation")

LABELS: dict[tuple[str, FeatureValue], str] = {
    ("norm_first", False): "post-LN", ("norm_first", True): "pre-LN",
    ("final_norm", True): "final_norm", ("final_norm", False): "no final_norm",
    ("scale_embedding", True): "scaled embedding", ("scale_embedding", False): "unscaled embedding",
}


def label(feature: str, value: FeatureValue) -> str:
    """How the report names a feature value: ``pre-LN``, ``gelu``, ``src_mask left``."""
    if (feature, value) in LABELS:
        return LABELS[(feature, value)]
    return f"{feature} {value}" if feature in MASK_ARGUMENTS else str(value)


# --- reading the features off a call ----------------------------------------------------------

def mask_kind(mask: Any, *, padding: bool) -> str:
    """The kind of a mask argument (see the module docstring). ``padding``: a (B, S) padding
    mask; otherwise an attention mask, key padding when its query axis has size 1."""
    if mask is None:
        return "none"
    mask = np.asarray(mask, dtype=bool)
    if mask.all():
        return "all_real"
    if not padding and (mask.ndim < 2 or mask.shape[-2] != 1):
        return "arbitrary"
    rows = mask.reshape(-1, mask.shape[-1])
    real_after_pad = (rows[:, 1:] & ~rows[:, :-1]).any(axis=-1)   # a real token right after a padded one
    pad_after_real = (~rows[:, 1:] & rows[:, :-1]).any(axis=-1)   # a padded token right after a real one
    if not real_after_pad.any():
        return "right"
    if not pad_after_real.any():
        return "left"
    return "holes"


def _signature(op: str) -> inspect.Signature:
    return inspect.signature(getattr(reference, op))


def of_call(op: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, FeatureValue]:
    """The features of ``op(*args, **kwargs)`` (NumPy inputs, as the harness has them), every
    feature of OP_FEATURES[op]; {} for an op without features or a call that does not bind."""
    wanted = OP_FEATURES.get(op)
    if not wanted:
        return {}
    try:
        bound = _signature(op).bind(*args, **kwargs)
    except TypeError:
        return {}
    bound.apply_defaults()
    arguments = bound.arguments
    found: dict[str, FeatureValue] = {}
    if "config" in arguments:
        try:
            config = reference.as_config(arguments["config"])
        except ValueError:  # not a valid config: the call itself will say so (or fail)
            config = None
        if config is not None:
            found.update({name: getattr(config, name) for name in CONFIG_FEATURES if name in wanted})
    if op == "feed_forward":
        found["activation"] = arguments["activation"]
    for name in wanted:
        if name in MASK_ARGUMENTS:
            found[name] = mask_kind(arguments.get(name), padding=name in ("src_mask", "tgt_mask"))
    return found


# --- what a backend supports ------------------------------------------------------------------

def supports(backend: Any, op: str, **features: FeatureValue) -> bool:
    """The backend's own ``supports(op, **features)``, True when it declares none (contract v1)."""
    declared = getattr(backend, "supports", None)
    return True if declared is None else bool(declared(op, **features))


_current: contextvars.ContextVar[tuple[Any, str] | None] = contextvars.ContextVar("conformance_features",
                                                                                   default=None)


def start(backend: Any, op: str | None) -> None:
    """The running test checks ``op`` on ``backend``: strategies draw what it supports."""
    _current.set(None if backend is None or op is None else (backend, op))


def stop() -> None:
    _current.set(None)


def current() -> tuple[Any, str | None]:
    """(backend, op) of the running test; (None, None) outside one."""
    return _current.get() or (None, None)


def compiles_per_shape(backend: Any) -> bool:
    """Whether ``backend`` compiles a program per input shape: its optional ``compiles_per_shape``
    attribute (backends/CONTRACT.md, "Compiled backends"); False when it declares none."""
    return bool(getattr(backend, "compiles_per_shape", False))


def compiled() -> bool:
    """``compiles_per_shape`` of the running test's backend; False outside a test."""
    return compiles_per_shape(current()[0])


def allowed(feature: str, values: Iterable[FeatureValue], *, op: str | None = None) -> list[FeatureValue]:
    """The ``values`` of ``feature`` the running test may draw: all of them outside a test,
    else those its backend supports for ``op`` (default: the test's op). A feature the op does
    not have (a config drawn for a test of feed_forward) is checked on that op only where
    the op has it."""
    values = list(values)
    current = _current.get()
    if current is None:
        return values
    backend, test_op = current
    op = op or test_op
    if feature not in OP_FEATURES.get(op, {}):
        return values
    return [v for v in values if supports(backend, op, **{feature: v})]


def allowed_masks(kinds: Iterable[str], *, argument: str | None) -> list[str]:
    """The mask ``kinds`` the running test may draw for ``argument`` of its op; with no
    argument named, those every mask argument of the op allows."""
    current = _current.get()
    kinds = list(kinds)
    if current is None:
        return kinds
    names = [argument] if argument else [n for n in OP_FEATURES.get(current[1], {}) if n in MASK_ARGUMENTS]
    for name in names:
        kinds = [str(k) for k in allowed(name, kinds)]
    return kinds


# --- requirements (--require OP[:FEATURE[=VALUE]]) ----------------------------------------------

@dataclass(frozen=True)
class Requirement:
    """An op that must be implemented, and optionally a feature (one value, or every value when
    ``value`` is None) that must have been tested."""

    op: str
    feature: str | None = None
    value: FeatureValue | None = None

    def wanted(self) -> list[tuple[str, FeatureValue]]:
        """The (feature, value) pairs this requirement asks to have been tested."""
        if self.feature is None:
            return []
        values = OP_FEATURES[self.op][self.feature] if self.value is None else (self.value,)
        return [(self.feature, v) for v in values]

    def __str__(self) -> str:
        if self.feature is None:
            return self.op
        return f"{self.op}:{self.feature}" + ("" if self.value is None else f"={_spell(self.value)}")


def _spell(value: FeatureValue) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_requirement(text: str) -> Requirement:
    """``op``, ``op:feature`` or ``op:feature=value``; ValueError naming what is unknown."""
    op, _, rest = text.strip().partition(":")
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; contract ops: {', '.join(OPS)}")
    if not rest:
        return Requirement(op)
    feature, has_value, spelled = rest.partition("=")
    features = OP_FEATURES.get(op, {})
    if feature not in features:
        raise ValueError(f"op {op!r} has no feature {feature!r}; its features: {', '.join(features) or 'none'}")
    if not has_value:
        return Requirement(op, feature)
    value = next((v for v in features[feature] if _spell(v) == spelled.lower()), None)
    if value is None:
        raise ValueError(f"feature {op}:{feature} has no value {spelled!r}; its values: "
                         + ", ".join(_spell(v) for v in features[feature]))
    return Requirement(op, feature, value)
