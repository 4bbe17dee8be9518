"""The gate's results: per-test outcomes merged from the gate plugin's records
(conformance/gate/plugin.py), and aggregated per op x target with their status and coverage.
Rendering them is conformance/gate/report.py.

Status of one op on one target, most severe first (conformance/kit/verdicts.py)::

    crashed > timeout > nondeterministic > fail > known deviation > pass > not implemented > unsupported
    > skipped > no tests

A failing test covered by a known-deviations entry (conformance/gate/deviations.py) does not make
its op fail; when every failing test of an op is covered, the op shows as "known deviation".
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.contract import OPS
from conformance.gate.deviations import Deviation
from conformance.gate.plugin import FAULT_START
from conformance.kit.failing_cases import reproduce_command
from conformance.kit.features import OP_FEATURES, Requirement, label
from conformance.kit.verdicts import (
    CRASHED,
    FAIL,
    KNOWN,
    NO_TESTS,
    NONDETERMINISTIC,
    NOT_IMPLEMENTED,
    PASS,
    SKIPPED,
    TIMEOUT,
    UNSUPPORTED,
)
from conformance.tolerance.diagnosis import Diagnosis

SCHEMA_VERSION = 1

THREAD_RE = re.compile(r"\n(?=(?:Current thread|Thread) 0x)")  # faulthandler's thread headers
NOT_RUN = "not run: the pytest run ended before this test started (see pytest.log)"
MAX_TEXT = 4000  # characters of failure text kept per test in report.json / report.md
MAX_EXAMPLE = 20000  # characters of a shrunk example kept in report.json (pytest.log has it all)


@dataclass
class TestResult:
    """One test (one test function on one target), its phases merged."""

    __test__ = False  # not a pytest test class

    nodeid: str
    test: str
    op: str | None
    kind: str | None
    target: str | None
    outcome: str  # passed, failed, crashed, timeout, skipped
    skip_reason: str | None = None
    skip_kind: str | None = None  # NOT_IMPLEMENTED or UNSUPPORTED, as the test's record or set-up said
    duration: float = 0.0
    examples: int = 0
    worst_ratio: float | None = None
    message: str = ""
    worst_element: str | None = None  # the failing element, as the assertion helpers named it: out[1, 2]
    failure: str = ""
    falsifying_example: str | None = None
    reproduce_blob: str | None = None
    tolerance: str = ""  # what set the worst element's tolerance (conformance.tolerance.model.terms)
    doc: str = ""  # a failing test's docstring (first paragraph): what it checks, how a fixed case is made
    inputs: str = ""  # the failing example's backend calls, readable (conformance/kit/failing_cases.py)
    case_file: str | None = None  # those calls saved as .npz (python -m conformance repro FILE)
    notes: list[str] = field(default_factory=list)
    deviation: Deviation | None = None
    verdict: str | None = None  # a failure's own status (NONDETERMINISTIC), from the test's record
    diagnosis: Diagnosis | None = None  # the convention a failing comparison follows (conformance/tolerance/diagnosis.py)
    not_implemented: int = 0  # examples rejected as not implemented (not counted in examples)
    features: dict[str, list[Any]] = field(default_factory=dict)  # feature -> values its op ran with

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "crashed", "timeout")

    @property
    def skip_status(self) -> str:
        return self.skip_kind if self.skip_kind in (NOT_IMPLEMENTED, UNSUPPORTED) else SKIPPED

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid, "test": self.test, "kind": self.kind, "outcome": self.outcome,
            "skip_reason": self.skip_reason, "duration_s": round(self.duration, 4), "examples": self.examples,
            "worst_ratio": finite(self.worst_ratio), "message": self.message,
            "worst_element": self.worst_element,
            "falsifying_example": clip(self.falsifying_example, MAX_EXAMPLE) if self.falsifying_example else None,
            "reproduce_blob": self.reproduce_blob,
            "doc": self.doc or None,
            "tolerance": self.tolerance or None,
            "inputs": clip(self.inputs, MAX_EXAMPLE) if self.inputs else None,
            "case_file": self.case_file,
            "reproduce": reproduce_command(Path(self.case_file)) if self.case_file else None,
            "failure_text": clip(self.failure), "notes": self.notes, "verdict": self.verdict,
            "examples_not_implemented": self.not_implemented, "features": self.features,
            "known_deviation": self.deviation.to_json() if self.deviation else None,
            "diagnosis": diagnosis_json(self.diagnosis),
        }


@dataclass
class OpResult:
    """One op on one target: its tests and the status they add up to."""

    op: str
    target: str
    tests: list[TestResult] = field(default_factory=list)

    @property
    def status(self) -> str:
        failed = [t for t in self.tests if t.failed]
        uncovered = [t for t in failed if t.deviation is None]
        for outcome, status in (("crashed", CRASHED), ("timeout", TIMEOUT)):
            if any(t.outcome == outcome for t in uncovered):
                return status
        if any(t.verdict == NONDETERMINISTIC for t in uncovered):
            return NONDETERMINISTIC
        if any(t.outcome == "failed" for t in uncovered):
            return FAIL
        if failed:
            return KNOWN
        if any(t.outcome == "passed" for t in self.tests):
            return PASS
        skips = {t.skip_status for t in self.tests if t.outcome == "skipped"}
        for status in (NOT_IMPLEMENTED, UNSUPPORTED, SKIPPED):
            if status in skips:
                return status
        return NO_TESTS

    @property
    def examples(self) -> int:
        return sum(t.examples for t in self.tests)

    @property
    def diagnosis(self) -> str | None:
        """The diagnoses of the failing tests in one sentence (None when no failure was
        diagnosed: property tests and faults are not); where they differ, each finding with
        how many of the diagnosed failures it is ("no known convention" counted as one
        finding, whatever the number of variants measured)."""
        found = [t.diagnosis for t in self.failures if t.diagnosis is not None]
        if len({d.text for d in found}) <= 1:
            return found[0].text if found else None
        findings = Counter(d.text if d.variants or d.error else "no known convention" for d in found)
        return "; ".join(f"{text} ({n} of {len(found)} diagnosed failures)" for text, n in findings.items())

    @property
    def worst_ratio(self) -> float | None:
        ratios = [t.worst_ratio for t in self.tests if t.worst_ratio is not None]
        return max(ratios) if ratios else None

    @property
    def failures(self) -> list[TestResult]:
        return [t for t in self.tests if t.failed]

    def count(self, outcome: str) -> int:
        return sum(t.outcome == outcome for t in self.tests)

    @property
    def coverage(self) -> dict[str, Any]:
        """How much a verdict rests on: tests run (not skipped) of all the op's tests, tests not
        implemented, examples rejected as not implemented, and per feature of the op
        (conformance/kit/features.py) the values some test ran with and those none did (golden
        cases record no features: none are listed for them)."""
        ran = [t for t in self.tests if t.outcome != "skipped"]
        tested: dict[str, list[Any]] = {}
        for t in ran:
            for name, values in t.features.items():
                tested.setdefault(name, []).extend(values)
        golden = bool(self.tests) and all(t.kind == "golden" for t in self.tests)
        vocabulary = {} if golden else OP_FEATURES.get(self.op, {})
        return {"tests": len(self.tests), "tests_run": len(ran),
                "tests_not_implemented": sum(t.outcome == "skipped" and t.skip_status == NOT_IMPLEMENTED for t in self.tests),
                "examples_not_implemented": sum(t.not_implemented for t in self.tests),
                "features": {name: {"tested": [v for v in values if v in tested.get(name, [])],
                                    "not_tested": [v for v in values if v not in tested.get(name, [])]}
                             for name, values in vocabulary.items()}}

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op, "target": self.target, "status": self.status, "worst_ratio": finite(self.worst_ratio),
            "examples": self.examples,
            "tests": {o: self.count(o) for o in ("passed", "failed", "crashed", "timeout", "skipped")},
            "duration_s": round(sum(t.duration for t in self.tests), 3),
            "failures": [t.to_json() for t in self.failures],
            "skip_reasons": sorted({t.skip_reason for t in self.tests if t.skip_reason}),
            "notes": sorted({n for t in self.tests for n in t.notes}),
            "diagnosis": self.diagnosis,
            "coverage": self.coverage,
        }


@dataclass
class Run:
    """Everything read back from one gate run's results file."""

    targets: list[dict[str, str]] = field(default_factory=list)
    tests: list[TestResult] = field(default_factory=list)
    collect_errors: list[dict[str, str]] = field(default_factory=list)
    targets_error: str | None = None


