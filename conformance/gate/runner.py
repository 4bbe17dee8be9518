"""One run of the gate (``python -m conformance run``): set-up checks of the targets, the pytest
run of the property and differential suites under pytest-xdist, SIGTERM/SIGINT handling, and
the reports, which are always written (conformance/gate/REPORT.md). The command line is
conformance/gate/cli.py; the exit statuses conformance/kit/verdicts.py.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from backends.contract import OPS
from conformance.gate import deviations as deviations_mod
from conformance.gate import report
from conformance.gate import tally
from conformance.gate.targets import GateError, backend_versions, check_targets, environment
from conformance.kit.failing_cases import reproduce_command
from conformance.kit.verdicts import EXIT_OK, FAILING, UNSUPPORTED, verdict

SUITES = ("properties", "conformance.differential")
PROFILES = ("dev", "ci", "thorough")
DEFAULT_TIMEOUT = {"dev": 120.0, "ci": 300.0, "thorough": 1800.0}
"""Per-test timeout in seconds by profile (``--timeout`` overrides; 0 disables)."""
INTERRUPTED = "not run (interrupted)"
SHOWN_LINES = 12  # of a shrunk example, in the terminal


class Interrupted(BaseException):  # noqa: N818 - a signal, not an error
    """SIGTERM (or SIGINT, as KeyboardInterrupt) reached the gate: it reports what finished."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)



# --- run ---------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    """``python -m conformance run``: returns the exit status (conformance/kit/verdicts.py)."""
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
        self.run: tally.Run = tally.Run()
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
            self.run = tally.read_results(results)

    # the reports ---------------------------------------------------------------------------

    def finish(self) -> int:
        """Aggregate, print, write the reports; the exit status."""
        run, a = self.run, self.args
        if self.interrupted:
            mark_interrupted(run.tests)
        else:
            self.errors += self.run_errors()
        checked = {t["id"]: t for t in self.targets}  # the backend's own name and kind (check_targets)
        targets = {t["id"]: {**t, "name": checked.get(t["id"], {}).get("name"),
                             "compiles_per_shape": checked.get(t["id"], {}).get("compiles_per_shape", False)}
                   for t in run.targets or self.targets}
        deviations_mod.apply(self.deviations, run.tests, targets)
        stale = deviations_mod.stale(self.deviations, run.tests, targets)
        results = tally.aggregate(run, ops=self.ops) if run.tests else []
        unsupported = tally.unsupported_targets(results)
        tested = [t for t in targets if t not in unsupported]
        reasons = []
        failing = [r for r in results if r.status in FAILING]
        if failing:
            reasons.append(f"{len(failing)} op result(s) failed: "
                           + ", ".join(f"{r.op} on {r.target} ({r.status})" for r in failing[:10])
                           + (" ..." if len(failing) > 10 else ""))
        missing = tally.missing_requirements(results, a.require, tested)
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

    def document(self, results: list[tally.OpResult], targets: dict[str, dict[str, Any]], unsupported: list[str],
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

    def write_reports(self, document: dict[str, Any], tests: list[tally.TestResult]) -> list[Path]:
        if self.args.report_dir is None:
            return []
        out = self.args.report_dir
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "report.json", out / "junit.xml", out / "report.md"]
        report.write_json(paths[0], document)
        report.write_junit(paths[1], tests, missing=document["require"]["missing"])
        paths[2].write_text(report.markdown(document), encoding="utf-8")
        return paths

    def print_summary(self, results: list[tally.OpResult], stale: list[deviations_mod.Deviation],
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


def mark_interrupted(tests: list[tally.TestResult]) -> None:
    """The tests an interruption stopped (never started, or started and never reported) are
    skipped as "not run (interrupted)" instead of crashed."""
    for t in tests:
        if t.skip_reason == tally.NOT_RUN or (t.outcome == "crashed" and t.message.startswith(
                "the test started but never reported")):
            t.outcome, t.skip_reason, t.message, t.failure = "skipped", INTERRUPTED, "", ""


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


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


