"""The suite's resolution: the smallest systematic error the differential comparison detects,
per op and dtype (conformance/tolerance/TOLERANCES.md, "Resolution"; README Figures).

A systematic error is a correct result moved by a small, consistent amount: every output
scaled by (1 + k u) (u the dtype's unit roundoff), the attention scores scaled by (1 + k u),
layer norm's eps misread by a factor, the tanh GELU. For each, the script evaluates the
tolerance model's verdict (every element within its tolerance, and the root mean square of
err/tol within RMS_LIMIT) on the same seeded cases the tolerance benchmark draws
(benchmarks/bench_tolerances.py: small Hypothesis-like shapes and deep ones), and reports the
smallest k (a power of two) at which at least one case fails: what a gate run with a few dozen
examples would catch. Run::

    python benchmarks/resolution.py [--cases 30] [--ops softmax layer_norm ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import reference  # noqa: E402
from conformance.tolerance import model  # noqa: E402
from backends.ops import Case  # noqa: E402
from benchmarks.bench_tolerances import MEASURED, expected_for, random_case  # noqa: E402
from reference.precision import DTYPES, rounded  # noqa: E402

POWERS = range(0, 31)


def detected(actual: np.ndarray, want: Any, where: np.ndarray | None) -> bool:
    """The tolerance model's verdict on ``actual`` (True: it fails)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(actual == want.value, 0.0, np.abs(actual - want.value) / want.tol)
    if where is not None:
        ratio = ratio[np.broadcast_to(where, ratio.shape)]
    ratio = np.nan_to_num(ratio, nan=np.inf).ravel()
    return bool(ratio.size and (ratio.max() > 1 or (ratio.size >= model.MIN_COUNT
                                                  and model.rms_ratio(ratio) > model.RMS_LIMIT)))


def smallest_k(cases: list[Case], dtype: str, moved: Callable[[Case, list, dict, Any, float], np.ndarray]) -> int | None:
    """The smallest k = 2^j at which some case's result moved by ``moved(..., k u)`` fails."""
    prepared = [(case, *expected_for(case, dtype)) for case in cases]
    u = reference.unit_roundoff(dtype)
    for j in POWERS:
        for case, args, kwargs, want in prepared:
            actual = rounded(moved(case, args, kwargs, want, 2.0**j * u), dtype).astype(np.float64)
            if detected(actual, want, case.where):
                return 2**j
    return None


def output_bias(case: Case, args: list, kwargs: dict, want: Any, e: float) -> np.ndarray:
    return want.value * (1.0 + e)


def score_bias(case: Case, args: list, kwargs: dict, want: Any, e: float) -> np.ndarray:
    q = args[0] * (1.0 + e)
    return model.reference_value(case.op, [q, *args[1:]], kwargs)


def eps_factor(factor: float) -> Callable[[Case, list, dict, Any, float], np.ndarray]:
    def moved(case: Case, args: list, kwargs: dict, want: Any, e: float) -> np.ndarray:
        x, gamma, beta, eps = args
        return model.reference_value("layer_norm", [x, gamma, beta, eps * factor], kwargs)
    return moved


def tanh_gelu(case: Case, args: list, kwargs: dict, want: Any, e: float) -> np.ndarray:
    x, p = args[0], args[1]
    h = x @ p["w_1"] + p["b_1"]
    g = 0.5 * h * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (h + 0.044715 * h**3)))
    return g @ p["w_2"] + p["b_2"]


def gelu_cases(rng: np.random.Generator, count: int) -> list[Case]:
    cases = []
    while len(cases) < count:
        case = random_case("feed_forward", rng)
        if case.kwargs.get("activation", case.args[2] if len(case.args) > 2 else "relu") == "gelu":
            cases.append(case)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=30, help="small random cases per op (plus a fifth as many deep)")
    parser.add_argument("--ops", nargs="*", default=list(MEASURED))
    parser.add_argument("--seed", type=int, default=0)
    parsed = parser.parse_args()
    print(f"rule: {model.describe()}\n")
    print("| error | op | " + " | ".join(DTYPES) + " |")
    print("|---|---|" + "---|" * len(DTYPES))

    def row(label: str, op: str, cases: list[Case], moved: Callable, as_yes: bool = False) -> None:
        cells = []
        for dtype in DTYPES:
            k = smallest_k(cases, dtype, moved)
            cells.append(("caught" if k is not None else "missed") if as_yes else (f"{k} u" if k else "> 2^30 u"))
        print(f"| {label} | {op} | " + " | ".join(cells) + " |", flush=True)

    for op in parsed.ops:
        if op == "embedding":
            continue
        rng = np.random.default_rng([parsed.seed, sum(map(ord, op))])
        cases = [random_case(op, rng) for _ in range(parsed.cases)]
        cases += [random_case(op, rng, deep=True) for _ in range(max(1, parsed.cases // 5))]
        row("output x (1 + k u)", op, cases, output_bias)
        if op in ("attention_weights", "attention"):
            row("scores x (1 + k u)", op, cases, score_bias)
        if op == "layer_norm":
            row("eps read 10x smaller", op, cases, eps_factor(0.1), as_yes=True)
            row("eps read 2x smaller", op, cases, eps_factor(0.5), as_yes=True)
        if op == "feed_forward":
            row("tanh GELU", op, gelu_cases(rng, parsed.cases), tanh_gelu, as_yes=True)


if __name__ == "__main__":
    main()