def read_results(path: Path) -> Run:
    """Merge the JSON lines of the gate plugin (conformance/gate/plugin.py) into one result per
    test. A test that started but never reported is "crashed" (the process running it died)."""
    run = Run()
    items = {}
    items_path = Path(f"{path}.items")
    if items_path.exists():
        for line in items_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                info = json.loads(line)
                items[info["nodeid"]] = info
    reports: dict[str, list[dict[str, Any]]] = {}
    started: list[str] = []
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a dying process
            continue
        event = rec.get("event")
        if event == "session":
            run.targets = rec.get("targets") or []
            run.targets_error = rec.get("targets_error")
        elif event == "start":
            started.append(rec["nodeid"])
        elif event == "report":
            reports.setdefault(rec["nodeid"], []).append(rec)
        elif event == "collect_error":
            run.collect_errors.append({"nodeid": rec["nodeid"], "failure": rec.get("failure", "")})
    faults = read_faults(path)
    for nodeid in dict.fromkeys(started + list(reports)):
        run.tests.append(_merge(nodeid, reports.get(nodeid, []), items.get(nodeid, {}), faults.get(nodeid, "")))
    for nodeid, info in items.items():  # selected, never started: the run ended early (a crash under -n 0)
        if nodeid not in reports and nodeid not in started:
            run.tests.append(TestResult(
                nodeid=nodeid, test=info.get("test") or nodeid.split("[", 1)[0], op=info.get("op"),
                kind=info.get("kind"), target=(info.get("target") or {}).get("id") or _param_id(nodeid),
                outcome="skipped", skip_reason=NOT_RUN))
    return run


