"""The tolerance model (conformance/tolerance/model.py, derivation in conformance/tolerance/TOLERANCES.md):

(a) correct backends pass at every dtype (torch float64/float32/bfloat16/float16, numpy
    float32/float16/bfloat16) on a few hundred seeded random cases of every op, large logits
    and deep configs included (the many-thousand-case measurement is
    benchmarks/bench_tolerances.py; the zoo of correct algorithms is tests/correct/);
(b) a backend that computes in float32 while claiming float64 fails on every op, by orders
    of magnitude, and a small systematic error inside every per-element bound fails as such;
and the machinery: the bounds' values are the reference's, the tolerance is the same under
every BLAS kernel and thread count, exact results get no tolerance, greedy decoding tells a
near-tie divergence from a wrong token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import reference
from backends.numpy_backend import NumpyBackend
from backends.ops import Case
from backends.registry import load_backend
from conformance.tolerance import error_bounds, model
from benchmarks.bench_tolerances import (
    MEASURED, case_d_model, expected_for, informative, random_case, worst_ratio,
)
from conformance.differential._compare import compare, compare_greedy
from conformance.tolerance.model import expected, min_d_model, rounded_inputs
from tests.mutants.precision import Float32Inside

OPS = list(MEASURED)
CORRECT = [("torch", "float64"), ("torch", "float32"), ("torch", "bfloat16"), ("torch", "float16"),
           ("numpy", "float32"), ("numpy", "float16"), ("numpy", "bfloat16")]
CASES_PER_OP = 4
"""Seeded small cases per op and correct backend (plus one deep one): 7 x 13 x 5 = 455 in all."""

ROOT = Path(__file__).resolve().parents[1]

LIAR_GAP = 1e4
"""The float32-inside-float64 liar must exceed its tolerance at least this many times over."""


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _cases(op: str, dtype: str, count: int, *, deep: int = 0) -> list[Case]:
    """Seeded random cases the differential tests could draw at ``dtype`` (d_model >=
    min_d_model for the composite ops)."""
    rng, cases = _rng(op, dtype), []
    while len(cases) < count + deep:
        case = random_case(op, rng, deep=len(cases) >= count)
        if (case_d_model(case) or 99) >= min_d_model(dtype):
            cases.append(case)
    return cases


@pytest.fixture(scope="module")
def loaded() -> dict[tuple[str, str], Any]:
    return {(spec, dtype): load_backend(spec, dtype=dtype) for spec, dtype in CORRECT}


# -- (a) no false alarms ----------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("spec", "dtype"), CORRECT, ids=[f"{s}-{d}" for s, d in CORRECT])
def test_correct_backend_passes(loaded: dict, spec: str, dtype: str, op: str) -> None:
    """Every case passes the differential comparison (per element and root mean square)."""
    backend = loaded[(spec, dtype)]
    for case in _cases(op, dtype, CASES_PER_OP, deep=1):
        compare(backend, case.op, *case.args, where=case.where, **case.kwargs)


# -- (b) float32 inside a "float64" backend ---------------------------------------------------


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("inner", ["numpy", "torch"])
def test_float32_inside_float64_fails_by_orders_of_magnitude(inner: str, op: str) -> None:
    """The liar fails every informative case of every op (one whose float64 result float32
    cannot even hold: |fl32(ref) - ref| > tol somewhere), with a median excess of at least
    LIAR_GAP. Uninformative cases (one key: weights exactly 1) say nothing about precision."""
    liar, ratios = Float32Inside(load_backend(inner, dtype="float32")), []
    for case in _cases(op, "float64", 6):
        prepared = expected_for(case, "float64")
        if informative(case, prepared[2]):
            ratios.append(worst_ratio(liar, case, prepared))
    assert len(ratios) >= 2 and min(ratios) > 1 and np.median(ratios) > LIAR_GAP, \
        f"{op}: liar's error/tolerance {ratios}"


def test_liar_failure_names_the_op_and_the_excess() -> None:
    liar = Float32Inside(load_backend("numpy", dtype="float32"))
    x = _rng("liar-message").normal(0.0, 1.0, (2, 3, 8))
    with pytest.raises(AssertionError, match=r"numpy-float32-inside\[float64, cpu\]\.layer_norm: out\[.*x over"):
        compare(liar, "layer_norm", x, np.ones(8), np.zeros(8), 1e-5)


# -- the rule's machinery ---------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
def test_bound_values_are_the_reference(op: str) -> None:
    """The bounds propagate through the reference's own equations: their exact values agree
    with the reference to float64 rounding."""
    for case in _cases(op, "float64", 3):
        value = model.reference_value(case.op, case.args, case.kwargs)
        got = error_bounds.bound(case.op, case.args, case.kwargs, error_bounds.Rounding(0.0, 0.0))
        np.testing.assert_allclose(got.v, value, rtol=1e-12, atol=1e-12 * max(1.0, float(np.max(np.abs(value)))))
        assert got.e.shape == value.shape and np.all(got.e == 0.0)


def test_tolerance_is_zero_on_fully_masked_rows_and_on_exact_results() -> None:
    """Fully masked query rows, masked weights and embedding lookups must be exact (only the
    dtype's underflow floor remains)."""
    rng = _rng("rows")
    q, k = rng.normal(0.0, 3.0, (2, 4, 8)), rng.normal(0.0, 3.0, (2, 5, 8))
    mask = rng.random((2, 4, 5)) < 0.7
    mask[1, 2] = False
    want = expected("attention_weights", [q, k], {"mask": mask}, dtype="float32")
    floor = model.tiny("float32")
    assert np.all(want.tol[1, 2] == floor) and np.all(want.tol[~mask] == floor)
    assert np.all(want.tol[mask] > 10 * floor)
    table = rng.normal(0.0, 1.0, (7, 4))
    lookup = expected("embedding", [np.array([[1, 6]]), table], dtype="bfloat16")
    assert np.all(lookup.tol == model.tiny("bfloat16"))


def test_float64_tolerance_is_float64_sized() -> None:
    """The bound is linear in u: at float64 (the backend's u plus the reference's own) it is
    2 u64 / (u32 + u64) ~ 2^-28 of the float32 one."""
    rng = _rng("float64")
    x, p = rng.normal(0.0, 1.0, (2, 5, 16)), reference.init_params(
        {"d_model": 16, "num_heads": 2, "d_ff": 32, "num_encoder_layers": 1, "num_decoder_layers": 0,
         "src_vocab_size": 3, "tgt_vocab_size": 3}, 0)["encoder"][0]["ffn"]
    f64, f32 = (expected("feed_forward", [x, p], dtype=d) for d in ("float64", "float32"))
    ratio = f64.tol / f32.tol
    np.testing.assert_allclose(ratio, 2.0**-52 / (2.0**-24 + 2.0**-53), rtol=1e-6)


def test_torch_vectorized_gelu_is_within_half_of_its_tolerance() -> None:
    """torch's CPU GELU on a long tensor (ATen's vectorized erf, off by up to 12 u near
    erf = 0.997) stays within half of the GELU bound's tolerance on 400,001 points of [-8, 8]
    at float32: error_bounds.ERF covers it (with LIBM's 4 u it was 1.32x over at x = -3.49)."""
    torch = pytest.importorskip("torch")
    x = np.linspace(-8.0, 8.0, 400_001).astype(np.float32).astype(np.float64)
    got = torch.nn.functional.gelu(torch.from_numpy(x.astype(np.float32))).double().numpy()
    bound = error_bounds.gelu(error_bounds.exact(x), model.rounding("float32"))
    ratio = model.error_ratio(got, bound.v, model.SAFETY * bound.e + model.tiny("float32"))
    assert ratio.max() <= 0.5, f"x = {x[np.argmax(ratio)]}: {ratio.max():.3g} of the tolerance"


def test_bfloat16_feed_forward_stays_within_half_of_its_tolerance() -> None:
    """torch's bfloat16 FFN on the tolerance benchmark's 500 deep feed_forward cases (its own
    seeding, ``--deep 500``): stores rounded to bfloat16 realize their bounds, so the incoming
    errors of the second product exceed their plain quadrature sum (0.65 of the tolerance, d_ff =
    213); ``error_bounds.stored_errors`` (LAMBDA x the quadrature sum) keeps it within half."""
    pytest.importorskip("torch")
    op, backend = "feed_forward", load_backend("torch", dtype="bfloat16")
    rng = np.random.default_rng([0, len(op), sum(map(ord, op)), True])
    worst = max(worst_ratio(backend, random_case(op, rng, deep=True)) for _ in range(500))
    assert worst <= 0.5, f"{worst:.3g} of the tolerance"


def test_an_output_made_of_tiny_weights_keeps_their_exponent_errors() -> None:
    """Scores 400 and -200: the second weight is e^-600, and the squares of its errors
    underflow. With v = (0, 1) the output is that weight alone, so its relative bound must
    still hold the exponent's error, 2 u |s - m| = 1200 u (error_bounds.independent falls back
    to the worst case; the quadrature sum alone was 0, and a correct float64 backend that
    scales the queries first reached 0.75 of a tolerance of 1370 u)."""
    q, k, v = np.array([[20.0]]), np.array([[20.0], [-10.0]]), np.array([[0.0], [1.0]])
    out = error_bounds.attention(*(error_bounds.exact(a) for a in (q, k, v)), None, model.rounding("float64"))
    u = reference.unit_roundoff("float64")
    assert out.v[0, 0] == pytest.approx(np.exp(-600.0))
    assert out.e[0, 0] >= 1200 * u * out.v[0, 0]


def test_a_weight_whose_logits_err_by_order_one_moves_by_the_exponential() -> None:
    """bfloat16 scores 725.4 and 702.25 (ulp 4): torch's second weight is e^-20 = 2.1e-9
    where the exact one is e^-23.19 = 8.5e-11, 23 times it. The bound y expm1(L) holds it; the
    first order y L, half the tolerance, fell below it (the thorough zoo's 0.91)."""
    pytest.importorskip("torch")
    from backends.registry import load_backend
    from conformance.kit.harness import call_op

    q, k = np.array([[26.5]]), np.array([[27.375], [26.5], [5.09375]])
    got = call_op(load_backend("torch", dtype="bfloat16"), "attention_weights", q, k, shape=(1, 3))
    bound = error_bounds.attention_weights(error_bounds.exact(q), error_bounds.exact(k), None,
                                           model.rounding("bfloat16"))
    error, log_change = abs(got[0, 1] - bound.v[0, 1]), np.log1p(bound.e[0, 1] / bound.v[0, 1])
    assert got[0, 1] == pytest.approx(np.exp(-20.0), rel=1e-2) and bound.v[0, 1] == pytest.approx(np.exp(-23.1875))
    assert bound.v[0, 1] * log_change < error <= bound.e[0, 1]

def test_a_failure_says_which_part_of_the_rule_set_its_tolerance() -> None:
    """``terms`` restates the element's tolerance as SAFETY x bound + tiny and splits the bound
    into the reductions' and the stored roundings' shares: a long dot product's output is
    set by its accumulation, a large-logit softmax weight by its stored (rounded) scores."""
    rng = _rng("terms")
    x, p = rng.normal(0.0, 1.0, (1, 2, 256)), reference.init_params(
        {"d_model": 256, "num_heads": 2, "d_ff": 512, "num_encoder_layers": 1, "num_decoder_layers": 0,
         "src_vocab_size": 3, "tgt_vocab_size": 3}, 0)["encoder"][0]["ffn"]
    want = expected("feed_forward", [x, p], dtype="float32")
    text = model.terms("feed_forward", [x, p], {}, dtype="float32", index=(0, 1, 3))
    assert text.startswith(f"tolerance {want.tol[0, 1, 3]:.3g} = 2 x bound ")
    acc, store = (float(part.split(" ")[0].rstrip(",")) for part in text.split("alone ")[1:])
    assert acc > store > 0
    logits = np.array([[300.0, 299.0, 0.0]])
    text = model.terms("softmax", [logits], {}, dtype="float32", index=(0, 1))
    acc, store = (float(part.split(" ")[0].rstrip(",")) for part in text.split("alone ")[1:])
    assert store > acc


def _openblas_kernels() -> list[str]:
    """The OpenBLAS kernels this CPU can run (by its instruction-set flags)."""
    needs = {"SkylakeX": "avx512f", "Haswell": "avx2", "Sandybridge": "avx", "Nehalem": "sse4_2", "Prescott": "pni"}
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return []
    return [kernel for kernel, flag in needs.items() if flag in flags]


TOLERANCE_PROBE = """
import json, sys, numpy as np, threadpoolctl
from tests.test_tolerance_model import _cases, OPS
from conformance.tolerance.model import expected
info = threadpoolctl.threadpool_info()
out = {"kernels": sorted({i.get("architecture", "?") for i in info if i["user_api"] == "blas"}), "tol": {}}
for op in OPS:
    for n, case in enumerate(_cases(op, "float32", 2, deep=1)):
        out["tol"][f"{op}-{n}"] = expected(case.op, case.args, case.kwargs, dtype="float32").tol.ravel().tolist()
json.dump(out, sys.stdout)
"""


def test_tolerance_does_not_depend_on_the_blas_kernel_or_thread_count() -> None:
    """The same tolerances (relative 1e-12) under every OpenBLAS kernel this CPU runs and with
    1 or 2 threads: the rule is a function of (op, inputs, dtype) alone."""
    pytest.importorskip("threadpoolctl")
    kernels = _openblas_kernels()
    if not kernels:
        pytest.skip("unsupported: no /proc/cpuinfo to tell which OpenBLAS kernels this CPU runs")
    runs = {}
    for kernel, threads in [(k, "1") for k in kernels] + [(kernels[0], "2")]:
        env = {**os.environ, "OPENBLAS_CORETYPE": kernel, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        env.pop("OPENBLAS_L2_SIZE", None)
        done = subprocess.run([sys.executable, "-c", TOLERANCE_PROBE], env=env, cwd=ROOT, capture_output=True,
                              text=True, check=True)
        runs[(kernel, threads)] = json.loads(done.stdout)
    ran = {kernel: tuple(run["kernels"]) for (kernel, _), run in runs.items()}
    assert len(set(ran.values())) == len(kernels), f"OpenBLAS did not run one kernel per request: {ran}"
    first = next(iter(runs.values()))["tol"]
    for key, run in runs.items():
        for name, tol in run["tol"].items():
            np.testing.assert_allclose(tol, first[name], rtol=1e-12, atol=0, err_msg=f"{name} under {key}")


# -- the systematic-error check ---------------------------------------------------------------


class _Biased(NumpyBackend):
    """The float32 reference, with every layer_norm output moved by ``share`` of its tolerance
    towards +inf: each element inside its bound, the whole tensor consistently off."""

    def __init__(self, share: float) -> None:
        super().__init__("biased", "float32")
        self.share = share

    def layer_norm(self, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
        want = expected("layer_norm", [x, gamma, beta, eps], dtype="float32")
        return (want.value + self.share * want.tol).astype(np.float32)


def test_a_systematic_error_inside_every_bound_fails_as_systematic() -> None:
    x = _rng("bias").normal(0.0, 1.0, (4, 8, 16))
    gamma, beta = np.ones(16), np.zeros(16)
    with pytest.raises(AssertionError, match=r"biased\[float32, cpu\]\.layer_norm: systematic error: .*root mean "
                                             r"square of err/tol over the 512 compared elements is 0\.7"):
        compare(_Biased(0.7), "layer_norm", x, gamma, beta, 1e-5)
    assert compare(_Biased(0.3), "layer_norm", x, gamma, beta, 1e-5) <= 0.4
    assert compare(NumpyBackend("numpy", "float32"), "layer_norm", x[:1, :2], gamma, beta, 1e-5) < 1


def test_rounded_inputs_are_exact_in_the_dtype() -> None:
    import ml_dtypes

    tree = {"a": _rng("round").normal(0.0, 10.0, (4, 4)), "ids": np.arange(3), "mask": np.ones(2, bool), "eps": 1e-5}
    for dtype, numpy_dtype in [("float32", np.float32), ("float16", np.float16), ("bfloat16", ml_dtypes.bfloat16)]:
        held = rounded_inputs(tree, dtype)
        assert held["a"].dtype == np.float64
        np.testing.assert_array_equal(held["a"].astype(numpy_dtype).astype(np.float64), held["a"])
        np.testing.assert_array_equal(rounded_inputs(held, dtype)["a"], held["a"])
        assert held["ids"] is tree["ids"] and held["mask"] is tree["mask"] and held["eps"] == 1e-5


def test_min_d_model() -> None:
    assert [min_d_model(d) for d in reference.DTYPES] == [2, 2, 4, 4]


# -- greedy decoding --------------------------------------------------------------------------

GREEDY_CONFIG = {"d_model": 8, "num_heads": 2, "d_ff": 16, "num_encoder_layers": 1, "num_decoder_layers": 1,
                 "src_vocab_size": 7, "tgt_vocab_size": 6}


class _Greedy(NumpyBackend):
    """The float64 reference, except greedy decoding picks ``pick(logits)`` and, with
    ``fill_eos`` False, keeps decoding after eos."""

    def __init__(self, pick: Any, fill_eos: bool = True) -> None:
        super().__init__("greedy-variant", "float64")
        self.pick, self.fill_eos = pick, fill_eos

    def greedy_decode(self, src_ids: np.ndarray, params: Any, config: Any, max_len: int, bos_id: int, eos_id: int,
                      src_mask: np.ndarray | None = None) -> np.ndarray:
        ys = np.full((src_ids.shape[0], 1), bos_id, dtype=np.int64)
        done = np.zeros(src_ids.shape[0], dtype=bool)
        while ys.shape[1] < max_len and not done.all():
            logits = reference.forward(src_ids, ys, params, config, src_mask)[:, -1]
            token = np.array([self.pick(row) for row in logits])
            token = np.where(done & self.fill_eos, eos_id, token)
            ys = np.concatenate([ys, token[:, None]], axis=1)
            done |= token == eos_id
        return ys


def _tied_params(tie: bool) -> dict[str, Any]:
    """Tokens 1 and 2 get the same, dominant logit at every step when ``tie`` (identical
    generator columns and biases); else token 2's bias is lower by 0.5."""
    params = reference.init_params(GREEDY_CONFIG, 0)
    w, b = params["generator"]["w"], params["generator"]["b"]
    w[:, 2], b[1], b[2] = w[:, 1], 50.0, 50.0 if tie else 49.5
    return params


SRC = np.array([[1, 2, 3, 4], [4, 3, 2, 1]])


def test_greedy_divergence_at_an_exact_tie_is_noted_not_failed() -> None:
    last_of_the_tied = _Greedy(lambda row: len(row) - 1 - int(np.argmax(row[::-1])))
    notes = compare_greedy(last_of_the_tied, SRC, _tied_params(True), GREEDY_CONFIG, 5, 0, 5)
    assert len(notes) == 2 and all("near-tie at step 1" in n for n in notes), notes


def test_greedy_wrong_token_fails_with_the_margin() -> None:
    second_best = _Greedy(lambda row: int(np.argsort(row)[-2]))
    with pytest.raises(AssertionError, match=r"row 0 step 1: token 2 but should be 1 .*margin 0\.5 exceeds"):
        compare_greedy(second_best, SRC, _tied_params(False), GREEDY_CONFIG, 5, 0, 5)


def test_greedy_tokens_after_eos_must_be_eos() -> None:
    """A backend that writes another token after a row's eos fails, naming the rule."""
    for seed in range(100):                      # a case where one row ends early, another goes on
        params, src = reference.init_params(GREEDY_CONFIG, seed), _rng("eos", seed).integers(0, 7, (3, 4))
        want = reference.greedy_decode(src, params, GREEDY_CONFIG, 6, 0, 3)
        rows, steps = np.nonzero(want[:, 1:-1] == 3)
        if rows.size:
            break
    row, step = int(rows[0]), int(steps[0]) + 2                              # the column after eos
    liar = NumpyBackend("eos-then-more", "float64")
    broken = want.copy()
    broken[row, step] = (3 + 1) % GREEDY_CONFIG["tgt_vocab_size"]
    liar.greedy_decode = lambda *args, **kwargs: broken
    with pytest.raises(AssertionError, match=f"row {row} step {step}: .*emitted eos"):
        compare_greedy(liar, src, params, GREEDY_CONFIG, 6, 0, 3)


def test_greedy_agreeing_backend_has_no_notes() -> None:
    reference_backend = load_backend("reference", dtype="float64")
    assert compare_greedy(reference_backend, SRC, _tied_params(False), GREEDY_CONFIG, 5, 0, 5) == []


def test_layer_norm_jacobian_products_match_the_dense_jacobian():
    """``_normalisation_products`` (O(d log d) per row) gives |A| e and A^2 e^2 of the dense
    A = I - (1 + x_hat x_hat^T) / d to float64 rounding of the terms summed: rows with ties,
    a zero x_hat, a spread-out and a constant error, d from 1 to 40."""
    from conformance.tolerance.error_bounds import _normalisation_products

    rng = np.random.default_rng(7)
    for d in (1, 2, 3, 8, 17, 40):
        x = rng.normal(size=(3, 4, d)) * 100.0 + 5.0
        x[0, :, : d // 2] = x[0, :, :1]
        c = x - x.mean(-1, keepdims=True)
        b = c / np.sqrt((c * c).mean(-1, keepdims=True) + 1e-5)
        b[1, 0, 0] = 0.0
        e = np.abs(rng.normal(size=b.shape))
        e[2] = 0.5
        A = np.eye(d) - (1.0 + b[..., :, None] * b[..., None, :]) / d
        magnitude = 1.0 + np.abs(b[..., :, None] * b[..., None, :])
        worst, square = _normalisation_products(b, e)
        np.testing.assert_array_less(np.abs(worst - (np.abs(A) @ e[..., None])[..., 0]),
                                     1e-13 * ((magnitude / d) @ e[..., None])[..., 0] + 1e-13 * e + 1e-300)
        np.testing.assert_array_less(np.abs(square - (A * A @ (e * e)[..., None])[..., 0]),
                                     1e-13 * ((magnitude**2 / d**2) @ (e * e)[..., None])[..., 0] + 1e-13 * e * e + 1e-300)
