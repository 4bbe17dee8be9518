"""The gate application: ``python -m conformance run`` and its reports (REPORT.md).

    cli.py            the command line (run, repro, golden export/check/run)
    runner.py         one gate run: the pytest run under xdist, SIGTERM/SIGINT, the verdict
    targets.py        the run's targets loaded before pytest starts; versions and environment
    plugin.py         the gate's pytest plugin: per-test JSON lines, fault backstop, saved cases
    tally.py          those records merged per test and tallied per op x target (status, coverage)
    report.py         the console table, report.json, junit.xml and report.md
    deviations.py     known-deviations files: loading, matching, stale entries

May import kit, tolerance and golden; golden's check imports tally and report (it writes the
same reports); nothing else imports it but ``python -m conformance`` and the suite's own tests.
"""
