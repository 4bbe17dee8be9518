"""The statuses a test or an op result can have, and the exit statuses of the commands: one
module for the harness, the gate (conformance/gate/) and the golden check (conformance/golden/).

Statuses, most severe first (conformance/gate/REPORT.md, "Statuses"); FAILING make a gate or a
golden check fail.
"""

from __future__ import annotations

CRASHED = "crashed"
TIMEOUT = "timeout"
NONDETERMINISTIC = "nondeterministic"  # a failed test whose record says so (conformance/differential/test_determinism.py)
FAIL = "fail"
KNOWN = "known deviation"
PASS = "pass"
NOT_IMPLEMENTED = "not implemented"
UNSUPPORTED = "unsupported"
SKIPPED = "skipped"
NO_TESTS = "no tests"
STATUSES = (CRASHED, TIMEOUT, NONDETERMINISTIC, FAIL, KNOWN, PASS, NOT_IMPLEMENTED, UNSUPPORTED, SKIPPED, NO_TESTS)
FAILING = frozenset({CRASHED, TIMEOUT, NONDETERMINISTIC, FAIL})
SKIP_KEY = "conformance_skip"
"""The report property that says why a test skipped: NOT_IMPLEMENTED or UNSUPPORTED
(conformance.kit.harness.Skip); absent for any other skip."""

EXIT_OK, EXIT_FAIL, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3
"""Exit statuses of ``python -m conformance run`` (and 0-2 of ``golden check``): pass, fail,
usage or set-up error, interrupted (SIGTERM or SIGINT; the reports of what finished are written)."""


def verdict(*, interrupted: bool = False, error: bool = False, failed: bool = False) -> tuple[str, int]:
    """(verdict word, exit status) of a command run: interrupted, else error, else fail, else pass."""
    if interrupted:
        return "interrupted", EXIT_INTERRUPTED
    if error:
        return "error", EXIT_ERROR
    if failed:
        return "fail", EXIT_FAIL
    return "pass", EXIT_OK
