"""False-alarm rate of the suite: the correct built-in backends under the ``thorough`` profile.

Runs the gate (``python -m conformance run``: both suites, every op) on the built-in backends
that are correct by construction (reference float64; numpy float32/float16; torch cpu
float64/float32/bfloat16) and reports, per target and per dtype, how many examples ran, how
many tests failed (each a false alarm) and how long it took. The issue asks for at least
``MIN_EXAMPLES_PER_DTYPE`` examples per dtype with no failure. A benchmark, not a test::

    python benchmarks/false_alarms.py                         # thorough, every built-in target
    python benchmarks/false_alarms.py --profile ci --target torch:bfloat16 --report-dir /tmp/fa

Exit status: 0 when no target failed and every dtype reached the minimum, 1 otherwise, 2 when
the gate could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conformance.kit.verdicts import FAILING  # noqa: E402
TARGETS = ("reference:float64", "numpy:float32", "numpy:float16", "torch:float64", "torch:float32",
           "torch:bfloat16")
"""The correct built-in backends on the CPU (the gate's default targets without a GPU)."""
MIN_EXAMPLES_PER_DTYPE = 10_000


def run_gate(targets: list[str], profile: str, workers: str, report_dir: Path, *, ops: Sequence[str] = (),
             env: Mapping[str, str] | None = None) -> tuple[int, float]:
    """One gate run per backend spec (each with its dtypes; only ``ops`` if given; with the
    variables ``env`` added, the repository on PYTHONPATH so that ``tests.…`` specs load);
    (worst exit status, wall seconds). The reports of spec S go to ``report_dir/S`` (the
    gate's output to ``report_dir/S/gate.log``). A target is ``SPEC:DTYPE``; the dtype is what
    follows the last colon, so a ``module:factory`` spec works too."""
    by_spec: dict[str, list[str]] = defaultdict(list)
    for target in targets:
        spec, dtype = target.rsplit(":", 1)
        by_spec[spec].append(dtype)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_", "CONFORMANCE_"))},
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), **(env or {})}
    worst, start = 0, time.monotonic()
    for spec, dtypes in by_spec.items():
        out = report_dir / spec
        command = [sys.executable, "-m", "conformance", "run", "--backend", spec,
                   *(a for d in dtypes for a in ("--dtype", d)), "--profile", profile, "-n", workers,
                   *(["--ops", ",".join(ops)] if ops else []), "--report-dir", str(out)]
        print("$ " + " ".join(command), flush=True)
        began = time.monotonic()
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "gate.log", "w", encoding="utf-8") as log:
            code = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        print(f"  exit {code} in {(time.monotonic() - began) / 60:.1f} min", flush=True)
        worst = max(worst, code)
    return worst, time.monotonic() - start


def tally(report_dir: Path) -> dict[str, Any]:
    """Per target and per dtype: examples, tests, failing tests (nodeids), summed test time."""
    targets: dict[str, dict[str, Any]] = {}
    for path in sorted(report_dir.glob("*/report.json")):
        report = json.loads(path.read_text())
        for target in report["targets"]:
            results = [r for r in report["results"] if r["target"] == target["id"]]
            targets[target["id"]] = {
                "dtype": target["dtype"], "status": target["status"], "errors": report["errors"],
                "examples": sum(r["examples"] for r in results),
                "tests": sum(sum(r["tests"].values()) for r in results),
                "failures": [t["nodeid"] for r in results if r["status"] in FAILING for t in r["failures"]],
                "test_time_s": sum(r["duration_s"] for r in results),
                "gate_wall_s": report["duration_s"],
            }
    dtypes: dict[str, dict[str, Any]] = defaultdict(lambda: {"examples": 0, "targets": [], "failures": 0})
    for target_id, t in targets.items():
        d = dtypes[t["dtype"]]
        d["examples"] += t["examples"]
        d["targets"].append(target_id)
        d["failures"] += len(t["failures"])
    return {"targets": targets, "dtypes": dict(dtypes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="thorough", choices=("dev", "ci", "thorough"))
    parser.add_argument("--target", action="append", default=[], metavar="SPEC:DTYPE",
                        help=f"repeatable; default: {', '.join(TARGETS)}")
    parser.add_argument("-n", "--workers", default="auto", help="the gate's -n (default auto)")
    parser.add_argument("--report-dir", type=Path, default=None, help="keep the gate reports here")
    parser.add_argument("--tally-only", action="store_true", help="re-read --report-dir without running")
    args = parser.parse_args()
    report_dir = args.report_dir or Path(tempfile.mkdtemp(prefix="false-alarms-"))
    wall = 0.0
    if not args.tally_only:
        code, wall = run_gate(args.target or list(TARGETS), args.profile, args.workers, report_dir)
        if code == 2:
            print(f"the gate could not run; see {report_dir}", file=sys.stderr)
            return 2
    found = tally(report_dir)
    print(f"\n{'target':<18} {'examples':>9} {'tests':>6} {'failed':>6} {'test time':>10} {'gate wall':>10}")
    for target_id, t in found["targets"].items():
        print(f"{target_id:<18} {t['examples']:>9} {t['tests']:>6} {len(t['failures']):>6} "
              f"{t['test_time_s'] / 60:>8.1f} m {t['gate_wall_s'] / 60:>8.1f} m")
    short = []
    print(f"\n{'dtype':<10} {'examples':>9} {'false alarms':>13}  targets")
    for dtype, d in sorted(found["dtypes"].items()):
        print(f"{dtype:<10} {d['examples']:>9} {d['failures']:>13}  {', '.join(d['targets'])}")
        if d["examples"] < MIN_EXAMPLES_PER_DTYPE:
            short.append(dtype)
    alarms = {t: v["failures"] for t, v in found["targets"].items() if v["failures"]}
    for target_id, failures in alarms.items():
        print(f"\nFALSE ALARM on {target_id}:\n  " + "\n  ".join(failures))
    if wall:
        print(f"\nwall time {wall / 60:.1f} min (profile {args.profile}); reports in {report_dir}")
    (report_dir / "false_alarms.json").write_text(json.dumps({**found, "profile": args.profile, "wall_s": wall},
                                                             indent=2))
    if short:
        print(f"fewer than {MIN_EXAMPLES_PER_DTYPE} examples for: {', '.join(short)}")
    return 1 if alarms or short else 0


if __name__ == "__main__":
    sys.exit(main())
