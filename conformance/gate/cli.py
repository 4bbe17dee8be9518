"""``python -m conformance`` (also ``transformer-conformance``): the gate and the golden vectors.

    python -m conformance run [--backend SPEC]... [--dtype D]... [--device DEV]
                              [--hypothesis-profile dev|ci|thorough] [--ops OP,...]... [--require OP,...]...
                              [--known-deviations FILE] [--strict-deviations]
                              [--report-dir DIR] [-n N|auto] [--timeout SECONDS] [-v]
    python -m conformance repro CASE.npz [--backend SPEC] [--dtype D] [--device DEV]
    python -m conformance golden export DIR [--seed N] [--layout npy|npz]
    python -m conformance golden check DIR --outputs OUT_DIR [--dtype D] [--require OP,...|all] [--report-dir DIR]
    python -m conformance golden run DIR --backend SPEC --dtype D [--device DEV] --outputs OUT_DIR

``run`` runs the property suite (``properties``) and the differential suite
(``conformance.differential``) on the chosen backends under pytest (and pytest-xdist), prints a
per-op table and exits 0 when every implemented op conforms and every ``--require``d op is
implemented, 1 when anything fails, 2 on a usage or set-up error, 3 when interrupted (SIGTERM or
SIGINT: the reports of every test that finished are written, the rest are "not run (interrupted)"). Without ``--backend`` it
checks the built-in backends. The report files are described in conformance/gate/REPORT.md; the
golden vectors in conformance/golden/GOLDEN.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
from importlib import metadata
from pathlib import Path
from typing import Any

from backends.contract import DTYPES, OPS
from backends.registry import BUILTIN_LIBRARIES, BUILTINS, BackendSpecError, Target, default_targets, resolve
from conformance.gate import deviations as deviations_mod
from conformance.gate import report
from conformance.kit.failing_cases import reproduce_command
from conformance.kit.features import Requirement, parse_requirement
from conformance.kit.verdicts import EXIT_ERROR, EXIT_FAIL, EXIT_OK, FAILING, UNSUPPORTED, verdict

SUITES = ("properties", "conformance.differential")
PROFILES = ("dev", "ci", "thorough")
DEFAULT_TIMEOUT = {"dev": 120.0, "ci": 300.0, "thorough": 1800.0}
"""Per-test timeout in seconds by profile (``--timeout`` overrides; 0 disables)."""
PACKAGES = ("transformer-conformance", "numpy", "scipy", "ml_dtypes", "hypothesis", "pytest", "pytest-xdist",
            "pytest-timeout", "torch")
INTERRUPTED = "not run (interrupted)"
SHOWN_LINES = 12  # of a shrunk example, in the terminal


class Interrupted(BaseException):  # noqa: N818 - a signal, not an error
    """SIGTERM (or SIGINT, as KeyboardInterrupt) reached the gate: it reports what finished."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


class GateError(Exception):
    """A usage or set-up error: the gate exits 2 with this message."""


# --- arguments ---------------------------------------------------------------------------------

def _op_list(text: str) -> list[str]:
    ops = [op.strip() for op in text.split(",") if op.strip()]
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown op {unknown[0]!r}; contract ops: {', '.join(OPS)}")
    return ops


