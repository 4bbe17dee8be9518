"""What a test found, for the gate's report: examples run, worst error/tolerance ratio, and the
first failure message. One Record per test, held in a context variable that the pytest plugin
sets around each test and writes into the test's ``user_properties`` (which xdist ships to the
controller)."""

from __future__ import annotations

import contextvars
from dataclasses import asdict, dataclass, field


@dataclass
class Record:
    examples: int = 0
    worst_ratio: float = 0.0
    failure: str = ""
    notes: list[str] = field(default_factory=list)
    verdict: str = ""  # a failure's own status instead of "fail", e.g. "nondeterministic" (report.py)
    not_implemented: int = 0  # examples rejected: the backend did not implement what they drew
    calls: int = 0  # backend calls that returned or raised (anything but NotImplementedError)
    features: dict[str, dict[str, list]] = field(default_factory=dict)  # op -> feature -> values run

    def as_property(self) -> dict:
        return asdict(self)


_current: contextvars.ContextVar[Record | None] = contextvars.ContextVar("conformance_record", default=None)


def start() -> Record:
    rec = Record()
    _current.set(rec)
    return rec


def stop() -> None:
    _current.set(None)


def note_example() -> None:
    """One more Hypothesis example (or fixed case) ran."""
    if (rec := _current.get()) is not None:
        rec.examples += 1


def note_ratio(ratio: float) -> None:
    if (rec := _current.get()) is not None:
        rec.worst_ratio = max(rec.worst_ratio, ratio)


def note_failure(message: str, ratio: float) -> None:
    """Keep the message of the last failure (Hypothesis replays the shrunk example last)."""
    if (rec := _current.get()) is not None:
        rec.failure = message
        rec.worst_ratio = max(rec.worst_ratio, ratio)


def note_verdict(verdict: str, message: str) -> None:
    """The test fails in a way with its own status (e.g. "nondeterministic"), and why."""
    if (rec := _current.get()) is not None:
        rec.verdict, rec.failure = verdict, message


def note_not_implemented() -> Record | None:
    """The running example was rejected as not implemented (it is not counted as run)."""
    if (rec := _current.get()) is not None:
        rec.not_implemented += 1
    return rec


def note_call(op: str, features: dict) -> None:
    """A call of ``op`` with these features (conformance/features.py) ran."""
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
