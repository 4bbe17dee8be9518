"""Determinism: every op called twice with the same inputs returns the same bits.

A backend whose result changes from call to call (a reduction whose order depends on thread
timing, atomics on a GPU, state kept between calls) may still pass every tolerance; the
gate reports it with its own status, "nondeterministic" (conformance/gate/REPORT.md), rather than
as an accuracy failure. One fixed case per op, at a small but not trivial size (B=2, S=5,
d_model=16, two heads, one layer per stack, masks included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import reference
from backends.contract import OPS
from conformance.kit import record
from conformance.kit.harness import call_op, describe_call, label
from conformance.kit.verdicts import NONDETERMINISTIC

CALLS = 2

CONFIG: dict[str, Any] = {"d_model": 16, "num_heads": 2, "d_ff": 32, "num_encoder_layers": 1,
                          "num_decoder_layers": 1, "src_vocab_size": 11, "tgt_vocab_size": 13}
B, S, D = 2, 5, CONFIG["d_model"]


def _cases() -> dict[str, Callable[[], tuple[list[Any], dict[str, Any]]]]:
    """op -> a function making its (args, kwargs), deterministic in a fixed seed."""
    params = reference.init_params(CONFIG, 0)
    layer_enc, layer_dec = params["encoder"][0], params["decoder"][0]

    def rng() -> np.random.Generator:
        return np.random.default_rng(8)

    def x(*shape: int) -> np.ndarray:
        return rng().normal(0.0, 1.0, shape)

    ids = rng().integers(0, CONFIG["src_vocab_size"], (B, S))
    tgt = rng().integers(0, CONFIG["tgt_vocab_size"], (B, S))
    pad = np.arange(S)[None, :] < np.array([[S], [3]])                        # (B, S), row 1 padded
    attn_mask = rng().random((B, S, S)) < 0.7
    return {
        "softmax": lambda: ([x(B, S, S)], {"axis": -1}),
        "positional_encoding": lambda: ([S, D], {}),
        "embedding": lambda: ([ids, x(CONFIG["src_vocab_size"], D)], {}),
        "layer_norm": lambda: ([x(B, S, D), 1.0 + 0.1 * x(D), 0.1 * x(D), 1e-5], {}),
        "attention": lambda: ([x(B, S, D), x(B, S, D), x(B, S, D)], {"mask": attn_mask}),
        "attention_weights": lambda: ([x(B, S, D), x(B, S, D)], {"mask": attn_mask}),
        "multi_head_attention": lambda: ([x(B, S, D), x(B, S, D), layer_enc["self_attn"], CONFIG["num_heads"]],
                                         {"mask": attn_mask}),
        "feed_forward": lambda: ([x(B, S, D), layer_enc["ffn"]], {"activation": "relu"}),
        "encoder_layer": lambda: ([x(B, S, D), layer_enc, CONFIG], {"mask": pad[:, None, :]}),
        "decoder_layer": lambda: ([x(B, S, D), x(B, S, D), layer_dec, CONFIG],
                                  {"self_mask": reference.causal_mask(S), "cross_mask": pad[:, None, :]}),
        "encode": lambda: ([ids, params, CONFIG], {"src_mask": pad}),
        "decode": lambda: ([tgt, x(B, S, D), params, CONFIG], {"src_mask": pad}),
        "forward": lambda: ([ids, tgt, params, CONFIG], {"src_mask": pad}),
        "greedy_decode": lambda: ([ids, params, CONFIG, 6, 1, 2], {"src_mask": pad}),
    }


CASES = _cases()
assert set(CASES) == set(OPS), "one determinism case per contract op"


def assert_deterministic(backend: Any, op: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """``assert all(np.array_equal(op(*args), op(*args)) ...)`` over ``CALLS`` calls, bitwise (NaN
    equal to NaN); on failure the message names the first differing element and both values,
    and the test's status is "nondeterministic"."""
    __tracebackhide__ = True
    first = call_op(backend, op, *args, **kwargs)
    for call in range(2, CALLS + 1):
        again = call_op(backend, op, *args, **kwargs)
        same = first.shape == again.shape and np.array_equal(first, again, equal_nan=True)
        if same:
            continue
        if first.shape != again.shape:
            where = f"the first call returned shape {first.shape}, call {call} {again.shape}"
        else:
            differ = ~((first == again) | (np.isnan(first) & np.isnan(again)))
            i = int(np.argmax(differ))
            index = ", ".join(str(n) for n in np.unravel_index(i, first.shape))
            where = (f"out[{index}] = {first.flat[i].item()!r} on the first call but {again.flat[i].item()!r} on "
                     f"call {call}; {int(differ.sum())} of {differ.size} elements differ")
        message = f"{label(backend, op)} is {NONDETERMINISTIC}: the same inputs {describe_call(args, kwargs)} " \
                  f"gave different results: {where}"
        record.note_verdict(NONDETERMINISTIC, message)
        raise AssertionError(message)


@pytest.mark.parametrize("op", [pytest.param(op, marks=pytest.mark.op(op), id=op) for op in OPS])
def test_same_inputs_give_the_same_result(backend: Any, op: str) -> None:
    """op(*args) called twice on one fixed case returns bitwise equal results."""
    args, kwargs = CASES[op]()
    record.note_example()
    assert_deterministic(backend, op, args, kwargs)
