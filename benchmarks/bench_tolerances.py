"""Measure the tolerance model (conformance/tolerance/model.py) on many random cases per op.

For each op, draw random cases (small shapes like Hypothesis draws, large logits, deep and
realistic configs), run every backend, and record the worst error/tolerance ratio: correct
backends must stay below 1 (no false alarms), the float32-inside-float64 liar
(tests/mutants/precision.py) must exceed it by orders of magnitude. The figures quoted in
conformance/tolerance/TOLERANCES.md come from::

    OMP_NUM_THREADS=1 python -m benchmarks.bench_tolerances --cases 1000 --deep 125

``random_case`` is also used by tests/test_tolerance_model.py for its (smaller) CI sample.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import reference
from backends.contract import OPS
from backends.ops import FLOAT, RECORDS, Case
from backends.registry import load_backend
from conformance.tolerance import model
from conformance.kit.harness import call_op
from conformance.tolerance.model import expected, min_d_model, query_positions, rounded_inputs

SCALES = (0.1, 1.0, 10.0)
D_K = (1, 2, 4, 8, 16, 64)


# --- random cases --------------------------------------------------------------------------

def _normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float | None = None) -> np.ndarray:
    return rng.normal(0.0, rng.choice(SCALES) if scale is None else scale, shape)


def _attention_mask(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray | None:
    kind = rng.integers(4)
    if kind == 0:
        return None
    mask = rng.random(shape) < 0.7
    if kind == 2:
        mask[..., rng.integers(shape[-2]), :] = False                      # one fully masked row
    return mask if kind != 3 else np.ones(shape, dtype=bool)


def _padding_mask(rng: np.random.Generator, batch: int, seq_len: int) -> np.ndarray | None:
    if rng.random() < 0.4:
        return None
    mask = rng.random((batch, seq_len)) < 0.7
    mask[np.arange(batch), rng.integers(seq_len, size=batch)] = True
    return mask


FORCED_D_MODEL: int | None = None
"""If set (``--d-model``), every config gets this d_model: to measure one width on its own."""


def random_config(rng: np.random.Generator, *, deep: bool = False) -> dict[str, Any]:
    """A valid config: small (d_model <= 16, <= 2 layers) or deep (d_model <= 128, <= 6 layers)."""
    d_model = 2 * int(rng.integers(1, (64 if deep else 8) + 1))
    d_model = FORCED_D_MODEL or d_model
    heads = [h for h in range(1, 9 if deep else 5) if d_model % h == 0]
    max_layers = 6 if deep else 2
    config = {
        "d_model": d_model, "num_heads": int(rng.choice(heads)), "d_ff": int(rng.integers(1, 4 * d_model + 1)),
        "num_encoder_layers": int(rng.integers(0, max_layers + 1)),
        "num_decoder_layers": int(rng.integers(0, max_layers + 1)),
        "src_vocab_size": int(rng.integers(3, 13)), "tgt_vocab_size": int(rng.integers(3, 13)),
        "layer_norm_eps": float(rng.choice([1e-5, 1e-6, 1e-3])), "norm_first": bool(rng.integers(2)),
        "scale_embedding": bool(rng.integers(2)), "activation": str(rng.choice(["relu", "gelu"])),
    }
    if rng.random() < 0.5:
        config["final_norm"] = bool(rng.integers(2))
    return config


def _softmax(rng: np.random.Generator, deep: bool) -> Case:
    shape = tuple(int(n) for n in rng.integers(1, 9, size=rng.integers(1, 4)))
    x = _normal(rng, shape, float(rng.choice(SCALES + (100.0,))))
    x[rng.random(shape) < 0.1] = -np.inf
    axis = int(rng.integers(-len(shape), len(shape)))
    return Case("softmax", [x], {"axis": axis})


def _positional_encoding(rng: np.random.Generator, deep: bool) -> Case:
    seq_len = int(rng.integers(1, 513 if deep else 65))
    return Case("positional_encoding", [seq_len, 2 * int(rng.integers(1, 257 if deep else 33))])


def _embedding(rng: np.random.Generator, deep: bool) -> Case:
    vocab, d = int(rng.integers(1, 13)), int(rng.integers(1, 17))
    ids = rng.integers(0, vocab, (int(rng.integers(1, 4)), int(rng.integers(1, 9))))
    return Case("embedding", [ids, _normal(rng, (vocab, d))])


def _layer_norm(rng: np.random.Generator, deep: bool) -> Case:
    d = int(rng.integers(1, 513 if deep else 65))
    x = _normal(rng, (int(rng.integers(1, 4)), int(rng.integers(1, 9)), d))
    gamma, beta = 1.0 + rng.normal(0, 0.1, d), rng.normal(0, 0.1, d)
    return Case("layer_norm", [x, gamma, beta, float(rng.choice([1e-5, 1e-6, 1e-3]))])


def _qkv(rng: np.random.Generator, deep: bool) -> tuple:
    batch, s_q, s_k = int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    d_k = int(rng.choice(D_K))
    scale = float(rng.choice(SCALES))
    q, k = _normal(rng, (batch, s_q, d_k), scale), _normal(rng, (batch, s_k, d_k), scale)
    v = _normal(rng, (batch, s_k, int(rng.choice(D_K))))
    return q, k, v, _attention_mask(rng, (batch, s_q, s_k))


def _attention(rng: np.random.Generator, deep: bool) -> Case:
    q, k, v, mask = _qkv(rng, deep)
    return Case("attention", [q, k, v], {"mask": mask})


def _attention_weights(rng: np.random.Generator, deep: bool) -> Case:
    q, k, _, mask = _qkv(rng, deep)
    return Case("attention_weights", [q, k], {"mask": mask})


def _multi_head_attention(rng: np.random.Generator, deep: bool) -> Case:
    config = random_config(rng, deep=deep)
    d_model, batch = config["d_model"], int(rng.integers(1, 4))
    s_q, s_k = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    p = reference.init_params({**config, "num_encoder_layers": 1}, int(rng.integers(2**32)))["encoder"][0]["self_attn"]
    return Case("multi_head_attention", [_normal(rng, (batch, s_q, d_model)), _normal(rng, (batch, s_k, d_model)), p,
                                         config["num_heads"]], {"mask": _attention_mask(rng, (batch, s_q, s_k))})


def _feed_forward(rng: np.random.Generator, deep: bool) -> Case:
    config = random_config(rng, deep=deep)
    p = reference.init_params({**config, "num_encoder_layers": 1}, int(rng.integers(2**32)))["encoder"][0]["ffn"]
    x = _normal(rng, (int(rng.integers(1, 4)), int(rng.integers(1, 9)), config["d_model"]))
    return Case("feed_forward", [x, p, config["activation"]])


def _encoder_layer(rng: np.random.Generator, deep: bool) -> Case:
    config = {**random_config(rng, deep=deep), "num_encoder_layers": 1}
    batch, s = int(rng.integers(1, 4)), int(rng.integers(1, 9))
    p = reference.init_params(config, int(rng.integers(2**32)))["encoder"][0]
    return Case("encoder_layer", [_normal(rng, (batch, s, config["d_model"])), p, config],
                {"mask": _attention_mask(rng, (batch, s, s))})


def _decoder_layer(rng: np.random.Generator, deep: bool) -> Case:
    config = {**random_config(rng, deep=deep), "num_decoder_layers": 1}
    batch, s_t, s_s = int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    p = reference.init_params(config, int(rng.integers(2**32)))["decoder"][0]
    y, memory = _normal(rng, (batch, s_t, config["d_model"])), _normal(rng, (batch, s_s, config["d_model"]))
    return Case("decoder_layer", [y, memory, p, config],
                {"self_mask": _attention_mask(rng, (batch, s_t, s_t)),
                 "cross_mask": _attention_mask(rng, (batch, s_t, s_s))})


def _model_inputs(rng: np.random.Generator, deep: bool) -> tuple:
    config = random_config(rng, deep=deep)
    params = reference.init_params(config, int(rng.integers(2**32)))
    batch, s_s, s_t = int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    src = rng.integers(0, config["src_vocab_size"], (batch, s_s))
    tgt = rng.integers(0, config["tgt_vocab_size"], (batch, s_t))
    return config, params, src, tgt, _padding_mask(rng, batch, s_s), _padding_mask(rng, batch, s_t)


def _encode(rng: np.random.Generator, deep: bool) -> Case:
    config, params, src, _, src_mask, _ = _model_inputs(rng, deep)
    return Case("encode", [src, params, config], {"src_mask": src_mask}, where=query_positions(src_mask))


def _decode(rng: np.random.Generator, deep: bool) -> Case:
    config, params, src, tgt, src_mask, tgt_mask = _model_inputs(rng, deep)
    memory = _normal(rng, (src.shape[0], src.shape[1], config["d_model"]), 1.0)
    return Case("decode", [tgt, memory, params, config], {"src_mask": src_mask, "tgt_mask": tgt_mask},
                where=query_positions(tgt_mask))


def _forward(rng: np.random.Generator, deep: bool) -> Case:
    config, params, src, tgt, src_mask, tgt_mask = _model_inputs(rng, deep)
    return Case("forward", [src, tgt, params, config], {"src_mask": src_mask, "tgt_mask": tgt_mask},
                where=query_positions(tgt_mask))


GENERATORS: dict[str, Callable[[np.random.Generator, bool], Case]] = {
    "softmax": _softmax, "positional_encoding": _positional_encoding, "embedding": _embedding,
    "layer_norm": _layer_norm, "attention": _attention, "attention_weights": _attention_weights,
    "multi_head_attention": _multi_head_attention, "feed_forward": _feed_forward,
    "encoder_layer": _encoder_layer, "decoder_layer": _decoder_layer, "encode": _encode,
    "decode": _decode, "forward": _forward,
}


MEASURED: tuple[str, ...] = tuple(op for op in OPS if RECORDS[op].output == FLOAT)
"""The ops with a tolerance (token ids are compared exactly): every one the benchmark measures."""


def random_case(op: str, rng: np.random.Generator, *, deep: bool = False) -> Case:
    """A random case of ``op``: small shapes (as Hypothesis draws them), or ``deep`` ones
    (wide models, up to 6 layers, long positional encodings, layer norms over 512 features);
    an op without a generator here gets its op record's case (backends/ops.py)."""
    return GENERATORS[op](rng, deep) if op in GENERATORS else RECORDS[op].sample(rng)


