"""The per-call watchdog: a backend call that runs far longer than the reference takes for the
same call is interrupted, and its op is marked hung for the rest of the run.

``conformance.kit.harness.call_op`` runs every backend call inside :func:`watch`. The limit of one
call is ``max(FLOOR_S, FACTOR x the reference's time for the same call)``; the reference is
timed only when a call reaches ``FLOOR_S`` (never, for a backend that works), so a working
backend pays one ``setitimer`` per call. Past the limit, SIGALRM interrupts the call where it
waits (a ``time.sleep``, a lock, a loop in Python) with :class:`Hung`, a ``BaseException`` so
that a backend's own ``except Exception`` cannot swallow it, and the harness turns it into the
test's failure with verdict "timeout". The op is then hung for this run: every later call of
it, in this process and (through ``FILE.hung``, a JSON line per :class:`HungOp`) in every other
worker of the gate, fails at once with "timeout (hung earlier in this run ...)". A composite
op (``encode``) that hangs inside another of the backend's ops (``embedding``) says so.

A call stuck in native code that holds the GIL never lets the signal handler run; for that the
gate's plugin (conformance/gate/plugin.py) installs a *backstop*: faulthandler ends the process
``BACKSTOP_GRACE_S`` after the limit, and the gate reports a timeout with the Python stacks.

Only the main thread of a process on a platform with SIGALRM is watched (elsewhere the
per-test timeout alone applies); a SIGALRM timer already running (pytest-timeout's) is kept:
if its deadline comes first, its own handler runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import reference
from backends.contract import OPS
from conformance.kit import record
from conformance.kit.verdicts import TIMEOUT

FLOOR_S = float(os.environ.get("CONFORMANCE_CALL_TIMEOUT", "60"))
"""The watchdog's floor in seconds (environment CONFORMANCE_CALL_TIMEOUT, default 60): above a
compiled backend's first call (JAX/XLA compiles every new shape, 10-20 s for greedy decoding
on a loaded 2-core machine)."""
FACTOR = 100.0
BACKSTOP_GRACE_S = 10.0


class Hung(BaseException):  # noqa: N818 - not an error of ours: the backend's call was stopped
    """A backend call ran past its limit, or its op hung earlier in this run."""


@dataclass(frozen=True)
class HungOp:
    """One op found hanging: the record the workers share through ``FILE.hung``."""

    target: str  # who: "name[dtype, device]"
    op: str
    inside: str  # the backend op the call was stuck in (== op, or an op it calls)
    test: str  # the test that found it
    message: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> HungOp:
        return cls(**json.loads(line))


@dataclass
class _Call:
    backend: Any
    op: str
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    started: float
    reference_s: float | None = None
    previous: tuple[Any, float] | None = None  # a SIGALRM handler and its absolute deadline

    def limit(self) -> float:
        if self.reference_s is None:
            self.reference_s = reference_seconds(self.op, self.args, self.kwargs)
        return max(FLOOR_S, FACTOR * self.reference_s)


_hung: dict[tuple[str, str], HungOp] = {}
_shared: str | None = None  # FILE.hung
_shared_size = 0
_backstop: Callable[[float | None], None] | None = None
_active: _Call | None = None


def configure(shared: str | None, backstop: Callable[[float | None], None] | None = None) -> None:
    """Share hung ops through ``shared`` (a path); ``backstop(seconds)`` arms a process-ending
    timer for a call (``None``: back to the per-test timer)."""
    global _shared, _backstop
    _shared, _backstop = shared, backstop


def who(backend: Any) -> str:
    return f"{getattr(backend, 'name', '?')}[{getattr(backend, 'dtype', '?')}, {getattr(backend, 'device', '?')}]"


def reference_seconds(op: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> float:
    """Wall time of the float64 reference for the same call (0 when it cannot run it)."""
    fn = getattr(reference, op, None)
    started = time.perf_counter()
    try:
        fn(*args, **dict(kwargs))
    except Exception:  # noqa: BLE001 - inputs the reference refuses: the floor applies
        return 0.0
    return time.perf_counter() - started


def hung_earlier(backend: Any, op: str) -> HungOp | None:
    _read_shared()
    return _hung.get((who(backend), op))


def _read_shared() -> None:
    global _shared_size
    if _shared is None:
        return
    try:
        size = os.stat(_shared).st_size
    except FileNotFoundError:
        return
    if size == _shared_size:
        return
    with open(_shared, encoding="utf-8") as f:
        f.seek(_shared_size)
        text = f.read()
    _shared_size = size
    for line in text.splitlines():
        if line.strip():
            found = HungOp.from_json(line)
            _hung.setdefault((found.target, found.op), found)


def _mark(found: HungOp) -> None:
    _hung.setdefault((found.target, found.op), found)
    if _shared is not None:
        with open(_shared, "a", encoding="utf-8") as f:
            f.write(found.to_json() + "\n")


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]


def _inside(frame: Any, backend: Any, op: str) -> str:
    """The innermost of the backend's contract ops on the interrupted stack (else ``op``)."""
    while frame is not None:
        if frame.f_code.co_name in OPS and frame.f_locals.get("self") is backend:
            return frame.f_code.co_name
        frame = frame.f_back
    return op