def read_faults(path: Path) -> dict[str, str]:
    """nodeid -> what faulthandler wrote while that test ran (empty for most tests), from the
    ``FILE.faults.<worker>`` files of conformance/gate/plugin.py."""
    faults: dict[str, str] = {}
    for fault_file in sorted(path.parent.glob(f"{path.name}.faults.*")):
        nodeid = None
        for line in fault_file.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(FAULT_START):
                nodeid = line[len(FAULT_START):]
                faults[nodeid] = ""
            elif nodeid is not None:
                faults[nodeid] += line + "\n"
    return {k: v for k, v in faults.items() if v.strip()}


def _merge(nodeid: str, phases: list[dict[str, Any]], item: dict[str, Any], fault: str) -> TestResult:
    """One TestResult from a test's phase records (setup, call, teardown, or xdist's crash) and
    what faulthandler wrote while it ran (a timeout's or a fatal signal's stacks)."""
    info = next((p for p in phases if p.get("target")), None) or item or {}
    target = info.get("target") or {}
    result = TestResult(nodeid=nodeid, test=info.get("test") or nodeid.split("[", 1)[0], op=info.get("op"),
                        kind=info.get("kind"), target=target.get("id") or _param_id(nodeid), outcome="passed")
    if not phases or any(p.get("when") == "???" for p in phases):  # the process running it died
        died = [p.get("failure") or "" for p in phases] or [
            "the test started but never reported: the process running it died"]
        result.outcome = "timeout" if fault.startswith("Timeout (") else "crashed"
        first = fault.strip().splitlines()[0] if fault.strip() else ""
        if result.outcome == "timeout":
            after = _rounded(first.removeprefix("Timeout (").rstrip("!").rstrip(")"))
            result.message = (f"no result after {after} (the per-test timeout, or the per-call watchdog's backstop "
                              "for a call stuck in native code): the process running it was ended; "
                              "its Python stacks are in the failure text")
        else:
            crash = [line for text in died for line in text.splitlines() if "crashed" in line or "died" in line]
            result.message = "; ".join(crash or died) + (f" ({first})" if first else "")
        result.failure = "\n".join(died) + ("\n\nPython stack when it ended:\n" + running_stack(fault) if fault else "")
        return result
    for phase in phases:
        result.duration += phase.get("duration") or 0.0
        rec = phase.get("conformance") or {}
        compared = max(0, rec.get("examples", 0) - rec.get("not_implemented", 0))
        result.examples += compared
        result.not_implemented += rec.get("not_implemented", 0)
        for name, values in (rec.get("features") or {}).get(result.op, {}).items():
            result.features.setdefault(name, []).extend(v for v in values if v not in result.features[name])
        if compared or rec.get("worst_ratio"):  # something was compared (not only rejected as not implemented)
            result.worst_ratio = max(result.worst_ratio or 0.0, float(rec.get("worst_ratio") or 0.0))
        result.notes += [n for n in rec.get("notes", []) if n not in result.notes]
        if phase["outcome"] == "skipped" and result.outcome == "passed":
            result.outcome, result.skip_reason = "skipped", phase.get("skip_reason")
            result.skip_kind = phase.get("skip_kind")
        elif phase["outcome"] == "failed" and not result.failed:
            text = phase.get("failure") or ""
            result.outcome, result.failure = "failed", text
            result.message = rec.get("failure") or _summary_line(text)
            result.worst_element = rec.get("worst_element") or None
            result.verdict = rec.get("verdict") or None
            result.diagnosis = Diagnosis.from_json(rec["diagnosis"]) if rec.get("diagnosis") else None
            failed_op = rec.get("failed_op") or None
            if failed_op and failed_op != result.op:  # booked under the op whose call failed
                result.notes.append(f"booked under {failed_op}, whose call failed, in {result.test} "
                                    f"(a test of {result.op})")
                result.op = failed_op
            if result.verdict == TIMEOUT:  # the per-call watchdog stopped a call (conformance/kit/watchdog.py)
                result.outcome = "timeout"
            result.falsifying_example = phase.get("falsifying_example")
            result.reproduce_blob = phase.get("reproduce_blob")
            result.inputs, result.case_file = rec.get("inputs") or "", phase.get("case_file")
            result.doc = phase.get("doc") or ""
            result.tolerance = rec.get("tolerance") or ""
    return result