def _requirements(text: str) -> list[Requirement]:
    try:
        return [parse_requirement(item) for item in text.split(",") if item.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _workers(text: str) -> str:
    if text in ("auto", "logical") or (text.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected a number of workers or 'auto', got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,repro,golden}")

    run = commands.add_parser("run", help="run the conformance gate on backends",
                              description="Run the property and differential suites on backends and gate on "
                                          "the result. Exit status: 0 pass, 1 fail, 2 usage or set-up error, "
                                          "3 interrupted (SIGTERM or SIGINT: the reports of what finished are "
                                          "written). Reports and the known-deviations file format: "
                                          "conformance/gate/REPORT.md.")
    run.add_argument("--backend", action="append", default=[], metavar="SPEC",
                     help="backend spec (repeatable): a built-in name, package.module:attr, path/file.py:attr or an "
                          "entry point; default: every built-in backend")
    run.add_argument("--dtype", action="append", default=[], choices=DTYPES,
                     help="dtype (repeatable); default: every dtype (combinations a backend refuses are 'unsupported')")
    run.add_argument("--device", default=None, help="device, e.g. cpu, cuda, cuda:1 (default cpu)")
    run.add_argument("--hypothesis-profile", "--profile", dest="profile", choices=PROFILES, default="ci",
                     help="Hypothesis profile: dev (25 examples), ci (100, derandomized; default), thorough (1000)")
    run.add_argument("--ops", type=_op_list, action="extend", default=[], metavar="OP,...",
                     help="check only these ops (repeatable, comma-separated)")
    run.add_argument("--require", type=_requirements, action="extend", default=[], metavar="OP[:FEATURE[=VALUE]],...",
                     help="fail unless these ops are implemented (on every supported target) and, for "
                          "OP:FEATURE, tested with every value of the feature (OP:FEATURE=VALUE: that value), "
                          "e.g. decoder_layer:norm_first (features: conformance/gate/REPORT.md); repeatable, "
                          "comma-separated")
    run.add_argument("--known-deviations", type=Path, default=None, metavar="FILE",
                     help="TOML file of accepted failures (format and example: conformance/gate/REPORT.md, "
                          "'Known deviations')")
    run.add_argument("--strict-deviations", action="store_true",
                     help="fail the gate when a known-deviations entry is stale (no longer fails)")
    run.add_argument("--report-dir", type=Path, default=None, metavar="DIR",
                     help="write report.json, junit.xml, report.md (and pytest.log, results.jsonl) here")
    run.add_argument("-n", "--workers", type=_workers, default="auto", metavar="N|auto",
                     help="pytest-xdist worker processes (default auto: one per CPU; 0: no xdist)")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="per-test timeout: a test still running after it is reported as a timeout (its process's "
                          "Python stacks are in the report); default by profile: "
                          + ", ".join(f"{p} {t:g}" for p, t in DEFAULT_TIMEOUT.items()) + "; 0 disables")
    run.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output as it runs")
    run.add_argument("--suite", action="append", default=[], type=Path, metavar="PATH",
                     help="advanced: run these test files/directories instead of the built-in suites")
    run.set_defaults(func=cmd_run)

    repro = commands.add_parser("repro", help="replay a failing example's backend calls saved by the gate",
                                description="Load a case the gate saved (REPORT_DIR/cases/*.npz), call each op on "
                                            "the backend and compare it with the reference. Exit status: 0 every "
                                            "call conforms, 1 one does not, 2 usage or set-up error.")
    repro.add_argument("case", type=Path, metavar="CASE.npz")
    repro.add_argument("--backend", default=None, metavar="SPEC", help="default: the backend the case was found on")
    repro.add_argument("--dtype", choices=DTYPES, default=None, help="default: the case's dtype")
    repro.add_argument("--device", default=None, help="default: the case's device")
    repro.set_defaults(func=cmd_repro)

    golden = commands.add_parser("golden", help="golden vectors for implementations outside Python").add_subparsers(
        dest="golden_command", required=True, metavar="{export,check,run}")
    export = golden.add_parser("export", help="write the golden cases (inputs, expected outputs, tolerances)")
    export.add_argument("dir", type=Path, metavar="DIR")
    export.add_argument("--seed", type=int, default=None, help="seed of the case generator (default: the format's)")
    export.add_argument("--layout", choices=("npy", "npz"), default="npy",
                        help="npy (default, format 2): one .npy per array, scalars as 0-d arrays; npz (format 1): "
                             "zip archives (conformance/golden/GOLDEN.md)")
    export.set_defaults(func=cmd_golden_export)
    check = golden.add_parser("check", help="check outputs another program wrote for the golden cases")
    check.add_argument("dir", type=Path, metavar="DIR")
    check.add_argument("--outputs", type=Path, required=True, metavar="OUT_DIR")
    check.add_argument("--dtype", choices=DTYPES, default=None,
                       help="the precision the outputs were computed in (default: the outputs' own dtype; "
                            "required for bfloat16, which .npy cannot hold: write float32)")
    check.add_argument("--require", type=lambda text: text.split(","), default=[], metavar="OP,...|all",
                       help="fail unless every case of these ops has an output ('all': every op)")
    check.add_argument("--report-dir", type=Path, default=None, metavar="DIR")
    check.set_defaults(func=cmd_golden_check)
    grun = golden.add_parser("run", help="write a Python backend's outputs for the golden cases (an example producer)")
    grun.add_argument("dir", type=Path, metavar="DIR")
    grun.add_argument("--backend", required=True, metavar="SPEC")
    grun.add_argument("--dtype", choices=DTYPES, required=True)
    grun.add_argument("--device", default="cpu")
    grun.add_argument("--outputs", type=Path, required=True, metavar="OUT_DIR")
    grun.set_defaults(func=cmd_golden_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 pass, 1 fail, 2 usage or set-up error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args.func(args)


# --- run ---------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    gate = Gate(args)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        gate.prepare()
        gate.execute()
    except GateError as exc:
        gate.errors.append(str(exc))
    except KeyboardInterrupt:
        gate.interrupted = "SIGINT"
    except Interrupted as exc:
        gate.interrupted = str(exc)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the reports are written whatever comes next
        code = gate.finish()
        signal.signal(signal.SIGTERM, previous)
    return code


class Gate:
    """One run of the gate: set-up checks, the pytest run, and the reports (always written)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.errors: list[str] = []
        self.deviations: list[deviations_mod.Deviation] = []
        self.targets: list[dict[str, Any]] = []
        self.suites: list[Path] = []
        self.rootdir: Path | None = None
        self.run: report.Run = report.Run()
        self.workdir: Path | None = None
        self.timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT[args.profile]
        # the op filter: --ops plus the --require'd ops (empty: every op)
        self.ops = sorted(set(args.ops) | {r.op for r in args.require}, key=OPS.index) if args.ops else []
        self.pytest_rc: int | None = None
        self.command: list[str] | None = None
        self.log_tail = ""
        self.interrupted: str | None = None  # the signal's name

    # set-up --------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Check everything that can be checked before pytest starts; GateError on a problem."""
        if self.args.known_deviations is not None:
            try:
                self.deviations = deviations_mod.load(self.args.known_deviations)
            except deviations_mod.DeviationsError as exc:
                raise GateError(str(exc)) from exc
        self.targets = check_targets(self.args.backend, self.args.dtype, self.args.device)
        self.suites = [p.resolve() for p in self.args.suite] or suite_paths()
        missing = [p for p in self.suites if not p.exists()]
        if missing:
            raise GateError(f"no such test path: {missing[0]}")
        self.rootdir = Path(os.path.commonpath([p if p.is_dir() else p.parent for p in self.suites]))
        if self.args.report_dir is not None:
            self.workdir = self.args.report_dir.resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="conformance-gate-"))

    def pytest_command(self, results: Path, ini: Path) -> list[str]:
        a = self.args
        command = [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(self.rootdir),
                   "--confcutdir", str(self.rootdir), "-p", "conformance.kit.pytest_plugin",
                   "-p", "conformance.gate.plugin", "-p", "no:cacheprovider",
                   "--conformance-results", str(results), "--hypothesis-profile", a.profile,
                   "--conformance-timeout", f"{self.timeout:g}", "-n", a.workers, "-q", "-rN", "--color=no"]
        command += [f"--backend={s}" for s in a.backend] + [f"--dtype={d}" for d in a.dtype]
        if a.workers != "0":
            command.append("--dist=worksteal")  # idle workers take tests from busy ones: test times vary 100x
            # a crash or timeout costs a worker (xdist's default allows 4 per worker, then stops
            # running tests): allow one per op, target and worker (gate_plugin skips an op's
            # later tests on a target once one crashed), plus xdist's own margin
            per = int(a.workers) if a.workers.isdigit() else (os.cpu_count() or 1)
            pairs = max(len(self.targets), 1) * len(self.ops or OPS)
            command.append(f"--max-worker-restart={pairs * per + 4 * per}")
        if a.device:
            command.append(f"--device={a.device}")
        if self.ops:
            command.append(f"--conformance-ops={','.join(self.ops)}")
        if a.known_deviations is not None:
            command.append(f"--conformance-known-deviations={a.known_deviations.resolve()}")
        return command + [str(p) for p in self.suites]

    # the run -------------------------------------------------------------------------------

    def execute(self) -> None:
        results = self.workdir / "results.jsonl"
        for stale_file in [results, *self.workdir.glob("results.jsonl.*")]:
            stale_file.unlink(missing_ok=True)
        ini = self.workdir / "pytest.ini"
        ini.write_text("[pytest]\n# written by python -m conformance run: isolates the gate from other configs\n"
                       "python_files = test_*.py\n", encoding="utf-8")
        self.command = command = self.pytest_command(results, ini)
        # the gate's state stays in its own directory, not the one it is run from (REPORT.md)
        env = {"HYPOTHESIS_STORAGE_DIRECTORY": str(self.workdir / ".hypothesis"),
               "CONFORMANCE_CACHE_DIR": str(self.workdir / ".cache"), **os.environ,
               "HYPOTHESIS_PROFILE": self.args.profile, "PYTHONUNBUFFERED": "1"}
        log_path = self.workdir / "pytest.log"
        print(f"conformance gate: running {len(self.suites)} suite(s), profile {self.args.profile}, "
              f"workers {self.args.workers}; pytest log: {log_path}", flush=True)
        try:
            with open(log_path, "w", encoding="utf-8") as log:
                log.write("$ " + shlex.join(command) + "\n")
                log.flush()
                process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                           text=True, errors="replace", bufsize=1)
                try:
                    for line in process.stdout:
                        log.write(line)
                        if self.args.verbose:
                            sys.stdout.write(line)
                    self.pytest_rc = process.wait()
                except BaseException:
                    process.terminate()
                    try:
                        process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        process.kill()
                    raise
        finally:
            self.log_tail = _tail(log_path)
            self.run = report.read_results(results)

    # the reports ---------------------------------------------------------------------------

    def finish(self) -> int:
        """Aggregate, print, write the reports; the exit status."""
        run, a = self.run, self.args
        if self.interrupted:
            mark_interrupted(run.tests)
        else:
            self.errors += self.run_errors()
        names = {t["id"]: t["name"] for t in self.targets}  # the backend's own name (check_targets)
        targets = {t["id"]: {**t, "name": names.get(t["id"])} for t in run.targets or self.targets}
        deviations_mod.apply(self.deviations, run.tests, targets)
        stale = deviations_mod.stale(self.deviations, run.tests, targets)
        results = report.aggregate(run, ops=self.ops) if run.tests else []
        unsupported = report.unsupported_targets(results)
        tested = [t for t in targets if t not in unsupported]
        reasons = []
        failing = [r for r in results if r.status in FAILING]
        if failing:
            reasons.append(f"{len(failing)} op result(s) failed: "
                           + ", ".join(f"{r.op} on {r.target} ({r.status})" for r in failing[:10])
                           + (" ..." if len(failing) > 10 else ""))
        missing = report.missing_requirements(results, a.require, tested)
        if missing:
            reasons.append("required op(s) or feature(s) not implemented or not tested: " + ", ".join(
                f"{m['requirement']} on {m['target']} ({m['status']}"
                + (f"; {', '.join(m['not_tested'])} not tested)" if m["not_tested"] else ")") for m in missing))
        if stale:
            reasons.append(f"{len(stale)} known-deviation entr{'y is' if len(stale) == 1 else 'ies are'} stale"
                           + (" (--strict-deviations)" if a.strict_deviations else " (warning)"))
        if results and not self.errors and not tested:
            self.errors.append("no target of this selection is supported here: "
                               + ", ".join(unsupported) + " (every test skipped as unsupported)")
        if self.interrupted:
            reasons.append(f"interrupted by {self.interrupted}: the tests that had not finished are "
                           f"'{INTERRUPTED}'")
        word, code = verdict(interrupted=bool(self.interrupted), error=bool(self.errors),
                             failed=bool(failing or missing or (stale and a.strict_deviations)))
        document = self.document(results, targets, unsupported, stale, missing, reasons, word, code)
        paths = self.write_reports(document, run.tests)
        self.print_summary(results, stale, reasons, word, code, paths)
        if self.args.report_dir is None and self.workdir is not None and code == EXIT_OK:
            shutil.rmtree(self.workdir, ignore_errors=True)  # our temporary pytest log and records
        return code

    def run_errors(self) -> list[str]:
        """Set-up problems seen in the pytest run (not test failures)."""
        run, rc, errors = self.run, self.pytest_rc, []
        if rc is None:
            return errors
        if run.targets_error:
            errors.append(f"the targets could not be chosen: {run.targets_error}")
        for error in run.collect_errors:
            errors.append(f"the suite could not be collected: {error['nodeid']}:\n{error['failure']}")
        crashed = any(t.outcome == "crashed" for t in run.tests)
        failed = any(t.failed for t in run.tests)
        if rc == 5:
            ops = f" (--ops {','.join(self.args.ops)})" if self.args.ops else ""
            errors.append(f"no tests were collected{ops}: nothing was checked")
        elif (rc in (3, 4) or (rc == 2 and not run.collect_errors)) and not crashed:  # -n 0: the crash's code
            errors.append(f"pytest stopped with exit status {rc}:\n{self.log_tail}")
        elif rc == 1 and not failed:
            errors.append(f"pytest reported a failure that is not a test's:\n{self.log_tail}")
        elif rc not in (0, 1, 2) and not crashed:
            errors.append(f"pytest died (exit status {rc}) without reporting a test:\n{self.log_tail}")
        return errors

    def document(self, results: list[report.OpResult], targets: dict[str, dict[str, Any]], unsupported: list[str],
                 stale: list[deviations_mod.Deviation], missing: list[dict[str, Any]], reasons: list[str],
                 verdict: str, code: int) -> dict[str, Any]:
        a = self.args
        document = report.document(
            kind="gate", command=["python", "-m", "conformance", *a.argv], environment=environment(),
            started_at=self.started_at, duration_s=round(time.monotonic() - self.started, 2),
            settings={"profile": a.profile, "ops": a.ops, "require": [str(r) for r in a.require],
                      "timeout_s": self.timeout,
                      "workers": a.workers, "device": a.device,
                      "known_deviations": str(a.known_deviations) if a.known_deviations else None,
                      "suites": [str(p) for p in self.suites], "rootdir": str(self.rootdir) if self.rootdir else None,
                      "pytest_command": self.command, "pytest_exit_status": self.pytest_rc},
            targets=[{**t, "status": "unsupported" if t["id"] in unsupported else "tested",
                      "reason": self.unsupported_reason(t["id"]) if t["id"] in unsupported else None,
                      "versions": backend_versions(t["spec"])} for t in targets.values()],
            results=results, tests=self.run.tests, errors=self.errors,
            reasons=reasons + [e.splitlines()[0] for e in self.errors], verdict=verdict, code=code,
            known_deviations={
                "file": str(a.known_deviations) if a.known_deviations else None,
                "entries": len(self.deviations),
                "applied": list({(t.deviation.file, t.deviation.line): t.deviation.to_json()
                                 for t in self.run.tests if t.deviation}.values()),
                "stale": [d.to_json() for d in stale]},
            require={"ops": [str(r) for r in a.require], "missing": missing})
        for entry in document["results"]:
            target = targets.get(entry["target"])
            if entry["status"] in FAILING and target:
                entry["rerun"] = rerun_command(target, entry["op"], a.profile)
        return document

    def unsupported_reason(self, target: str) -> str | None:
        return next((t.skip_reason for t in self.run.tests if t.target == target and t.skip_status == UNSUPPORTED),
                    None)

    def write_reports(self, document: dict[str, Any], tests: list[report.TestResult]) -> list[Path]:
        if self.args.report_dir is None:
            return []
        out = self.args.report_dir
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "report.json", out / "junit.xml", out / "report.md"]
        report.write_json(paths[0], document)
        report.write_junit(paths[1], tests, missing=document["require"]["missing"])
        paths[2].write_text(report.markdown(document), encoding="utf-8")
        return paths

    def print_summary(self, results: list[report.OpResult], stale: list[deviations_mod.Deviation],
                      reasons: list[str], verdict: str, code: int, paths: list[Path]) -> None:
        if results:
            print()
            print(report.table(results, {t["id"]: t.get("name") for t in self.targets}))
            for line in report.diagnosis_lines(results):
                print(line)
        for r in results:
            for t in r.failures:
                tag = f" (known deviation: {t.deviation.reason})" if t.deviation else ""
                print(f"\n{(t.verdict or t.outcome).upper()}{tag}: {r.op} on {r.target}: {t.nodeid}")
                if t.message:
                    print(f"  {t.message}")
                if t.tolerance:
                    print(f"  {t.tolerance}")
                if t.diagnosis is not None:
                    print(f"  diagnosis: {t.diagnosis.text}")
                if t.doc and not t.falsifying_example:  # a fixed case: its docstring says how it is made
                    print(f"  the test: {' '.join(t.doc.split())}")
                if t.falsifying_example:
                    lines = t.falsifying_example.splitlines()
                    cut = [f"... ({len(lines) - SHOWN_LINES} more lines in report.json / pytest.log)"] \
                        if len(lines) > SHOWN_LINES else []
                    kind = "failing example (not shrunk: a known deviation covers the test)" \
                        if t.deviation is not None and t.deviation.variant is None else "shrunk example"
                    print(f"  {kind}:\n    " + "\n    ".join(lines[:SHOWN_LINES] + cut))
                if t.inputs:
                    lines = t.inputs.splitlines()
                    cut = [f"... ({len(lines) - SHOWN_LINES} more calls in report.json)"] if len(lines) > SHOWN_LINES else []
                    print("  backend calls of the failing example:\n    " + "\n    ".join(
                        [line if len(line) <= 400 else line[:400] + " ..." for line in lines[:SHOWN_LINES]] + cut))
                if t.reproduce_blob:
                    print(f"  reproduce the test: {t.reproduce_blob}")
                if t.case_file:
                    print(f"  reproduce the calls: {reproduce_command(Path(t.case_file))}")
        for d in stale:
            print(f"\nstale known deviation: {d.file}:{d.line}: {d.backend} {d.dtype} {d.op or d.test} "
                  "no longer fails; remove the entry")
        for error in self.errors:
            print(f"\nerror: {error}", file=sys.stderr)
        print()
        for reason in reasons:
            print(f"- {reason}")
        print(f"conformance gate: {verdict.upper()} (exit {code}) in {time.monotonic() - self.started:.1f} s")
        if paths:
            print("reports: " + ", ".join(str(p) for p in paths))


