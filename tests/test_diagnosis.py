"""The gate names the convention a failing backend follows (conformance/tolerance/diagnosis.py).

For every variant of the catalogue (reference/variants.py), the mutant that implements it
(tests/mutants/conventions.py ``BY_VARIANT``) is run through the gate (the same grouped runs
as tests/test_mutants_caught.py, shared when both run in one session), and every failing
differential test of the variant's op must be diagnosed as that variant; a mutant whose bug
is no convention is reported "no known convention". Known-deviations entries that cite a
variant cover a failure only while the diagnosis still names it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from conformance.gate import deviations  # noqa: E402
from conformance.tolerance.diagnosis import Diagnosis  # noqa: E402
from conformance.gate.tally import TestResult  # noqa: E402
from reference import variants  # noqa: E402
from reference.variants import CATALOGUE  # noqa: E402
from tests.mutants import catalog, conventions  # noqa: E402
from tests.test_mutants_caught import gate_folder, group_of, run_gate  # noqa: E402, F401

import reference  # noqa: E402


def _diagnosed(report: dict, target: str, op: str) -> list[dict]:
    """The failing differential tests of ``op`` on ``target`` in a gate report."""
    rows = [r for r in report["results"] if r["target"] == target and r["op"] == op]
    return [f for r in rows for f in r["failures"] if f["kind"] == "differential"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("variant", list(conventions.BY_VARIANT))
def test_gate_names_the_variant_of_its_mutant(variant: str, gate_folder: Path) -> None:
    """Every failing differential test of the op is diagnosed as the mutant's variant (or as
    one giving the same values on that case), in report.json and the op's summary."""
    name, op = conventions.BY_VARIANT[variant]
    code, report = run_gate(group_of(name), gate_folder)
    target = f"{name}-{catalog.ALL[name].dtype}"
    failures = _diagnosed(report, target, op)
    assert code == 1 and failures, f"{name}: no differential failure of {op} on {target} (exit {code})"
    wrong = {f["nodeid"]: f["diagnosis"] for f in failures
             if not f["diagnosis"] or variant not in f["diagnosis"]["variants"] + f["diagnosis"]["alike"]}
    assert not wrong, f"{name} ({catalog.bug(name)}): {op} not diagnosed as `{variant}`: {wrong}"
    summary = next(r["diagnosis"] for r in report["results"] if r["target"] == target and r["op"] == op)
    assert f"`{variant}`" in summary


@pytest.mark.timeout(900)
def test_gate_says_no_known_convention(gate_folder: Path) -> None:
    """A bug that is no convention (keys rolled by one) is diagnosed as none."""
    name, op = conventions.NO_CONVENTION
    code, report = run_gate(group_of(name), gate_folder)
    failures = _diagnosed(report, f"{name}-{catalog.ALL[name].dtype}", op)
    assert code == 1 and failures
    named = {f["nodeid"]: f["diagnosis"] for f in failures if not f["diagnosis"] or f["diagnosis"]["variants"]}
    assert not named, f"{name}: expected 'no known convention', got {named}"
    assert all(f["diagnosis"]["text"].startswith("no known convention") for f in failures)


def test_every_variant_has_a_mutant_and_a_source() -> None:
    """The catalogue and the mutants agree, and every variant cites a source."""
    assert set(conventions.BY_VARIANT) == set(CATALOGUE)
    assert all(name in catalog.ALL for name, _ in conventions.BY_VARIANT.values())
    assert all(v.links and all(link.startswith("https://") for link in v.links) for v in CATALOGUE.values())
    listed = (Path(__file__).resolve().parents[1] / "conformance" / "tolerance" / "VARIANTS.md").read_text(encoding="utf-8")
    missing = [text for v in CATALOGUE.values() for text in (f"| `{v.id}` |", *v.links) if text not in listed]
    assert not missing, f"conformance/tolerance/VARIANTS.md does not list: {missing}"


def test_active_rejects_unknown_ids_and_restores() -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        with variants.active("no-such-variant"):
            pass
    with variants.active("gelu-tanh"):
        assert variants.ACTIVE == {"gelu-tanh"}
    assert variants.ACTIVE == frozenset()


def test_a_variant_changes_the_reference_and_leaves_the_default_path() -> None:
    """Under a variant the reference computes the convention; outside it, the contract."""
    before = reference.positional_encoding(4, 4)
    with variants.active("pe-sin-cos-halves"):
        halves = reference.positional_encoding(4, 4)
    angle = np.arange(4)[:, None] / 10000.0 ** (np.arange(0, 4, 2) / 4)
    np.testing.assert_array_equal(halves, np.concatenate([np.sin(angle), np.cos(angle)], axis=-1))
    np.testing.assert_array_equal(reference.positional_encoding(4, 4), before)