def _rounded(clock: str) -> str:
    """``0:00:09.908529`` (faulthandler's H:MM:SS) to whole seconds: ``0:00:10``."""
    try:
        hours, minutes, seconds = clock.split(":")
        return str(_dt.timedelta(seconds=round(int(hours) * 3600 + int(minutes) * 60 + float(seconds))))
    except ValueError:
        return clock


def running_stack(fault: str) -> str:
    """What faulthandler wrote, cut to what matters: its first line (``Timeout (0:00:02)!``,
    ``Fatal Python error: Segmentation fault``) and the stack of the thread that ran the test,
    down to the test function (the pytest, pluggy and xdist frames below it dropped)."""
    header, *threads = THREAD_RE.split(fault.strip())
    running = [t for t in threads if "/_pytest/" in t]
    kept = []
    for thread in running or threads:
        lines = thread.splitlines()
        cut = next((i for i, line in enumerate(lines) if "/_pytest/" in line), len(lines))
        kept.append("\n".join(lines[:cut] + (["  ... (pytest's own frames)"] if cut < len(lines) else [])))
    return "\n\n".join([header.strip(), *kept]).strip() + "\n"


def _param_id(nodeid: str) -> str | None:
    return nodeid.rsplit("[", 1)[1].rstrip("]") if nodeid.endswith("]") and "[" in nodeid else None


