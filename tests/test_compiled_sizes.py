"""A backend that compiles per shape (``compiles_per_shape``, backends/CONTRACT.md) meets sizes
from ``size_menu`` only, each example's structure one of ``FAMILIES`` (``Family``), and the
suite still catches bugs and passes correct code on them.

The strategies read the attribute at draw time (conformance/kit/features.py ``compiled``); the
gate runs the mutants of tests/compiled_backends.py, which declare it, and must fail each on
the ops its bug lives in, while the NumPy backend declaring it passes every op run.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.kit import features
from conformance.kit.strategies import FAMILIES, Family, choices, configs, shapes, size_menu, sizes
from conformance.kit.verdicts import FAILING
from tests import compiled_backends, gate_runs
from tests.mutants import catalog

COMPILED = SimpleNamespace(name="compiled", dtype="float64", device="cpu", compiles_per_shape=True)
PLAIN = SimpleNamespace(name="plain", dtype="float64", device="cpu")


@given(lo=st.integers(0, 50), width=st.integers(0, 3000))
def test_size_menu_is_lo_hi_and_one_between(lo: int, width: int) -> None:
    hi = lo + width
    menu = size_menu(lo, hi)
    assert menu == sorted(set(menu)) and menu[0] == lo and menu[-1] == hi and len(menu) <= 3, menu
    assert all(lo <= size <= hi for size in menu), menu
    assert len(menu) == min(3, width + 1), menu


def draws(backend: Any, strategy: st.SearchStrategy[Any], n: int = 200) -> list[Any]:
    """``n`` values of ``strategy`` drawn while a test of ``forward`` runs on ``backend``."""
    seen: list[Any] = []

    @settings(max_examples=n, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(value=strategy)
    def collect(value: Any) -> None:
        seen.append(value)

    features.start(backend, "forward")
    try:
        collect()
    finally:
        features.stop()
    return seen


def test_a_compiled_backend_meets_only_menu_sizes() -> None:
    assert set(draws(COMPILED, sizes(1, 16))) == {1, 9, 16}
    assert {side for shape in draws(COMPILED, shapes(min_dims=1, max_dims=3, max_side=6)) for side in shape} <= {1, 3, 6}
    cfgs = draws(COMPILED, configs())
    assert {c["d_model"] for c in cfgs} <= {2, 10, 16} and {c["d_ff"] for c in cfgs} <= {1, 9, 16}
    assert {c["src_vocab_size"] for c in cfgs} | {c["tgt_vocab_size"] for c in cfgs} <= {3, 7, 12}


STRUCTURE = ("d_model", "num_heads", "d_ff", "num_encoder_layers", "num_decoder_layers", "src_vocab_size",
             "tgt_vocab_size", "layer_norm_eps", "norm_first", "scale_embedding", "activation")
"""The config keys that key a compiled program (its shapes and static arguments)."""


def test_a_compiled_backends_configs_come_from_the_families() -> None:
    structures = {tuple(c[k] for k in STRUCTURE) for c in draws(COMPILED, configs())}
    assert 2 < len(structures) <= FAMILIES, structures


def test_family_zero_is_the_simplest_everywhere() -> None:
    family = Family(0)
    assert [family.pick(size_menu(1, 16)) for _ in range(3)] == [1, 1, 1]
    assert family.pick(["relu", "gelu"]) == "relu"


@pytest.mark.parametrize("options", [size_menu(1, 16), [False, True], [1e-5, 1e-6, 1e-3], [1, 2, 3, 4, 8, 16, 64]])
def test_every_option_occurs_in_some_family(options: list[Any]) -> None:
    """FAMILIES - 1 is at least the longest list of options a strategy offers (D_K's 7)."""
    for occurrence in range(3):
        picks = set()
        for number in range(FAMILIES):
            family = Family(number)
            for _ in range(occurrence):
                family.pick(options)
            picks.add(family.pick(options))
        assert picks == set(options), (occurrence, picks)


def test_a_family_picks_the_same_whatever_else_the_example_drew() -> None:
    """Two tests that draw the same options meet the same sizes even if one draws other things
    in between, and a repeated draw (a second length) may differ from the first."""
    plain, interleaved = Family(5), Family(5)
    interleaved.pick(["relu", "gelu"])
    assert [plain.pick(size_menu(1, 8)) for _ in range(4)] == [interleaved.pick(size_menu(1, 8)) for _ in range(4)]
    families = [Family(n) for n in range(FAMILIES)]
    assert len({(f.pick(size_menu(1, 8)), f.pick(size_menu(1, 8))) for f in families}) > 3


@st.composite
def _a_choice(draw: st.DrawFn) -> int:
    return draw(choices([1, 2, 4, 8, 16]))


def test_choices_are_the_family_pick_or_any_option() -> None:
    assert set(draws(COMPILED, _a_choice())) == set(draws(PLAIN, _a_choice())) == {1, 2, 4, 8, 16}


def test_any_other_backend_meets_every_size() -> None:
    assert set(draws(PLAIN, sizes(1, 16), n=400)) == set(range(1, 17))
    assert len({c["d_model"] for c in draws(PLAIN, configs())}) > 3


GATE_OPS = sorted({op for name in compiled_backends.MUTANTS for op in catalog.ALL[name].ops})


@pytest.fixture(scope="module")
def gate_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any]]:
    """The gate (ci profile) on the compiled NumPy backend and the compiled mutants, on the
    mutants' ops (``GATE_OPS``), float64; without the diagnosis (``CONFORMANCE_DIAGNOSIS=off``:
    a tenth of this run, and these tests look only at the verdicts; tests/test_diagnosis.py
    checks the diagnosis)."""
    specs = ["numpy", *compiled_backends.MUTANTS]
    argv = [*(a for name in specs for a in ("--backend", f"tests.compiled_backends:{name}")),
            "--dtype", "float64", "--profile", "ci", "--ops", ",".join(GATE_OPS), "-n", "0"]
    return gate_runs.run_gate(argv, folder=gate_runs.shared_folder(tmp_path_factory, "compiled-gate") / "run",
                              env={"CONFORMANCE_DIAGNOSIS": "off"})


def statuses(report: dict[str, Any], spec_name: str) -> dict[str, str]:
    target = f"{spec_name}-float64"
    return {r["op"]: r["status"] for r in report["results"] if r["target"] == target}


@pytest.mark.timeout(900)
def test_the_gate_reports_the_targets_as_compiled(gate_report: tuple[int, dict[str, Any]]) -> None:
    code, report = gate_report
    assert not report["errors"], report["errors"]
    assert code == 1
    assert all(t["compiles_per_shape"] for t in report["targets"]), report["targets"]


@pytest.mark.timeout(900)
def test_correct_code_passes_on_menu_sizes(gate_report: tuple[int, dict[str, Any]]) -> None:
    ops = statuses(gate_report[1], "numpy")
    assert set(ops) == set(GATE_OPS) and all(s == "pass" for s in ops.values()), ops


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", compiled_backends.MUTANTS)
def test_mutants_are_caught_on_menu_sizes(name: str, gate_report: tuple[int, dict[str, Any]]) -> None:
    ops = statuses(gate_report[1], name)
    missed = {op: ops.get(op, "not run") for op in catalog.ALL[name].ops if ops.get(op) not in FAILING}
    assert not missed, f"{name} ({catalog.bug(name)}) not caught on menu sizes: {missed}; all: {ops}"
