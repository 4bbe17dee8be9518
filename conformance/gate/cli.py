"""``python -m conformance`` (also ``transformer-conformance``): the gate and the golden vectors.

    python -m conformance run [--backend SPEC]... [--dtype D]... [--device DEV]
                              [--hypothesis-profile dev|ci|thorough] [--ops OP,...]... [--require OP,...]...
                              [--known-deviations FILE] [--strict-deviations]
                              [--report-dir DIR] [-n N|auto] [--timeout SECONDS] [-v]
    python -m conformance repro CASE.npz [--backend SPEC] [--dtype D] [--device DEV]
    python -m conformance golden export DIR [--seed N] [--layout npy|npz]
    python -m conformance golden check DIR --outputs OUT_DIR [--dtype D] [--require OP,...|all] [--report-dir DIR]
    python -m conformance golden run DIR --backend SPEC --dtype D [--device DEV] --outputs OUT_DIR

``run`` runs the property suite (``properties``) and the differential suite
(``conformance.differential``) on the chosen backends under pytest (and pytest-xdist), prints a
per-op table and exits 0 when every implemented op conforms and every ``--require``d op is
implemented, 1 when anything fails, 2 on a usage or set-up error, 3 when interrupted (SIGTERM or
SIGINT: the reports of every test that finished are written, the rest are "not run (interrupted)"). Without ``--backend`` it
checks the built-in backends. The report files are described in conformance/gate/REPORT.md; the
golden vectors in conformance/golden/GOLDEN.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backends.contract import DTYPES, OPS
from backends.registry import BackendSpecError
from conformance.gate import runner
from conformance.gate.runner import DEFAULT_TIMEOUT, PROFILES
from conformance.gate.targets import environment
from conformance.kit.features import Requirement, parse_requirement
from conformance.kit.verdicts import EXIT_ERROR, EXIT_FAIL, EXIT_OK

# --- arguments ---------------------------------------------------------------------------------

def _op_list(text: str) -> list[str]:
    ops = [op.strip() for op in text.split(",") if op.strip()]
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown op {unknown[0]!r}; contract ops: {', '.join(OPS)}")
    return ops


def _requirements(text: str) -> list[Requirement]:
    try:
        return [parse_requirement(item) for item in text.split(",") if item.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _workers(text: str) -> str:
    if text in ("auto", "logical") or (text.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected a number of workers or 'auto', got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,repro,golden}")

    run = commands.add_parser("run", help="run the conformance gate on backends",
                              description="Run the property and differential suites on backends and gate on "
                                          "the result. Exit status: 0 pass, 1 fail, 2 usage or set-up error, "
                                          "3 interrupted (SIGTERM or SIGINT: the reports of what finished are "
                                          "written). Reports and the known-deviations file format: "
                                          "conformance/gate/REPORT.md.")
    run.add_argument("--backend", action="append", default=[], metavar="SPEC",
                     help="backend spec (repeatable): a built-in name, package.module:attr, path/file.py:attr or an "
                          "entry point; default: every built-in backend")
    run.add_argument("--dtype", action="append", default=[], choices=DTYPES,
                     help="dtype (repeatable); default: every dtype (combinations a backend refuses are 'unsupported')")
    run.add_argument("--device", default=None, help="device, e.g. cpu, cuda, cuda:1 (default cpu)")
    run.add_argument("--hypothesis-profile", "--profile", dest="profile", choices=PROFILES, default="ci",
                     help="Hypothesis profile: dev (25 examples), ci (100, derandomized; default), thorough (1000)")
    run.add_argument("--ops", type=_op_list, action="extend", default=[], metavar="OP,...",
                     help="check only these ops (repeatable, comma-separated)")
    run.add_argument("--require", type=_requirements, action="extend", default=[], metavar="OP[:FEATURE[=VALUE]],...",
                     help="fail unless these ops are implemented (on every supported target) and, for "
                          "OP:FEATURE, tested with every value of the feature (OP:FEATURE=VALUE: that value), "
                          "e.g. decoder_layer:norm_first (features: conformance/gate/REPORT.md); repeatable, "
                          "comma-separated")
    run.add_argument("--known-deviations", type=Path, default=None, metavar="FILE",
                     help="TOML file of accepted failures (format and example: conformance/gate/REPORT.md, "
                          "'Known deviations')")
    run.add_argument("--strict-deviations", action="store_true",
                     help="fail the gate when a known-deviations entry is stale (no longer fails)")
    run.add_argument("--report-dir", type=Path, default=None, metavar="DIR",
                     help="write report.json, junit.xml, report.md (and pytest.log, results.jsonl) here")
    run.add_argument("-n", "--workers", type=_workers, default="auto", metavar="N|auto",
                     help="pytest-xdist worker processes (default auto: one per CPU; 0: no xdist)")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="per-test timeout: a test still running after it is reported as a timeout (its process's "
                          "Python stacks are in the report); default by profile: "
                          + ", ".join(f"{p} {t:g}" for p, t in DEFAULT_TIMEOUT.items()) + "; 0 disables")
    run.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output as it runs")
    run.add_argument("--suite", action="append", default=[], type=Path, metavar="PATH",
                     help="advanced: run these test files/directories instead of the built-in suites")
    run.set_defaults(func=runner.run)

    repro = commands.add_parser("repro", help="replay a failing example's backend calls saved by the gate",
                                description="Load a case the gate saved (REPORT_DIR/cases/*.npz), call each op on "
                                            "the backend and compare it with the reference. Exit status: 0 every "
                                            "call conforms, 1 one does not, 2 usage or set-up error.")
    repro.add_argument("case", type=Path, metavar="CASE.npz")
    repro.add_argument("--backend", default=None, metavar="SPEC", help="default: the backend the case was found on")
    repro.add_argument("--dtype", choices=DTYPES, default=None, help="default: the case's dtype")
    repro.add_argument("--device", default=None, help="default: the case's device")
    repro.set_defaults(func=cmd_repro)

    golden = commands.add_parser("golden", help="golden vectors for implementations outside Python").add_subparsers(
        dest="golden_command", required=True, metavar="{export,check,run}")
    export = golden.add_parser("export", help="write the golden cases (inputs, expected outputs, tolerances)")
    export.add_argument("dir", type=Path, metavar="DIR")
    export.add_argument("--seed", type=int, default=None, help="seed of the case generator (default: the format's)")
    export.add_argument("--layout", choices=("npy", "npz"), default="npy",
                        help="npy (default, format 2): one .npy per array, scalars as 0-d arrays; npz (format 1): "
                             "zip archives (conformance/golden/GOLDEN.md)")
    export.set_defaults(func=cmd_golden_export)
    check = golden.add_parser("check", help="check outputs another program wrote for the golden cases")
    check.add_argument("dir", type=Path, metavar="DIR")
    check.add_argument("--outputs", type=Path, required=True, metavar="OUT_DIR")
    check.add_argument("--dtype", choices=DTYPES, default=None,
                       help="the precision the outputs were computed in (default: the outputs' own dtype; "
                            "required for bfloat16, which .npy cannot hold: write float32)")
    check.add_argument("--require", type=lambda text: text.split(","), default=[], metavar="OP,...|all",
                       help="fail unless every case of these ops has an output ('all': every op)")
    check.add_argument("--report-dir", type=Path, default=None, metavar="DIR")
    check.set_defaults(func=cmd_golden_check)
    grun = golden.add_parser("run", help="write a Python backend's outputs for the golden cases (an example producer)")
    grun.add_argument("dir", type=Path, metavar="DIR")
    grun.add_argument("--backend", required=True, metavar="SPEC")
    grun.add_argument("--dtype", choices=DTYPES, required=True)
    grun.add_argument("--device", default="cpu")
    grun.add_argument("--outputs", type=Path, required=True, metavar="OUT_DIR")
    grun.set_defaults(func=cmd_golden_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 pass, 1 fail, 2 usage or set-up error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args.func(args)


# --- golden ------------------------------------------------------------------------------------

def cmd_golden_export(args: argparse.Namespace) -> int:
    from conformance import golden

    try:
        manifest = golden.export(args.dir, **({"seed": args.seed} if args.seed is not None else {}),
                                 layout=args.layout)
    except golden.GoldenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {len(manifest['cases'])} golden cases to {args.dir} (format {manifest['format_version']}, "
          f"seed {manifest['seed']})")
    return EXIT_OK


def cmd_golden_check(args: argparse.Namespace) -> int:
    from conformance import golden

    try:
        outcome = golden.check(args.dir, args.outputs, dtype=args.dtype, require=args.require)
    except golden.GoldenError as exc:
        print(f"golden check: ERROR (exit {EXIT_ERROR}): {exc}", file=sys.stderr)
        return EXIT_ERROR
    return golden.console(outcome, argv=["python", "-m", "conformance", *args.argv], environment=environment(),
                          report_dir=args.report_dir)


def cmd_repro(args: argparse.Namespace) -> int:
    from backends.registry import load_backend
    from conformance.kit import failing_cases

    try:
        meta, calls = failing_cases.load(args.case)
        target = meta.get("target") or {}
        spec, dtype = args.backend or target.get("spec"), args.dtype or target.get("dtype")
        device = args.device or target.get("device") or "cpu"
        if not spec or not dtype:
            raise ValueError("the case names no backend: give --backend and --dtype")
        backend = load_backend(spec, dtype=dtype, device=device)
    except (OSError, KeyError, ValueError, BackendSpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{meta.get('nodeid', args.case)}: {len(calls)} backend call(s) on {spec} [{dtype}, {device}]")
    print(failing_cases.describe(calls, dtype))
    conforms, lines = failing_cases.replay(calls, backend)
    print("\n".join(lines))
    if conforms and len(calls) > 1:
        print("every call conforms to the reference on its own: the test's relation between them failed "
              "(rerun the test: its command is in report.json, 'rerun')")
    elif conforms:
        print(f"the call conforms on {spec} [{dtype}, {device}]")
    return EXIT_OK if conforms else EXIT_FAIL


def cmd_golden_run(args: argparse.Namespace) -> int:
    from backends.registry import load_backend
    from conformance import golden

    try:
        backend = load_backend(args.backend, dtype=args.dtype, device=args.device)
        written = golden.run_backend(args.dir, args.outputs, backend)
    except (BackendSpecError, ValueError, golden.GoldenError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {written} outputs of {args.backend} [{args.dtype}, {args.device}] to {args.outputs}")
    return EXIT_OK
