"""What the gate finds in third-party libraries: run it on each library backend and render the
ops x dtypes x verdict table of README.md from the gate's own report.json.

    python benchmarks/library_findings.py                 # run the gates, rewrite the table
    python benchmarks/library_findings.py --from-reports  # re-render from the last reports
    tox -e libraries && python benchmarks/library_findings.py --from-reports

Each backend runs as ``python -m conformance run --backend B --dtype ... --profile ci
--report-dir reports/B --known-deviations conformance/known_deviations/B.toml``
(the file only if it exists), so the table shows accepted deviations as "known deviation" and
anything else that fails as FAIL. The report folders are the ones tox's library environments
write, so the table can also be rendered from a tox run. Backends whose library is not
installed show "unsupported". The table replaces the text between the two marker lines in the document (``--doc``); ``-``
prints it instead. A tool run by hand (tens of minutes on a laptop), not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from backends.contract import OPS

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("torch-nn", "torch-nn-slowpath", "torch-sdpa", "jax", "hf-marian", "hf-marian-sdpa", "onnxruntime",
            "onnxruntime-fused")
DTYPES = ("float64", "float32", "bfloat16")
BACKEND_DTYPES = {"onnxruntime": ("float64", "float32", "float16", "bfloat16"),
                  "onnxruntime-fused": ("float64", "float32", "float16", "bfloat16")}
"""Backends gated at other dtypes than ``--dtypes`` (ORT's CPU provider runs float16, not bfloat16)."""
LIBRARIES = ("torch", "jax", "jaxlib", "flax", "transformers", "onnxruntime", "onnx")
BEGIN, END = "<!-- library-findings:begin -->", "<!-- library-findings:end -->"
CELL = {"pass": "pass", "known deviation": "**deviation**", "fail": "**FAIL**", "crashed": "**CRASH**",
        "timeout": "**TIMEOUT**", "not implemented": "n/i", "unsupported": "unsupported", "skipped": "skipped",
        "no tests": "-"}
SHORT_DTYPE = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def deviations_file(backend: str) -> Path:
    return ROOT / "conformance" / "known_deviations" / f"{backend}.toml"


def run_gate(backend: str, dtypes: list[str], profile: str, workers: str, report_dir: Path,
             timeout: str | None) -> int:
    """One gate run; returns its exit code (0 pass, 1 fail, 2 usage or set-up error)."""
    command = [sys.executable, "-m", "conformance", "run", "--backend", backend, "--profile", profile,
               "-n", workers, "--report-dir", str(report_dir)]
    if timeout is not None:
        command += ["--timeout", timeout]
    for dtype in dtypes:
        command += ["--dtype", dtype]
    if deviations_file(backend).exists():
        command += ["--known-deviations", str(deviations_file(backend))]
    print("$ " + " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, check=False).returncode


def load_report(report_dir: Path) -> dict[str, Any] | None:
    path = report_dir / "report.json"
    return json.loads(path.read_text()) if path.exists() else None


def versions(reports: dict[str, dict[str, Any] | None]) -> str:
    """The library versions the gates ran (each report's targets record them), e.g.
    "torch 2.13.0+cpu, jax 0.10.2"."""
    found: dict[str, str] = {}
    for report in filter(None, reports.values()):
        for target in report["targets"]:
            found.update({name: v for name, v in target.get("versions", {}).items() if name in LIBRARIES and v})
    return ", ".join(f"{name} {found[name]}" for name in LIBRARIES if name in found) or "no versions recorded"


def render(reports: dict[str, dict[str, Any] | None], dtypes: list[str]) -> str:
    """The markdown table (ops x backend/dtype) and the list of deviations, from the reports."""
    columns = [(b, d) for b in reports for d in BACKEND_DTYPES.get(b, dtypes)]
    status: dict[tuple[str, str, str], str] = {}
    verdicts, applied = {}, []
    for backend, report in reports.items():
        if report is None:
            verdicts[backend] = "no report"
            continue
        verdicts[backend] = (f"{report['summary']['verdict']} (exit {report['summary']['exit_code']}, "
                             f"profile {report['settings']['profile']})")
        for result in report["results"]:
            status[(result["op"], result["target"])] = result["status"]
        applied += [(backend, d) for d in report["known_deviations"]["applied"]]
    header = "| op | " + " | ".join(f"{b} {SHORT_DTYPE[d]}" for b, d in columns) + " |"
    lines = [f"{versions(reports)}.", "", header, "|---" * (len(columns) + 1) + "|"]
    for op in OPS:
        cells = [CELL.get(status.get((op, f"{b}-{d}"), "no tests"), "?") if reports[b] else "not run"
                 for b, d in columns]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines += ["", "Gate verdict with the shipped known-deviations file: "
              + "; ".join(f"`{b}` {v}" for b, v in verdicts.items()) + ".", ""]
    lines += ["Legend: **deviation** = fails, accepted by `conformance/known_deviations/<backend>.toml`; "
              "**FAIL** = fails and not accepted; n/i = not implemented by the adapter; "
              "- = no test of that op in the suite; not run = no report.json for that backend.", ""]
    if applied:
        lines += ["| backend | dtype | op / test | reason | reference |", "|---|---|---|---|---|"]
        for backend, d in applied:
            what = d.get("op") or d.get("test")
            reason = d["reason"].replace("|", "\\|")  # "[sin | cos]" must not split the cell
            lines.append(f"| {backend} | {d['dtype']} | `{what}` | {reason} | {d.get('reference', '')} |")
    return "\n".join(lines)


def write_doc(doc: Path, table: str) -> None:
    """Replace the text between the marker lines of ``doc`` with ``table``."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: the marker lines {BEGIN} / {END} are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated (default: %(default)s)")
    parser.add_argument("--profile", default="ci", choices=["dev", "ci", "thorough"])
    parser.add_argument("-n", "--workers", default="auto", help="pytest-xdist workers per gate run")
    parser.add_argument("--timeout", default=None,
                        help="per-test timeout in seconds passed to the gate (JAX compiles every new shape: "
                             "give it more than the profile's default on a small machine)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports",
                        help="the gates' report folders, OUT_DIR/BACKEND (default: the ones tox's environments write)")
    parser.add_argument("--from-reports", action="store_true", help="do not run the gates; render the last reports")
    parser.add_argument("--doc", default=str(ROOT / "README.md"),
                        help="document to update between its marker lines; '-' prints the table")
    args = parser.parse_args(argv)
    backends, dtypes = args.backends.split(","), args.dtypes.split(",")
    reports = {}
    for backend in backends:
        report_dir = args.out_dir / backend
        if not args.from_reports:
            backend_dtypes = list(BACKEND_DTYPES.get(backend, dtypes))
            code = run_gate(backend, backend_dtypes, args.profile, args.workers, report_dir, args.timeout)
            if code == 2:
                print(f"{backend}: the gate could not run (exit 2); see {report_dir}", file=sys.stderr)
        reports[backend] = load_report(report_dir)
    table = render(reports, dtypes)
    if args.doc == "-":
        print(table)
    else:
        write_doc(Path(args.doc), table)
        print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
