"""The gate's reports: the console table, ``report.json`` (schema: conformance/gate/REPORT.md),
``junit.xml`` and ``report.md``, rendered from the results of conformance/gate/tally.py.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backends.contract import OPS
from conformance.gate.tally import (
    SCHEMA_VERSION,
    OpResult,
    TestResult,
    clip,
    status_text,
    unsupported_targets,
)
from conformance.kit.strategies import FAMILIES
from conformance.kit.verdicts import (
    FAILING,
    KNOWN,
    NO_TESTS,
    STATUSES,
)


def target_label(target: str, name: str | None) -> str:
    """The target id, with the backend's own ``name`` when the id does not already show it
    (a factory attribute: ``make-float64 (my-engine)``)."""
    return f"{target} ({name})" if name and not target.startswith(f"{name}-") else target


def table(results: Sequence[OpResult], names: dict[str, str | None] | None = None) -> str:
    """The per-op table the gate prints (``names``: target id -> the backend's own name)."""
    header = ("target", "op", "status", "worst err/tol", "examples", "tests passed")
    unsupported = unsupported_targets(results)
    shown = [r for r in results if r.status != NO_TESTS and r.target not in unsupported]
    rows = [header] + [(target_label(r.target, (names or {}).get(r.target)), r.op, status_text(r.status, r.coverage), _ratio(r.worst_ratio), str(r.examples),
                        _tests(r)) for r in shown]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {3, 4, 5}
    lines = []
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    untested = [r.op for r in results if r.status == NO_TESTS]
    untested = sorted(set(untested), key=lambda op: (OPS.index(op) if op in OPS else len(OPS), op))
    if untested:
        lines.append(f"no tests for: {', '.join(untested)}")
    if unsupported:
        lines.append(f"unsupported here (every test skipped): {', '.join(unsupported)}")
    return "\n".join(lines)


def _tests(r: OpResult) -> str:
    """``passed/ran``, and how many were skipped."""
    skipped = r.count("skipped")
    return f"{r.count('passed')}/{len(r.tests) - skipped}" + (f" ({skipped} skipped)" if skipped else "")


def _ratio(ratio: float | None) -> str:
    return "-" if ratio is None else "inf" if ratio == float("inf") else f"{ratio:.3g}"


def diagnosis_lines(results: Sequence[OpResult]) -> list[str]:
    """One line per failing (or accepted) op with a diagnosis, for the console:
    ``positional_encoding on torch-float32: FAIL; conforms under variant `pe-sin-cos-halves` (...)``."""
    return [f"{r.op} on {r.target}: {r.status.upper()}; {r.diagnosis}" for r in results
            if r.diagnosis and r.status in (*FAILING, KNOWN)]


# --- the files ---------------------------------------------------------------------------------

def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")


def write_junit(path: Path, tests: Sequence[TestResult], *, name: str = "conformance",
                missing: Sequence[dict[str, Any]] = ()) -> None:
    """JUnit XML, one testcase per test and target, agreeing with the gate's verdict: a failure
    covered by a known deviation is a ``skipped`` testcase whose message gives the reason, and
    each unmet ``--require`` (``missing``: op, target, status, and ``requirement``/``not_tested``
    or ``cases``) is a failing testcase of its own, so that a CI system shows what failed."""
    suite = ET.Element("testsuite", name=name)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total = 0.0
    for m in missing:
        case = ET.SubElement(suite, "testcase", classname="require",
                             name=f"{m.get('requirement') or m['op']}[{m['target']}]", time="0")
        what = (f"not tested with {', '.join(m['not_tested'])}" if m.get("not_tested")
                else f"no output for {', '.join(m['cases'])}" if m.get("cases") else m["status"])
        ET.SubElement(case, "failure", message=f"required but {m['status']}: {m['op']} on {m['target']} ({what})")
        counts["tests"] += 1
        counts["failures"] += 1
    for t in tests:
        module, _, function = t.nodeid.partition("::")
        case = ET.SubElement(suite, "testcase", classname=module.removesuffix(".py").replace("/", "."),
                             name=function or t.nodeid, time=f"{t.duration:.3f}")
        if t.op:
            props = ET.SubElement(case, "properties")
            for key, value in (("op", t.op), ("target", t.target), ("kind", t.kind), ("examples", t.examples),
                               ("worst_ratio", _ratio(t.worst_ratio))):
                ET.SubElement(props, "property", name=key, value=str(value))
            if t.diagnosis is not None:
                ET.SubElement(props, "property", name="diagnosis", value=t.diagnosis.text)
        counts["tests"] += 1
        total += t.duration
        if t.failed and t.deviation is not None:
            ET.SubElement(case, "skipped", message=f"known deviation: {t.deviation.reason}").text = clip(t.failure)
            counts["skipped"] += 1
        elif t.outcome == "failed":
            diagnosed = f" [diagnosis: {t.diagnosis.text}]" if t.diagnosis is not None else ""
            inputs = f"\n\nbackend calls of the failing example:\n{t.inputs}" if t.inputs else ""
            ET.SubElement(case, "failure", message=t.message[:500] + diagnosed).text = clip(t.failure) + clip(inputs, 1500)
            counts["failures"] += 1
        elif t.outcome in ("crashed", "timeout"):
            ET.SubElement(case, "error", message=f"{t.outcome}: {t.message[:500]}").text = clip(t.failure)
            counts["errors"] += 1
        elif t.outcome == "skipped":
            ET.SubElement(case, "skipped", message=t.skip_reason or "")
            counts["skipped"] += 1
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("time", f"{total:.3f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def document(*, kind: str, command: list[str], environment: dict[str, Any], settings: dict[str, Any],
             targets: list[dict[str, Any]], results: Sequence[OpResult], tests: Sequence[TestResult],
             errors: list[str], reasons: list[str], verdict: str, code: int, started_at: str | None = None,
             duration_s: float | None = None, known_deviations: dict[str, Any] | None = None,
             require: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report.json document (schema: conformance/gate/REPORT.md)."""
    from importlib import metadata

    try:
        version = metadata.version("transformer-conformance")
    except metadata.PackageNotFoundError:
        version = None
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "tool": {"name": "transformer-conformance", "version": version},
        "command": command,
        "started_at": started_at,
        "duration_s": duration_s,
        "environment": environment,
        "settings": settings,
        "targets": targets,
        "results": [r.to_json() for r in results],
        "known_deviations": known_deviations or {"file": None, "entries": 0, "applied": [], "stale": []},
        "require": require or {"ops": [], "missing": []},
        "errors": errors,
        "summary": {"verdict": verdict, "exit_code": code,
                    "statuses": {s: sum(r.status == s for r in results) for s in STATUSES},
                    "reasons": reasons,
                    "tests": {o: sum(t.outcome == o for t in tests)
                              for o in ("passed", "failed", "crashed", "timeout", "skipped")}},
    }


def markdown(document: dict[str, Any]) -> str:
    """report.md: a summary a CI system can post as a comment (from the report.json document)."""
    verdict = document["summary"]["verdict"]
    icon = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "interrupted": "INTERRUPTED"}[verdict]
    lines = [f"## Transformer conformance gate: {icon}", ""]
    counts = document["summary"]["statuses"]
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no results")
    lines.append("")
    for reason in document["summary"]["reasons"]:
        lines.append(f"- {reason}")
    if document["summary"]["reasons"]:
        lines.append("")
    if document.get("errors"):
        lines += ["### Errors", ""]
        for error in document["errors"]:
            lines += ["```", clip(error, 2000), "```", ""]
    targets = {t["id"]: t for t in document.get("targets", [])}
    by_target: dict[str, list[dict[str, Any]]] = {}
    for r in document["results"]:
        by_target.setdefault(r["target"], []).append(r)
    for target, rows in by_target.items():
        t = targets.get(target, {})
        where = f" ({t.get('spec')}, {t.get('dtype')}, {t.get('device')})" if t else ""
        if t.get("compiles_per_shape"):
            where += (f" (compiles per shape: sizes from size_menu, structures from {FAMILIES} families,"
                      " backends/CONTRACT.md)")
        lines += [f"### {target_label(target, t.get('name'))}{where}", "", "| op | status | worst err/tol | examples | tests passed |",
                  "|---|---|---:|---:|---:|"]
        for r in rows:
            if r["status"] == NO_TESTS:
                continue
            ran = r["tests"]["passed"] + r["tests"]["failed"] + r["tests"]["crashed"] + r["tests"]["timeout"]
            status = f"**{r['status']}**" if r["status"] in FAILING else status_text(r["status"], r.get("coverage"))
            ratio = r["worst_ratio"]
            ratio_text = "-" if ratio is None else ratio if isinstance(ratio, str) else f"{ratio:.3g}"
            lines.append(f"| {r['op']} | {status} | {ratio_text} | {r['examples']} | {r['tests']['passed']}/{ran} |")
        untested = [r["op"] for r in rows if r["status"] == NO_TESTS]
        if untested:
            lines += ["", f"No tests for: {', '.join(untested)}."]
        lines.append("")
    diagnosed = [r for r in document["results"] if r.get("diagnosis") and r["status"] in (*FAILING, KNOWN)]
    if diagnosed:
        lines += ["### Diagnosis", ""] + [f"- `{r['op']}` on `{r['target']}`: {r['status']}; {r['diagnosis']}"
                                          for r in diagnosed] + [""]
    failures = [(r, f) for r in document["results"] for f in r["failures"]]
    if failures:
        lines += ["### Failures", ""]
        for r, f in failures:
            tag = " (known deviation)" if f["known_deviation"] else ""
            lines += [f"#### `{r['op']}` on `{r['target']}`: {f.get('verdict') or f['outcome']}{tag}", "",
                      f"- test: `{f['nodeid']}`"]
            if f["worst_element"]:
                lines.append(f"- worst element: `{f['worst_element']}`")
            if f.get("diagnosis"):
                lines.append(f"- diagnosis: {f['diagnosis']['text']}")
            if f.get("doc"):
                lines.append(f"- the test: {' '.join(f['doc'].split())}")
            if f.get("tolerance"):
                lines.append(f"- {f['tolerance']}")
            if f["message"]:
                lines += ["", "```", clip(f["message"], 1500), "```"]
            if f["falsifying_example"]:
                lines += ["", "Shrunk example:", "", "```python", clip(f["falsifying_example"], 1500), "```"]
            if f.get("inputs"):
                lines += ["", "Backend calls of the failing example:", "", "```", clip(f["inputs"], 1500), "```"]
            if f["reproduce_blob"]:
                lines += ["", f"Reproduce the test: `{f['reproduce_blob']}`"]
            if f.get("reproduce"):
                lines += ["", f"Reproduce the calls: `{f['reproduce']}`"]
            if f["known_deviation"]:
                lines += ["", f"Accepted: {f['known_deviation']['reason']}"]
            lines.append("")
    deviations = document.get("known_deviations") or {}
    if deviations.get("stale"):
        lines += ["### Stale known deviations", "", "These entries no longer match any failure; remove them:", ""]
        lines += [f"- {d['file']}:{d['line']}: {d['backend']} {d['dtype']} {d.get('op') or d.get('test')}: "
                  f"{d['reason']}" for d in deviations["stale"]]
        lines.append("")
    env = document.get("environment", {})
    lines += ["<details><summary>Environment</summary>", "", "```",
              json.dumps({k: env.get(k) for k in ("python", "platform", "packages")}, indent=1), "```", "",
              "</details>", ""]
    return "\n".join(lines)