def _summary_line(text: str) -> str:
    """The first ``E   ...`` line of a traceback (the exception message), else its last line."""
    errors = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    lines = [line for line in errors if line] or [line for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if errors else lines[-1]) if lines else ""


def aggregate(run: Run, *, ops: Sequence[str] = ()) -> list[OpResult]:
    """OpResults per target x op, in target order then contract op order; with ``ops`` (the op
    filter, or every contract op when empty) also the ops no test checked ("no tests")."""
    by_key: dict[tuple[str, str], OpResult] = {}
    for test in run.tests:
        key = (test.target or "-", test.op or "-")
        by_key.setdefault(key, OpResult(op=key[1], target=key[0])).tests.append(test)
    target_ids = [t["id"] for t in run.targets] + sorted({k[0] for k in by_key} - {t["id"] for t in run.targets})
    wanted = list(ops) or list(OPS)
    for target in target_ids:
        for op in wanted:
            by_key.setdefault((target, op), OpResult(op=op, target=target))
    op_order = {op: i for i, op in enumerate(OPS)}
    target_order = {t: i for i, t in enumerate(target_ids)}
    return sorted(by_key.values(), key=lambda r: (target_order.get(r.target, len(target_order)),
                                                  op_order.get(r.op, len(op_order)), r.op))


def rests_on(coverage: dict[str, Any]) -> str:
    """What a pass leaves out, from ``OpResult.coverage`` (or its JSON): ``2 of 5 tests;
    pre-LN, final_norm not tested``; "" when every test ran and every feature was tested."""
    parts = []
    if coverage["tests_run"] < coverage["tests"]:
        parts.append(f"{coverage['tests_run']} of {coverage['tests']} tests")
    untested = [label(name, v) for name, f in coverage["features"].items() for v in f["not_tested"]]
    if untested:
        parts.append(", ".join(untested) + " not tested")
    return "; ".join(parts)


def status_text(status: str, coverage: dict[str, Any] | None) -> str:
    """The status as the table and report.md show it: a pass says how much it rests on."""
    left_out = rests_on(coverage) if status == PASS and coverage else ""
    return f"{status}, {left_out}" if left_out else status


def missing_requirements(results: Iterable[OpResult], requirements: Sequence[Requirement],
                         tested_targets: Iterable[str]) -> list[dict[str, Any]]:
    """``--require`` entries not met on a tested target: the op not implemented (or not checked),
    or a required feature value no test ran with. One {op, target, status, requirement,
    not_tested} per requirement and target."""
    by_key = {(r.target, r.op): r for r in results}
    missing = []
    for target in tested_targets:
        for req in requirements:
            r = by_key.get((target, req.op))
            if r is None:
                continue
            features = r.coverage["features"]
            not_tested = [label(name, v) for name, v in req.wanted()
                          if v not in features.get(name, {}).get("tested", [])]
            if r.status in (NOT_IMPLEMENTED, NO_TESTS, SKIPPED) or not_tested:
                missing.append({"op": req.op, "target": target, "status": r.status, "requirement": str(req),
                                "not_tested": not_tested})
    return missing


def unsupported_targets(results: Iterable[OpResult]) -> list[str]:
    """Targets on which every test that ran was skipped as unsupported."""
    statuses: dict[str, set[str]] = {}
    for r in results:
        if r.tests:
            statuses.setdefault(r.target, set()).add(r.status)
    return [t for t, s in statuses.items() if s == {UNSUPPORTED}]


# --- the table ---------------------------------------------------------------------------------


def diagnosis_json(d: Diagnosis | None) -> dict[str, Any] | None:
    return None if d is None else {"variants": list(d.variants), "alike": list(d.alike), "nan_only": d.nan_only, "text": d.text,
                                   "measured": d.tried, "seconds": d.seconds, "error": d.error or None}


def finite(x: float | None) -> float | str | None:
    return None if x is None else "inf" if x == float("inf") else x


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit // 2] + "\n[... cut ...]\n" + text[-limit // 2:]
