"""The contract's ops, one record each (in the spirit of torch's OpInfo): what every consumer of
the op list needs, in one place.

An ``OpRecord`` holds an op's name (its reference function is ``reference.<name>``, whose
signature is the contract's), the kind of its output (float values, or integer token ids
compared exactly), the positions of its output the contract specifies, a seeded case generator,
its invalid inputs, its features (the config variants and mask kinds it takes,
conformance/kit/features.py) and the ops it is made of (the diagnosis tries their variants).
``backends.contract.OPS`` is the registry's order; the numpy backend delegates every op, the
harness, the determinism test, the registered-case differential test, golden vectors and the
tolerance benchmark read the records. Adding an op touches six files: its function in
reference/layers.py or model.py (and that module's ``__all__``, which the package exports), a
record here, its error bound (conformance/tolerance/error_bounds.py), its row in CONTRACT.md, the
torch backend's method (backends/torch_ops.py or torch_backend.py), and its property module;
tests/test_ops_registry.py fails while a record is incomplete, and adds a dummy op that way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import reference

FLOAT, IDS = "float", "ids"
"""Output kinds: float values (compared within a tolerance) or token ids (compared exactly)."""

PADDING_KINDS: tuple[str, ...] = ("none", "all_real", "right", "left", "holes")
"""Kinds of a (B, S) padding mask, simplest first (conformance/kit/features.py)."""

ATTENTION_KINDS: tuple[str, ...] = ("none", "all_real", "arbitrary")
"""Kinds of an (..., Sq, Sk) attention mask of attention / attention_weights."""

KEY_PADDED_KINDS: tuple[str, ...] = PADDING_KINDS + ("arbitrary",)
"""Kinds of a mask that may be a full pattern or key padding (B, 1, Sk): multi-head attention
and the layers."""

BOOL = (False, True)
LAYER_FEATURES = {"norm_first": BOOL, "activation": ("relu", "gelu")}
STACK_FEATURES = {**LAYER_FEATURES, "final_norm": BOOL, "scale_embedding": (True, False)}


@dataclass
class Case:
    """One call of an op: its arguments and the positions of its output that are compared (None:
    every one)."""

    op: str
    args: list
    kwargs: dict = field(default_factory=dict)
    where: np.ndarray | None = None


@dataclass(frozen=True)
class OpRecord:
    """One contract op (the module docstring). ``case(rng)`` makes a small seeded case;
    ``compared(kwargs)`` the positions the contract specifies (None: all); ``error_inputs(case)``
    invalid variants of a case, each with the text its ValueError must contain."""

    name: str
    output: str
    case: Callable[[np.random.Generator], Case]
    compared: Callable[[Mapping[str, Any]], np.ndarray | None]
    error_inputs: Callable[[Case], list[tuple[list, dict, str]]]
    features: Mapping[str, tuple[Any, ...]]
    parts: tuple[str, ...]

    @property
    def reference(self) -> Callable[..., Any]:
        return getattr(reference, self.name)

    def sample(self, rng: np.random.Generator) -> Case:
        """``case(rng)`` with its compared positions filled in."""
        made = self.case(rng)
        return Case(made.op, made.args, made.kwargs, self.compared(made.kwargs))


# --- compared positions and invalid inputs ------------------------------------------------------

def everything(kwargs: Mapping[str, Any]) -> None:
    """Every output element is specified."""
    return None


def real_positions(mask_argument: str) -> Callable[[Mapping[str, Any]], np.ndarray | None]:
    """The output at padded query positions (False in ``mask_argument``, (B, S)) is unspecified:
    compare the real ones, over every feature of a (B, S, features) output."""
    def compared(kwargs: Mapping[str, Any]) -> np.ndarray | None:
        mask = kwargs.get(mask_argument)
        return None if mask is None else np.asarray(mask, dtype=bool)[:, :, None]
    return compared


def nan_input(case: Case) -> list[tuple[list, dict, str]]:
    """The case with a NaN in its first float array argument: the reference rejects it."""
    args = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in case.args]
    first = next(i for i, a in enumerate(args) if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating))
    args[first].flat[0] = np.nan
    return [(args, dict(case.kwargs), "NaN")]


def id_out_of_range(case: Case) -> list[tuple[list, dict, str]]:
    """The case with its first token id past its vocabulary: the reference rejects it."""
    args = list(case.args)
    args[0] = np.array(args[0], copy=True)
    args[0].flat[0] = 10**6
    return [(args, dict(case.kwargs), "must lie in")]


# --- seeded cases -------------------------------------------------------------------------------

CONFIG: dict[str, Any] = {"d_model": 8, "num_heads": 2, "d_ff": 16, "num_encoder_layers": 1,
                          "num_decoder_layers": 1, "src_vocab_size": 11, "tgt_vocab_size": 13}
"""The config of the cases: two heads, one layer per stack, post-LN, the contract's defaults."""
BATCH, S_SRC, S_TGT = 2, 5, 4