def mark_interrupted(tests: list[report.TestResult]) -> None:
    """The tests an interruption stopped (never started, or started and never reported) are
    skipped as "not run (interrupted)" instead of crashed."""
    for t in tests:
        if t.skip_reason == report.NOT_RUN or (t.outcome == "crashed" and t.message.startswith(
                "the test started but never reported")):
            t.outcome, t.skip_reason, t.message, t.failure = "skipped", INTERRUPTED, "", ""


def check_targets(specs: list[str], dtypes: list[str], device: str | None) -> list[dict[str, Any]]:
    """The targets the run will cover (as conformance.kit.pytest_plugin chooses them), each loaded
    once here so that a set-up error stops the gate with exit 2 before pytest starts: an unknown
    spec, an import error, or a factory raising anything but ValueError ("unsupported")."""
    if not specs and not dtypes and device is None:
        targets = default_targets()
    else:
        targets = [Target(s, d, device or "cpu") for s in (specs or list(BUILTINS)) for d in (dtypes or DTYPES)]
    factories = {}
    for spec in dict.fromkeys(t.spec for t in targets):
        before = set(sys.modules)
        try:
            factories[spec] = resolve(spec)
        except BackendSpecError as exc:
            raise GateError(f"{exc}{_hint(spec)}") from exc
        IMPORTED[spec] = {name.split(".", 1)[0] for name in set(sys.modules) - before} | _imports_of(factories[spec])
    names = {}
    for t in targets:
        try:
            names[t.id] = str(getattr(factories[t.spec](dtype=t.dtype, device=t.device), "name", "") or "")
        except ValueError:
            pass  # unsupported: the tests say so, target by target
        except Exception as exc:  # noqa: BLE001 - any other exception is a broken backend set-up
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            raise GateError(f"backend {t.spec!r}: the factory raised for dtype={t.dtype!r}, device={t.device!r}: "
                            f"{last} (a factory signals an unsupported dtype/device with ValueError)") from exc
    return [{"id": t.id, "spec": t.spec, "dtype": t.dtype, "device": t.device, "name": names.get(t.id)}
            for t in targets]


