"""False alarms on correct implementations: the zoo of tests/correct/ under the whole gate.

Every member of tests/correct/catalog.py at every dtype it supports, and the gate's built-in
targets under each OpenBLAS kernel this CPU runs (``openblas-<Kernel>``, the gate with
``OPENBLAS_CORETYPE`` set), through ``python -m conformance run`` (both suites, every op, the
``thorough`` profile unless told otherwise). Prints, as Markdown, per implementation and
dtype: the examples run, the failing tests (each a false alarm: these implementations are
correct) and the worst error/tolerance ratio per op from the gate's report.json. A benchmark,
not a test (tests/test_correct_zoo.py is the quick check)::

    python benchmarks/correct_zoo.py                                   # thorough, everything
    python benchmarks/correct_zoo.py --members flash_attention sum_pairwise --dtypes float32 --profile ci
    python benchmarks/correct_zoo.py --members openblas-Haswell --report-dir /tmp/zoo
    python benchmarks/correct_zoo.py --report-dir /tmp/zoo --tally-only  # re-read the reports

Exit status: 0 when nothing failed and every implementation reached MIN_EXAMPLES_PER_DTYPE
examples at each dtype, 1 otherwise, 2 when a gate could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import false_alarms  # noqa: E402
from backends.contract import DTYPES, OPS  # noqa: E402
from tests.correct import catalog, openblas  # noqa: E402

OPENBLAS_PREFIX = "openblas-"
TARGET_FOLDER = "zoo"


def openblas_members() -> list[str]:
    """``openblas-<Kernel>`` for every kernel of tests/correct/openblas.py."""
    return [OPENBLAS_PREFIX + kernel for kernel in openblas.KERNELS]


def member_targets(name: str, dtypes: list[str]) -> list[str]:
    """The ``SPEC:DTYPE`` targets of a member (an OpenBLAS member: the gate's built-in targets)."""
    if name.startswith(OPENBLAS_PREFIX):
        return [t for t in false_alarms.TARGETS if t.rsplit(":", 1)[1] in dtypes]
    return [f"{catalog.spec(name)}:{d}" for d in catalog.ALL[name].dtypes if d in dtypes]


def run(members: list[str], dtypes: list[str], profile: str, workers: str, ops: list[str],
        report_dir: Path) -> int:
    """The gates of every member; the worst exit status. Zoo members' reports go to
    ``report_dir/zoo/<spec>``, an OpenBLAS kernel's to ``report_dir/openblas-<Kernel>/<spec>``."""
    zoo = [t for name in members if not name.startswith(OPENBLAS_PREFIX) for t in member_targets(name, dtypes)]
    worst = false_alarms.run_gate(zoo, profile, workers, report_dir / TARGET_FOLDER, ops=ops)[0] if zoo else 0
    kernels = [n for n in members if n.startswith(OPENBLAS_PREFIX)]
    plan = {run.kernel: run for run in openblas.plan()} if kernels else {}
    for name in kernels:
        kernel = plan[name[len(OPENBLAS_PREFIX):]]
        if kernel.skip:
            print(f"{name}: skipped: {kernel.skip}", flush=True)
            (report_dir / name).mkdir(parents=True, exist_ok=True)
            (report_dir / name / "skipped").write_text(kernel.skip)
            continue
        print(f"{name}: {openblas.VARIABLE}={kernel.label}", flush=True)
        code = false_alarms.run_gate(member_targets(name, dtypes), profile, workers, report_dir / name, ops=ops,
                                     env={openblas.VARIABLE: kernel.kernel})[0]
        worst = max(worst, code)
    return worst


def rows(report_dir: Path) -> list[dict[str, Any]]:
    """One row per implementation (zoo member, or OpenBLAS kernel x built-in backend) and dtype:
    examples, failing tests, and the worst error/tolerance ratio of each op, from report.json."""
    out = []
    for folder in sorted(p for p in report_dir.iterdir() if p.is_dir()):
        tallied = false_alarms.tally(folder)["targets"]
        ratios: dict[str, dict[str, Any]] = {}
        for path in sorted(folder.glob("*/report.json")):
            for result in json.loads(path.read_text())["results"]:
                ratios.setdefault(result["target"], {})[result["op"]] = (result["worst_ratio"], result["status"])
        prefix = "" if folder.name == TARGET_FOLDER else f"{folder.name} "
        for target, t in tallied.items():
            if t["status"] == "tested":
                out.append({"implementation": prefix + target.rsplit("-", 1)[0], "dtype": t["dtype"],
                            "examples": t["examples"], "failures": t["failures"], "ratios": ratios.get(target, {})})
    return out


def _cell(ratio: Any, status: str) -> str:
    if ratio is None:
        return "-" if status in ("pass", "no tests") else status
    text = ratio if isinstance(ratio, str) else f"{ratio:.2f}"
    return f"**{text}**" if status != "pass" else text


def markdown(table: list[dict[str, Any]], ops: list[str]) -> str:
    """The rows as a Markdown table; a failing op's ratio in bold."""
    header = ["implementation", "dtype", "examples", "failures", *ops]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        cells = [_cell(*row["ratios"].get(op, (None, "not run"))) for op in ops]
        lines.append("| " + " | ".join([row["implementation"], row["dtype"], str(row["examples"]),
                                        str(len(row["failures"])), *cells]) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    choices = [*catalog.ALL, *openblas_members()]
    parser.add_argument("--members", nargs="+", default=choices, choices=choices, metavar="NAME",
                        help="zoo members and openblas-<Kernel> (default: all)")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--profile", default="thorough", choices=("dev", "ci", "thorough"))
    parser.add_argument("--ops", nargs="+", default=[], choices=OPS, help="only these ops (default: every op)")
    parser.add_argument("-n", "--workers", default="auto", help="the gate's -n (default auto)")
    parser.add_argument("--report-dir", type=Path, default=None, help="keep the gate reports here")
    parser.add_argument("--tally-only", action="store_true", help="re-read --report-dir without running")
    args = parser.parse_args()
    report_dir = args.report_dir or Path(tempfile.mkdtemp(prefix="correct-zoo-"))
    if not args.tally_only:
        if run(args.members, args.dtypes, args.profile, args.workers, args.ops, report_dir) == 2:
            print(f"a gate could not run; see {report_dir}", file=sys.stderr)
            return 2
    table = rows(report_dir)
    print(f"\n{markdown(table, args.ops or list(OPS))}\n")
    for row in table:
        for nodeid in row["failures"]:
            print(f"FALSE ALARM on {row['implementation']} {row['dtype']}: {nodeid}")
    for skipped in sorted(report_dir.glob(f"{OPENBLAS_PREFIX}*/skipped")):
        print(f"{skipped.parent.name} skipped: {skipped.read_text()}")
    short = [f"{r['implementation']} {r['dtype']}" for r in table
             if r["examples"] < false_alarms.MIN_EXAMPLES_PER_DTYPE]
    if short:
        print(f"fewer than {false_alarms.MIN_EXAMPLES_PER_DTYPE} examples: {', '.join(short)}")
    (report_dir / "correct_zoo.json").write_text(json.dumps({"profile": args.profile, "rows": table}, indent=2))
    print(f"reports in {report_dir}")
    return 1 if short or any(r["failures"] for r in table) else 0


if __name__ == "__main__":
    sys.exit(main())
