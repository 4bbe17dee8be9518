"""The gate's pytest plugin: select tests by op, and write one JSON line per test report.

Loaded by ``python -m conformance run`` with ``-p conformance.gate.plugin`` (next to
``conformance.kit.pytest_plugin``). Options:

  --conformance-ops OP,...        run only the tests whose ``@pytest.mark.op`` is one of these
                                  (tests without an op marker are deselected too)
  --conformance-results FILE      append the records below to FILE (JSON lines)

Records (one JSON object per line, ``"event"`` says which):

- ``session``: written once by the controller at the start: the targets, the Hypothesis
  profile, the options.
- ``start``: a test began (``nodeid``). A ``start`` without a later ``report`` of the same
  test means the process running it died: the gate reports it as crashed.
- ``report``: one per test phase that matters: every ``call``, a ``setup`` that did not pass
  (skips: "not implemented", "unsupported"; errors), a ``teardown`` that failed, and the
  report xdist makes for a test whose worker crashed (``when = "???"``). Fields: nodeid, test
  (nodeid without the parameter part), target (id, spec, dtype, device), op, kind, when,
  outcome, skip_reason, skip_kind ("not implemented" or "unsupported" for the suite's own skips,
  conformance.kit.harness.Skip; null for any other), duration, conformance (the record of
  conformance.kit.record), failure (the failure text), falsifying_example, reproduce_blob, doc (a
  failing test's docstring, first paragraph), case_file (the failing example's backend calls
  saved by the worker as ``cases/<test>.npz`` beside FILE: conformance/kit/failing_cases.py).
- ``collect_error``: a test module that could not be collected.

The item details (target, op, kind) are written by the worker that collected the tests into
``FILE.items`` (one line per selected test), so that a report without them (a crashed worker's)
can still be attributed. Each process that runs tests also keeps ``FILE.faults.<worker>``: a
``== start NODEID`` line before each test, and the Python stacks faulthandler writes when that
process dies of a fatal signal or runs past ``--conformance-timeout`` (see ``_Guard``).

Under xdist, a crashed (or timed-out) test's node id is also appended to ``FILE.crashed`` by
the controller, before xdist starts the replacement worker; a worker skips the later tests of
an op on a target that already crashed there (``pytest_runtest_setup``): the op's status is
"crashed" (or "timeout") either way, and a backend that crashes or hangs in every test then
costs one worker restart (or one timeout) per op instead of one per test.

Under pytest-xdist the records are written in the controller (``pytest_runtest_logreport`` runs
there for every worker's reports), so there is one writer per file; each line is flushed at
once, so a controller that dies still leaves every line written so far.
"""

from __future__ import annotations

import faulthandler
import inspect
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, settings

from conformance.kit import failing_cases, watchdog
from conformance.kit.verdicts import SKIP_KEY

GATE_KEY = "conformance_gate"
FAULT_START = "== start "
_EXAMPLE = r"(?:Falsifying example|Failing test case|Falsifying explicit example): "  # Hypothesis' wordings
EXAMPLE_RE = re.compile(rf"^{_EXAMPLE}")
EXAMPLE_LINE_RE = re.compile(rf"^(E\s+){_EXAMPLE}")  # the same in a printed traceback
BLOB_RE = re.compile(r"@reproduce_failure\((.*?)\)")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance-gate", "conformance gate (python -m conformance run)")
    group.addoption("--conformance-ops", default="", metavar="OP,...",
                    help="run only the tests of these ops (by their @pytest.mark.op marker)")
    group.addoption("--conformance-results", default=None, metavar="FILE",
                    help="append one JSON line per test report to FILE")
    group.addoption("--conformance-timeout", type=float, default=0.0, metavar="SECONDS",
                    help="per-test timeout (0: none): past it, the process running the test dumps its "
                         "stacks to FILE.faults.<worker> and exits; the gate reports a timeout")
    group.addoption("--conformance-known-deviations", default=None, metavar="FILE",
                    help="the gate's known-deviations file: a Hypothesis test an entry without a variant covers "
                         "stops at its first failure instead of shrinking it (the failure is accepted as it is)")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _op_filter(config: pytest.Config) -> set[str]:
    return {op.strip() for op in config.getoption("conformance_ops").split(",") if op.strip()}