# --- measuring ----------------------------------------------------------------------------

COMPOSITE = frozenset({"encoder_layer", "decoder_layer", "encode", "decode", "forward"})
"""Ops whose cases carry a config; their d_model is restricted by model.min_d_model."""


def case_d_model(case: Case) -> int | None:
    """The d_model of a composite op's case (None for the elementary ops)."""
    configs = [a for a in case.args if isinstance(a, dict) and "d_model" in a]
    return configs[0]["d_model"] if case.op in COMPOSITE and configs else None


def expected_for(case: Case, dtype: str) -> tuple[list, dict, Any]:
    """The case's inputs rounded to ``dtype`` and its Expected."""
    args, kwargs = rounded_inputs(case.args, dtype), rounded_inputs(case.kwargs, dtype)
    return args, kwargs, expected(case.op, args, kwargs, dtype=dtype)


def ratios(backend: Any, case: Case, prepared: tuple[list, dict, Any] | None = None) -> np.ndarray:
    """|out - ref| / tol at the compared positions (flattened)."""
    args, kwargs, want = prepared or expected_for(case, backend.dtype)
    got = call_op(backend, case.op, *args, shape=want.value.shape, **kwargs)
    ratio = model.error_ratio(got, want.value, want.tol)
    if case.where is not None:
        return ratio[np.broadcast_to(case.where, ratio.shape)]
    return ratio.ravel()


