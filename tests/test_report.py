"""The gate's results: per-test records merged, statuses per op x target, and the three reports."""

import json
import xml.etree.ElementTree as ET

import pytest

from conformance.gate import report
from conformance.gate import tally
from conformance.gate.deviations import Deviation
from conformance.gate.plugin import _notes_from_text

TARGET = {"id": "torch-float32", "spec": "torch", "dtype": "float32", "device": "cpu"}
MESSAGE = ("torch[float32, cpu].softmax: out[1, 2] = 0.3 but should be 0.5 (abs err 0.2, rel err 0.4, "
           "tolerance 1.2e-07, 1.67e+06 x over); 3 of 24 compared elements exceed their tolerance")
EXAMPLE = "Failing test case: test_rows(\n    backend=...,\n    x=array([[0.5, 1.0]]),\n)"
BLOB = "@reproduce_failure('6.170.17', b'AEEAQQA=')"


def rec(name, op, outcome, *, when="call", target=TARGET, **extra):
    nodeid = f"properties/test_{op}.py::{name}[{target['id']}]"
    return {"event": "report", "nodeid": nodeid, "test": nodeid.split("[")[0], "op": op, "kind": "property",
            "target": target, "when": when, "outcome": outcome, "skip_reason": None, "duration": 0.5,
            "conformance": None, "failure": "", "falsifying_example": None, "reproduce_blob": None, **extra}


def write_run(tmp_path, records, faults=None):
    path = tmp_path / "results.jsonl"
    lines = [{"event": "session", "targets": [TARGET]}]
    for r in records:
        if r["event"] == "report":
            lines.append({"event": "start", "nodeid": r["nodeid"]})
        lines.append(r)
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    for worker, text in (faults or {}).items():
        (tmp_path / f"results.jsonl.faults.{worker}").write_text(text)
    return path


def passed(name, op, examples=100, ratio=0.25):
    return rec(name, op, "passed", conformance={"examples": examples, "worst_ratio": ratio, "failure": "", "notes": []})


def failed(name, op):
    return rec(name, op, "failed", failure=f"E   AssertionError: {MESSAGE}\nE   {EXAMPLE}", falsifying_example=EXAMPLE,
               reproduce_blob=BLOB,
               conformance={"examples": 37, "worst_ratio": 1.67e6, "failure": MESSAGE, "worst_element": "out[1, 2]",
                            "notes": []})


def skipped(name, op, reason):
    kind = next((k for k in ("not implemented", "unsupported") if reason.startswith(k)), None)
    return rec(name, op, "skipped", when="setup", skip_reason=reason, skip_kind=kind)


@pytest.fixture
def run(tmp_path):
    records = [
        passed("test_a", "softmax"), failed("test_b", "softmax"),
        passed("test_a", "layer_norm", ratio=0.5), passed("test_b", "layer_norm", ratio=0.75),
        skipped("test_a", "embedding", "not implemented: torch[float32, cpu].embedding"),
        skipped("test_a", "attention", "unsupported: torch-float32: no"),
    ]
    return tally.read_results(write_run(tmp_path, records))


def by_op(results):
    return {r.op: r for r in results if r.tests}


def test_statuses_examples_and_worst_ratio_per_op(run):
    results = by_op(tally.aggregate(run))
    assert {op: r.status for op, r in results.items()} == {
        "softmax": "fail", "layer_norm": "pass", "embedding": "not implemented", "attention": "unsupported"}
    assert results["layer_norm"].worst_ratio == 0.75 and results["layer_norm"].examples == 200
    assert results["softmax"].worst_ratio == 1.67e6 and results["softmax"].examples == 137
    assert results["embedding"].worst_ratio is None


def test_every_contract_op_without_tests_is_listed_as_no_tests(run):
    results = tally.aggregate(run)
    assert len(results) == 14
    assert {r.op for r in results if r.status == "no tests"} >= {"positional_encoding", "greedy_decode"}