@pytest.mark.parametrize(("seq_len", "d_model"), [(7, 8), (50, 512)])
def test_a_float32_table_of_sin_cos_halves_is_named_as_the_pair(seq_len: int, d_model: int) -> None:
    """Marian's float64 model: the [sin | cos] table stored through float32. Neither variant
    alone explains it (halves: the float32 rounding exceeds float64's tolerance; float32
    table: the layout), the pair does, on a small and a realistic table."""
    from conformance.tolerance import diagnosis
    from conformance.tolerance.model import expected

    with variants.active("pe-sin-cos-halves"):
        marian = reference.positional_encoding(seq_len, d_model).astype(np.float32).astype(np.float64)
    want = expected("positional_encoding", [seq_len, d_model], {}, dtype="float64")
    found = diagnosis.diagnose("positional_encoding", [seq_len, d_model], {}, marian, want, dtype="float64")
    assert found.variants == ("pe-sin-cos-halves", "pe-table-float32"), found.text
    assert "pe-sin-cos-halves" in found.text and "pe-table-float32" in found.text



def test_a_case_whose_compared_elements_are_all_nan_is_not_taken_as_evidence() -> None:
    """A d = 1 layer-norm row without eps is 0/0 = NaN, and so is the unbiased variance's
    d - 1 = 0: the variant agrees, but only by NaN, and the diagnosis says it cannot tell.
    The same variant's NaN on a lone fully masked softmax row beside a finite one is evidence."""
    from conformance.tolerance import diagnosis
    from conformance.tolerance.model import expected

    args = [np.array([[[0.5]]]), np.ones(1), np.zeros(1), 1e-5]
    want = expected("layer_norm", args, {}, dtype="float64")
    found = diagnosis.diagnose("layer_norm", args, {}, np.full((1, 1, 1), np.nan), want, dtype="float64")
    assert found.variants == ("layer-norm-unbiased-variance",) and found.nan_only, found.text
    assert "cannot tell" in found.text and not found.text.startswith("conforms")
    rows = np.array([[0.0, 1.0], [-np.inf, -np.inf]])
    want = expected("softmax", [rows], {}, dtype="float64")
    backend = np.vstack([reference.softmax(rows[:1]), [[np.nan, np.nan]]])
    found = diagnosis.diagnose("softmax", [rows], {}, backend, want, dtype="float64")
    assert found.variants == ("softmax-nan-all-masked",) and not found.nan_only
    assert found.text.startswith("conforms under variant `softmax-nan-all-masked`")


def test_an_op_summary_counts_each_finding_of_its_failures() -> None:
    """Failures diagnosed differently are not listed as if each were the op's diagnosis: each
    finding comes with how many of the diagnosed failures it is."""
    from conformance.gate.tally import OpResult

    none = [_failing(t, Diagnosis(op="attention", tried=n, text=f"no known convention ({n} variant evaluation(s) measured)"))
            for t, n in (("a", 3), ("b", 5))]
    nan = _failing("c", Diagnosis(op="attention", variants=("mask-finfo-min",), nan_only=True, text="NaN where ..."))
    assert OpResult("attention", "t", none[:1]).diagnosis == "no known convention (3 variant evaluation(s) measured)"
    assert OpResult("attention", "t", [*none, nan]).diagnosis == (
        "no known convention (2 of 3 diagnosed failures); NaN where ... (1 of 3 diagnosed failures)")

def _failing(test: str, diagnosis: Diagnosis | None) -> TestResult:
    return TestResult(nodeid=f"{test}[t]", test=test, op="attention", kind="differential", target="t",
                      outcome="failed", diagnosis=diagnosis)


def test_a_deviation_citing_a_variant_covers_only_what_it_still_explains(tmp_path: Path) -> None:
    """An entry with ``variant`` accepts a failure diagnosed as it; a failure diagnosed
    otherwise is no longer known (a note says why); an undiagnosed test of the op is covered
    while a diagnosed one is explained, and when no differential test of the op failed."""
    path = tmp_path / "known.toml"
    path.write_text('[[deviation]]\nbackend = "b"\ndtype = "*"\nop = "attention"\nreason = "finfo.min mask"\n'
                    'variant = "mask-finfo-min"\n', encoding="utf-8")
    entries = deviations.load(path)
    targets = {"t": {"id": "t", "spec": "b", "dtype": "float32", "device": "cpu"}}
    explained = _failing("a", Diagnosis(op="attention", variants=("mask-finfo-min",), text="conforms under ..."))
    property_test = TestResult(nodeid="p[t]", test="p", op="attention", kind="property", target="t", outcome="failed")
    deviations.apply(entries, [explained, property_test], targets)
    assert explained.deviation is entries[0] and property_test.deviation is entries[0]
    changed = _failing("a", Diagnosis(op="attention", text="no known convention"))
    property_alone = TestResult(nodeid="p[t]", test="p", op="attention", kind="property", target="t", outcome="failed")
    deviations.apply(entries, [changed, property_alone], targets)
    assert changed.deviation is None and property_alone.deviation is None
    assert "no known convention" in changed.notes[0] and "cites variant `mask-finfo-min`" in changed.notes[0]
    uncontradicted = TestResult(nodeid="p[t]", test="p", op="attention", kind="property", target="t", outcome="failed")
    deviations.apply(entries, [uncontradicted], targets)
    assert uncontradicted.deviation is entries[0]


def test_an_unknown_variant_in_a_deviations_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "known.toml"
    path.write_text('[[deviation]]\nbackend = "b"\ndtype = "*"\nop = "attention"\nreason = "r"\nvariant = "nope"\n',
                    encoding="utf-8")
    with pytest.raises(deviations.DeviationsError, match=r"known.toml:1: .*unknown variant 'nope'"):
        deviations.load(path)