def worst_ratio(backend: Any, case: Case, prepared: tuple[list, dict, Any] | None = None) -> float:
    """max |out - ref| / tol over the compared positions (what assert_close checks against 1)."""
    ratio = ratios(backend, case, prepared)
    return float(ratio.max()) if ratio.size else 0.0


def informative(case: Case, want: Any) -> bool:
    """Whether float32 cannot even hold the float64 result within its tolerance somewhere
    (|fl32(ref) - ref| > tol at a compared position): only such a case can reveal a float32
    computation. A softmax over one key (weights exactly 1) cannot."""
    held = np.abs(want.value.astype(np.float32).astype(np.float64) - want.value) > want.tol
    if case.where is not None:
        held &= np.broadcast_to(case.where, held.shape)
    return bool(held.any())


def backends(names: list[str]) -> dict[str, Any]:
    """name -> backend, for ``torch-float32``-style names and the liars ``liar-numpy``/``liar-torch``."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.mutants.precision import factory as liar  # noqa: PLC0415 - tests/ is not installed

    out = {}
    for name in names:
        spec, dtype = name.rsplit("-", 1)
        out[name] = liar(inner=dtype) if spec == "liar" else load_backend(spec, dtype=dtype)
    return out


CORRECT = ["torch-float64", "torch-float32", "torch-bfloat16", "torch-float16",
           "numpy-float32", "numpy-float16", "numpy-bfloat16"]
LIARS = ["liar-numpy", "liar-torch"]


def _run(job: tuple[str, str, int, int, list[str], int | None]) -> list[str]:
    """One op and kind: every backend on the same random cases (the Expected computed once per
    dtype); the table's lines. Half-precision cases with d_model below model.min_d_model
    are not drawn by the tests; they are measured on their own line."""
    op, kind, count, seed, names, forced = job
    global FORCED_D_MODEL  # noqa: PLW0603 - a worker process's setting for this job
    FORCED_D_MODEL = forced
    chosen = backends(names)
    rng = np.random.default_rng([seed, len(op), sum(map(ord, op)), kind == "deep"])
    cases = [random_case(op, rng, deep=kind == "deep") for _ in range(count)]
    found: dict[str, list[float]] = {}
    seconds = time.perf_counter()
    for case in cases:
        prepared: dict[str, Any] = {}
        for name, backend in chosen.items():
            d_model = case_d_model(case)
            label = name if d_model is None or d_model >= min_d_model(backend.dtype) else f"{name} d_model={d_model}"
            if backend.dtype not in prepared:
                prepared[backend.dtype] = expected_for(case, backend.dtype)
            compared = ratios(backend, case, prepared[backend.dtype])
            ratio = float(compared.max()) if compared.size else 0.0
            found.setdefault(label, []).append(ratio)
            if compared.size >= model.MIN_COUNT:
                found.setdefault(f"{label} rms", []).append(model.rms_ratio(compared))
            if name in LIARS and informative(case, prepared[backend.dtype][2]):
                found.setdefault(f"{name} informative", []).append(ratio)
    seconds = time.perf_counter() - seconds
    lines = []
    for label, values in found.items():
        r = np.array(values)
        lines.append(f"{op:21s} {kind:5s} {label:24s} {len(r):6d} {int((r > 1).sum()):6d} {r.max():9.3g} "
                     f"{np.quantile(r, 0.99):9.3g} {np.median(r):9.3g} {r.min():9.3g}")
    lines.append(f"{op:21s} {kind:5s} ({seconds:.0f} s)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="small random cases per op")
    parser.add_argument("--deep", type=int, default=None, help="deep random cases per op (default: cases / 8)")
    parser.add_argument("--ops", nargs="*", default=list(MEASURED))
    parser.add_argument("--backends", nargs="*", default=CORRECT + LIARS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--d-model", type=int, default=None, help="force this d_model in every config")
    parsed = parser.parse_args()
    deep = max(1, parsed.cases // 8) if parsed.deep is None else parsed.deep
    jobs = [(op, kind, parsed.cases if kind == "small" else deep, parsed.seed, parsed.backends, parsed.d_model)
            for op in parsed.ops for kind in ("small", "deep") if kind == "small" or deep]
    print(f"rule: {model.describe()}")
    print(f"{'op':21s} {'kind':5s} {'backend':24s} {'cases':>6s} {'alarms':>6s} {'worst':>9s} {'p99':>9s} "
          f"{'median':>9s} {'min':>9s}", flush=True)
    with multiprocessing.Pool(parsed.jobs) as pool:
        for lines in pool.imap_unordered(_run, jobs):
            print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