def _x(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(0.0, 1.0, shape)


def _padding(rng: np.random.Generator, seq_len: int) -> np.ndarray:
    """(BATCH, seq_len) key padding, True = real: row 0 left-padded by a drawn amount, row 1 real."""
    padded = int(rng.integers(1, seq_len))
    return np.stack([np.arange(seq_len) >= padded, np.ones(seq_len, dtype=bool)])


def _params(rng: np.random.Generator) -> dict[str, Any]:
    return reference.init_params(CONFIG, int(rng.integers(2**32)))


def _softmax(rng: np.random.Generator) -> Case:
    return Case("softmax", [_x(rng, BATCH, S_TGT, S_SRC)], {"axis": -1})


def _positional_encoding(rng: np.random.Generator) -> Case:
    return Case("positional_encoding", [int(rng.integers(1, 2 * S_SRC)), CONFIG["d_model"]])


def _embedding(rng: np.random.Generator) -> Case:
    ids = rng.integers(0, CONFIG["src_vocab_size"], (BATCH, S_SRC))
    return Case("embedding", [ids, _x(rng, CONFIG["src_vocab_size"], CONFIG["d_model"])])


def _layer_norm(rng: np.random.Generator) -> Case:
    d = CONFIG["d_model"]
    return Case("layer_norm", [_x(rng, BATCH, S_SRC, d), 1.0 + 0.1 * _x(rng, d), 0.1 * _x(rng, d), 1e-5])


def _attention_weights(rng: np.random.Generator) -> Case:
    q, k = _x(rng, BATCH, S_TGT, 4), _x(rng, BATCH, S_SRC, 4)
    return Case("attention_weights", [q, k], {"mask": _padding(rng, S_SRC)[:, None, :]})


def _attention(rng: np.random.Generator) -> Case:
    q, k, v = _x(rng, BATCH, S_TGT, 4), _x(rng, BATCH, S_SRC, 4), _x(rng, BATCH, S_SRC, 4)
    return Case("attention", [q, k, v], {"mask": _padding(rng, S_SRC)[:, None, :]})


def _multi_head_attention(rng: np.random.Generator) -> Case:
    d = CONFIG["d_model"]
    p = _params(rng)["encoder"][0]["self_attn"]
    return Case("multi_head_attention", [_x(rng, BATCH, S_TGT, d), _x(rng, BATCH, S_SRC, d), p, CONFIG["num_heads"]],
                {"mask": _padding(rng, S_SRC)[:, None, :]})


def _feed_forward(rng: np.random.Generator) -> Case:
    p = _params(rng)["encoder"][0]["ffn"]
    return Case("feed_forward", [_x(rng, BATCH, S_SRC, CONFIG["d_model"]), p], {"activation": "relu"})


def _encoder_layer(rng: np.random.Generator) -> Case:
    p = _params(rng)["encoder"][0]
    return Case("encoder_layer", [_x(rng, BATCH, S_SRC, CONFIG["d_model"]), p, CONFIG],
                {"mask": _padding(rng, S_SRC)[:, None, :]})


def _decoder_layer(rng: np.random.Generator) -> Case:
    d, p = CONFIG["d_model"], _params(rng)["decoder"][0]
    return Case("decoder_layer", [_x(rng, BATCH, S_TGT, d), _x(rng, BATCH, S_SRC, d), p, CONFIG],
                {"self_mask": reference.causal_mask(S_TGT), "cross_mask": _padding(rng, S_SRC)[:, None, :]})


def _ids(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return (rng.integers(0, CONFIG["src_vocab_size"], (BATCH, S_SRC)),
            rng.integers(0, CONFIG["tgt_vocab_size"], (BATCH, S_TGT)))


def _encode(rng: np.random.Generator) -> Case:
    src, _ = _ids(rng)
    return Case("encode", [src, _params(rng), CONFIG], {"src_mask": _padding(rng, S_SRC)})


def _decode(rng: np.random.Generator) -> Case:
    _, tgt = _ids(rng)
    memory = _x(rng, BATCH, S_SRC, CONFIG["d_model"])
    return Case("decode", [tgt, memory, _params(rng), CONFIG],
                {"src_mask": _padding(rng, S_SRC), "tgt_mask": _padding(rng, S_TGT)})


def _forward(rng: np.random.Generator) -> Case:
    src, tgt = _ids(rng)
    return Case("forward", [src, tgt, _params(rng), CONFIG],
                {"src_mask": _padding(rng, S_SRC), "tgt_mask": _padding(rng, S_TGT)})


def _greedy_decode(rng: np.random.Generator) -> Case:
    src, _ = _ids(rng)
    return Case("greedy_decode", [src, _params(rng), CONFIG, 6, 0, 1], {"src_mask": _padding(rng, S_SRC)})


# --- the registry -------------------------------------------------------------------------------

def _record(name: str, case: Callable[[np.random.Generator], Case], *, output: str = FLOAT,
            compared: Callable[[Mapping[str, Any]], np.ndarray | None] = everything,
            error_inputs: Callable[[Case], list[tuple[list, dict, str]]] = nan_input,
            features: Mapping[str, tuple[Any, ...]] | None = None, parts: tuple[str, ...] = ()) -> OpRecord:
    return OpRecord(name, output, case, compared, error_inputs, features or {}, parts)


RECORDS: dict[str, OpRecord] = {r.name: r for r in (
    _record("softmax", _softmax),
    _record("positional_encoding", _positional_encoding,
            error_inputs=lambda case: [([-1, case.args[1]], {}, "seq_len")]),
    _record("embedding", _embedding, error_inputs=id_out_of_range),
    _record("layer_norm", _layer_norm),
    _record("attention", _attention, features={"mask": ATTENTION_KINDS}, parts=("attention_weights",)),
    _record("attention_weights", _attention_weights, features={"mask": ATTENTION_KINDS}, parts=("softmax",)),
    _record("multi_head_attention", _multi_head_attention, features={"mask": KEY_PADDED_KINDS},
            parts=("attention",)),
    _record("feed_forward", _feed_forward, features={"activation": ("relu", "gelu")}),
    _record("encoder_layer", _encoder_layer, features={**LAYER_FEATURES, "mask": KEY_PADDED_KINDS},
            parts=("multi_head_attention", "feed_forward", "layer_norm")),
    _record("decoder_layer", _decoder_layer,
            features={**LAYER_FEATURES, "self_mask": KEY_PADDED_KINDS, "cross_mask": KEY_PADDED_KINDS},
            parts=("multi_head_attention", "feed_forward", "layer_norm")),
    _record("encode", _encode, compared=real_positions("src_mask"), error_inputs=id_out_of_range,
            features={**STACK_FEATURES, "src_mask": PADDING_KINDS},
            parts=("encoder_layer", "positional_encoding", "embedding", "layer_norm")),
    _record("decode", _decode, compared=real_positions("tgt_mask"), error_inputs=id_out_of_range,
            features={**STACK_FEATURES, "src_mask": PADDING_KINDS, "tgt_mask": PADDING_KINDS},
            parts=("decoder_layer", "positional_encoding", "embedding", "layer_norm")),
    _record("forward", _forward, compared=real_positions("tgt_mask"), error_inputs=id_out_of_range,
            features={**STACK_FEATURES, "src_mask": PADDING_KINDS, "tgt_mask": PADDING_KINDS},
            parts=("encode", "decode")),
    _record("greedy_decode", _greedy_decode, output=IDS, error_inputs=id_out_of_range,
            features={**STACK_FEATURES, "src_mask": PADDING_KINDS}, parts=("forward",)),
)}
"""name -> record, in the contract's order."""


def validate(record: OpRecord) -> list[str]:
    """What is wrong with a record (empty: complete): its reference function, output kind, case
    (the reference must accept it), compared positions, invalid inputs (the reference must reject
    each, naming the problem), features and parts."""
    problems = []
    if not callable(getattr(reference, record.name, None)):
        return [f"{record.name}: no reference.{record.name}"]
    if record.output not in (FLOAT, IDS):
        problems.append(f"{record.name}: output {record.output!r} is neither {FLOAT!r} nor {IDS!r}")
    case = record.sample(np.random.default_rng(0))
    if case.op != record.name:
        problems.append(f"{record.name}: its case is of {case.op!r}")
    try:
        out = np.asarray(record.reference(*case.args, **case.kwargs))
    except Exception as exc:  # noqa: BLE001 - any failure is the record's problem
        return problems + [f"{record.name}: the reference rejects its case: {type(exc).__name__}: {exc}"]
    if case.where is not None and not _fits(case.where.shape, out.shape):
        problems.append(f"{record.name}: compared positions {case.where.shape} do not fit the output {out.shape}")
    errors = record.error_inputs(case)
    if not errors:
        problems.append(f"{record.name}: no error inputs")
    for args, kwargs, match in errors:
        try:
            record.reference(*args, **kwargs)
            problems.append(f"{record.name}: the reference accepts an error input (expected {match!r})")
        except ValueError as exc:
            if match not in str(exc):
                problems.append(f"{record.name}: an error input raised {exc!r}, not naming {match!r}")
    unknown = [p for p in record.parts if p not in RECORDS]
    if unknown:
        problems.append(f"{record.name}: unknown parts {unknown}")
    if any(not values for values in record.features.values()):
        problems.append(f"{record.name}: a feature without values")
    return problems


def _fits(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target``."""
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False