def _fail(message: str) -> Hung:
    record.note_verdict(TIMEOUT, message)
    return Hung(message)


def _on_alarm(signum: int, frame: Any) -> None:
    call = _active
    if call is None:
        return
    now = time.monotonic()
    if call.previous is not None and now >= call.previous[1] and callable(call.previous[0]):
        call.previous[0](signum, frame)  # pytest-timeout's deadline came first
        return
    elapsed = now - call.started
    limit = call.limit()
    if elapsed < limit:  # a slow call the reference is slow on too: let it run
        _arm(call, limit - elapsed)
        return
    inside = _inside(frame, call.backend, call.op)
    where = f"{who(call.backend)}.{call.op}"
    message = (f"{where}: timeout: no result after {elapsed:.1f} s (the per-call watchdog: max({FLOOR_S:g} s, "
               f"{FACTOR:g}x the reference's {call.reference_s * 1e3:.1f} ms for the same call)); interrupted")
    if inside != call.op:
        earlier = _hung.get((who(call.backend), inside))
        message += (f"; it hung inside the backend's own {inside}"
                    + (" (which hung earlier in this run)" if earlier else ""))
    test = _current_test()
    for op in dict.fromkeys((call.op, inside)):
        _mark(HungOp(who(call.backend), op, inside, test, message))
    raise _fail(message)


def _arm(call: _Call, seconds: float) -> None:
    if call.previous is not None:
        seconds = min(seconds, max(call.previous[1] - time.monotonic(), 1e-3))
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    if _backstop is not None:
        _backstop(seconds + BACKSTOP_GRACE_S)


def _watchable() -> bool:
    return hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread() and _active is None


@contextlib.contextmanager
def watch(backend: Any, op: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Iterator[None]:
    """Run one backend call (``backend.<op>(*args, **kwargs)``, NumPy inputs) under the watchdog;
    raises :class:`Hung` when it runs past its limit or ``op`` hung earlier in this run."""
    global _active
    earlier = hung_earlier(backend, op)
    if earlier is not None:  # the test that found it keeps its own message (Hypothesis replays the example)
        raise _fail(earlier.message if earlier.test == _current_test() else
                    f"{who(backend)}.{op}: timeout (hung earlier in this run, in {earlier.test}): {earlier.message}")
    if not _watchable():
        yield
        return
    call = _Call(backend, op, args, kwargs, time.monotonic())
    handler = signal.signal(signal.SIGALRM, _on_alarm)
    remaining, _ = signal.setitimer(signal.ITIMER_REAL, 0)
    if remaining > 0:
        call.previous = (handler, call.started + remaining)
    _active = call
    try:
        _arm(call, FLOOR_S)
        yield
    finally:
        _active = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, handler)
        if call.previous is not None:
            signal.setitimer(signal.ITIMER_REAL, max(call.previous[1] - time.monotonic(), 1e-3))
        if _backstop is not None:
            _backstop(None)
