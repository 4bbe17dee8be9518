"""Hypothesis strategies of the property suite, on top of conformance/kit/strategies.py.

Many properties compare f(g(x)) with g(f(x)) for an exact transformation g (a shift, a scale,
a permutation). In floating point that is a property of the backend only if g(x) is exact in
the backend's dtype, so the strategies here draw inputs on grids where it is: integers times a
power of two, with numerators small enough for bfloat16's 8-bit significand, and scale
factors that are powers of two. Every strategy draws its simplest option first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st

from conformance.kit.strategies import arrays, choices, configs, params, seeds, sizes, token_ids
from properties.tolerances import significand_bits

EXACT_NUMERATOR = 2**5
"""Grid numerators stay within +-2^5, so a x + c for grid values x, c and a = 2^j, |j| <= 2,
stays within 5 * 2^5 < 2^8 on a common grid: exact in every dtype down to bfloat16 (8-bit
significand)."""

MODEL_CAPS: dict[str, int] = {"max_d_model": 8, "max_heads": 2, "max_d_ff": 8, "max_layers": 1, "max_vocab": 8}
"""Size caps of whole-model properties: enough for every mechanism (two heads, a layer of each
kind, padding), small enough for the ``ci`` profile's time budget."""


OP_SHARE = 0.2
"""Share of the profile's examples for a property of one op on small arrays."""

LAYER_SHARE = 0.15
"""Share for multi-head attention and one layer (a dozen ops per call)."""

MODEL_SHARE = 0.1
"""Share for encode, decode, forward and greedy decoding (the whole model, several calls).

The property suite has ~55 properties x 6 built-in targets; at the ``ci`` profile's 100 examples
each it would take minutes, most of it Hypothesis' per-example overhead, so every property runs
a share sized by its cost (``conformance.kit.strategies.budget``; ci: 20 / 15 / 10 examples,
thorough: 200 / 150 / 100)."""


@st.composite
def powers_of_two(draw: st.DrawFn, *, max_exponent: int = 2) -> float:
    """c = 2^j, 1 <= |j| <= max_exponent (2, 1/2, 4, 1/4, ...): multiplying by c is exact."""
    exponent = draw(st.integers(1, max_exponent))
    return float(2.0 ** (exponent if draw(st.booleans()) else -exponent))


grid_steps = st.sampled_from([0.25, 1.0, 1 / 64])
"""Power-of-two grid spacings for ``grid_arrays``."""


@st.composite
def grid_arrays(draw: st.DrawFn, shape: tuple[int, ...], *, step: float,
                numerator: int = EXACT_NUMERATOR) -> np.ndarray:
    """Integers in [-numerator, numerator] times a power-of-two ``step``: exact in every dtype
    (with the default numerator even after adding another such array or scaling by 4)."""
    return np.random.default_rng(draw(seeds)).integers(-numerator, numerator + 1, shape) * step


@st.composite
def row_shifts(draw: st.DrawFn, rows: tuple[int, ...], *, dtype: str, step: float) -> np.ndarray:
    """One constant per row, c = n * step with |n| < 2^(p-1) - EXACT_NUMERATOR for the dtype's
    p-bit significand (capped at 1e4 / step), so that x + c is exact for x on the
    ``grid_arrays`` grid. Large shifts (beyond exp's overflow in float32/float64) come first
    after zero; shapes (..., 1)."""
    bound = min(2 ** (significand_bits(dtype) - 1) - EXACT_NUMERATOR, int(1e4 / step))
    kind = draw(st.sampled_from(["zero", "large", "any"]))
    rng = np.random.default_rng(draw(seeds))
    if kind == "zero":
        return np.zeros(rows + (1,))
    if kind == "large":
        return rng.choice([-1, 1], rows + (1,)) * bound * step
    return rng.integers(-bound, bound + 1, rows + (1,)) * step


