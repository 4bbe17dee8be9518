"""Issue 8: whatever a backend does, the gate finishes, every op gets a verdict, and the message
says what went wrong.

Each fault-injecting backend of tests/faults/backends.py breaks one op (embedding or
layer_norm) in one way; the gate runs them for real (``python -m conformance run`` in a
subprocess, ``--ops embedding,layer_norm --hypothesis-profile dev``) and each test here checks one
fault: the exit status, the broken op's status and message in report.json, that the other op
still passed, and that report.json, junit.xml and report.md were written.

Three gate runs, started together, cover every in-process fault (no xdist: nothing kills its
process), every process-killing fault (under xdist, so that a crashed or timed-out worker is
replaced) and a crash without xdist; set-up errors stop the gate before pytest starts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conformance.differential.test_registered_cases import SEEDS
from conformance.gate.cli import main
from tests.faults.backends import FAULTS

ROOT = Path(__file__).resolve().parent.parent
FAULT_FILE = "tests/faults/backends.py"  # relative to ROOT
FAULT_PATH = str(ROOT / FAULT_FILE)
OPS = ("embedding", "layer_norm")
EMBEDDING_TESTS = 4 + len(SEEDS)  # per target: its property, two differential tests, determinism, the registered cases
LAYER_NORM_TESTS = 9 + len(SEEDS)  # per target: 8 property and differential tests, determinism, the registered cases
CALL_TIMEOUT_S = 10  # the watchdog's floor in these runs (CONFORMANCE_CALL_TIMEOUT; the default is 60 s)
TIMEOUT_S = 30  # the process run's per-test timeout: above the watchdog's 10 s and its backstop's 20 s

WATCHDOG = (r"^{fault}\[float32, cpu\]\.embedding: timeout(: no result after 1\d\.\d s \(the per-call watchdog: "
            r"max\(10 s, 100x the reference's [\d.]+ ms for the same call\)\); interrupted$| \(hung earlier in this "
            r"run, in .*\): {fault}\[float32, cpu\]\.embedding: timeout: no result)")
HANGS = ("hanging", "hanging_in_native")

# fault -> (status of the broken op, a regex every failure message of that op matches)
EXPECTED: dict[str, tuple[str, str]] = {
    "raising": ("fail", r"^raising\[float32, cpu\]\.embedding raised RuntimeError: CUDA error: an illegal memory "
                        r"access was encountered; inputs: \(int64\(\d+, \d+\), float32\(\d+, \d+\)\)$"),
    "nan_output": ("fail", r"^nan_output\[float32, cpu\]\.embedding: out\[0, 0, 0\] = nan but should be -?\d"),
    "inf_output": ("fail", r"^inf_output\[float32, cpu\]\.embedding: out\[[\d, ]+\] = inf but should be -?\d"),
    "wrong_shape": ("fail", r"^wrong_shape\[float32, cpu\]\.embedding.*"),  # the shape itself: test below
    "returns_list": ("fail", r"^returns_list\[float32, cpu\]\.embedding on inputs \(int64\(\d+, \d+\), "
                             r"float32\(\d+, \d+\)\) returned list, expected an array$"),
    "returns_none": ("fail", r"^returns_none\[float32, cpu\]\.embedding on inputs .* returned NoneType, "
                             r"expected an array$"),
    "float64_result": ("fail", r"^float64_result\[float32, cpu\]\.embedding on inputs .*: returned dtype float64, "
                               r"but the backend claims float32$"),
    "mutates_input": ("fail", r"^mutates_input\[float32, cpu\]\.layer_norm changed its input #0 "
                              r"\(float32\([\d, ]+\)\) in place$"),
    "nondeterministic": ("nondeterministic",
                         r"^nondeterministic\[float32, cpu\]\.layer_norm is nondeterministic: the same inputs "
                         r"\(float32\(\d+, \d+, \d+\), .*\) gave different results: out\[\d+, \d+, \d+\] = \S+ on "
                         r"the first call but \S+ on call 2; 1 of \d+ elements differ$"),
    "hanging": ("timeout", WATCHDOG.format(fault="hanging")),
    # libc sleep(3) holds the GIL, but SIGALRM interrupts its system call: the watchdog stops it too
    "hanging_in_native": ("timeout", WATCHDOG.format(fault="hanging_in_native")),
    "segfaulting": ("crashed", r"^worker 'gw\d+' crashed while running '.*\[segfaulting-float32.*\]' "
                               r"\(Fatal Python error: Segmentation fault\)$"),
    "exiting": ("crashed", r"^worker 'gw\d+' crashed while running '.*\[exiting-float32.*\]'$"),
}
PROCESS_FAULTS = ("hanging", "hanging_in_native", "segfaulting", "exiting")
HARNESS_FAULTS = tuple(name for name in EXPECTED if name not in PROCESS_FAULTS)


def start_gate(report_dir: Path, names: list[str], *extra: str) -> subprocess.Popen[str]:
    """The real gate command on the named fault factories at float32, the two ops, the dev
    profile. It runs in ``report_dir``: a fresh Hypothesis example database (as in CI), and
    none of these failures saved to the repository's."""
    command = [sys.executable, "-m", "conformance", "run", *(f"--backend={FAULT_PATH}:{n}" for n in names),
               "--dtype", "float32", "--ops", ",".join(OPS), "--hypothesis-profile", "dev", "--report-dir", str(report_dir),
               *extra]
    env = {**os.environ, "CONFORMANCE_CALL_TIMEOUT": str(CALL_TIMEOUT_S)}
    return subprocess.Popen(command, cwd=report_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        out, err = process.communicate(timeout=600)
    except BaseException:
        process.kill()  # the gate itself hung: this fails the tests, and leaves nothing running
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def load(report_dir: Path) -> dict[str, Any]:
    """report.json, after checking that all three reports were written."""
    for name in ("report.json", "junit.xml", "report.md"):
        assert (report_dir / name).is_file(), f"{name} was not written to {report_dir}"
    return json.loads((report_dir / "report.json").read_text())


def results(document: dict[str, Any], fault: str) -> dict[str, dict[str, Any]]:
    """op -> its OpResult in report.json, for the fault's target."""
    return {r["op"]: r for r in document["results"] if r["target"] == f"{fault}-float32"}


@pytest.fixture(scope="module")
def gate_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Three gate runs, started together (the hangs mostly wait):

    - ``harness``: the faults the harness catches in-process, plus a factory refusing float32
      (ValueError); no xdist, since nothing kills its process;
    - ``process``: the faults that end the process running the test (two hangs, ended by the
      per-test timeout; a segfault; os._exit), under xdist, which replaces the dead workers;
    - ``single``: os._exit without xdist: the one pytest process dies at the first embedding test.
    """
    plans = {"harness": ([*HARNESS_FAULTS, "factory_refusing"], "-n", "0"),
             "process": (list(PROCESS_FAULTS), "-n", "2", "--timeout", str(TIMEOUT_S)),
             "single": (["exiting"], "-n", "0")}
    started = {}
    for name, (faults, *extra) in plans.items():
        report_dir = tmp_path_factory.mktemp(f"{name}_faults")
        started[name] = (start_gate(report_dir, faults, *extra), report_dir)
    return {name: (finished(process), report_dir) for name, (process, report_dir) in started.items()}


@pytest.fixture
def harness_run(gate_runs):
    return gate_runs["harness"]


@pytest.fixture
def process_run(gate_runs):
    return gate_runs["process"]


@pytest.fixture(params=list(EXPECTED))
def fault(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def fault_run(fault: str, request: pytest.FixtureRequest) -> tuple[subprocess.CompletedProcess[str], Path]:
    return request.getfixturevalue("process_run" if fault in PROCESS_FAULTS else "harness_run")


def test_the_gate_fails_and_writes_its_reports(fault_run):
    done, report_dir = fault_run
    assert done.returncode == 1, done.stdout + done.stderr
    assert "conformance gate: FAIL (exit 1)" in done.stdout
    document = load(report_dir)
    assert document["summary"]["verdict"] == "fail" and document["errors"] == []
    assert (report_dir / "report.md").read_text().startswith("## Transformer conformance gate: FAIL")


def test_the_broken_op_gets_its_verdict_and_message_and_the_other_op_passes(fault, fault_run):
    done, report_dir = fault_run
    status, pattern = EXPECTED[fault]
    broken = FAULTS[fault][1]
    healthy = next(op for op in OPS if op != broken)
    by_op = results(load(report_dir), fault)
    assert by_op[broken]["status"] == status, by_op[broken]
    assert by_op[healthy]["status"] == "pass", by_op[healthy]
    assert by_op[broken]["failures"], "a failing op lists its failing tests"
    for failure in by_op[broken]["failures"]:
        assert re.search(pattern, failure["message"]), failure["message"]
    assert f"{fault}-float32" in done.stdout and by_op[broken]["failures"][0]["message"] in done.stdout
    assert f"--backend {FAULT_PATH}:{fault} --dtype float32 --ops {broken}" in by_op[broken]["rerun"]


def test_a_wrong_shape_names_the_expected_and_the_returned_shape(harness_run):
    """expected (B, S, d), got (B, d, S): the realistic case (2, 16, 512) always shows it; a
    shrunk Hypothesis case may instead be one with S == d, where the shapes agree."""
    _, report_dir = harness_run
    messages = [f["message"] for f in results(load(report_dir), "wrong_shape")["embedding"]["failures"]]
    assert any(m.endswith("expected shape (2, 16, 512), got (2, 512, 16)") for m in messages), messages
    assert "inputs (int64(2, 16), float32(1000, 512))" in "".join(messages)  # as the float32 backend gets them


def test_an_exception_is_reported_with_its_type_message_and_inputs_and_traceback(harness_run):
    _, report_dir = harness_run
    failures = results(load(report_dir), "raising")["embedding"]["failures"]
    hypothesis_failure = next(f for f in failures if f["falsifying_example"])
    assert "RuntimeError: CUDA error" in hypothesis_failure["failure_text"]  # the backend's own traceback
    assert "case=(array([[0]]), array([[" in hypothesis_failure["falsifying_example"]


def test_a_nondeterministic_op_passes_every_other_test(harness_run):
    """One ulp every other call is within tolerance: only the determinism test fails, with its
    own status, so the report does not call it an accuracy failure."""
    _, report_dir = harness_run
    layer_norm = results(load(report_dir), "nondeterministic")["layer_norm"]
    assert [f["nodeid"].split("::")[-1] for f in layer_norm["failures"]] == [
        "test_same_inputs_give_the_same_result[nondeterministic-float32-layer_norm]"]
    assert layer_norm["failures"][0]["verdict"] == "nondeterministic"
    assert layer_norm["tests"]["passed"] >= 5
    assert "NONDETERMINISTIC: layer_norm on nondeterministic-float32" in harness_run[0].stdout


def test_a_factory_refusing_the_dtype_is_unsupported_not_a_failure(harness_run):
    _, report_dir = harness_run
    document = load(report_dir)
    target = next(t for t in document["targets"] if t["id"] == "factory_refusing-float32")
    assert target["status"] == "unsupported"
    assert "this backend is still being written" in target["reason"]
    assert {r["status"] for r in results(document, "factory_refusing").values()} == {"unsupported"}


def test_junit_marks_failures_and_process_deaths(harness_run, process_run):
    """A failure is a junit ``failure``; a crash or a timeout an ``error`` saying which."""
    harness = ET.parse(harness_run[1] / "junit.xml").getroot().find("testsuite")
    tests = load(harness_run[1])["summary"]["tests"]
    assert (harness.get("failures"), harness.get("errors")) == (str(tests["failed"]), "0")
    process = ET.parse(process_run[1] / "junit.xml").getroot().find("testsuite")
    tests = load(process_run[1])["summary"]["tests"]
    assert (process.get("failures"), process.get("errors")) == ("0", str(tests["crashed"] + tests["timeout"]))
    kinds = [e.get("message").split(":")[0] for e in process.iter("error")]
    assert kinds.count("crashed") == tests["crashed"] >= 2 and kinds.count("timeout") == tests["timeout"] >= 2


def test_a_hang_is_ended_with_the_stack_where_it_hung(process_run):
    _, report_dir = process_run
    document = load(report_dir)
    log = (report_dir / "pytest.log").read_text()  # the full tracebacks (failure_text is clipped)
    for fault in HANGS:
        assert {f["outcome"] for f in results(document, fault)["embedding"]["failures"]} == {"timeout"}
    assert re.search(r'tests/faults/backends\.py", line \d+, in embedding', log)  # the frame it was stuck in
    assert document["settings"]["timeout_s"] == TIMEOUT_S


def test_after_a_crash_or_timeout_the_op_s_other_tests_are_skipped_and_the_run_goes_on(process_run):
    """One dead worker per op and target: the later tests of that op there are skipped with a
    reason; every other test (the healthy op on all four targets) still ran and passed."""
    _, report_dir = process_run
    document = load(report_dir)
    for fault in (f for f in PROCESS_FAULTS if f not in HANGS):  # the watchdog's cases: below
        embedding = results(document, fault)["embedding"]
        dead = embedding["tests"]["crashed"] + embedding["tests"]["timeout"]
        assert 1 <= dead <= 2, embedding["tests"]  # two workers may both be in a test of it
        assert embedding["tests"]["skipped"] == EMBEDDING_TESTS - dead
        assert all(r.startswith("not run: embedding already crashed or timed out on ")
                   for r in embedding["skip_reasons"])
    assert document["summary"]["tests"]["failed"] == 0
    assert document["summary"]["tests"]["passed"] == 4 * LAYER_NORM_TESTS  # layer_norm on the four targets


def test_a_python_hang_is_interrupted_by_the_watchdog_and_later_calls_fail_at_once(process_run):
    """The per-call watchdog stops the sleeping embedding after 10 s without ending the worker;
    every other embedding test then fails at once as hung earlier in this run."""
    _, report_dir = process_run
    for fault in HANGS:
        embedding = results(load(report_dir), fault)["embedding"]
        assert embedding["tests"]["timeout"] == EMBEDDING_TESTS and embedding["tests"]["crashed"] == 0, embedding["tests"]
        messages = [f["message"] for f in embedding["failures"]]
        assert sum("(hung earlier in this run, in " in m for m in messages) >= 2, messages
        assert sum(f["duration_s"] for f in embedding["failures"]) < 3 * TIMEOUT_S  # not one timeout per test


def test_without_xdist_a_crash_ends_the_run_but_not_the_gate(gate_runs):
    """-n 0: os._exit in the first embedding test kills the only pytest process. The gate still
    reports it as crashed (exit 1, not a set-up error), the tests that never started as not run,
    and writes its three reports."""
    done, report_dir = gate_runs["single"]
    assert done.returncode == 1, done.stdout + done.stderr
    document = load(report_dir)
    assert document["errors"] == [] and document["summary"]["verdict"] == "fail"
    by_op = results(document, "exiting")
    assert by_op["embedding"]["status"] == "crashed"
    assert re.search(r"the test started but never reported: the process running it died",
                     by_op["embedding"]["failures"][0]["message"])
    assert by_op["layer_norm"]["status"] == "skipped"
    assert by_op["layer_norm"]["skip_reasons"] == ["not run: the pytest run ended before this test started "
                                                   "(see pytest.log)"]
    assert document["summary"]["tests"]["crashed"] == 1
    assert document["summary"]["tests"]["skipped"] == EMBEDDING_TESTS - 1 + LAYER_NORM_TESTS  # all but the crashed one


# --- set-up errors: exit 2 before any test runs ---------------------------------------------

@pytest.mark.parametrize(("source", "last_line"), [
    ("import libfoo_missing_xyz\n", "ModuleNotFoundError: No module named 'libfoo_missing_xyz'"),
    ("raise ImportError('libcudart.so.12: cannot open shared object file')\n",
     "ImportError: libcudart.so.12: cannot open shared object file"),
    ("def factory(*, dtype, device):\n    return None +\n", r"SyntaxError: invalid syntax \(bad_backend.py, line 2\)"),
])
def test_a_backend_module_that_fails_to_import_exits_2_with_the_spec_and_the_last_line(
        tmp_path, capsys, source, last_line):
    module = tmp_path / "bad_backend.py"
    module.write_text(source)
    spec = f"{module}:factory"
    assert main(["run", "--backend", spec, "--dtype", "float32", "--report-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"backend '{re.escape(spec)}' could not be loaded: {last_line}", err), err
    document = load(tmp_path / "r")
    assert document["summary"]["verdict"] == "error" and document["summary"]["exit_code"] == 2
    assert spec in document["errors"][0]


@pytest.mark.parametrize(("spec", "message"), [
    (f"{FAULT_FILE}:factory_raising",
     rf"backend '{FAULT_FILE}:factory_raising': the factory raised for dtype='float32', device='cpu': "
     r"RuntimeError: libcudart.so.12: cannot open shared object file: No such file or directory"),
    (f"{FAULT_FILE}:no_such_factory", rf"backend '{FAULT_FILE}:no_such_factory': .* has no attribute "
                                      r"'no_such_factory'"),
    ("tests.faults.no_such_module:factory", r"backend 'tests.faults.no_such_module:factory' could not be loaded: "
                                            r"ModuleNotFoundError: No module named 'tests.faults.no_such_module'"),
])
def test_a_factory_that_raises_or_is_missing_exits_2(tmp_path, capsys, monkeypatch, spec, message):
    monkeypatch.chdir(ROOT)
    assert main(["run", "--backend", spec, "--dtype", "float32", "--report-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert load(tmp_path)["errors"] and re.search(message, load(tmp_path)["errors"][0])