def test_a_failure_keeps_the_shrunk_example_blob_and_worst_element(run):
    failure = by_op(tally.aggregate(run))["softmax"].failures[0].to_json()
    assert failure["message"] == MESSAGE
    assert failure["worst_element"] == "out[1, 2]"
    assert failure["falsifying_example"] == EXAMPLE and failure["reproduce_blob"] == BLOB


def test_known_deviation_ranks_below_fail_and_above_pass(run):
    softmax = by_op(tally.aggregate(run))["softmax"]
    softmax.failures[0].deviation = Deviation(backend="torch", dtype="float32", op="softmax", reason="accepted")
    assert softmax.status == "known deviation"
    extra = tally.TestResult(nodeid="x", test="x", op="softmax", kind="property", target="torch-float32",
                              outcome="failed")
    softmax.tests.append(extra)  # one more failure, not covered
    assert softmax.status == "fail"


def test_crash_and_timeout(tmp_path):
    crash = rec("test_c", "softmax", "failed", when="???", failure="[gw1] linux -- Python 3.11\n"
                "worker 'gw1' crashed while running 'properties/test_softmax.py::test_c'")
    hang = rec("test_h", "layer_norm", "passed")
    lost = rec("test_l", "attention", "passed")
    path = write_run(tmp_path, [crash], faults={
        "gw0": f"== start {hang['nodeid']}\nTimeout (0:00:03)!\nThread 0x1 (most recent call first):\n"
               '  File "b.py", line 40 in layer_norm\n',
        "gw1": f"== start {crash['nodeid']}\nFatal Python error: Segmentation fault\n\nCurrent thread 0x2:\n"})
    with path.open("a") as f:  # two tests that started and never reported: their process died
        f.write(json.dumps({"event": "start", "nodeid": hang["nodeid"]}) + "\n")
        f.write(json.dumps({"event": "start", "nodeid": lost["nodeid"]}) + "\n")
    (tmp_path / "results.jsonl.items").write_text("\n".join(json.dumps(
        {k: r[k] for k in ("nodeid", "test", "op", "kind", "target")}) for r in (crash, hang, lost)))
    run = tally.read_results(path)
    tests = {t.op: t for t in run.tests}
    assert tests["softmax"].outcome == "crashed"
    assert tests["softmax"].message == ("worker 'gw1' crashed while running 'properties/test_softmax.py::test_c' "
                                        "(Fatal Python error: Segmentation fault)")
    assert tests["layer_norm"].outcome == "timeout"
    assert tests["layer_norm"].message.startswith("no result after 0:00:03 (the per-test timeout, or the per-call watchdog")
    assert 'line 40 in layer_norm' in tests["layer_norm"].failure
    assert tests["attention"].outcome == "crashed" and tests["attention"].target == "torch-float32"
    statuses = {r.op: r.status for r in tally.aggregate(run) if r.tests}
    assert statuses == {"softmax": "crashed", "layer_norm": "timeout", "attention": "crashed"}


def test_a_line_cut_short_by_a_dying_process_is_ignored(tmp_path):
    path = write_run(tmp_path, [passed("test_a", "softmax")])
    with path.open("a") as f:
        f.write('{"event": "report", "nodeid": "prop')
    assert [t.outcome for t in tally.read_results(path).tests] == ["passed"]


def test_table_rows_and_no_tests_summary(run):
    text = report.table(tally.aggregate(run))
    lines = text.splitlines()
    assert lines[0].split() == ["target", "op", "status", "worst", "err/tol", "examples", "tests", "passed"]
    softmax = next(line for line in lines if " softmax " in line)
    assert softmax.split() == ["torch-float32", "softmax", "fail", "1.67e+06", "137", "1/2"]
    assert "0/0 (1 skipped)" in next(line for line in lines if " embedding " in line)
    assert lines[-1].startswith("no tests for: positional_encoding, attention_weights")


def document(run):
    results = tally.aggregate(run)
    return report.document(kind="gate", command=["python", "-m", "conformance", "run"], environment={},
                           settings={}, targets=[{**TARGET, "status": "tested"}], results=results, tests=run.tests,
                           errors=[], reasons=["1 op result(s) failed: softmax on torch-float32 (fail)"],
                           verdict="fail", code=1)