def _imports_of(factory: Any) -> set[str]:
    """The top-level packages the factory's module holds as globals (imported before us, too)."""
    module = sys.modules.get(getattr(factory, "__module__", "") or "")
    return {v.__name__.split(".", 1)[0] for v in vars(module).values() if isinstance(v, types.ModuleType)} \
        if module is not None else set()


def _hint(spec: str) -> str:
    if spec in BUILTINS and spec == "torch":
        return "; install the torch extra (pip install 'transformer-conformance[torch]') or choose --backend"
    return ""


def suite_paths() -> list[Path]:
    """The directories of the installed suite packages."""
    paths = []
    for name in SUITES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise GateError(f"the test suite package {name!r} is not installed; reinstall transformer-conformance")
        paths.append(Path(next(iter(spec.submodule_search_locations))).resolve())
    return paths


def rerun_command(target: dict[str, Any], op: str, profile: str) -> str:
    parts = ["python", "-m", "conformance", "run", "--backend", target["spec"], "--dtype", target["dtype"]]
    if target.get("device", "cpu") != "cpu":
        parts += ["--device", target["device"]]
    return shlex.join(parts + ["--ops", op, "--hypothesis-profile", profile, "-n", "0"])


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "executable": sys.executable, "packages": {p: _version(p) for p in PACKAGES}}


