"""Every golden case: the ordinary ones (sizes, scales, configurations), then the hazards, one
per numerical trap of each op (GOLDEN.md, "Cases"). Case ``i`` draws from PCG64 seeded with
``[seed, i]``, so adding a case never changes the others; the list is returned in contract op
order."""

from __future__ import annotations

import inspect

import numpy as np

import reference
from backends.contract import OPS
from backends.ops import RECORDS
from conformance.golden.cases import (
    CONFIG_POST, CONFIG_PRE, DEFAULT_SEED, PADDING_PATTERNS, QUERY_MASK, Case, Cases, attention_args, greedy_case,
    model_args, normal, padding, padding_patterns, part, portable, shapes)
from reference.params import map_floats

PATTERNS = ", ".join(PADDING_PATTERNS)


def build_cases(seed: int = DEFAULT_SEED) -> list[Case]:
    """Every contract op, several configurations and sizes, and each op's hazards."""
    cases = Cases(seed)
    ordinary(cases)
    hazards(cases)
    registered(cases)
    order = {op: i for i, op in enumerate(OPS)}
    return sorted(cases, key=lambda c: order[c.op])  # stable: each op's cases in their order


def ordinary(cases: Cases) -> None:
    """Two or three cases per op: small and larger shapes, unit and x10 scales, masks, both
    layer orders, both activations."""
    add = cases.add
    add("softmax", "(2, 5), last axis", lambda r: {"x": normal(r, (2, 5)), "axis": -1})
    add("softmax", "(3, 4, 7), axis 1, large logits", lambda r: {"x": normal(r, (3, 4, 7), 10.0), "axis": 1})

    def softmax_inf(r: np.random.Generator) -> dict:
        x = normal(r, (4, 6))
        x[1, [0, 3]] = -np.inf
        x[2, :] = -np.inf  # an all -inf row gives zeros
        return {"x": x, "axis": -1}
    add("softmax", "(4, 6) with -inf entries and an all -inf row", softmax_inf)

    add("positional_encoding", "seq_len 16, d_model 32", lambda r: {"seq_len": 16, "d_model": 32})
    add("positional_encoding", "seq_len 200, d_model 64", lambda r: {"seq_len": 200, "d_model": 64})

    add("embedding", "(2, 5) ids, (11, 8) table",
        lambda r: {"ids": r.integers(0, 11, (2, 5)), "table": normal(r, (11, 8))})
    add("embedding", "(1, 7) ids, (50, 32) table, scale 10",
        lambda r: {"ids": r.integers(0, 50, (1, 7)), "table": normal(r, (50, 32), 10.0)})

    add("layer_norm", "(2, 4, 16), unit gamma, zero beta, eps 1e-5",
        lambda r: {"x": normal(r, (2, 4, 16)), "gamma": np.ones(16), "beta": np.zeros(16), "eps": 1e-5})
    add("layer_norm", "(3, 64), scale 10, random gamma/beta, eps 1e-6",
        lambda r: {"x": normal(r, (3, 64), 10.0), "gamma": normal(r, (64,)), "beta": normal(r, (64,)),
                   "eps": 1e-6})

    add("attention", lambda a: shapes("q", "k", "v")(a) + ", no mask",
        lambda r: attention_args(r, (2,), 5, 7, 8, 4, False))
    add("attention", lambda a: "heads: " + shapes("q", "k", "v", "mask")(a) + ", with a fully masked query row",
        lambda r: attention_args(r, (2, 3), 4, 6, 16, 16, True))
    add("attention_weights", lambda a: shapes("q", "k")(a) + ", no mask",
        lambda r: attention_args(r, (2,), 5, 7, 8, 0, False, with_v=False))
    add("attention_weights", lambda a: shapes("q", "k", "mask")(a) + ", with a fully masked query row",
        lambda r: attention_args(r, (3,), 6, 9, 4, 0, True, with_v=False))

    wide_post = {**CONFIG_POST, "d_model": 32}
    add("multi_head_attention", "self-attention, d_model 16, 4 heads, no mask",
        lambda r: {"x_q": (x := normal(r, (2, 5, 16))), "x_kv": x,
                   "p": part(r, CONFIG_POST, "encoder", 0, "self_attn"), "num_heads": 4, "mask": None})
    add("multi_head_attention", "cross-attention, d_model 32, 2 heads, key padding mask (B, 1, Sk)",
        lambda r: {"x_q": normal(r, (2, 3, 32)), "x_kv": normal(r, (2, 6, 32)),
                   "p": part(r, wide_post, "encoder", 0, "self_attn"), "num_heads": 2,
                   "mask": padding(r, 2, 6)[:, None, :]})

    add("feed_forward", "d_model 16, d_ff 32, relu",
        lambda r: {"x": normal(r, (2, 5, 16)), "p": part(r, CONFIG_POST, "encoder", 0, "ffn"), "activation": "relu"})
    add("feed_forward", "d_model 32, d_ff 24, gelu (exact erf)",
        lambda r: {"x": normal(r, (3, 32)), "p": part(r, CONFIG_PRE, "encoder", 0, "ffn"), "activation": "gelu"})

    add("encoder_layer", "post-LN, relu, key padding mask (B, 1, S)",
        lambda r: {"x": normal(r, (2, 6, 16)), "p": part(r, CONFIG_POST, "encoder", 0), "config": CONFIG_POST,
                   "mask": padding(r, 2, 6)[:, None, :]})
    add("encoder_layer", "pre-LN, gelu, no mask",
        lambda r: {"x": normal(r, (1, 4, 32)), "p": part(r, CONFIG_PRE, "encoder", 0), "config": CONFIG_PRE,
                   "mask": None})
    add("decoder_layer", "post-LN, causal self mask, cross padding mask",
        lambda r: {"y": normal(r, (2, 5, 16)), "memory": normal(r, (2, 7, 16)),
                   "p": part(r, CONFIG_POST, "decoder", 0), "config": CONFIG_POST,
                   "self_mask": reference.causal_mask(5)[None], "cross_mask": padding(r, 2, 7)[:, None, :]})
    add("decoder_layer", "pre-LN, gelu, no masks",
        lambda r: {"y": normal(r, (1, 3, 32)), "memory": normal(r, (1, 4, 32)),
                   "p": part(r, CONFIG_PRE, "decoder", 0), "config": CONFIG_PRE, "self_mask": None,
                   "cross_mask": None})

    for op, query_mask in QUERY_MASK.items():
        add(op, "post-LN, 2+2 layers, padded source and target",
            lambda r, op=op: model_args(r, CONFIG_POST, op, 3, 6, 5, True), compare_queries=query_mask)
        add(op, "pre-LN with final norm, gelu, unscaled embeddings, no masks",
            lambda r, op=op: model_args(r, CONFIG_PRE, op, 2, 5, 4, False))

    greedy_case(cases, CONFIG_POST, "post-LN, padded source", batch=3, ss=6, max_len=7,
                src_mask=lambda r: padding(r, 3, 6))
    greedy_case(cases, CONFIG_PRE, "pre-LN, gelu", batch=3, ss=5, max_len=6, src_mask=lambda r: None)


