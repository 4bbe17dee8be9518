"""``golden check``: compare the outputs another program wrote with the expected values and the
stored tolerances, and say exactly what that rests on (GOLDEN.md, "The check").

Exit status: 0 every output present is within tolerance and every required op has an output
for each of its cases; 1 an output is wrong or unreadable, or a required case has no output;
2 the check could not be made (GoldenError: the golden directory, the outputs directory, the
arguments, outputs of several float dtypes without ``dtype``; or no output file at all).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from backends.contract import OPS
from conformance.kit import record
from conformance.gate import report
from conformance.gate import tally
from conformance.kit.verdicts import EXIT_ERROR, FAILING, NOT_IMPLEMENTED, UNSUPPORTED, verdict
from conformance.golden.cases import EXACT_TOKEN_DTYPES
from conformance.kit.assertions import assert_close, assert_equal, assert_no_systematic_error
from conformance.golden.layout import GoldenError, load_manifest, load_output, read_part, safe_path

OUTPUT_DTYPES = ("float64", "float32", "float16")  # what .npy holds; bfloat16 is written as float32
ALL = "all"
"""``--require all``: every op of the manifest, every case."""


@dataclass
class Outcome:
    """The result of ``check``: one TestResult per case, and what was required and found."""

    dtype: str | None
    tests: list[tally.TestResult] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    directory: str = ""
    outputs: str = ""
    require: tuple[str, ...] = ()
    strays: list[str] = field(default_factory=list)  # warnings: output files that match no case

    @property
    def failures(self) -> list[tally.TestResult]:
        return [t for t in self.tests if t.failed]

    @property
    def checked(self) -> list[tally.TestResult]:
        return [t for t in self.tests if t.outcome != "skipped"]

    @property
    def not_implemented(self) -> list[tally.TestResult]:
        return [t for t in self.tests if t.outcome == "skipped"]

    def op_results(self) -> list[tally.OpResult]:
        return tally.aggregate(tally.Run(targets=self.targets(), tests=self.tests))

    def targets(self) -> list[dict[str, str]]:
        ids = dict.fromkeys(t.target for t in self.tests if t.target)
        return [{"id": i, "spec": "golden", "dtype": i.removeprefix("golden-"), "device": "-"} for i in ids]

    def missing(self) -> list[dict[str, Any]]:
        """Required ops with a case that has no output: op, target, status, the cases."""
        absent = {}
        for t in self.not_implemented:
            if t.op in self.require:
                absent.setdefault(t.op, []).append(t.test.removeprefix("golden/"))
        return [{"op": op, "target": self.tests[0].target, "status": NOT_IMPLEMENTED, "cases": names}
                for op, names in absent.items()]

    def warnings(self) -> list[str]:
        """Stray output files, and ops with outputs for some of their cases only."""
        partial = []
        for op in dict.fromkeys(t.op for t in self.tests):
            tests = [t for t in self.tests if t.op == op]
            absent = [t.test.removeprefix("golden/") for t in tests if t.outcome == "skipped"]
            if absent and len(absent) < len(tests):
                partial.append(f"{op}: {len(absent)} of its {len(tests)} cases have no output ({', '.join(absent)}); "
                               "those are not checked")
        return self.strays + partial

    def errors(self) -> list[str]:
        if self.checked:
            return []
        return [f"no output file in {self.outputs} has the name of a case: nothing was checked"
                + (f" ({len(self.strays)} other file(s) there; see the warnings)" if self.strays else "")]

    def verdict(self) -> tuple[str, int, list[str]]:
        """(verdict, exit status, reasons)."""
        if self.errors():
            return (*verdict(error=True), self.errors())
        failing = [r for r in self.op_results() if r.status in FAILING]
        reasons = [f"{len(failing)} op result(s) failed: " + ", ".join(f"{r.op} ({r.status})" for r in failing)] \
            if failing else []
        reasons += [f"required but not implemented: {m['op']} (no output for {', '.join(m['cases'])})"
                    for m in self.missing()]
        return (*verdict(failed=bool(reasons)), reasons)

    def summary(self) -> str:
        """The console's last line, e.g. ``golden check: PASS (exit 0) at float32: 13 checked (13
        passed, 0 failed), 16 not implemented; required: softmax, layer_norm``."""
        verdict, code, reasons = self.verdict()
        head = f"golden check: {verdict.upper()} (exit {code})"
        if code == EXIT_ERROR:
            return f"{head}: {'; '.join(reasons)}"
        failed = len(self.failures)
        text = (f"{head} at {self.dtype or 'exact (token ids only)'}: {len(self.checked)} checked "
                f"({len(self.checked) - failed} passed, {failed} failed), {len(self.not_implemented)} not implemented")
        every = set(self.require) == {c["op"] for c in self.manifest.get("cases", [])}
        required = "every op (--require all)" if every else ", ".join(self.require)
        text += f"; required: {required}" if self.require else "; nothing required (--require)"
        return text + (f"; {'; '.join(reasons)}" if reasons else "")

    def document(self, *, argv: list[str], environment: dict[str, Any]) -> dict[str, Any]:
        verdict, code, reasons = self.verdict()
        document = report.document(
            kind="golden", command=argv, environment=environment,
            settings={"golden_dir": self.directory, "outputs": self.outputs, "dtype": self.dtype,
                      "format_version": self.manifest.get("format_version"), "seed": self.manifest.get("seed"),
                      "tolerance_model": self.manifest.get("tolerance_model"), "require": list(self.require)},
            targets=[{**t, "status": "tested"} for t in self.targets()], results=self.op_results(), tests=self.tests,
            errors=self.errors(), reasons=reasons, verdict=verdict, code=code,
            require={"ops": list(self.require), "missing": self.missing()})
        document["summary"]["cases"] = {"checked": len(self.checked), "failed": len(self.failures),
                                        "not_implemented": len(self.not_implemented)}
        document["warnings"] = self.warnings()
        return document


def required_ops(require: Sequence[str], manifest: dict[str, Any]) -> tuple[str, ...]:
    """The ops of ``require`` (``all``: every op of the manifest), in contract order."""
    present = [c["op"] for c in manifest["cases"]]
    unknown = [op for op in require if op != ALL and op not in OPS]
    if unknown:
        raise GoldenError(f"--require: unknown op {unknown[0]!r}; contract ops: {', '.join(OPS)} (or {ALL!r})")
    wanted = set(present) if ALL in require else set(require)
    absent = sorted(wanted - set(present))
    if absent:
        raise GoldenError(f"--require: the golden directory has no case of {', '.join(absent)}")
    return tuple(op for op in OPS if op in wanted)


def check(directory: str | Path, outputs: str | Path, *, dtype: str | None = None,
          require: Sequence[str] = ()) -> Outcome:
    """Compare ``outputs/<case>.npy`` with every case of the golden ``directory``.

    ``dtype``: the precision the outputs were computed in, which chooses the tolerance; by
    default the floating outputs' own dtype (float64, float32 or float16, the same for all;
    bfloat16 results must be written as float32 and checked with ``dtype="bfloat16"``). A
    missing output file means the op is not implemented (a failure for the ops in ``require``);
    a file that cannot be read, or has the wrong shape or dtype, fails its case. GoldenError
    for a problem with the golden directory itself, or outputs of several float dtypes without
    ``dtype``.
    """
    directory, outputs = Path(directory), Path(outputs)
    if not outputs.is_dir():
        raise GoldenError(f"{outputs}: no such outputs directory")
    manifest = load_manifest(directory)
    wanted = required_ops(require, manifest)
    loaded: dict[str, np.ndarray | str | None] = {}
    paths = {case["name"]: safe_path(outputs, case["output"]["file"], "output") for case in manifest["cases"]}
    for name, path in paths.items():
        try:
            loaded[name] = load_output(path)
        except FileNotFoundError:
            loaded[name] = None
        except ValueError as exc:
            loaded[name] = str(exc)
    dtype = dtype or _output_dtype(outputs, loaded)
    outcome = Outcome(dtype=dtype, manifest=manifest, directory=str(directory), outputs=str(outputs), require=wanted,
                      strays=strays(outputs, [p.name for p in paths.values()]))
    for case in manifest["cases"]:
        expected = read_part(directory, manifest, case, "expected")
        outcome.tests.append(_check_case(case, expected, paths[case["name"]], loaded[case["name"]], dtype))
    return outcome


def strays(outputs: Path, names: list[str]) -> list[str]:
    """A warning for each file in ``outputs`` that is no case's output, with the nearest case."""
    warnings = []
    for path in sorted(outputs.iterdir()):
        if path.name in names:
            continue
        near = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
        hint = f"; nearest case: {near[0].removesuffix('.npy')} (writes {near[0]})" if near else ""
        warnings.append(f"{path}: matches no case, ignored{hint}")
    return warnings


