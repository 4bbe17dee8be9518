"""A tiny stand-in suite for the gate's own tests (tests/test_gate_cli.py): a few property and
differential tests written like the real ones (op markers, the harness, the tolerance model),
in files named ``check_*.py`` so that a plain ``pytest`` run of ``tests/`` does not collect
them; the gate runs them with ``--suite``."""
