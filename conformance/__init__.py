"""The conformance suite around the reference: what both test suites import, the tolerance
model, the gate application and golden vectors, one package each, by audience.

    conformance/kit/          the test kit the property and differential suites import: calling
                              a backend (harness), assertion helpers, per-test records,
                              strategies, op features, the watchdog, saved failing cases,
                              statuses and exit codes, and the pytest plugin
    conformance/tolerance/    the differential tolerance model (a backend against the float64
                              reference; TOLERANCES.md), its error bounds, and the diagnosis
                              of a failure by the reference's variants (VARIANTS.md)
    conformance/gate/         the gate application: the command line, the run, the gate's pytest
                              plugin, known deviations, the per-op tally, reports (REPORT.md)
    conformance/golden/       golden vectors for implementations that are not Python (GOLDEN.md)
    conformance/differential/ the differential tests themselves (pytest modules)
    conformance/known_deviations/  the shipped known-deviations files of the library adapters

Imports go one way: tolerance needs only reference and the op records (backends/ops.py); kit may import tolerance and backends;
gate and golden may import kit and tolerance (golden's check also the gate's tally and report,
whose files it writes); the test suites never import gate. The properties' own a-priori bounds (a backend against itself) are
properties/tolerances.py, a separate idea from the tolerance model here.
"""
