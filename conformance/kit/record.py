"""What a test found, for the gate's report: examples run, worst error/tolerance ratio, the
last failure's message and inputs. One Record per test, held in a context variable that the pytest plugin
sets around each test and writes into the test's ``user_properties`` (which xdist ships to the
controller)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from conformance.kit import failing_cases
from conformance.tolerance.diagnosis import Diagnosis


@dataclass
class Record:
    examples: int = 0
    worst_ratio: float = 0.0
    failure: str = ""
    worst_element: str = ""  # the last failure's element as the assertion helpers name it: out[1, 2]
    notes: list[str] = field(default_factory=list)
    verdict: str = ""  # a failure's own status instead of "fail", e.g. "nondeterministic" (report.py)
    diagnosis: Diagnosis | None = None
    pending: Callable[[], Diagnosis | None] | None = field(default=None, repr=False)  # the last failure's
    failed_op: str = ""  # the op whose call failed (a BackendFault), when the test's own op called another
    not_implemented: int = 0  # examples rejected: the backend did not implement what they drew
    calls: int = 0  # backend calls that returned or raised (anything but NotImplementedError)
    features: dict[str, dict[str, list]] = field(default_factory=dict)  # op -> feature -> values run
    tolerance: str = ""  # what set the worst element's tolerance (tolerances.terms), for the last failure
    pending_tolerance: Callable[[], str] | None = field(default=None, repr=False)
    inputs: str = ""  # the failing example's backend calls, readable (conformance/kit/failing_cases.py)
    example_calls: list = field(default_factory=list, repr=False)  # the running example's calls
    failing_calls: list = field(default_factory=list, repr=False)  # the last failing example's calls
    dtype: str = ""  # the backend's dtype, which its floating inputs are held in (failing_cases.describe)

    def as_property(self) -> dict:
        """The record for the report, once the test is over: the pending diagnosis (of the
        last failing comparison: the shrunk example) is run first."""
        if self.pending is not None:
            diagnose, self.pending = self.pending, None
            self.diagnosis = diagnose()
        if self.pending_tolerance is not None:
            explain, self.pending_tolerance = self.pending_tolerance, None
            try:
                self.tolerance = explain()
            except Exception as exc:  # noqa: BLE001 - an explanation must not hide the failure
                self.tolerance = f"(could not be explained: {type(exc).__name__}: {exc})"
        if self.failing_calls:
            self.inputs = failing_cases.describe(self.failing_calls, self.dtype or None)
        unshipped = {"pending": None, "pending_tolerance": None, "example_calls": [], "failing_calls": []}
        data = asdict(replace(self, **unshipped))  # asdict deep-copies: not the calls' arrays
        for name in unshipped:
            del data[name]
        return data


_current: contextvars.ContextVar[Record | None] = contextvars.ContextVar("conformance_record", default=None)


def start() -> Record:
    rec = Record()
    _current.set(rec)
    return rec


def stop() -> None:
    _current.set(None)


@contextlib.contextmanager
def capture() -> Iterator[Record]:
    """A fresh Record for the block, the enclosing one restored after it: what the assertion
    helpers noted inside (e.g. the worst ratio of a failing ``assert_close``)."""
    rec = Record()
    token = _current.set(rec)
    try:
        yield rec
    finally:
        _current.reset(token)


def note_example() -> None:
    """One more Hypothesis example (or fixed case) ran: its backend calls start afresh."""
    if (rec := _current.get()) is not None:
        rec.examples += 1
        rec.example_calls = []


def note_input(op: str, args: Any, kwargs: Any, *, dtype: str = "") -> None:
    """The running example calls ``op`` with these (NumPy) inputs (the harness, before the call)
    on a backend of ``dtype``."""
    if (rec := _current.get()) is not None:
        rec.example_calls.append((op, list(args), dict(kwargs)))
        rec.dtype = dtype


def note_ratio(ratio: float) -> None:
    if (rec := _current.get()) is not None:
        rec.worst_ratio = max(rec.worst_ratio, ratio)


def note_failure(message: str, ratio: float, *, element: str = "") -> None:
    """Keep the message, the failing element (``out[1, 2]``) and the calls of the last failure
    (Hypothesis replays the shrunk example last)."""
    if (rec := _current.get()) is not None:
        rec.failure, rec.worst_element, rec.pending_tolerance = message, element, None
        rec.failing_calls = list(rec.example_calls)
        rec.worst_ratio = max(rec.worst_ratio, ratio)


def note_diagnosis(diagnose: Callable[[], Diagnosis | None]) -> None:
    """A comparison failed: ``diagnose()`` will name the convention it follows. Only the last
    failure's runs, when the test is over (``Record.as_property``)."""
    if (rec := _current.get()) is not None:
        rec.pending = diagnose


def note_tolerance(explain: Callable[[], str]) -> None:
    """A comparison failed: ``explain()`` says what set its worst element's tolerance (run for
    the last failure only, when the test is over)."""
    if (rec := _current.get()) is not None:
        rec.pending_tolerance = explain


def note_verdict(verdict: str, message: str) -> None:
    """The test fails in a way with its own status (e.g. "nondeterministic"), and why."""
    if (rec := _current.get()) is not None:
        rec.verdict, rec.failure = verdict, message
        rec.failing_calls = list(rec.example_calls)


def note_not_implemented() -> Record | None:
    """The running example was rejected as not implemented (it is not counted as run)."""
    if (rec := _current.get()) is not None:
        rec.not_implemented += 1
    return rec


def note_call(op: str, features: dict) -> None:
    """A call of ``op`` with these features (conformance/kit/features.py) ran."""
    if (rec := _current.get()) is not None:
        rec.calls += 1
        seen = rec.features.setdefault(op, {})
        for name, value in features.items():
            if value not in seen.setdefault(name, []):
                seen[name].append(value)


def note(text: str) -> None:
    """A remark for the report (e.g. "greedy decoding diverged at a near-tie at step 3")."""
    if (rec := _current.get()) is not None and text not in rec.notes:
        rec.notes.append(text)


def note_failed_op(op: str) -> None:
    """The failure came from a call of ``op`` (the report books it there, naming the test)."""
    if (rec := _current.get()) is not None:
        rec.failed_op = op