def test_json_document_summary(run):
    doc = json.loads(json.dumps(document(run)))  # JSON-serialisable
    assert doc["schema_version"] == 1 and doc["summary"]["verdict"] == "fail"
    assert doc["summary"]["statuses"]["fail"] == 1 and doc["summary"]["statuses"]["pass"] == 1
    assert doc["summary"]["tests"] == {"passed": 3, "failed": 1, "crashed": 0, "timeout": 0, "skipped": 2}


def test_markdown_names_the_op_the_worst_element_and_the_shrunk_example(run):
    text = report.markdown(document(run))
    assert text.startswith("## Transformer conformance gate: FAIL")
    assert "| softmax | **fail** | 1.67e+06 | 137 | 1/2 |" in text
    assert "worst element: `out[1, 2]`" in text
    assert EXAMPLE in text and BLOB in text
    assert "No tests for: positional_encoding" in text


def test_junit_agrees_with_the_gate(run, tmp_path):
    tests = run.tests
    tests[1].deviation = Deviation(backend="torch", dtype="float32", op="softmax", reason="accepted upstream")
    report.write_junit(tmp_path / "junit.xml", tests)
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("6", "0", "3")
    accepted = suite.findall("testcase")[1].find("skipped")
    assert accepted.get("message") == "known deviation: accepted upstream"
    tests[1].deviation = None
    report.write_junit(tmp_path / "junit.xml", tests)
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    failure = suite.findall("testcase")[1].find("failure")
    assert suite.get("failures") == "1" and failure.get("message") == MESSAGE


def test_hypothesis_notes_are_recovered_from_a_printed_traceback():
    text = ("E   AssertionError: bad\nE   Failing test case: test_a(\nE       x=10,\nE   )\nE   \n"
            f"E   You can reproduce this test case by temporarily adding {BLOB} as a decorator on your test function\n")
    notes = _notes_from_text(text)
    assert notes[0] == "Failing test case: test_a(\n    x=10,\n)"
    assert BLOB in notes[1]


def test_the_skip_kind_and_the_worst_element_are_fields_of_the_record_not_parsed_from_text(tmp_path):
    """The gate reads what the workers wrote as fields (conformance.kit.harness.Skip's kind, the
    assertion helpers' element): a reason that only looks like "unsupported" is a plain skip."""
    kinds = [rec("test_a", "softmax", "skipped", when="setup", skip_reason="unsupported: lookalike"),
             rec("test_a", "embedding", "skipped", when="setup", skip_reason="no ids", skip_kind="not implemented"),
             rec("test_a", "layer_norm", "failed", failure="E   boom",
                 conformance={"examples": 1, "worst_ratio": 2.0, "failure": "gap = 3", "worst_element": "gap[0, 1]"})]
    results = by_op(tally.aggregate(tally.read_results(write_run(tmp_path, kinds))))
    assert results["softmax"].status == "skipped" and results["embedding"].status == "not implemented"
    assert results["layer_norm"].failures[0].to_json()["worst_element"] == "gap[0, 1]"


def test_an_op_whose_examples_were_all_not_implemented_has_no_worst_ratio(tmp_path):
    """Examples the backend rejected as not implemented compared nothing: the op's worst
    err/tol is "-" and its examples 0, not a ratio of 0 over examples that never ran."""
    rejected = {"examples": 12, "not_implemented": 12, "worst_ratio": 0.0, "failure": "", "notes": []}
    records = [rec("test_a", "embedding", "skipped", skip_reason="not implemented: x", skip_kind="not implemented",
                   conformance=rejected)]
    result = by_op(tally.aggregate(tally.read_results(write_run(tmp_path, records))))["embedding"]
    assert result.status == "not implemented" and result.worst_ratio is None and result.examples == 0
    row = next(line for line in report.table([result]).splitlines() if "embedding" in line)
    assert row.split()[-5:-2] == ["-", "0", "0/0"], row
