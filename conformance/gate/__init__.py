"""The gate application: ``python -m conformance run`` and its reports (REPORT.md).

    cli.py            the command line (run, repro, golden export/check/run)
    plugin.py         the gate's pytest plugin: per-test JSON lines, fault backstop, saved cases
    report.py         results.jsonl read into per-op results; report.json, junit.xml, report.md
    deviations.py     known-deviations files: loading, matching, stale entries

May import everything in conformance/ (kit, tolerance, golden); nothing imports it but
``python -m conformance`` and the suite's own tests.
"""