def kind_of(item: pytest.Item) -> str:
    """``property`` or ``differential``: the ``kind`` marker, else the package the test is in."""
    marker = item.get_closest_marker("kind")
    if marker is not None and marker.args:
        return str(marker.args[0])
    module = getattr(getattr(item, "module", None), "__name__", "") or ""
    parts = set(module.split("."))
    if "properties" in parts:
        return "property"
    if "differential" in parts:
        return "differential"
    return "other"


def _target_of(item: pytest.Item) -> dict[str, str] | None:
    target = getattr(getattr(item, "callspec", None), "params", {}).get("backend")
    if target is None or not hasattr(target, "id"):
        return None
    return {"id": target.id, "spec": target.spec, "dtype": target.dtype, "device": target.device}


def _op_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("op")
    return str(marker.args[0]) if marker is not None and marker.args else None


def item_info(item: pytest.Item) -> dict[str, Any]:
    return {"nodeid": item.nodeid, "test": item.nodeid.split("[", 1)[0], "op": _op_of(item),
            "kind": kind_of(item), "target": _target_of(item)}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests of other ops, then tag every test with its op, kind and target."""
    ops = _op_filter(config)
    if ops:
        keep = [item for item in items if _op_of(item) in ops]
        dropped = [item for item in items if _op_of(item) not in ops]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
    for item in items:
        item.user_properties.append((GATE_KEY, item_info(item)))
    _write_items(config, items)


def _write_items(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The first process to collect writes FILE.items (every worker collects the same tests)."""
    path = config.getoption("conformance_results")
    if not path:
        return
    try:
        with open(f"{path}.items", "x", encoding="utf-8") as f:
            f.writelines(json.dumps(item_info(item)) + "\n" for item in items)
    except FileExistsError:
        pass


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Attach Hypothesis' notes (the falsifying example, the reproduce blob) to the report,
    taken from the exception itself rather than from the printed traceback."""
    report = yield
    if call.excinfo is not None and report.failed:
        notes = _notes(call.excinfo.value)
        if notes:
            report.user_properties.append((f"{GATE_KEY}_notes", notes))
        case = _save_case(item)
        if case is not None:
            report.user_properties.append((f"{GATE_KEY}_case", str(case)))
        doc = inspect.getdoc(getattr(item, "function", None))
        if doc:  # what the test checks, and for a fixed case how its inputs are made
            report.user_properties.append((f"{GATE_KEY}_doc", doc.split("\n\n")[0]))
    return report


def _save_case(item: pytest.Item) -> Path | None:
    """The failing example's backend calls as ``cases/<test>.npz`` beside the results file."""
    from conformance.kit.pytest_plugin import RECORD  # loaded first (the gate passes -p for both)

    rec, path = item.stash.get(RECORD, None), item.config.getoption("conformance_results")
    if rec is None or not rec.failing_calls or not path:
        return None
    name = re.sub(r"[^\w.-]+", "_", item.nodeid.replace("::", "-")).strip("_")[-150:]
    return failing_cases.save(Path(path).parent / "cases" / f"{name}.npz", rec.failing_calls,
                              target=_target_of(item) or {}, nodeid=item.nodeid)


def _notes(exc: BaseException) -> list[str]:
    notes = [str(n) for n in getattr(exc, "__notes__", []) or []]
    for inner in getattr(exc, "exceptions", []) or []:  # ExceptionGroup: several distinct failures
        notes.extend(_notes(inner))
    return notes


