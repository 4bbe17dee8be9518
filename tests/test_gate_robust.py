"""Issue 17 part 2 and 4: the gate interrupted by SIGTERM writes what finished and exits 3; the
gate's options (--ops repeatable, one profile spelling)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conformance.kit import record, watchdog
from conformance.gate import tally
from conformance.gate.cli import build_parser
from conformance.gate.runner import INTERRUPTED
from conformance.kit.verdicts import EXIT_INTERRUPTED
from conformance.kit.harness import BackendFault, call_op

ROOT = Path(__file__).resolve().parent.parent


def test_ops_and_require_are_repeatable_and_comma_separated():
    args = build_parser().parse_args(["run", "--ops", "softmax", "--ops", "embedding,layer_norm",
                                      "--require", "softmax", "--require", "encode"])
    assert args.ops == ["softmax", "embedding", "layer_norm"] and [str(r) for r in args.require] == ["softmax", "encode"]


def test_the_profile_has_one_spelling_shared_with_pytest_and_the_old_one_still_works():
    parser = build_parser()
    assert parser.parse_args(["run", "--hypothesis-profile", "dev"]).profile == "dev"
    assert parser.parse_args(["run", "--profile", "thorough"]).profile == "thorough"
    assert "--hypothesis-profile" in (ROOT / "README.md").read_text()


def _first_report(results: Path, process: subprocess.Popen[str], limit_s: float = 300.0) -> None:
    """Wait until the gate's pytest has finished at least one test."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and process.poll() is None:
        if results.exists() and '"event": "report"' in results.read_text(encoding="utf-8"):
            return
        time.sleep(0.2)
    raise AssertionError("the gate finished no test in time")


def test_sigterm_writes_the_reports_of_what_finished_and_exits_3(tmp_path):
    command = [sys.executable, "-m", "conformance", "run", "--backend", "numpy", "--dtype", "float32",
               "--hypothesis-profile", "dev", "-n", "0", "--report-dir", str(tmp_path)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _first_report(tmp_path / "results.jsonl", process)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED == 3, out + err
    assert "conformance gate: INTERRUPTED (exit 3)" in out
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["summary"]["verdict"] == "interrupted" and document["summary"]["exit_code"] == 3
    counts = document["summary"]["tests"]
    assert counts["passed"] >= 1 and counts["skipped"] >= 1 and counts["crashed"] == 0, counts
    assert any(INTERRUPTED in r["skip_reasons"] for r in document["results"])
    assert (tmp_path / "junit.xml").is_file() and (tmp_path / "report.md").read_text().startswith(
        "## Transformer conformance gate: INTERRUPTED")


def test_the_gate_keeps_hypothesis_state_in_its_report_dir(tmp_path):
    command = [sys.executable, "-m", "conformance", "run", "--backend", "reference", "--ops", "softmax",
               "--hypothesis-profile", "dev", "-n", "0", "--report-dir", str(tmp_path / "r")]
    run = tmp_path / "cwd"
    run.mkdir()
    env_root = {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=run, capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if k != "HYPOTHESIS_STORAGE_DIRECTORY"},
                               **env_root})
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(run.iterdir()) == [], list(run.iterdir())
    assert (tmp_path / "r" / ".hypothesis").is_dir()


# --- the per-call watchdog, in-process --------------------------------------------------------

class _Sleepy:
    """embedding sleeps (a hang); encode calls it (a composite op)."""

    name, dtype, device = "sleepy", "float64", "cpu"

    def asarray(self, x):
        return np.asarray(x)

    def to_numpy(self, x):
        return np.asarray(x)

    def embedding(self, ids, table):
        time.sleep(30)

    def encode(self, src_ids, params, config, src_mask=None):
        return self.embedding(src_ids, params)


@pytest.fixture(scope="function")
def fast_watchdog(monkeypatch):
    monkeypatch.setattr(watchdog, "FLOOR_S", 0.3)
    monkeypatch.setattr(watchdog, "_hung", {})
    monkeypatch.setattr(watchdog, "_shared", None)
    yield
    record.stop()