def _output_dtype(outputs: Path, loaded: dict[str, Any]) -> str | None:
    """The one float dtype of the outputs (None if there are no float outputs)."""
    found = sorted({a.dtype.name for a in loaded.values()
                    if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)})
    if len(found) > 1:
        raise GoldenError(f"{outputs}: outputs of several dtypes ({', '.join(found)}); pass --dtype to say "
                          "which precision they were computed in")
    if found and found[0] not in OUTPUT_DTYPES:
        raise GoldenError(f"{outputs}: outputs of dtype {found[0]}; expected one of {', '.join(OUTPUT_DTYPES)} "
                          "(or float32 with --dtype bfloat16)")
    return found[0] if found else None


def _check_case(case: dict[str, Any], expected: dict[str, np.ndarray], path: Path, out: np.ndarray | str | None,
                dtype: str | None) -> tally.TestResult:
    op, exact = case["op"], case["tolerance"]["class"] == "exact"
    target = f"golden-{dtype or 'exact'}"
    result = tally.TestResult(nodeid=f"golden/{case['name']}[{target}]", test=f"golden/{case['name']}", op=op,
                               kind="golden", target=target, outcome="passed", examples=1)
    if out is None:
        result.outcome, result.skip_kind = "skipped", NOT_IMPLEMENTED
        result.skip_reason = f"{NOT_IMPLEMENTED}: no output file {path}"
        return result
    if exact and dtype not in (None, *EXACT_TOKEN_DTYPES):
        result.outcome, result.skip_kind = "skipped", UNSUPPORTED
        result.skip_reason = (f"{UNSUPPORTED}: greedy tokens are exact at {', '.join(EXACT_TOKEN_DTYPES)} only, "
                              f"not at {dtype}")
        return result
    if isinstance(out, str):
        return _failed(result, out)
    want = expected["expected"]
    if out.shape != want.shape:
        return _failed(result, f"{path}: shape {out.shape}, expected {want.shape} [{op}: {case['description']}]")
    if exact and not np.issubdtype(out.dtype, np.integer):
        return _failed(result, f"{path}: dtype {out.dtype}, expected integer token ids")
    if not exact and not np.issubdtype(out.dtype, np.floating):
        return _failed(result, f"{path}: dtype {out.dtype}, expected floating point "
                               "(write bfloat16 results as float32 and pass --dtype bfloat16)")
    who = SimpleNamespace(name=f"golden:{path.name}", dtype=dtype or "-", device="-")
    with record.capture() as seen:  # the worst ratio, of a failing comparison too
        try:
            if exact:
                assert_equal(out, want, backend=who, op=op, what=case["description"], where=expected["compare"])
            else:
                tol = expected[case["tolerance"]["arrays"][dtype]]
                assert_close(out, want, tol=tol, backend=who, op=op, what=case["description"], where=expected["compare"])
                assert_no_systematic_error(out, want, tol=tol, backend=who, op=op, what=case["description"],
                                           where=expected["compare"])
        except AssertionError as exc:
            _failed(result, str(exc))
    result.worst_ratio, result.worst_element = seen.worst_ratio, seen.worst_element or None
    return result


def _failed(result: tally.TestResult, message: str) -> tally.TestResult:
    result.outcome, result.message, result.failure = "failed", message, message
    return result


def console(outcome: Outcome, *, argv: list[str], environment: dict[str, Any], report_dir: Path | None) -> int:
    """Print the table, the warnings, the failures and the summary; write the reports to
    ``report_dir``; return the exit status."""
    print(report.table(outcome.op_results()))
    for warning in outcome.warnings():
        print(f"\nwarning: {warning}")
    for case in outcome.failures:
        print(f"\nFAIL: {case.test}: {case.message}")
    document = outcome.document(argv=argv, environment=environment)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        report.write_json(report_dir / "report.json", document)
        report.write_junit(report_dir / "junit.xml", outcome.tests, name="golden", missing=outcome.missing())
        (report_dir / "report.md").write_text(report.markdown(document), encoding="utf-8")
    print(f"\n{outcome.summary()}")
    return document["summary"]["exit_code"]
