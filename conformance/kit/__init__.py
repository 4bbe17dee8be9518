"""The test kit both suites (properties/, conformance/differential/) import.

    harness.py        call_op: one backend call, converted, checked (shape, dtype, NaN, input
                      mutation) and recorded; "not implemented" and "unsupported"
    assertions.py     assert_close / assert_equal / assert_true with messages that name the op,
                      the backend, the worst element and its tolerance
    record.py         the per-test record the gate reads (examples, worst ratio, failure, notes)
    strategies.py     Hypothesis strategies: configs, params, arrays, token ids, masks
    features.py       op features (config variants, mask kinds) and what a backend supports
    watchdog.py       the per-call time limit calibrated on the reference
    failing_cases.py  a failing example's backend calls, readable and saved (.npz) to replay
    verdicts.py       the statuses of a test or op result, and the commands' exit statuses
    pytest_plugin.py  backend and dtype selection, Hypothesis profiles, the report header

May import reference, backends and conformance.tolerance; never conformance.gate.
"""