@st.composite
def permutations(draw: st.DrawFn, n: int) -> np.ndarray:
    """A permutation of range(n) as an index array (shrinks towards the identity)."""
    return np.array(draw(st.permutations(list(range(n)))), dtype=np.int64)


@st.composite
def layer_norm_rows(draw: st.DrawFn, shape: tuple[int, ...], *, eps: float) -> np.ndarray:
    """Rows offset + sigma z, z ~ N(0, 1): sigma from ``arrays``' scales, or tiny (sigma^2 a
    tenth to ten times eps, where eps matters); offset 0, or sigma, or ten sigma (then the mean
    dominates and the row's mean must be removed accurately)."""
    kind = draw(st.sampled_from(["normal", "tiny"]))
    if kind == "normal":
        x = draw(arrays(shape))
    else:
        x = draw(arrays(shape, scales=(math.sqrt(eps), math.sqrt(eps / 10), math.sqrt(eps * 10))))
    sigma = np.std(x, axis=-1, keepdims=True)
    return x + draw(st.sampled_from([0.0, 1.0, 10.0])) * sigma


@st.composite
def attention_inputs(draw: st.DrawFn, *, max_batch: int = 2, max_len: int = 5, max_d: int = 6,
                     self_attention: bool = False) -> dict[str, np.ndarray]:
    """{q (B, Sq, d_k), k (B, Sk, d_k), v (B, Sk, d_v)} from ``arrays`` (scales 1, 0.1, 10);
    for ``self_attention`` q = k = v (B, S, d)."""
    batch, s_q, d_k = (draw(sizes(1, n)) for n in (max_batch, max_len, max_d))
    q = draw(arrays((batch, s_q, d_k)))
    if self_attention:
        return {"q": q, "k": q, "v": q}
    s_k, d_v = draw(sizes(1, max_len)), draw(sizes(1, max_d))
    return {"q": q, "k": draw(arrays((batch, s_k, d_k))), "v": draw(arrays((batch, s_k, d_v)))}


@st.composite
def models(draw: st.DrawFn, *, min_layers: int = 0, min_batch: int = 1, max_batch: int = 2,
           max_len: int = 4) -> dict[str, Any]:
    """A small model and a batch for it: {config, params, src (B, Ss), tgt (B, St)}."""
    config = draw(configs(**MODEL_CAPS, min_layers=min_layers))
    batch = draw(sizes(min_batch, max(min_batch, max_batch)))
    s_src, s_tgt = draw(sizes(1, max_len)), draw(sizes(1, max_len))
    return {
        "config": config,
        "params": draw(params(config)),
        "src": draw(token_ids(batch, s_src, config["src_vocab_size"])),
        "tgt": draw(token_ids(batch, s_tgt, config["tgt_vocab_size"])),
    }


@st.composite
def multi_head_cases(draw: st.DrawFn, *, max_d_model: int = 8, min_heads: int = 1, max_heads: int = 4,
                     max_batch: int = 2, max_len: int = 4, self_attention: bool = False) -> dict[str, Any]:
    """{x_q (B, Sq, d_model), x_kv (B, Sk, d_model), num_heads, d_model}: unit- or
    tenth-scale activations (as layer norm leaves them) and d_model divisible by num_heads;
    for ``self_attention`` x_kv is x_q."""
    d_model = 2 * draw(sizes(max(1, min_heads // 2), max_d_model // 2))
    num_heads = draw(choices([h for h in range(min_heads, max_heads + 1) if d_model % h == 0]))
    batch, s_q = draw(sizes(1, max_batch)), draw(sizes(1, max_len))
    x_q = draw(arrays((batch, s_q, d_model), scales=(1.0, 0.1)))
    x_kv = x_q if self_attention else draw(arrays((batch, draw(sizes(1, max_len)), d_model), scales=(1.0, 0.1)))
    return {"x_q": x_q, "x_kv": x_kv, "num_heads": num_heads, "d_model": d_model}
