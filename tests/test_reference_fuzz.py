"""Hypothesis-generated INVALID inputs to every reference op: the only acceptable outcome is a
ValueError whose message names the argument that is wrong.

Each strategy builds a valid call of one op (small sizes, a drawn config) and breaks exactly
one argument: a wrong shape or number of axes, NaN or an infinity, a non-numeric or ragged
array, ids out of range or of a float dtype, a mask of the wrong shape or dtype, a padding row
with no real token, a bad config value, a missing or mis-shaped parameter, a bad scalar
(axis, eps, num_heads, lengths, token ids, activation, dtype). NumPy warnings are errors here:
a warning, an IndexError, a TypeError, a NaN result or no error at all fails the test.
(tests/test_reference_errors.py pins the exact messages of hand-written cases.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import reference
from conformance.kit.strategies import configs

pytestmark = pytest.mark.filterwarnings("error")

Call = tuple[Callable[..., Any], list[Any], dict[str, Any], frozenset[str]]
"""(function, args, kwargs, the argument names any one of which the message must name)."""

small = st.integers(1, 3)
seeds = st.integers(0, 2**16)
INT_MAX = np.iinfo(np.int64).max


def values(draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(draw(seeds)).normal(0.0, 1.0, shape)


def names_argument(message: str, names: frozenset[str]) -> bool:
    """Whether ``message`` mentions one of ``names`` as a whole word (``p`` in ``p['w_1']``)."""
    return any(re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", message) for name in names)


def assert_rejected(call: Call) -> None:
    """``with pytest.raises(ValueError, match=<an argument's name>): fn(*args, **kwargs)``; any
    other exception or warning propagates (and fails the test)."""
    __tracebackhide__ = True
    fn, args, kwargs, names = call
    with pytest.raises(ValueError) as info:
        out = fn(*args, **kwargs)
        nan = isinstance(out, np.ndarray) and np.issubdtype(out.dtype, np.floating) and np.isnan(out).any()
        pytest.fail(f"{fn.__name__} accepted an invalid input (one of {sorted(names)}) and returned "
                    f"{'NaN' if nan else repr(out)[:200]}")
    assert names_argument(str(info.value), names), \
        f"{fn.__name__}: the ValueError does not name {' or '.join(sorted(names))}: {info.value}"


# --- broken values, by kind ---------------------------------------------------------------------

def ragged(a: np.ndarray) -> list[Any]:
    """A nested list that is not an array: one row a different length."""
    rows = np.atleast_2d(a).tolist()
    return [rows[0] + [0.0], *rows[1:]] if len(rows) > 1 else [rows[0], rows[0] + [0.0]]


@st.composite
def bad_floats(draw: st.DrawFn, a: np.ndarray, *, neg_inf_ok: bool = False) -> Any:
    """``a`` (a valid float array) with invalid content: NaN or an infinity somewhere, or not a
    real-valued array at all."""
    kinds = ["nan", "+inf", "strings", "complex", "bool", "object", "ragged", "none"]
    kind = draw(st.sampled_from(kinds if neg_inf_ok else [*kinds, "-inf"]))
    if kind in ("nan", "+inf", "-inf"):
        b = np.array(a, dtype=np.float64)
        if b.size == 0:
            return np.full((1,) * max(b.ndim, 1), np.nan)
        b.flat[draw(st.integers(0, b.size - 1))] = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}[kind]
        return b
    return {"strings": lambda: np.full(a.shape, "0.5"), "complex": lambda: a + 1j,
            "bool": lambda: a > 0, "object": lambda: np.array(a, dtype=object),
            "ragged": lambda: ragged(a), "none": lambda: None}[kind]()


def grown(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    """``shape`` with one more element along ``axis``."""
    s = list(shape)
    s[axis] += 1
    return tuple(s)


@st.composite
def bad_int(draw: st.DrawFn, *, minimum: int, also: tuple[Any, ...] = ()) -> Any:
    """Not an integer >= minimum."""
    return draw(st.sampled_from([minimum - 1, -INT_MAX, float(minimum + 1), True, str(minimum + 1), None,
                                 float("nan"), np.float64(minimum + 1), *also]))


@st.composite
def bad_ids(draw: st.DrawFn, ids: np.ndarray, vocab: int, *, min_len: int = 0) -> Any:
    """Token ids out of [0, vocab), of a non-integer dtype, of the wrong number of axes (or, for
    the model's ops, with no position at all)."""
    kinds = ["too_big", "negative", "huge", "float", "bool", "object", "1d", "3d", "ragged"]
    kind = draw(st.sampled_from(kinds + (["empty"] if min_len else [])))
    b = np.array(ids)
    index = tuple(draw(st.integers(0, n - 1)) for n in b.shape)
    if kind in ("too_big", "negative", "huge"):
        b[index] = {"too_big": vocab + draw(st.integers(0, 3)), "negative": -draw(st.integers(1, 3)),
                    "huge": INT_MAX}[kind]
        return b
    return {"float": lambda: b.astype(np.float64), "bool": lambda: b > 0, "object": lambda: b.astype(object),
            "1d": lambda: b.ravel(), "3d": lambda: b[..., None], "ragged": lambda: ragged(b),
            "empty": lambda: b[:, :0]}[kind]()


@st.composite
def bad_attention_mask(draw: st.DrawFn, shape: tuple[int, ...]) -> Any:
    """A mask that does not broadcast to ``shape``, or is not boolean."""
    kind = draw(st.sampled_from(["grown", "extra_axis", "int", "float", "object", "ragged"]))
    valid = np.ones(shape, dtype=bool)
    if kind == "grown":  # one axis 1 longer: >= 2 and not the target size, so no broadcasting
        return np.ones(grown(shape, draw(st.integers(0, len(shape) - 1))), dtype=bool)
    return {"extra_axis": lambda: np.ones((2, *shape), dtype=bool), "int": lambda: valid.astype(np.int64),
            "float": lambda: valid.astype(np.float64), "object": lambda: valid.astype(object),
            "ragged": lambda: ragged(valid)}[kind]()


@st.composite
def bad_padding_mask(draw: st.DrawFn, shape: tuple[int, int]) -> Any:
    """A (B, S) padding mask of another shape or dtype, or with a row of padding only."""
    kind = draw(st.sampled_from(["empty_row", "longer", "1d", "3d", "int", "object", "ragged"]))
    valid = np.ones(shape, dtype=bool)
    if kind == "empty_row":
        valid[draw(st.integers(0, shape[0] - 1))] = False
        return valid
    return {"longer": lambda: np.ones(grown(shape, 1), dtype=bool), "1d": lambda: valid[0],
            "3d": lambda: valid[..., None], "int": lambda: valid.astype(np.int64),
            "object": lambda: valid.astype(object), "ragged": lambda: ragged(valid)}[kind]()


BAD_CONFIG_VALUES: dict[str, tuple[Any, ...]] = {
    "d_model": (0, -2, 3, 2.0, True, "4", None),
    "num_heads": (0, -1, 1.0, True, None),
    "d_ff": (0, -1, 1.5, True, "8"),
    "num_encoder_layers": (-1, 1.0, True, None),
    "num_decoder_layers": (-1, 0.5, False),
    "src_vocab_size": (0, -3, 2.5, "7"),
    "tgt_vocab_size": (0, 3.0, None),
    "layer_norm_eps": (0.0, -1e-5, float("nan"), float("inf"), True, "1e-5", None),
    "norm_first": ("yes", 1, None, "False"),
    "final_norm": ("no", 0, 1.0),
    "scale_embedding": ("true", 2, None),
    "activation": ("swish", "RELU", None, 3, ("relu",)),
}


@st.composite
def bad_config(draw: st.DrawFn, config: dict[str, Any]) -> tuple[Any, frozenset[str]]:
    """``config`` with one bad value, a required key missing, an unknown key, or not a dict;
    and the names a message may give for it."""
    kind = draw(st.sampled_from(["value", "missing", "unknown", "not_a_dict", "heads"]))
    if kind == "value":
        key = draw(st.sampled_from(sorted(BAD_CONFIG_VALUES)))
        return {**config, key: draw(st.sampled_from(BAD_CONFIG_VALUES[key]))}, frozenset({key})
    if kind == "missing":
        key = draw(st.sampled_from(["d_model", "num_heads", "d_ff", "num_encoder_layers", "src_vocab_size"]))
        return {k: v for k, v in config.items() if k != key}, frozenset({"config", key})
    if kind == "unknown":
        key = draw(st.sampled_from(["dropout", "d_k", "Norm_first", 3]))
        return {**config, key: 0.1}, frozenset({"config", str(key)})
    if kind == "heads":  # a num_heads that does not divide d_model
        return {**config, "num_heads": config["d_model"] + 1}, frozenset({"num_heads", "d_model"})
    return draw(st.sampled_from([None, [config], "config.json", 3])), frozenset({"config"})


def leaves(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in leaves(v, (*path, k))]
    if isinstance(tree, list):
        return [p for i, v in enumerate(tree) for p in leaves(v, (*path, i))]
    return [path]


def replaced(tree: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    """A copy of ``tree`` with the leaf at ``path`` replaced (or its key deleted)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        copy = dict(tree)
        if delete and not rest:
            del copy[head]
        else:
            copy[head] = replaced(tree[head], rest, value, delete=delete)
        return copy
    copy = list(tree)
    copy[head] = replaced(tree[head], rest, value, delete=delete)
    return copy


@st.composite
def bad_params(draw: st.DrawFn, tree: dict[str, Any], name: str) -> tuple[Any, frozenset[str]]:
    """A parameter tree with one leaf missing, mis-shaped or invalid, a layer too many, or not a
    dict at all."""
    kind = draw(st.sampled_from(["shape", "content", "missing", "not_a_dict", "layers"]))
    names = frozenset({name})
    if kind == "layers" and any(isinstance(v, list) and v for v in tree.values()):
        key = draw(st.sampled_from(sorted(k for k, v in tree.items() if isinstance(v, list) and v)))
        return {**tree, key: [*tree[key], tree[key][0]]}, names
    if kind == "not_a_dict":
        return draw(st.sampled_from([None, [tree], "weights.npz"])), names
    path = draw(st.sampled_from(leaves(tree)))
    leaf = tree
    for key in path:
        leaf = leaf[key]
    if kind == "missing":
        return replaced(tree, path, None, delete=True), names
    if kind == "content":
        return replaced(tree, path, draw(bad_floats(leaf))), names
    shape = draw(st.sampled_from([grown(leaf.shape, i) for i in range(leaf.ndim)] + [(*leaf.shape, 1), leaf.shape[1:]]))
    return replaced(tree, path, np.zeros(shape)), names


@st.composite
def bad_dtype(draw: st.DrawFn) -> Any:
    return draw(st.sampled_from(["float8", "float128", "int32", "", None, 32, ["float32"]]))


# --- one invalid call per op --------------------------------------------------------------------

def pick(draw: st.DrawFn, options: dict[str, Callable[[], Any]]) -> tuple[str, Any, frozenset[str]]:
    """Draw which argument to break (in the listed order, first = simplest) and break it."""
    name = draw(st.sampled_from(list(options)))
    made = options[name]()
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[1], frozenset):
        return name, made[0], made[1]
    return name, made, frozenset({name})


@st.composite
def invalid_softmax(draw: st.DrawFn) -> Call:
    x = values(draw, tuple(draw(st.lists(small, min_size=1, max_size=3))))
    call = {"x": x, "axis": -1}
    name, value, names = pick(draw, {
        "x": lambda: draw(bad_floats(x, neg_inf_ok=True)),  # -inf is a valid softmax input
        "axis": lambda: draw(st.sampled_from([x.ndim, -x.ndim - 1, 0.0, True, None, "last"])),
        "empty": lambda: (np.zeros((*x.shape[:-1], 0)), frozenset({"x"})),
        "dtype": lambda: draw(bad_dtype())})
    if name == "empty":
        return reference.softmax, [value], {}, names
    return reference.softmax, [], {**call, name: value}, names


@st.composite
def invalid_positional_encoding(draw: st.DrawFn) -> Call:
    name, value, names = pick(draw, {
        "seq_len": lambda: draw(bad_int(minimum=0)),
        "d_model": lambda: draw(bad_int(minimum=2, also=(3, 7, 1))),
        "dtype": lambda: draw(bad_dtype())})
    return reference.positional_encoding, [], {"seq_len": 3, "d_model": 4, name: value}, names


@st.composite
def invalid_embedding(draw: st.DrawFn) -> Call:
    vocab, d = draw(small), draw(small)
    ids = np.random.default_rng(draw(seeds)).integers(0, vocab, (draw(small), draw(small)))
    table = values(draw, (vocab, d))
    name, value, names = pick(draw, {
        "ids": lambda: draw(bad_ids(ids, vocab)),
        "table": lambda: draw(st.one_of(bad_floats(table), st.just(table[0]), st.just(table[None]))),
        "dtype": lambda: draw(bad_dtype())})
    return reference.embedding, [], {"ids": ids, "table": table, name: value}, names


@st.composite
def invalid_layer_norm(draw: st.DrawFn) -> Call:
    d = draw(small)
    x, gamma, beta = values(draw, (draw(small), d)), 1.0 + 0.1 * values(draw, (d,)), 0.1 * values(draw, (d,))
    name, value, names = pick(draw, {
        "x": lambda: draw(st.one_of(bad_floats(x), st.just(np.zeros(())), st.just(np.zeros((2, 0))))),
        "gamma": lambda: draw(st.one_of(bad_floats(gamma), st.just(np.ones(d + 1)), st.just(np.ones((1, d))))),
        "beta": lambda: draw(st.one_of(bad_floats(beta), st.just(np.zeros(d + 1)), st.just(np.float64(0.0)))),
        "eps": lambda: draw(st.sampled_from([0.0, -1e-5, float("nan"), float("inf"), True, "1e-5", None])),
        "dtype": lambda: draw(bad_dtype())})
    return reference.layer_norm, [], {"x": x, "gamma": gamma, "beta": beta, "eps": 1e-5, name: value}, names


@st.composite
def invalid_attention(draw: st.DrawFn, *, weights_only: bool = False) -> Call:
    batch, sq, sk, dk, dv = draw(small), draw(small), draw(small), draw(small), draw(small)
    q, k, v = values(draw, (batch, sq, dk)), values(draw, (batch, sk, dk)), values(draw, (batch, sk, dv))
    options = {
        "q": lambda: draw(st.one_of(bad_floats(q), st.just(q[0, 0]), st.just(values(draw, (batch, sq, dk + 1))))),
        "k": lambda: draw(st.one_of(bad_floats(k), st.just(k[0, 0]), st.just(values(draw, (batch, sk, dk + 1))),
                                    st.just(np.zeros((batch, 0, dk))))),
        "v": lambda: draw(st.one_of(bad_floats(v), st.just(v[0, 0]), st.just(values(draw, (batch, sk + 1, dv))))),
        "mask": lambda: draw(bad_attention_mask((batch, sq, sk))),
        "batch": lambda: (values(draw, (batch + 1, sq, dk)), frozenset({"q", "k", "v"})),  # q's leading axes
        "dtype": lambda: draw(bad_dtype())}
    call = {"q": q, "k": k, "v": v, "mask": None}
    if weights_only:
        del options["v"], call["v"]
    if batch == 1:  # then any batch of q broadcasts
        del options["batch"]
    name, value, names = pick(draw, options)
    fn = reference.attention_weights if weights_only else reference.attention
    return fn, [], {**call, ("q" if name == "batch" else name): value}, names


@st.composite
def valid_model(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    config = draw(configs(max_d_model=4, max_heads=2, max_d_ff=4, max_layers=1, max_vocab=5, min_layers=1))
    return config, reference.init_params(config, draw(seeds))


@st.composite
def invalid_multi_head_attention(draw: st.DrawFn) -> Call:
    config, params = draw(valid_model())
    d, batch, sq, sk = config["d_model"], draw(small), draw(small), draw(small)
    x_q, x_kv, p = values(draw, (batch, sq, d)), values(draw, (batch, sk, d)), params["encoder"][0]["self_attn"]
    name, value, names = pick(draw, {
        "x_q": lambda: draw(st.one_of(bad_floats(x_q), st.just(x_q[0]))),
        "x_kv": lambda: draw(st.one_of(bad_floats(x_kv), st.just(values(draw, (batch + 1, sk, d))),
                                       st.just(values(draw, (batch, sk, d + 1))), st.just(np.zeros((batch, 0, d))))),
        "p": lambda: draw(bad_params(p, "p")),
        "num_heads": lambda: draw(bad_int(minimum=1, also=(d + 1,))),
        "mask": lambda: draw(bad_attention_mask((batch, sq, sk))),
        "dtype": lambda: draw(bad_dtype())})
    call = {"x_q": x_q, "x_kv": x_kv, "p": p, "num_heads": config["num_heads"], "mask": None, name: value}
    return reference.multi_head_attention, [], call, names


@st.composite
def invalid_feed_forward(draw: st.DrawFn) -> Call:
    config, params = draw(valid_model())
    x, p = values(draw, (draw(small), draw(small), config["d_model"])), params["encoder"][0]["ffn"]
    name, value, names = pick(draw, {
        "x": lambda: draw(bad_floats(x)),
        "width": lambda: (values(draw, (2, config["d_model"] + 1)), frozenset({"x", "p"})),  # x's d_model or W_1's
        "p": lambda: draw(bad_params(p, "p")),
        "activation": lambda: draw(st.sampled_from(["swish", "RELU", None, 3, ["relu"]])),
        "dtype": lambda: draw(bad_dtype())})
    call = {"x": x, "p": p, "activation": "relu", ("x" if name == "width" else name): value}
    return reference.feed_forward, [], call, names


@st.composite
def invalid_encoder_layer(draw: st.DrawFn) -> Call:
    config, params = draw(valid_model())
    batch, s, d = draw(small), draw(small), config["d_model"]
    x, p = values(draw, (batch, s, d)), params["encoder"][0]
    name, value, names = pick(draw, {
        "x": lambda: draw(st.one_of(bad_floats(x), st.just(x[0]), st.just(values(draw, (batch, s, d + 2))),
                                    st.just(np.zeros((batch, 0, d))))),
        "p": lambda: draw(bad_params(p, "p")),
        "config": lambda: draw(bad_config(config)),
        "mask": lambda: draw(bad_attention_mask((batch, s, s))),
        "dtype": lambda: draw(bad_dtype())})
    return reference.encoder_layer, [], {"x": x, "p": p, "config": config, "mask": None, name: value}, names


@st.composite
def invalid_decoder_layer(draw: st.DrawFn) -> Call:
    config, params = draw(valid_model())
    batch, st_, ss, d = draw(small), draw(small), draw(small), config["d_model"]
    y, memory, p = values(draw, (batch, st_, d)), values(draw, (batch, ss, d)), params["decoder"][0]
    name, value, names = pick(draw, {
        "y": lambda: draw(st.one_of(bad_floats(y), st.just(y[0]), st.just(np.zeros((batch, 0, d))))),
        "memory": lambda: draw(st.one_of(bad_floats(memory), st.just(values(draw, (batch + 1, ss, d))),
                                         st.just(values(draw, (batch, ss, d + 2))), st.just(np.zeros((batch, 0, d))))),
        "p": lambda: draw(bad_params(p, "p")),
        "config": lambda: draw(bad_config(config)),
        "self_mask": lambda: draw(bad_attention_mask((batch, st_, st_))),
        "cross_mask": lambda: draw(bad_attention_mask((batch, st_, ss))),
        "dtype": lambda: draw(bad_dtype())})
    call = {"y": y, "memory": memory, "p": p, "config": config, "self_mask": None, "cross_mask": None, name: value}
    return reference.decoder_layer, [], call, names


def model_ids(draw: st.DrawFn, config: dict[str, Any], key: str, batch: int) -> np.ndarray:
    return np.random.default_rng(draw(seeds)).integers(0, config[key], (batch, draw(small)))


@st.composite
def invalid_model_op(draw: st.DrawFn, op: str) -> Call:
    """encode, decode, forward or greedy_decode with one argument broken."""
    config, params = draw(valid_model())
    batch = draw(small)
    src = model_ids(draw, config, "src_vocab_size", batch)
    tgt = model_ids(draw, config, "tgt_vocab_size", batch)
    memory = values(draw, (batch, src.shape[1], config["d_model"]))
    call: dict[str, Any] = {
        "encode": {"src_ids": src, "params": params, "config": config, "src_mask": None},
        "decode": {"tgt_ids": tgt, "memory": memory, "params": params, "config": config, "src_mask": None,
                   "tgt_mask": None},
        "forward": {"src_ids": src, "tgt_ids": tgt, "params": params, "config": config, "src_mask": None,
                    "tgt_mask": None},
        "greedy_decode": {"src_ids": src, "params": params, "config": config, "max_len": 3, "bos_id": 1,
                          "eos_id": 2, "src_mask": None},
    }[op]
    options: dict[str, Callable[[], Any]] = {
        "src_ids": lambda: draw(bad_ids(src, config["src_vocab_size"], min_len=1)),
        "tgt_ids": lambda: draw(bad_ids(tgt, config["tgt_vocab_size"], min_len=1)),
        "memory": lambda: draw(st.one_of(bad_floats(memory), st.just(memory[0]),
                                         st.just(values(draw, (batch, src.shape[1], config["d_model"] + 2))),
                                         st.just(np.zeros((batch, 0, config["d_model"]))))),
        "params": lambda: draw(bad_params(params, "params")),
        "config": lambda: draw(bad_config(config)),
        "src_mask": lambda: draw(bad_padding_mask(memory.shape[:2])),
        "tgt_mask": lambda: draw(bad_padding_mask(tgt.shape)),
        "max_len": lambda: draw(bad_int(minimum=1)),
        "bos_id": lambda: draw(bad_int(minimum=0, also=(config["tgt_vocab_size"],))),
        "eos_id": lambda: draw(bad_int(minimum=0, also=(config["tgt_vocab_size"] + 5,))),
        "dtype": lambda: draw(bad_dtype()),
    }
    name, value, names = pick(draw, {k: v for k, v in options.items() if k in call or k == "dtype"})
    return getattr(reference, op), [], {**call, name: value}, names


# --- the tests -----------------------------------------------------------------------------------

FUZZ = settings(max_examples=60, deadline=None)
TINY = {"d_model": 2, "num_heads": 1, "d_ff": 1, "num_encoder_layers": 1, "num_decoder_layers": 1,
        "src_vocab_size": 3, "tgt_vocab_size": 3}


@FUZZ
@given(call=invalid_softmax())
@example(call=(reference.softmax, [], {"x": np.array([1.0, np.inf])}, frozenset({"x"})))
@example(call=(reference.softmax, [[[1.0, 2.0], [1.0]]], {}, frozenset({"x"})))  # was numpy's bare ValueError
@example(call=(reference.softmax, [np.zeros(2)], {"dtype": ["float32"]}, frozenset({"dtype"})))  # was TypeError
def test_softmax_rejects_invalid_input(call: Call) -> None:
    assert_rejected(call)


@FUZZ
@given(call=invalid_positional_encoding())
def test_positional_encoding_rejects_invalid_input(call: Call) -> None:
    assert_rejected(call)


@FUZZ
@given(call=invalid_embedding())
def test_embedding_rejects_invalid_input(call: Call) -> None:
    assert_rejected(call)


@FUZZ
@given(call=invalid_layer_norm())
@example(call=(reference.layer_norm, [np.array([[1.0, np.inf]]), np.ones(2), np.zeros(2), 1e-5], {}, frozenset({"x"})))
@example(call=(reference.layer_norm, [np.ones((1, 2)), np.ones(2), np.zeros(2), True], {}, frozenset({"eps"})))
@example(call=(reference.layer_norm, [np.ones((1, 2)), np.ones(2), np.zeros(2), np.inf], {}, frozenset({"eps"})))
@example(call=(reference.layer_norm, [np.ones((1, 2)), np.array([np.inf, 1.0]), np.zeros(2), 1e-5], {},
               frozenset({"gamma"})))  # was inf out
def test_layer_norm_rejects_invalid_input(call: Call) -> None:
    assert_rejected(call)


@FUZZ
@given(call=invalid_attention())
@example(call=(reference.attention, [np.zeros((2, 3, 4)), np.zeros((2, 0, 4)), np.zeros((2, 0, 4))], {},
               frozenset({"k"})))
def test_attention_rejects_invalid_input(call: Call) -> None:
    assert_rejected(call)


@FUZZ
@given(call=invalid_attention(weights_only=True))
def test_attention_weights_rejects_invalid_input(call: Call) -> None:
    assert_rejected(call)


@FUZZ
@given(call=invalid_multi_head_attention())
def test_multi_head_attention_rejects_invalid_input(call: Call) -> None:
    assert_rejected(call)


@FUZZ
@given(call=invalid_feed_forward())
def test_feed_forward_rejects_invalid_input(call: Call) -> None:
    assert_rejected(call)


@FUZZ
@given(call=invalid_encoder_layer())
@example(call=(reference.encoder_layer, [np.zeros((1, 0, 2)), reference.init_params(TINY, 0)["encoder"][0], TINY],
               {}, frozenset({"x"})))  # was numpy's "zero-size array to reduction operation maximum"
def test_encoder_layer_rejects_invalid_input(call: Call) -> None:
    assert_rejected(call)


@FUZZ
@given(call=invalid_decoder_layer())
def test_decoder_layer_rejects_invalid_input(call: Call) -> None:
    assert_rejected(call)


@FUZZ
@pytest.mark.parametrize("op", ["encode", "decode", "forward", "greedy_decode"])
@given(data=st.data())
def test_model_ops_reject_invalid_input(op: str, data: st.DataObject) -> None:
    assert_rejected(data.draw(invalid_model_op(op), label="call"))


@FUZZ
@given(config=valid_model().flatmap(lambda model: bad_config(model[0])))
@example(config=({**TINY, "final_norm": 1.0}, frozenset({"final_norm"})))  # was accepted (and truthy)
@example(config=({**TINY, "norm_first": "no"}, frozenset({"norm_first"})))  # was accepted (and truthy)
@example(config=({**TINY, "layer_norm_eps": True}, frozenset({"layer_norm_eps"})))  # was accepted as 1
@example(config=({**TINY, 3: 0, "dropout": 0.1}, frozenset({"config"})))  # was a TypeError sorting the keys
def test_as_config_rejects_invalid_configs(config: tuple[Any, frozenset[str]]) -> None:
    assert_rejected((reference.as_config, [config[0]], {}, config[1]))


@pytest.mark.parametrize(("fn", "args", "name"), [
    (reference.causal_mask, [-1], "seq_len"),
    (reference.causal_mask, [2.0], "seq_len"),
    (reference.init_params, [{"d_model": 4}, 0], "config"),
    (reference.param_shapes, [None], "config"),
])
def test_the_helpers_reject_invalid_input(fn: Callable[..., Any], args: list[Any], name: str) -> None:
    assert_rejected((fn, args, {}, frozenset({name})))


# --- the strategies themselves -------------------------------------------------------------------

def test_the_name_check_matches_whole_words_only() -> None:
    assert names_argument("p['w_1'] must have shape (4, 4), got (4, 5)", frozenset({"p"}))
    assert not names_argument("shape mismatch", frozenset({"p"}))
    assert names_argument("d_model (4) must be divisible by num_heads (3)", frozenset({"num_heads"}))


def test_assert_rejected_fails_on_a_valid_call_and_on_an_unnamed_argument() -> None:
    with pytest.raises(pytest.fail.Exception, match="accepted an invalid input"):
        assert_rejected((reference.softmax, [np.zeros(3)], {}, frozenset({"x"})))
    with pytest.raises(AssertionError, match="does not name mask"):
        assert_rejected((reference.softmax, [np.array([np.nan])], {}, frozenset({"mask"})))