IMPORTED: dict[str, set[str]] = {}
"""spec -> the top-level modules that loading its factory imported (check_targets)."""


def backend_versions(spec: str) -> dict[str, str | None]:
    """Versions of the distribution(s) that provide a spec's factory module (by its top-level
    package) and of those its loading imported (a file or ``module:attr`` backend's onnxruntime,
    transformers, ...), and, for a built-in backend, of the libraries it runs; nothing new is
    imported."""
    target = BUILTINS.get(spec, spec)
    module = target.split(":", 1)[0] if ":" in target else ""
    tops = set(IMPORTED.get(spec, ()))
    if module and not module.endswith(".py"):
        tops.add(module.split(".", 1)[0])
    distributions = metadata.packages_distributions()
    dists = sorted({d for top in tops for d in distributions.get(top, [])})
    versions = {d: _version(d) for d in dists}
    versions.update({library: _version(library) for library in BUILTIN_LIBRARIES.get(spec, ())})
    return versions


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- golden ------------------------------------------------------------------------------------

def cmd_golden_export(args: argparse.Namespace) -> int:
    from conformance import golden

    try:
        manifest = golden.export(args.dir, **({"seed": args.seed} if args.seed is not None else {}),
                                 layout=args.layout)
    except golden.GoldenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {len(manifest['cases'])} golden cases to {args.dir} (format {manifest['format_version']}, "
          f"seed {manifest['seed']})")
    return EXIT_OK


