"""No false alarms: every correct implementation of the zoo passes the gate (tests/correct/).

Each member of tests/correct/catalog.py computes the contract by a legitimate algorithm that
differs from the reference's naive equations (another summation order, FlashAttention's online
softmax, Welford's variance, erf from another library, ...). The gate (``python -m conformance
run``, in process, ``ci`` profile, both suites) runs every member at every dtype it supports
and must pass every op it checks. Then NumPy's own backend and the reference run under each
OpenBLAS kernel this CPU can run (``OPENBLAS_CORETYPE``, read when the gate's pytest process
loads NumPy), and must pass too.

To keep the run to a few minutes on two cores, each member is checked only on the ops whose
algorithm it changes (``Member.changes``) plus the lowest model-level op built on them
(``catalog.gate_ops``: ``encoder_layer`` for the layers' parts, ``encode`` for the embedding
stage), and the OpenBLAS runs only on the ops with a matrix product plus ``encoder_layer``.
Members with the same ops share one gate run (at most ``MAX_GROUP_COST`` op x dtype checks
each, so that pytest-xdist spreads the runs over its workers). As in
tests/test_mutants_caught.py, the gate's pytest loads tests/mutants/first_failure.py: the ci
profile's examples, but a failing test stops at its first failure instead of shrinking it
(the verdict is the same; benchmarks/correct_zoo.py shrinks and reports the worst ratios).

Run it alone with ``pytest tests/test_correct_zoo.py`` or ``pytest -k correct_zoo``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from backends.contract import DTYPES, OPS  # noqa: E402
from backends.registry import load_backend  # noqa: E402
from tests import gate_runs  # noqa: E402
from tests.correct import catalog, openblas  # noqa: E402
from tests.correct.registry import MATMULS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIN_MEMBERS = 12
MAX_GROUP_COST = 64
GATE_TIMEOUT_S = 900
OPENBLAS_OPS = (*MATMULS, "encoder_layer")
OPENBLAS_TARGETS = (("numpy", "float32"), ("reference", "float64"))
"""What runs under each OpenBLAS kernel: NumPy's float32 backend (sgemm) and the float64
reference (dgemm; its tolerance is measured through float32)."""


def cost(names: tuple[str, ...]) -> int:
    """Op x dtype checks of a group of members."""
    return sum(len(catalog.gate_ops(n)) * len(catalog.ALL[n].dtypes) for n in names)


def member_groups() -> list[tuple[str, ...]]:
    """Members with the same gate ops and dtypes, in runs of at most MAX_GROUP_COST checks,
    largest first (the same dtypes: an unsupported target still costs the fixed cases' reference
    evaluations)."""
    by_ops: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = defaultdict(list)
    for name in catalog.ALL:
        by_ops[catalog.gate_ops(name), catalog.ALL[name].dtypes].append(name)
    groups: list[tuple[str, ...]] = []
    for names in by_ops.values():
        chunk: list[str] = []
        for name in names:
            if chunk and cost((*chunk, name)) > MAX_GROUP_COST:
                groups.append(tuple(chunk))
                chunk = []
            chunk.append(name)
        groups.append(tuple(chunk))
    return sorted(groups, key=cost, reverse=True)


def _ratio(result: dict[str, Any] | None) -> str:
    ratio = None if result is None else result["worst_ratio"]
    return "-" if ratio is None else str(ratio) if isinstance(ratio, str) else f"{ratio:.3g}"


def op_problems(report: dict[str, Any], target: str, ops: tuple[str, ...]) -> list[str]:
    """Why ``target`` did not pass each of ``ops`` in the gate's report.json (empty: all passed)."""
    info = {t["id"]: t for t in report["targets"]}.get(target)
    if info is None or info["status"] != "tested":
        return [f"{target}: not tested ({info and info['reason']})"]
    results = {r["op"]: r for r in report["results"] if r["target"] == target}
    problems = []
    for op in ops:
        result = results.get(op)
        if result is None or result["status"] != "pass":
            first = (result or {}).get("failures") or [{}]
            problems.append(f"{target}.{op}: {result and result['status']} (worst err/tol {_ratio(result)}): "
                            f"{first[0].get('nodeid', '')} {first[0].get('message', '')}".rstrip())
    return problems


@pytest.fixture(scope="session")
def zoo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gate_runs.shared_folder(tmp_path_factory, "correct-zoo-gates")


