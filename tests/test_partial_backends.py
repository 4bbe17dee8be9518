"""Issue 17, parts 1 and 3: a partial backend cannot pass by raising NotImplementedError, a pass
says how much it rests on, a backend's feature declaration is honoured, and every op taking
padding masks meets every padding pattern (the fixed cases of
conformance/differential/test_mask_kinds.py, so not by the luck of the draws).

Gate runs (``python -m conformance run``, the real suites, profile ci) on the backends of
tests/partial_backends.py and on the correct numpy backend; the right-padding-only backend of
the mutant zoo is run by tests/test_mutants_caught.py (catalog.PADDING_OPS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.numpy_backend import NumpyBackend
from backends.registry import load_backend
from conformance.kit import features
from conformance.differential import test_mask_kinds as mask_kind_cases
from conformance.kit.harness import call_op
from tests.mutants.catalog import PADDING_OPS

ROOT = Path(__file__).resolve().parent.parent
PARTIAL = str(ROOT / "tests" / "partial_backends.py")


def gate(report_dir: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """(exit status, report.json, stdout followed by report.md) of one gate run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "conformance", "run", *args, "--profile", "ci", "-n", "2",
                           "--report-dir", str(report_dir)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    markdown = (report_dir / "report.md").read_text()
    return done.returncode, json.loads((report_dir / "report.json").read_text()), done.stdout + markdown


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str]:
    return gate(tmp_path_factory.mktemp("partial"), f"--backend={PARTIAL}:causal_post_ln_only",
                f"--backend={PARTIAL}:declared_post_ln_only", "--dtype", "float64", "--ops", "decoder_layer",
                "--require", "decoder_layer:norm_first=false")


def result(document: dict[str, Any], target: str, op: str = "decoder_layer") -> dict[str, Any]:
    return next(r for r in document["results"] if r["target"] == target and r["op"] == op)


def test_a_buggy_partial_backend_fails_the_gate(partial_run):
    """Post-LN only (NotImplementedError for pre-LN) with a causal mask where the contract says
    none: the failure is found and kept, although pre-LN examples keep being drawn."""
    code, document, out = partial_run
    assert code == 1 and "conformance gate: FAIL (exit 1)" in out
    decoder = result(document, "causal_post_ln_only-float64")
    assert decoder["status"] == "fail", decoder
    assert decoder["coverage"]["examples_not_implemented"] > 0  # pre-LN examples were rejected, not a skip
    assert any("causal_post_ln_only[float64, cpu].decoder_layer: out[" in f["message"] for f in decoder["failures"])


def test_a_declaring_backend_gets_only_what_it_declares_and_its_pass_says_what_it_rests_on(partial_run):
    """Declared post-LN only: no pre-LN example is drawn (its pre-LN calls would raise), none is
    rejected, the fixed pre-LN case is not implemented, and the pass names what is missing."""
    _, document, out = partial_run
    decoder = result(document, "declared_post_ln_only-float64")
    coverage = decoder["coverage"]
    assert decoder["status"] == "pass" and decoder["failures"] == []
    assert coverage["features"]["norm_first"] == {"tested": [False], "not_tested": [True]}
    assert coverage["examples_not_implemented"] == 0
    assert coverage["tests_not_implemented"] == 1 and coverage["tests_run"] == coverage["tests"] - 1
    text = f"pass, {coverage['tests_run']} of {coverage['tests']} tests; pre-LN"
    assert f"declared_post_ln_only-float64  decoder_layer  {text}" in out  # the console table
    assert f"| decoder_layer | {text}" in out  # report.md
    assert document["require"]["missing"] == []  # norm_first=false was required, and tested


def test_require_demands_features(tmp_path):
    code, document, out = gate(tmp_path, f"--backend={PARTIAL}:declared_post_ln_only", "--dtype", "float64",
                               "--ops", "decoder_layer", "--require", "decoder_layer:norm_first")
    assert code == 1
    assert document["require"]["missing"] == [{"op": "decoder_layer", "target": "declared_post_ln_only-float64",
                                               "status": "pass", "requirement": "decoder_layer:norm_first",
                                               "not_tested": ["pre-LN"]}]
    assert "decoder_layer:norm_first on declared_post_ln_only-float64 (pass; pre-LN not tested)" in out