def hazards(cases: Cases) -> None:
    """The traps of each op that an implementation meets at some dtype: exp overflow, mean
    offsets, long sequences, fully masked rows, every padding pattern (GOLDEN.md, "Cases")."""
    add = cases.add

    def softmax_overflow(r: np.random.Generator) -> dict:
        offsets = np.array([1000.0, -1000.0, 100.0, 12.0, 0.0])[:, None]  # past exp overflow at f64, f32, f16
        x = normal(r, (5, 8), 4.0, mean=offsets)
        x[4, [1, 5]] = [300.0, -np.inf]  # one large logit beside -inf and unit-scale ones
        return {"x": x, "axis": -1}
    add("softmax", "(5, 8), rows around +1000, -1000, +100, +12 (exp overflows at ~709.8 in float64, ~88.7 in "
        "float32, ~11.1 in float16; exp(-1000) underflows to 0) and a row with 300 beside -inf", softmax_overflow)
    add("softmax", "(6, 3, 4), axis 0, logits N(20, 30): past float16's exp overflow along the first axis",
        lambda r: {"x": normal(r, (6, 3, 4), 30.0, mean=20.0), "axis": 0})

    add("positional_encoding", "seq_len 5000 (the Annotated Transformer's max_len), d_model 8: angles up to 4999 rad",
        lambda r: {"seq_len": 5000, "d_model": 8})
    add("positional_encoding", "seq_len 1, d_model 2: the smallest", lambda r: {"seq_len": 1, "d_model": 2})

    add("embedding", "(2, 4) ids including 0 and the last row (vocab 9 - 1), (9, 4) table",
        lambda r: {"ids": np.array([[0, 8, 3, 0], [8, 8, 1, 7]]), "table": normal(r, (9, 4))})

    def offset_rows(r: np.random.Generator) -> dict:
        offsets, spread = np.array([30.0, -100.0, 250.0, 1000.0, 7.0]), np.array([0.5, 1.0, 1.0, 8.0, 0.0])
        x = normal(r, (5, 32), spread[:, None], mean=offsets[:, None])  # row 4: constant, variance 0
        return {"x": x, "gamma": normal(r, (32,)), "beta": normal(r, (32,)), "eps": 1e-5}
    add("layer_norm", "(5, 32), row means 30, -100, 250, 1000 with spreads 0.5, 1, 1, 8 (E[x^2] - E[x]^2 "
        "cancels), and a constant row (variance 0: only eps keeps it finite), eps 1e-5", offset_rows)
    add("layer_norm", "(2, 3, 8), d_model 8, mean offset 64, eps 1e-3 (large enough to matter)",
        lambda r: {"x": normal(r, (2, 3, 8), 0.5, mean=64.0), "gamma": normal(r, (8,)), "beta": normal(r, (8,)),
                   "eps": 1e-3})

    def causal_large(r: np.random.Generator) -> dict:
        return {**attention_args(r, (2,), 6, 6, 8, 4, False, scale=6.0), "mask": reference.causal_mask(6)}
    add("attention", lambda a: shapes("q", "k", "v", "mask")(a) + ": a causal mask broadcast over the batch, "
        "q, k ~ N(0, 6): scores past float16's and float32's exp overflow", causal_large)

    def keys_padded(r: np.random.Generator, with_v: bool) -> dict:
        args = attention_args(r, (5,), 3, 6, 4, 2, False, with_v=with_v)
        return {**args, "mask": padding_patterns(6)[:, None, :]}
    add("attention", lambda a: shapes("q", "k", "v", "mask")(a) + f", key padding: {PATTERNS}",
        lambda r: keys_padded(r, True))
    add("attention_weights", lambda a: shapes("q", "k", "mask")(a) + f", key padding: {PATTERNS}",
        lambda r: keys_padded(r, False))

    def mha_fully_masked(r: np.random.Generator) -> dict:
        mask = r.random((2, 4, 5)) < 0.6
        mask[:, :, 0], mask[1, 2, :] = True, False  # query 2 of batch 1 sees no key: output b_o
        return {"x_q": normal(r, (2, 4, 16)), "x_kv": normal(r, (2, 5, 16)),
                "p": part(r, CONFIG_POST, "encoder", 0, "self_attn"), "num_heads": 4, "mask": mask}
    add("multi_head_attention", "cross-attention, (B, Sq, Sk) mask, query 2 of batch 1 fully masked (output b_o)",
        mha_fully_masked)
    add("multi_head_attention", f"self-attention, 4 heads, key padding (B, 1, S): {PATTERNS}",
        lambda r: {"x_q": (x := normal(r, (5, 6, 16))), "x_kv": x,
                   "p": part(r, CONFIG_POST, "encoder", 0, "self_attn"), "num_heads": 4,
                   "mask": padding_patterns(6)[:, None, :]})

    add("feed_forward", "d_model 16, d_ff 32, gelu, inputs N(0, 4): the exact erf against tanh approximations",
        lambda r: {"x": normal(r, (4, 16), 4.0), "p": part(r, {**CONFIG_POST, "activation": "gelu"}, "encoder", 0,
                                                           "ffn"), "activation": "gelu"})

    add("encoder_layer", f"post-LN, key padding (B, 1, S): {PATTERNS}",
        lambda r: {"x": normal(r, (5, 6, 16)), "p": part(r, CONFIG_POST, "encoder", 0), "config": CONFIG_POST,
                   "mask": padding_patterns(6)[:, None, :]})

    def decoder_fully_masked(r: np.random.Generator) -> dict:
        cross = np.ones((2, 4, 5), dtype=bool)
        cross[0, 1, :] = False  # target position 1 of batch 0 sees no memory: cross-attention gives b_o
        return {"y": normal(r, (2, 4, 32)), "memory": normal(r, (2, 5, 32)), "p": part(r, CONFIG_PRE, "decoder", 1),
                "config": CONFIG_PRE, "self_mask": reference.causal_mask(4), "cross_mask": cross}
    add("decoder_layer", "pre-LN, causal self mask (St, St), cross mask with a fully masked target position",
        decoder_fully_masked)

    post_final = {**CONFIG_POST, "final_norm": True}
    for op, query_mask in QUERY_MASK.items():
        padded = "source padding" if op == "encode" else "source and target padding"
        add(op, f"post-LN, {padded}: {PATTERNS}",
            lambda r, op=op: model_args(r, CONFIG_POST, op, 5, 6, 5, "patterns"), compare_queries=query_mask)
        add(op, "post-LN with an explicit final norm (final_norm true, norm_first false), no masks",
            lambda r, op=op: model_args(r, post_final, op, 2, 5, 4, False))
    greedy_case(cases, CONFIG_POST, f"post-LN, source padding: {PATTERNS}", batch=5, ss=6, max_len=6,
                src_mask=lambda r: padding_patterns(6))

    def fast_variance_rows(r: np.random.Generator) -> dict:
        x = normal(r, (4, 64), 2.0, mean=1000.0)  # bfloat16's spacing at 1000 is 4: mean/sigma ~ 450
        return {"x": x, "gamma": normal(r, (64,)), "beta": normal(r, (64,)), "eps": 1e-5}
    add("layer_norm", "(4, 64), rows N(1000, 2) on bfloat16's grid (spacing 4): E[x]^2 needs ~30 bits, so the "
        "one-pass variance E[x^2] - E[x]^2 at float32 loses the variance's last bits (mean/sigma ~ 450); the "
        "two-pass variance does not", fast_variance_rows)


def registered(cases: Cases) -> None:
    """An op without a case of its own (an op just added to the contract) gets its op record's
    case (backends/ops.py), with portable inputs: every op has golden vectors from its record on."""
    covered = {c.op for c in cases}
    for op in (op for op in OPS if op not in covered):
        record = RECORDS[op]
        case = record.sample(cases.rng())
        arguments = inspect.signature(record.reference).bind(*case.args, **case.kwargs).arguments
        cases.append(Case(cases.name(op), op, "the op record's case (backends/ops.py)",
                          map_floats(portable, dict(arguments)), case.where))
