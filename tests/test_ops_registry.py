"""The op registry (backends/ops.py): every record is complete, an incomplete one fails, the
consumers read it, its cases catch a broken backend on every op, and adding an op takes only
the files the registry's docstring names (a dummy op, added in a copy of the tree, is checked
by the gate and exported as golden vectors)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backends import ops
from backends.contract import OPS
from backends.numpy_backend import NumpyBackend
from conformance.differential import test_registered_cases as registered
from conformance.golden.cases import Cases, portable
from conformance.golden.catalog import registered as golden_registered
from conformance.tolerance import error_bounds
from reference.params import leaves

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("op", OPS)
def test_every_record_is_complete(op):
    assert ops.validate(ops.RECORDS[op]) == []


def test_the_contract_op_list_is_the_registry_and_every_float_op_has_an_error_bound():
    assert OPS == tuple(ops.RECORDS)
    assert {op for op in OPS if ops.RECORDS[op].output == ops.FLOAT} == set(error_bounds.OPS)
    assert all(callable(getattr(NumpyBackend, op, None)) for op in OPS)


def test_a_record_missing_a_field_fails():
    with pytest.raises(TypeError, match="missing"):
        ops.OpRecord("softmax", ops.FLOAT)  # type: ignore[call-arg]


@pytest.mark.parametrize(("change", "problem"), [
    ({"name": "softmaxx"}, "no reference.softmaxx"),
    ({"output": "tokens"}, "neither"),
    ({"case": lambda rng: ops.Case("softmax", [np.zeros(3)], {"axis": 5})}, "rejects its case"),
    ({"case": lambda rng: ops.Case("embedding", [np.zeros((2, 2), np.int64), np.ones((3, 4))])}, "its case is of"),
    ({"error_inputs": lambda case: [(case.args, case.kwargs, "NaN")]}, "accepts an error input"),
    ({"error_inputs": lambda case: []}, "no error inputs"),
    ({"compared": lambda kwargs: np.ones((7, 7, 7), bool)}, "do not fit"),
    ({"parts": ("attention_scores",)}, "unknown parts"),
])
def test_an_incomplete_or_wrong_record_is_named(change, problem):
    record = dataclasses.replace(ops.RECORDS["softmax"], **change)
    assert any(problem in p for p in ops.validate(record)), ops.validate(record)


@pytest.mark.parametrize("op", OPS)
def test_the_registered_cases_fail_a_broken_backend_on_every_op(op):
    """Some mutant of the op (tests/mutants/) fails the op record's cases: the generic
    differential test can fail on every op."""
    pytest.importorskip("torch")
    from tests.mutants import catalog

    caught = []
    for name, mutant in catalog.ALL.items():
        if op not in mutant.ops:
            continue
        backend = mutant.factory(dtype=mutant.dtype)
        for seed in registered.SEEDS:
            try:
                registered.test_registered_case(backend, op, seed)
            except AssertionError:
                caught.append(name)
                break
        if caught:
            break
    assert caught, f"no mutant of {op} fails its registered cases"


def test_an_op_without_golden_cases_gets_its_records_case_with_portable_inputs():
    cases = Cases(0)
    golden_registered(cases)
    assert [c.op for c in cases] == list(OPS)
    for case in cases:
        assert case.description == "the op record's case (backends/ops.py)"
        floats = [a for a in leaves(case.arguments) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
        assert all(np.array_equal(portable(a), a) for a in floats), case.name
        ops.RECORDS[case.op].reference(**case.arguments)


# --- adding an op -------------------------------------------------------------------------------

EDITS = [
    ("reference/layers.py", "replace", '__all__ = ["softmax",', '__all__ = ["double", "softmax",'),
    ("reference/layers.py", "append", '''

def double(x: Any, *, dtype: str = "float64") -> np.ndarray:
    """2 x, elementwise (the dummy op of tests/test_ops_registry.py). Shapes: (...) -> (...)."""
    return 2.0 * floats("x", x, check_dtype(dtype), (None, None))
'''),
    ("backends/ops.py", "replace", '    _record("softmax", _softmax),\n',
     '    _record("softmax", _softmax),\n    _record("double", lambda rng: Case("double", [_x(rng, BATCH, S_SRC)])),\n'),
    ("conformance/tolerance/error_bounds.py", "replace", '    "softmax": lambda a, r:',
     '    "double": lambda a, r: exact(2.0 * np.asarray(a["x"], dtype=np.float64)),\n    "softmax": lambda a, r:'),
    ("backends/CONTRACT.md", "replace", "| `embedding(ids, table)` |",
     "| `double(x)` | `2 x` | `(B, S)` → `(B, S)` |\n| `embedding(ids, table)` |"),
    ("backends/torch_ops.py", "replace", "    @torch.no_grad()\n    def layer_norm(",
     "    def double(self, x: Tensor) -> Tensor:\n        return {body}\n\n    @torch.no_grad()\n    def layer_norm("),
    ("properties/test_double.py", "create", '''
"""double(x) = x + x, exactly."""

import pytest
from hypothesis import given

from conformance.kit.assertions import assert_equal
from conformance.kit.harness import call_op
from conformance.kit.strategies import arrays, budget
from properties.plumbing import held
from properties.strategies import OP_SHARE


@pytest.mark.op("double")
@budget(OP_SHARE)
@given(x=arrays((2, 3)))
def test_double_is_x_plus_x(backend, x):
    x = held(backend, x)
    assert_equal(call_op(backend, "double", x, shape=x.shape), x + x, backend=backend, op="double",
                 what="double(x) = x + x")
'''),
]
"""What adding the dummy op ``double`` edits: exactly the six files the registry's docstring
names (its equation in reference/layers.py with its export, its record, its error bound,
CONTRACT.md, the torch backend, a property module; the numpy backend delegates every
registered op)."""


def add_double(tree: Path, torch_body: str) -> None:
    for name, how, *text in EDITS:
        path = tree / name
        if how == "create":
            path.write_text(textwrap.dedent(text[0]).lstrip())
            continue
        old = path.read_text()
        if how == "append":
            path.write_text(old + text[0])
        else:
            assert text[0] in old, (name, text[0])
            path.write_text(old.replace(text[0], text[1].replace("{body}", torch_body), 1))


def test_adding_an_op_edits_six_files():
    assert len({name for name, *_ in EDITS}) == 6


def copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and not name.startswith(("examples/", "benchmarks/")):
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    return tree


def run_gate(tree: Path, report: Path) -> tuple[int, dict, str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-m", "conformance", "run", "--backend", "numpy", "--backend", "torch",
                           "--dtype", "float32", "--ops", "double", "--profile", "ci", "-n", "0",
                           "--report-dir", str(report)], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=600)
    return done.returncode, json.loads((report / "report.json").read_text()), done.stdout + done.stderr


@pytest.fixture(scope="module")
def with_double(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    tree = copy_tree(tmp_path_factory.mktemp("added"))
    add_double(tree, "x + x")
    return tree


def test_an_op_added_in_the_named_files_is_checked_by_the_gate(with_double, tmp_path):
    """The gate runs the dummy op's registered cases, determinism check and property on numpy and
    torch, and both pass."""
    code, document, out = run_gate(with_double, tmp_path / "report")
    assert code == 0, out
    for target in ("numpy-float32", "torch-float32"):
        result = next(r for r in document["results"] if r["target"] == target and r["op"] == "double")
        assert result["status"] == "pass", result
        assert result["tests"]["passed"] == len(registered.SEEDS) + 2, result  # registered, determinism, property


def test_an_added_op_gets_golden_vectors(with_double, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(with_double)}
    subprocess.run([sys.executable, "-m", "conformance", "golden", "export", str(tmp_path / "golden")],
                   cwd=with_double, env=env, check=True, capture_output=True, timeout=300)
    manifest = json.loads((tmp_path / "golden" / "manifest.json").read_text())
    assert [c["name"] for c in manifest["cases"] if c["op"] == "double"] == ["double-0"]


def test_a_wrong_added_op_fails_the_gate(tmp_path):
    pytest.importorskip("torch")
    tree = copy_tree(tmp_path)
    add_double(tree, "x + x + x")
    code, document, out = run_gate(tree, tmp_path / "report")
    torch = next(r for r in document["results"] if r["target"] == "torch-float32" and r["op"] == "double")
    assert code == 1 and torch["status"] == "fail", out