def test_every_op_taking_padding_masks_meets_every_pattern(tmp_path):
    """At the ci budget, on a correct backend, every mask argument of every op that takes
    padding masks ran with every kind (right, left, holes, all real, none; full patterns where
    the op takes them), and every feature value was tested: the passes rest on everything."""
    code, document, out = gate(tmp_path, "--backend", "numpy", "--dtype", "float32", "--ops", ",".join(PADDING_OPS))
    assert code == 0, out
    for op in PADDING_OPS:
        coverage = result(document, "numpy-float32", op)["coverage"]
        untested = {name: f["not_tested"] for name, f in coverage["features"].items() if f["not_tested"]}
        assert not untested and coverage["tests_run"] == coverage["tests"], (op, untested)


@pytest.mark.parametrize("op", PADDING_OPS)
def test_the_fixed_mask_kind_cases_fail_a_right_padding_only_backend_on_every_padding_op(op):
    """conformance/differential/test_mask_kinds.py, whatever the draws: a backend that turns key
    padding into a per-row key count passes right padding and fails left padding and holes, on
    every mask argument of every op that takes padding."""
    pytest.importorskip("torch")
    backend = load_backend("tests.mutants.zoo:right_padding_only", dtype="float64")
    for argument in (name for name in features.OP_FEATURES[op] if name in features.MASK_ARGUMENTS):
        mask_kind_cases.test_mask_kind(backend, op, argument, "right")
        for kind in ("left", "holes"):
            with pytest.raises(AssertionError, match=rf"right_padding_only\[float64, cpu\]\.{op}"):
                mask_kind_cases.test_mask_kind(backend, op, argument, kind)


class FailsThenNotImplemented(NumpyBackend):
    """softmax is wrong on rows of 3 or more entries and not implemented on shorter ones."""

    calls_after_failure = 0

    def softmax(self, x, axis=-1):
        if x.shape[-1] < 3:
            if self.failed:
                self.calls_after_failure += 1
            raise NotImplementedError("short rows")
        self.failed = True
        return np.zeros_like(x)

    failed = False


def test_a_found_failure_survives_later_not_implemented_examples():
    """The first example fails; shrinking towards shorter rows meets not-implemented ones: they
    are rejected, and the test still fails with the shrunk failing example (it used to skip)."""
    backend = FailsThenNotImplemented("partial", "float64")

    @settings(max_examples=30, derandomize=True, database=None)
    @given(n=st.integers(0, 5).map(lambda i: 6 - i))  # the simplest example (6) fails, later ones reach 2, 1
    def check(n):
        x = np.ones((1, n))
        call_op(backend, "softmax", x, shape=x.shape)
        np.testing.assert_allclose(call_op(backend, "softmax", x), 1.0 / n)

    with pytest.raises(AssertionError):
        check()
    assert backend.calls_after_failure > 0


def test_a_hypothesis_test_with_no_implemented_example_is_not_implemented():
    @settings(max_examples=10, database=None)
    @given(x=st.integers(1, 2), unused=st.integers(0, 10**6))  # never exhausted: the harness stops it
    def check(x, unused):
        call_op(FailsThenNotImplemented("partial", "float64"), "softmax", np.ones((1, x)))

    with pytest.raises(pytest.skip.Exception, match="not implemented"):
        check()


@pytest.mark.parametrize(("mask", "padding", "kind"), [
    (None, True, "none"), (np.ones((2, 3), bool), True, "all_real"),
    (np.array([[1, 1, 0], [1, 0, 0]], bool), True, "right"), (np.array([[0, 1, 1], [0, 0, 1]], bool), True, "left"),
    (np.array([[1, 0, 1]], bool), True, "holes"), (np.array([[1, 0], [0, 1]], bool), True, "holes"),
    (np.array([[[0, 1, 1]]], bool), False, "left"), (np.tril(np.ones((3, 3), bool))[None], False, "arbitrary"),
])
def test_mask_kinds(mask, padding, kind):
    assert features.mask_kind(mask, padding=padding) == kind


def test_requirements_parse_and_name_what_is_unknown():
    assert str(features.parse_requirement("decoder_layer:norm_first=TRUE")) == "decoder_layer:norm_first=true"
    assert features.parse_requirement("forward:src_mask").wanted()[2] == ("src_mask", "right")
    for text, message in (("decoder:x", "unknown op"), ("softmax:mask", "has no feature"),
                          ("encode:activation=tanh", "has no value 'tanh'")):
        with pytest.raises(ValueError, match=message):
            features.parse_requirement(text)