def test_a_hanging_call_is_interrupted_then_fails_at_once_and_a_composite_names_the_inner_op(fast_watchdog):
    rec = record.start()  # a record of this test's own (the plugin's was started before the body)
    backend, ids, table = _Sleepy(), np.zeros((1, 2), dtype=np.int64), np.ones((3, 4))
    started = time.monotonic()
    with pytest.raises(BackendFault, match=r"^sleepy\[float64, cpu\]\.embedding: timeout: no result after 0\.\d s "
                                           r"\(the per-call watchdog: max\(0\.3 s, 100x the reference's"):
        call_op(backend, "embedding", ids, table)
    assert 0.3 <= time.monotonic() - started < 5
    assert rec.verdict == "timeout"
    started = time.monotonic()
    with pytest.raises(BackendFault, match=r"embedding: timeout"):
        call_op(backend, "embedding", ids, table)
    assert time.monotonic() - started < 0.1  # at once
    with pytest.raises(BackendFault, match=r"^sleepy\[float64, cpu\]\.encode: timeout: .*it hung inside the "
                                           r"backend's own embedding \(which hung earlier in this run\)$"):
        call_op(backend, "encode", ids, table, None)
    assert ("sleepy[float64, cpu]", "encode") in watchdog._hung


def test_a_call_the_reference_is_slow_on_too_is_not_interrupted(fast_watchdog, monkeypatch):
    monkeypatch.setattr(watchdog, "reference_seconds", lambda *a: 0.01)  # limit: max(0.3 s, 1 s)
    rec = record.start()

    class Slow(_Sleepy):
        def embedding(self, ids, table):
            time.sleep(0.6)
            return np.asarray(table)[ids]

    out = call_op(Slow(), "embedding", np.zeros((1, 2), dtype=np.int64), np.ones((3, 4)))
    assert out.shape == (1, 2, 4) and rec.verdict == ""


# --- a failure is booked under the op whose call failed ---------------------------------------

class _Float32Attention(_Sleepy):
    def attention(self, q, k, v, mask=None):
        return (np.asarray(q) @ np.asarray(k).swapaxes(-1, -2) @ np.asarray(v)).astype(np.float32)


def test_a_backend_fault_inside_another_op_s_test_is_booked_under_the_failing_op(tmp_path):
    rec = record.start()
    q = np.ones((1, 2, 3))
    with pytest.raises(BackendFault, match="returned dtype float32"):
        call_op(_Float32Attention(), "attention", q, q, q)
    record.stop()
    assert rec.failed_op == "attention"
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({
        "event": "report", "nodeid": "properties/test_multi_head.py::test_x[t-float64]",
        "test": "properties/test_multi_head.py::test_x", "op": "multi_head_attention", "kind": "property",
        "target": {"id": "t-float64"}, "when": "call", "outcome": "failed", "conformance": rec.as_property(),
        "failure": "AssertionError"}) + "\n")
    by_op = {r.op: r for r in tally.aggregate(tally.read_results(results))}
    assert by_op["attention"].status == "fail" and by_op["multi_head_attention"].status == "no tests"
    note = by_op["attention"].tests[0].notes[0]
    assert note == ("booked under attention, whose call failed, in properties/test_multi_head.py::test_x "
                    "(a test of multi_head_attention)")


def test_a_file_backend_records_the_versions_of_what_its_module_imported(tmp_path):
    from conformance.gate.runner import backend_versions, check_targets

    module = tmp_path / "uses_scipy_backend.py"
    module.write_text("import scipy.special  # noqa: F401 - what a real adapter imports: its library\n"
                      "from backends.numpy_backend import factory as numpy_factory\n\n\n"
                      "def factory(*, dtype, device):\n    return numpy_factory(dtype=dtype, device=device)\n")
    spec = f"{module}:factory"
    check_targets([spec], ["float32"], None)
    versions = backend_versions(spec)
    assert versions.get("scipy") and versions["scipy"][0].isdigit(), versions