class _Guard:
    """Per test-running process: faulthandler writes a crash's (or a timeout's) Python stacks to
    ``FILE.faults.<worker>`` after a ``== start NODEID`` line, and ends the process when a test
    runs past the timeout. faulthandler works from a C thread, so this also stops a test stuck
    in native code that holds the GIL, and Hypothesis cannot catch it and replay the example
    (as it does with pytest-timeout's exception)."""

    def __init__(self, path: str, worker: str, timeout: float) -> None:
        self.file = open(f"{path}.faults.{worker}", "a", encoding="utf-8")  # noqa: SIM115 - lives with the process
        self.timeout = timeout
        self.deadline = 0.0
        faulthandler.enable(file=self.file, all_threads=True)
        watchdog.configure(f"{path}.hung", self.backstop)

    def arm(self, nodeid: str) -> None:
        self.file.write(f"{FAULT_START}{nodeid}\n")
        self.file.flush()
        if self.timeout > 0:
            self.deadline = time.monotonic() + self.timeout
            faulthandler.dump_traceback_later(self.timeout, exit=True, file=self.file)

    def backstop(self, seconds: float | None) -> None:
        """The watchdog's backstop for one backend call (a native hang its signal cannot stop):
        end the process ``seconds`` from now, or (``None``) at the test's own deadline."""
        left = self.deadline - time.monotonic() if self.timeout > 0 else None
        if seconds is not None and (left is None or seconds < left):
            faulthandler.dump_traceback_later(seconds, exit=True, file=self.file)
        elif left is not None:
            faulthandler.dump_traceback_later(max(left, 1e-3), exit=True, file=self.file)
        else:
            faulthandler.cancel_dump_traceback_later()

    def disarm(self) -> None:
        if self.timeout > 0:
            faulthandler.cancel_dump_traceback_later()


_guard: _Guard | None = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[Any]:
    """Runs in the process that runs the test (an xdist worker, or the only process)."""
    global _guard
    path = item.config.getoption("conformance_results")
    if not path:
        return (yield)
    if _guard is None:
        worker = item.config.workerinput["workerid"] if _is_worker(item.config) else "main"
        _guard = _Guard(path, worker, item.config.getoption("conformance_timeout"))
    _guard.arm(item.nodeid)
    try:
        return (yield)
    finally:
        _guard.disarm()


_covering: list[Any] | None = None


def _covered(item: pytest.Item) -> bool:
    """Whether an entry of --conformance-known-deviations that cites no variant covers a
    failure of this test (one citing a variant accepts it only while the diagnosis names
    that variant, and the diagnosis reads the shrunk example: those tests still shrink)."""
    global _covering
    path = item.config.getoption("conformance_known_deviations")
    if not path:
        return False
    if _covering is None:
        from conformance.gate import deviations  # the gate loaded the same file: its errors are reported there

        _covering = deviations.load(path)
    target = _target_of(item)
    return target is not None and any(d.variant is None and d.covers(target, _op_of(item), item.nodeid.split("[", 1)[0])
                                      for d in _covering)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A Hypothesis test that a known deviation covers runs without the shrink and explain
    phases: its failure is accepted, and shrinking it is most of the time a failing test takes
    (a compiled backend such as JAX compiles every shrunk shape anew)."""
    test = getattr(item, "obj", None)
    current = getattr(test, "_hypothesis_internal_use_settings", None)
    if current is None or not _covered(item):
        return (yield)
    test._hypothesis_internal_use_settings = settings(
        current, phases=[p for p in current.phases if p not in (Phase.shrink, Phase.explain)])
    try:
        return (yield)
    finally:  # the function object is shared by the test's items on other targets
        test._hypothesis_internal_use_settings = current


class _Writer:
    """Appends JSON lines to the results file, flushing each one."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed at unconfigure

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record, default=str) + "\n")
        self.file.flush()  # in the kernel's hands: survives this process dying

    def close(self) -> None:
        self.file.close()


_writer: _Writer | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _writer
    path = config.getoption("conformance_results")
    if path and not _is_worker(config):
        _writer = _Writer(path)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _writer
    if _writer is not None:
        _writer.close()
        _writer = None


