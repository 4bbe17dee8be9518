"""Mutation score of the suite: which tests catch each mutant, and how soon.

Runs every mutant of tests/mutants/catalog.py through the whole gate (``python -m conformance
run``: both suites, every op, the ``ci`` profile), a batch of mutants per gate run, and reads
back for each mutant which tests failed (property, differential) and, for each failing test,
the number of examples it ran until its first failure. Writes tests/mutants/SCORE.md: the
table, the property and differential mutation scores, and the median and worst examples to
catch. A benchmark, not a test (it takes a while)::

    python benchmarks/mutant_score.py                  # all mutants -> tests/mutants/SCORE.md
    python benchmarks/mutant_score.py --only scores_unscaled mask_inverted --score /tmp/s.md

Examples until the first failure come from tests/mutants/first_failure.py, loaded into
the gate's pytest through ``PYTEST_PLUGINS``: the ``ci`` profile's generation unchanged
(derandomized, same budgets), without shrinking, each test stopping at its first failure. A
fixed (non-Hypothesis) test that fails counts as one example. A mutant's "examples to catch"
is the smallest over its failing tests.

Batches are kept in ``--work`` (one folder each, with the gate's reports); ``--resume`` reuses
finished ones, so an interrupted run can go on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conformance.kit.verdicts import FAILING  # noqa: E402
from tests.mutants import catalog  # noqa: E402

PLUGIN = "tests.mutants.first_failure"
FOLDER_VARIABLE = "MUTANT_SCORE_FIRST_FAILURES"
KINDS = ("property", "differential")
CI_BUDGET = 100


@dataclass
class Score:
    """What the full suite found on one mutant."""

    name: str
    ops: tuple[str, ...]
    dtype: str
    failed_ops: list[str] = field(default_factory=list)
    first_failure: dict[str, int] = field(default_factory=dict)  # failing Hypothesis test -> examples
    fixed: set[str] = field(default_factory=set)  # failing fixed (non-Hypothesis) tests
    kinds: dict[str, str] = field(default_factory=dict)  # failing test -> property | differential
    error: str | None = None

    def caught_by(self, kind: str) -> bool:
        return kind in self.kinds.values()

    def examples(self, kind: str | None = None) -> int | None:
        """Examples until the first failure of the fastest failing Hypothesis test (of ``kind``)."""
        counts = [n for test, n in self.first_failure.items() if kind in (None, self.kinds[test])]
        return min(counts) if counts else None

    def to_catch(self) -> int | None:
        """Examples to catch with any test: a failing fixed case counts as one."""
        return 1 if self.fixed else self.examples()

    def fastest(self) -> str | None:
        """The failing Hypothesis test with the fewest examples (else a failing fixed test)."""
        if self.first_failure:
            return min(self.first_failure, key=lambda test: (self.first_failure[test], test))
        return min(self.fixed) if self.fixed else None

    @property
    def verdict(self) -> str:
        by = [kind for kind in KINDS if self.caught_by(kind)]
        return "both" if len(by) == 2 else by[0] if by else ("error" if self.error else "NOT CAUGHT")


def batches(names: list[str], size: int) -> list[tuple[str, list[str]]]:
    """(dtype, names) batches of at most ``size`` mutants of one dtype (--dtype is per gate)."""
    out = []
    for dtype in sorted({catalog.ALL[n].dtype for n in names}):
        same = [n for n in names if catalog.ALL[n].dtype == dtype]
        out += [(dtype, same[i:i + size]) for i in range(0, len(same), size)]
    return out


def run_batch(folder: Path, dtype: str, names: list[str], workers: str, resume: bool) -> float:
    """One gate run over ``names``; its wall time in seconds (0 when reused)."""
    done = folder / "exit_status"
    if resume and done.exists() and (folder / "names.json").exists() \
            and json.loads((folder / "names.json").read_text()) == names:
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "first_failures").mkdir(parents=True)
    (folder / "names.json").write_text(json.dumps(names))
    command = [sys.executable, "-m", "conformance", "run", *(a for n in names for a in ("--backend", catalog.spec(n))),
               "--dtype", dtype, "--profile", "ci", "-n", workers, "--report-dir", str(folder)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_", "CONFORMANCE_"))}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
               PYTEST_PLUGINS=PLUGIN, **{FOLDER_VARIABLE: str(folder / "first_failures")})
    start = time.monotonic()
    with open(folder / "gate.log", "w", encoding="utf-8") as log:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    elapsed = time.monotonic() - start
    (folder / "wall_s").write_text(f"{elapsed:.1f}")
    done.write_text(str(code))
    return elapsed


def read_batch(folder: Path, dtype: str, names: list[str]) -> list[Score]:
    """Scores of one finished batch, from its report.json and first-failure records."""
    first = {}
    for path in sorted((folder / "first_failures").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                first[record["nodeid"]] = record
    report_path = folder / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {"errors": ["no report.json"],
                                                                              "results": []}
    scores = []
    for name in names:
        mutant = catalog.ALL[name]
        score = Score(name, mutant.ops, dtype, error="; ".join(e.splitlines()[0] for e in report["errors"]) or None)
        for result in report["results"]:
            if result["target"] != f"{name}-{dtype}" or result["status"] not in FAILING:
                continue
            score.failed_ops.append(result["op"])
            for test in result["failures"]:
                if test.get("known_deviation"):
                    continue
                nodeid, record = test["nodeid"], first.get(test["nodeid"])
                score.kinds[nodeid] = test["kind"]
                if record is None:  # a fixed case (or a Hypothesis test that died before reporting)
                    score.fixed.add(nodeid)
                else:
                    score.first_failure[nodeid] = record["first_failure"] or max(1, record["calls"])
        scores.append(score)
    return scores


# --- SCORE.md ----------------------------------------------------------------------------------

def _median(values: list[int]) -> str:
    return f"{statistics.median(values):g}" if values else "-"


def _worst(values: list[int]) -> str:
    return str(max(values)) if values else "-"


def _cell(score: Score, kind: str) -> str:
    n = score.examples(kind)
    return "-" if n is None else str(n)


def _short(nodeid: str, score: Score) -> str:
    """``file.py::test`` plus the parameters beyond the target, e.g. ``[post_ln]``."""
    path, _, test = nodeid.partition("::")
    function, _, params = test.partition("[")
    extra = params.rstrip("]").removeprefix(f"{score.name}-{score.dtype}").lstrip("-")
    return f"{path.rsplit('/', 1)[-1]}::{function}" + (f"[{extra}]" if extra else "")


def summary(scores: list[Score]) -> dict[str, Any]:
    by = {kind: [s for s in scores if s.caught_by(kind)] for kind in KINDS}
    hypothesis = [s.examples() for s in scores if s.examples() is not None]
    any_test = [s.to_catch() for s in scores if s.to_catch() is not None]
    return {
        "mutants": len(scores), "caught": len(any_test),
        "property": len(by["property"]), "differential": len(by["differential"]),
        "both": sum(s.verdict == "both" for s in scores),
        "property_only": sum(s.verdict == "property" for s in scores),
        "differential_only": sum(s.verdict == "differential" for s in scores),
        "fixed_only": [s.name for s in scores if s.fixed and not s.first_failure],
        "not_caught": [s.name for s in scores if s.to_catch() is None],
        "median": _median(any_test), "worst": _worst(any_test),
        "median_hypothesis": _median(hypothesis), "worst_hypothesis": _worst(hypothesis),
        "median_property": _median([s.examples("property") for s in by["property"]]),
        "worst_property": _worst([s.examples("property") for s in by["property"]]),
        "median_differential": _median([n for s in by["differential"] if (n := s.examples("differential"))]),
        "worst_differential": _worst([n for s in by["differential"] if (n := s.examples("differential"))]),
        "ops_not_failing": {s.name: sorted(set(s.ops) - set(s.failed_ops)) for s in scores
                            if set(s.ops) - set(s.failed_ops)},
    }


def _percent(n: int, total: int) -> str:
    return f"{n}/{total} ({100 * n / total:.0f} %)" if total else "0/0"


def markdown(scores: list[Score], stats: dict[str, Any], wall_s: float, command: str) -> str:
    total = stats["mutants"]
    versions = ", ".join(f"{p} {_version(p)}" for p in ("hypothesis", "torch", "numpy"))
    lines = [
        "# Mutation score of the conformance suite",
        "",
        f"Generated by `{command}` ({versions}); do not edit by hand.",
        "",
        "Each mutant (tests/mutants/catalog.py: `zoo.py` and `model.py`) is the torch backend with one",
        "realistic bug. Every mutant ran through the whole gate: both suites, every op, the `ci` profile",
        f"(derandomized, at most {CI_BUDGET} examples per test), at its dtype. *Examples to first failure*",
        "counts the examples a failing Hypothesis test ran up to and including its first failing one, with",
        "the profile's generation unchanged and shrinking off (tests/mutants/first_failure.py). A",
        "mutant's number is the smallest over its failing Hypothesis tests; the differential suite also",
        "has fixed realistic-size cases (one example each), listed separately.",
        "",
        "## Scores",
        "",
        "| measure | value |",
        "|---|---|",
        f"| mutants | {total} |",
        f"| caught by the gate (either suite) | {_percent(stats['caught'], total)} |",
        f"| **property score**: caught by at least one property | **{_percent(stats['property'], total)}** |",
        f"| **differential score**: caught by at least one differential test | "
        f"**{_percent(stats['differential'], total)}** |",
        f"| caught by both / properties only / differential only | {stats['both']} / {stats['property_only']} / "
        f"{stats['differential_only']} |",
        f"| caught only by a fixed realistic case | {len(stats['fixed_only'])}"
        + (f" ({', '.join(stats['fixed_only'])})" if stats["fixed_only"] else "") + " |",
        f"| Hypothesis examples to catch, median / worst (fastest Hypothesis test, either suite) | "
        f"{stats['median_hypothesis']} / {stats['worst_hypothesis']} |",
        f"| examples to catch counting a failing fixed case as 1, median / worst | {stats['median']} / "
        f"{stats['worst']} |",
        f"| examples to catch by properties, median / worst | {stats['median_property']} / "
        f"{stats['worst_property']} |",
        f"| examples to catch by differential Hypothesis tests, median / worst | {stats['median_differential']} / "
        f"{stats['worst_differential']} |",
        f"| wall time of this run | {wall_s / 60:.1f} min |",
        "",
    ]
    if stats["not_caught"]:
        lines += [f"**Not caught:** {', '.join(stats['not_caught'])}.", ""]
    if stats["ops_not_failing"]:
        lines += ["**Listed op(s) that did not fail:** "
                  + "; ".join(f"{n}: {', '.join(ops)}" for n, ops in stats["ops_not_failing"].items()) + ".", ""]
    lines += [
        "## Mutants",
        "",
        "`op(s)`: where the bug lives (tests/test_mutants_caught.py requires each to fail). *property* /",
        "*differential*: examples to the first failure of the fastest failing Hypothesis test of that suite;",
        "*fixed*: how many fixed realistic-size differential cases fail.",
        "",
        "| mutant | op(s) | bug | caught by | property | differential | fixed | first to fail |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        dtype = "" if s.dtype == "float64" else f" ({s.dtype})"
        fastest = s.fastest()
        lines.append(f"| `{s.name}`{dtype} | {', '.join(s.ops)} | {catalog.bug(s.name)} | {s.verdict} | "
                     f"{_cell(s, 'property')} | {_cell(s, 'differential')} | {len(s.fixed) or '-'} | "
                     f"{'`' + _short(fastest, s) + '`' if fastest else (s.error or '-')} |")
    lines += ["", "## Failing Hypothesis tests per mutant (examples to first failure)", ""]
    for s in scores:
        tests = ", ".join(f"`{_short(t, s)}` {n}" for t, n in sorted(s.first_failure.items(), key=lambda kv: kv[1]))
        lines.append(f"- `{s.name}`: {tests or '-'}")
    return "\n".join(lines) + "\n"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these mutants only")
    parser.add_argument("--batch-size", type=int, default=10, help="mutants per gate run (default 10)")
    parser.add_argument("-n", "--workers", default="auto", help="the gate's -n (default auto)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "mutant_score", help="batch folders")
    parser.add_argument("--resume", action="store_true", help="reuse the finished batches in --work")
    parser.add_argument("--score", type=Path, default=ROOT / "tests" / "mutants" / "SCORE.md", help="output")
    args = parser.parse_args()
    unknown = sorted(set(args.only or []) - set(catalog.ALL))
    if unknown:
        parser.error(f"unknown mutants: {unknown}")
    names = sorted(args.only or catalog.ALL)
    scores, wall = [], 0.0
    for index, (dtype, batch) in enumerate(batches(names, args.batch_size)):
        folder = args.work / f"batch-{index:02d}-{dtype}"
        elapsed = run_batch(folder, dtype, batch, args.workers, args.resume)
        wall += elapsed or float((folder / "wall_s").read_text() if (folder / "wall_s").exists() else 0)
        found = read_batch(folder, dtype, batch)
        scores += found
        print(f"batch {index} ({dtype}, {len(batch)} mutants, {elapsed:.0f} s): "
              + ", ".join(f"{s.name} {s.verdict} {s.examples()}" for s in found), flush=True)
    scores.sort(key=lambda s: s.name)
    stats = summary(scores)
    command = "python benchmarks/mutant_score.py" + (" --only " + " ".join(args.only) if args.only else "")
    args.score.write_text(markdown(scores, stats, wall, command), encoding="utf-8")
    print(f"\nmutants {stats['mutants']}, caught {stats['caught']}; property score {stats['property']}, "
          f"differential score {stats['differential']}; Hypothesis examples to catch: median "
          f"{stats['median_hypothesis']}, worst {stats['worst_hypothesis']}; not caught: "
          f"{stats['not_caught'] or 'none'}; wrote {args.score}")
    return 0 if not stats["not_caught"] else 1


if __name__ == "__main__":
    sys.exit(main())