@pytest.mark.timeout(GATE_TIMEOUT_S)
@pytest.mark.parametrize("names", member_groups(), ids="+".join)
def test_correct_zoo_passes_the_gate(names: tuple[str, ...], zoo_folder: Path) -> None:
    """Each member of the group passes every op of ``gate_ops`` at each dtype it supports."""
    ops, dtypes = catalog.gate_ops(names[0]), catalog.ALL[names[0]].dtypes
    argv = [*(a for n in names for a in ("--backend", catalog.spec(n))), *(a for d in dtypes for a in ("--dtype", d)),
            "--profile", "ci", "--ops", ",".join(ops), "-n", "0"]
    code, report = gate_runs.run_gate(argv, folder=zoo_folder / "+".join(names))
    assert not report["errors"], f"the gate had set-up errors (exit {code}): {report['errors']}"
    problems = [p for n in names for d in catalog.ALL[n].dtypes for p in op_problems(report, f"{n}-{d}", ops)]
    assert code == 0 and not problems, (
        f"false alarms on correct implementations (gate exit {code}):\n  " + "\n  ".join(problems)
        + "\nalgorithms: " + "; ".join(f"{n}: {catalog.algorithm(n)}" for n in names))


@pytest.fixture(scope="session")
def kernel_plan() -> dict[str, openblas.KernelRun]:
    """Which OpenBLAS kernels run here (probed once per worker, a fresh process per kernel)."""
    return {run.kernel: run for run in openblas.plan()}


@pytest.mark.timeout(GATE_TIMEOUT_S)
@pytest.mark.parametrize("kernel", openblas.KERNELS)
def test_correct_zoo_numpy_under_openblas_kernel(kernel: str, kernel_plan: dict[str, openblas.KernelRun],
                                                 zoo_folder: Path) -> None:
    """With OPENBLAS_CORETYPE=kernel, the numpy backend (float32) and the reference (float64)
    pass the gate on every op with a matrix product; a kernel this CPU lacks is skipped, saying
    which kernel OpenBLAS would run instead."""
    run = kernel_plan[kernel]
    if run.skip:
        pytest.skip(run.skip)
    specs, dtypes = sorted({s for s, _ in OPENBLAS_TARGETS}), sorted({d for _, d in OPENBLAS_TARGETS})
    argv = [*(a for s in specs for a in ("--backend", s)), *(a for d in dtypes for a in ("--dtype", d)),
            "--profile", "ci", "--ops", ",".join(OPENBLAS_OPS), "-n", "0"]
    code, report = gate_runs.run_gate(argv, folder=zoo_folder / f"openblas-{kernel}",
                                      env={openblas.VARIABLE: kernel})
    assert not report["errors"], f"the gate had set-up errors (exit {code}): {report['errors']}"
    problems = [p for s, d in OPENBLAS_TARGETS for p in op_problems(report, f"{s}-{d}", OPENBLAS_OPS)]
    failing = [r for r in report["results"] if r["status"] not in ("pass", "unsupported")]
    assert code == 0 and not problems and not failing, (
        f"{openblas.VARIABLE}={run.label}: false alarms (gate exit {code}):\n  " + "\n  ".join(
            problems + [f"{r['target']}.{r['op']}: {r['status']} (worst err/tol {_ratio(r)})" for r in failing]))


def test_correct_zoo_is_large_and_well_declared() -> None:
    """At least 12 members; each names its algorithm in one line and only contract ops; loads
    from both spec forms at each of its dtypes, named correct:NAME; refuses the other dtypes
    with a ValueError (the gate's *unsupported*)."""
    assert len(catalog.ALL) >= MIN_MEMBERS, f"only {len(catalog.ALL)} correct implementations"
    for name, member in catalog.ALL.items():
        doc = catalog.algorithm(name)
        assert doc and "\n" not in doc, f"correct:{name} needs a one-line docstring naming its algorithm, got {doc!r}"
        assert set(member.changes) <= set(OPS) and set(member.dtypes) <= set(DTYPES), (name, member)
        for spec in (catalog.spec(name), f"{ROOT / 'tests' / 'correct' / 'catalog.py'}:{name}"):
            for dtype in member.dtypes:
                backend = load_backend(spec, dtype=dtype)
                assert (backend.name, backend.dtype) == (f"correct:{name}", dtype), (spec, dtype)
        for dtype in set(DTYPES) - set(member.dtypes):
            with pytest.raises(ValueError, match=f"unsupported by correct:{name}"):
                member.factory(dtype=dtype)


# --- the zoo's own pieces: each does what its name says, and the verdict can fail ----------------