def cmd_golden_check(args: argparse.Namespace) -> int:
    from conformance import golden

    try:
        outcome = golden.check(args.dir, args.outputs, dtype=args.dtype, require=args.require)
    except golden.GoldenError as exc:
        print(f"golden check: ERROR (exit {EXIT_ERROR}): {exc}", file=sys.stderr)
        return EXIT_ERROR
    return golden.console(outcome, argv=["python", "-m", "conformance", *args.argv], environment=environment(),
                          report_dir=args.report_dir)


def cmd_repro(args: argparse.Namespace) -> int:
    from backends.registry import load_backend
    from conformance.kit import failing_cases

    try:
        meta, calls = failing_cases.load(args.case)
        target = meta.get("target") or {}
        spec, dtype = args.backend or target.get("spec"), args.dtype or target.get("dtype")
        device = args.device or target.get("device") or "cpu"
        if not spec or not dtype:
            raise ValueError("the case names no backend: give --backend and --dtype")
        backend = load_backend(spec, dtype=dtype, device=device)
    except (OSError, KeyError, ValueError, BackendSpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{meta.get('nodeid', args.case)}: {len(calls)} backend call(s) on {spec} [{dtype}, {device}]")
    print(failing_cases.describe(calls))
    conforms, lines = failing_cases.replay(calls, backend)
    print("\n".join(lines))
    if conforms and len(calls) > 1:
        print("every call conforms to the reference on its own: the test's relation between them failed "
              "(rerun the test: its command is in report.json, 'rerun')")
    elif conforms:
        print(f"the call conforms on {spec} [{dtype}, {device}]")
    return EXIT_OK if conforms else EXIT_FAIL


def cmd_golden_run(args: argparse.Namespace) -> int:
    from backends.registry import load_backend
    from conformance import golden

    try:
        backend = load_backend(args.backend, dtype=args.dtype, device=args.device)
        written = golden.run_backend(args.dir, args.outputs, backend)
    except (BackendSpecError, ValueError, golden.GoldenError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {written} outputs of {args.backend} [{args.dtype}, {args.device}] to {args.outputs}")
    return EXIT_OK
