"""Fault injection for the gate's reliability tests (issue 8): backends that break one op in
one way (tests/faults/backends.py), run through ``python -m conformance run`` by
tests/test_reliability_gate.py."""