def test_correct_zoo_summation_orders_are_the_ones_named() -> None:
    """On 1 followed by three float32 half-ulps of 1 (t = 2^-24, ties round to even): left to
    right each t rounds away (1); right to left 3t comes first and 1 + 3t rounds to 1 + 4t;
    pairwise, (1 + t) rounds to 1 and (t + t) survives (1 + 2t). Blocks of 4 are summed by
    torch.sum, the block sums added in order."""
    import torch

    from tests.correct import summation

    t = 2.0 ** -24
    x = torch.tensor([1.0, t, t, t], dtype=torch.float32)
    found = {fold.__name__: float(fold(x, 0)) for fold in
             (summation.sequential, summation.reversed_order, summation.pairwise)}
    assert found == {"sequential": 1.0, "reversed_order": 1.0 + 4 * t, "pairwise": 1.0 + 2 * t}, found
    y = torch.randn(3, 9, dtype=torch.float32)
    assert torch.equal(summation.blocked(y, -1), y[:, :4].sum(-1) + y[:, 4:8].sum(-1) + y[:, 8:].sum(-1))


def test_correct_zoo_matmuls_agree_with_float64() -> None:
    """Every matmul of summation.py is a matrix product: within a few ulps of float64 at
    float32 and within float64 rounding at float64 (fma needs narrower inputs)."""
    import torch

    from tests.correct import summation

    a, b = torch.randn(2, 3, 5, 13, dtype=torch.float64), torch.randn(13, 7, dtype=torch.float64)
    matmuls = {"split_k": summation.split_k_matmul, "fma": summation.fma_matmul,
               **{f.__name__: (lambda f: lambda x, y: summation.folded_matmul(x, y, f))(f)
                  for f in (summation.sequential, summation.reversed_order, summation.pairwise, summation.blocked)}}
    for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 1e-5)):
        x, y = a.to(dtype), b.to(dtype)
        exact = x.double() @ y.double()
        for name, matmul in matmuls.items():
            if name == "fma" and dtype == torch.float64:
                with pytest.raises(ValueError):
                    matmul(x, y)
                continue
            out = matmul(x, y)
            assert out.dtype == dtype and out.shape == exact.shape, (name, out.dtype, out.shape)
            assert float((out.double() - exact).abs().max()) < tol * float(exact.abs().max()), (name, dtype)


def test_correct_zoo_flash_softmax_is_a_softmax() -> None:
    """FlashAttention's weights sum to 1 per row, give exact zeros for masked keys and for a row
    with every key masked, and its attention is those weights times V."""
    import torch

    from tests.correct import flash

    q, k, v = torch.randn(2, 5, 4, dtype=torch.float64) * 3, torch.randn(2, 7, 4, dtype=torch.float64) * 3, \
        torch.randn(2, 7, 3, dtype=torch.float64)
    mask = torch.rand(2, 5, 7) < 0.6
    mask[0, 1] = False
    w = flash.attention_weights(q, k, mask)
    assert torch.all(w[~mask] == 0) and torch.all(w[0, 1] == 0)
    rows = mask.any(-1)
    assert torch.allclose(w.sum(-1)[rows], torch.ones_like(w.sum(-1)[rows]), atol=1e-12)
    assert torch.allclose(w, torch.softmax((q @ k.transpose(-2, -1) / 2).masked_fill(~mask, -torch.inf), -1)
                          .nan_to_num(0.0), atol=1e-12)
    assert torch.allclose(flash.attention(q, k, v, mask), w @ v, atol=1e-12)


def test_correct_zoo_verdict_names_what_failed() -> None:
    """``op_problems`` (the test's verdict) passes a target whose ops all pass and names, for a
    failing op, an op that was not run, and an untested target, the target, op, status, worst
    ratio and the failing test's message."""
    report = {"targets": [{"id": "m-float32", "status": "tested", "reason": None},
                          {"id": "m-float16", "status": "unsupported", "reason": "dtype 'float16' is unsupported"}],
              "results": [{"target": "m-float32", "op": "softmax", "status": "pass", "worst_ratio": 0.4,
                           "failures": []},
                          {"target": "m-float32", "op": "attention", "status": "fail", "worst_ratio": 1.83,
                           "failures": [{"nodeid": "t.py::test_x[m-float32]", "message": "out[1, 2] = 0.3"}]}]}
    assert op_problems(report, "m-float32", ("softmax",)) == []
    problems = op_problems(report, "m-float32", ("softmax", "attention", "layer_norm"))
    assert problems == ["m-float32.attention: fail (worst err/tol 1.83): t.py::test_x[m-float32] out[1, 2] = 0.3",
                        "m-float32.layer_norm: None (worst err/tol -):"], problems
    assert op_problems(report, "m-float16", ("softmax",)) == [
        "m-float16: not tested (dtype 'float16' is unsupported)"]