def pytest_sessionstart(session: pytest.Session) -> None:
    if _writer is None:
        return
    from conformance.kit.pytest_plugin import selected_targets  # the same targets the tests run on

    config = session.config
    try:
        targets = [{"id": t.id, "spec": t.spec, "dtype": t.dtype, "device": t.device}
                   for t in selected_targets(config)]
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the tests will say more
        targets, error = [], f"{type(exc).__name__}: {exc}"
    else:
        error = None
    _writer.write({"event": "session", "targets": targets, "targets_error": error,
                   "hypothesis_profile": config.getoption("hypothesis_profile", None),
                   "ops": sorted(_op_filter(config)),
                   "timeout": config.getoption("conformance_timeout"),
                   "workers": config.getoption("numprocesses", None)})


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if _writer is not None:
        _writer.write({"event": "start", "nodeid": nodeid})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _writer is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed) or report.failed:
        _writer.write(report_record(report))
    if report.when == "???":  # xdist: the worker running this test died (a crash, or our timeout)
        with open(f"{_writer.file.name}.crashed", "a", encoding="utf-8") as f:
            f.write(report.nodeid + "\n")


_item_keys: dict[str, tuple[str | None, str | None]] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under xdist: skip a test whose op already crashed or timed out on its target (FILE.crashed)."""
    path = item.config.getoption("conformance_results")
    if not path or not _is_worker(item.config):
        return
    try:
        with open(f"{path}.crashed", encoding="utf-8") as f:
            crashed = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return
    if not _item_keys:
        _item_keys.update({i.nodeid: (_op_of(i), (_target_of(i) or {}).get("id")) for i in item.session.items})
    op, target = _item_keys.get(item.nodeid, (None, None))
    earlier = next((n for n in crashed if op is not None and _item_keys.get(n) == (op, target)), None)
    if earlier is not None:
        pytest.skip(f"not run: {op} already crashed or timed out on {target} (in {earlier}); "
                    "its other tests there are skipped")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if _writer is not None and report.failed:
        _writer.write({"event": "collect_error", "nodeid": report.nodeid, "failure": report.longreprtext})


def report_record(report: pytest.TestReport) -> dict[str, Any]:
    """The JSON record of one test report (see the module docstring)."""
    props = {name: value for name, value in report.user_properties}
    info = props.get(GATE_KEY) or {"nodeid": report.nodeid, "test": report.nodeid.split("[", 1)[0],
                                   "op": props.get("op"), "kind": None, "target": None}
    skip_reason = None
    if report.skipped:
        longrepr = report.longrepr
        skip_reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
        skip_reason = skip_reason.removeprefix("Skipped: ")
    failure = report.longreprtext if report.failed else ""
    notes = props.get(f"{GATE_KEY}_notes") or _notes_from_text(failure)
    example = next((n for n in notes if EXAMPLE_RE.match(n)), None)
    blob = next((m.group(0) for n in notes if (m := BLOB_RE.search(n))), None)
    return {
        "event": "report",
        **info,
        "when": report.when,
        "outcome": report.outcome,
        "skip_reason": skip_reason,
        "skip_kind": props.get(SKIP_KEY) if report.skipped else None,
        "duration": round(float(report.duration or 0.0), 6),
        "conformance": props.get("conformance"),
        "failure": failure,
        "falsifying_example": example,
        "reproduce_blob": blob,
        "case_file": props.get(f"{GATE_KEY}_case"),
        "doc": props.get(f"{GATE_KEY}_doc"),
    }


def _notes_from_text(text: str) -> list[str]:
    """Hypothesis' notes recovered from a printed traceback (``E   Failing test case: ...``)."""
    notes: list[list[str]] = []
    current, prefix = None, "E"
    for line in (text or "").splitlines():
        example = EXAMPLE_LINE_RE.match(line)
        if example:
            prefix = example.group(1)
            current = [line[len(prefix):]]
            notes.append(current)
        elif "@reproduce_failure(" in line:
            notes.append([line[1:].strip()])
            current = None
        elif current is not None and line.startswith("E"):
            body = line[len(prefix):] if line.startswith(prefix) else line[1:].strip()
            current.append(body)
            if body == ")":
                current = None
        else:
            current = None
    return ["\n".join(n) for n in notes]
