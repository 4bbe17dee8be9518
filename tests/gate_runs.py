"""Running the real gate from the self-tests: in process, isolated from the test run's own
pytest and Hypothesis settings, and shared between pytest-xdist workers.

``run_gate(argv, folder=..., env=...)`` runs ``python -m conformance run`` (``cli.main``; its
pytest is a subprocess with the given environment) once per report folder: under xdist the
first worker to ask runs it, the others wait on a lock file and read its report.
Used by tests/test_mutants_caught.py and tests/test_correct_zoo.py.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from conformance.gate import cli

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: each worker runs its own gates
    fcntl = None

ROOT = Path(__file__).resolve().parents[1]
NO_SHRINK_PLUGIN = "tests.mutants.first_failure"
"""Loaded into the gate's pytest: the ci profile's examples, but no shrinking after a failure."""


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if absent) for the duration of the block."""
    with open(path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def gate_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the gate (and its pytest) runs in: the repository importable (for specs
    such as ``tests.mutants.catalog:NAME``), no pytest/xdist/Hypothesis/conformance variables of
    this test run, the no-shrink plugin, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_", "CONFORMANCE_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTEST_PLUGINS"] = NO_SHRINK_PLUGIN
    return {**env, **(extra or {})}


def run_gate(argv: list[str], *, folder: Path, env: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """``python -m conformance run *argv --report-dir folder`` with ``gate_environment(env)``:
    (exit status, report.json). Runs once per folder; later calls read the first one's result."""
    done = folder / "exit_status"
    with locked(folder.with_name(folder.name + ".lock")):
        if not done.exists():
            folder.mkdir(parents=True, exist_ok=True)
            with mock.patch.dict(os.environ, gate_environment(env), clear=True):
                code = cli.main(["run", *argv, "--report-dir", str(folder)])
            done.write_text(str(code))
    return int(done.read_text()), json.loads((folder / "report.json").read_text())


def shared_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder every xdist worker of this run shares (beside each worker's base temp)."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    folder.mkdir(exist_ok=True)
    return folder
