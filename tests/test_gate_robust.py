"""Issue 17 part 2 and 4: the gate interrupted by SIGTERM writes what finished and exits 3; the
gate's options (--ops repeatable, one profile spelling)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conformance.cli import EXIT_INTERRUPTED, INTERRUPTED, build_parser

ROOT = Path(__file__).resolve().parent.parent


def test_ops_and_require_are_repeatable_and_comma_separated():
    args = build_parser().parse_args(["run", "--ops", "softmax", "--ops", "embedding,layer_norm",
                                      "--require", "softmax", "--require", "encode"])
    assert args.ops == ["softmax", "embedding", "layer_norm"] and args.require == ["softmax", "encode"]


def test_the_profile_has_one_spelling_shared_with_pytest_and_the_old_one_still_works():
    parser = build_parser()
    assert parser.parse_args(["run", "--hypothesis-profile", "dev"]).profile == "dev"
    assert parser.parse_args(["run", "--profile", "thorough"]).profile == "thorough"
    assert "--hypothesis-profile" in (ROOT / "README.md").read_text()


def _first_report(results: Path, process: subprocess.Popen[str], limit_s: float = 300.0) -> None:
    """Wait until the gate's pytest has finished at least one test."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and process.poll() is None:
        if results.exists() and '"event": "report"' in results.read_text(encoding="utf-8"):
            return
        time.sleep(0.2)
    raise AssertionError("the gate finished no test in time")


def test_sigterm_writes_the_reports_of_what_finished_and_exits_3(tmp_path):
    command = [sys.executable, "-m", "conformance", "run", "--backend", "numpy", "--dtype", "float32",
               "--hypothesis-profile", "dev", "-n", "0", "--report-dir", str(tmp_path)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _first_report(tmp_path / "results.jsonl", process)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED == 3, out + err
    assert "conformance gate: INTERRUPTED (exit 3)" in out
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["summary"]["verdict"] == "interrupted" and document["summary"]["exit_code"] == 3
    counts = document["summary"]["tests"]
    assert counts["passed"] >= 1 and counts["skipped"] >= 1 and counts["crashed"] == 0, counts
    assert any(INTERRUPTED in r["skip_reasons"] for r in document["results"])
    assert (tmp_path / "junit.xml").is_file() and (tmp_path / "report.md").read_text().startswith(
        "## Transformer conformance gate: INTERRUPTED")


def test_the_gate_keeps_hypothesis_state_in_its_report_dir(tmp_path):
    command = [sys.executable, "-m", "conformance", "run", "--backend", "reference", "--ops", "softmax",
               "--hypothesis-profile", "dev", "-n", "0", "--report-dir", str(tmp_path / "r")]
    run = tmp_path / "cwd"
    run.mkdir()
    env_root = {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=run, capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if k != "HYPOTHESIS_STORAGE_DIRECTORY"},
                               **env_root})
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(run.iterdir()) == [], list(run.iterdir())
    assert (tmp_path / "r" / ".hypothesis").is_dir()
