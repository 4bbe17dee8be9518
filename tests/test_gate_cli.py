"""The gate command end to end: exit statuses, the per-op table, the three reports, known
deviations, --require, --ops, crashes and timeouts, and set-up errors.

The runs use the small stand-in suite in tests/gate_suite (real harness, real tolerance model,
a few ops) and the broken backends of tests/broken_backends.py, so each takes seconds; the real
suites are run by ``python -m conformance run`` itself.
"""

import contextlib
import io
import json
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import find, settings

from conformance.kit import failing_cases
from conformance.gate.cli import main
from conformance.gate.runner import backend_versions
from conformance.kit.strategies import SCALES, arrays

HERE = Path(__file__).parent
SUITE = HERE / "gate_suite"
SUITE_ARGS = ["--suite", str(SUITE / "properties" / "check_props.py"),
              "--suite", str(SUITE / "differential" / "check_diff.py")]
BROKEN = HERE / "broken_backends.py"


def gate(*args, report_dir=None, profile="dev", workers="0"):
    argv = ["run", *args, "--profile", profile, "-n", workers, *SUITE_ARGS]
    if report_dir is not None:
        argv += ["--report-dir", str(report_dir)]
    return main(argv)


def load_report(report_dir):
    return json.loads((report_dir / "report.json").read_text())


def statuses(document):
    return {(r["target"], r["op"]): r["status"] for r in document["results"] if r["status"] != "no tests"}


def test_a_correct_backend_passes_and_the_three_reports_are_written(tmp_path, capsys):
    assert gate("--backend", "reference", report_dir=tmp_path) == 0
    out = capsys.readouterr().out
    assert ["reference-float64", "softmax", "pass"] in [line.split()[:3] for line in out.splitlines()]
    assert "unsupported here (every test skipped): reference-float32, reference-float16, reference-bfloat16" in out
    assert "conformance gate: PASS (exit 0)" in out
    document = load_report(tmp_path)
    assert document["summary"]["verdict"] == "pass" and document["summary"]["exit_code"] == 0
    assert statuses(document) == {
        **{("reference-float64", op): "pass" for op in ("softmax", "embedding", "layer_norm")},
        **{(f"reference-{d}", op): "unsupported" for d in ("float32", "float16", "bfloat16")
           for op in ("softmax", "embedding", "layer_norm")}}
    targets = {t["id"]: t for t in document["targets"]}
    assert targets["reference-float64"]["status"] == "tested"
    assert targets["reference-float16"]["status"] == "unsupported"
    assert "float64 only" in targets["reference-float16"]["reason"]
    assert set(targets["reference-float64"]["versions"]) >= {"transformer-conformance", "numpy", "scipy"}
    blas = document["environment"]["blas"]  # the host's BLAS kernel, part of any figure from this run
    assert blas and all(lib["architecture"] and lib["num_threads"] >= 1 for lib in blas), blas
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "0" and int(suite.get("tests")) == 16
    assert (tmp_path / "report.md").read_text().startswith("## Transformer conformance gate: PASS")


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    """One gate run under xdist over three broken backends: a wrong softmax, a softmax that kills
    its process, a layer_norm that never returns. (exit status, stdout, report directory)"""
    report_dir = tmp_path_factory.mktemp("broken")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = gate(*[f"--backend={BROKEN}:{name}" for name in ("wrong_softmax", "crashing", "hanging")],
                    "--dtype", "float64", "--ops", "softmax,layer_norm", "--timeout", "8", report_dir=report_dir,
                    workers="2")
    return code, out.getvalue(), report_dir


def test_broken_backends_fail_the_gate_with_a_status_per_op(broken_run):
    code, out, report_dir = broken_run
    assert code == 1 and "conformance gate: FAIL (exit 1)" in out
    document = load_report(report_dir)
    assert statuses(document) == {
        ("wrong_softmax-float64", "softmax"): "fail", ("wrong_softmax-float64", "layer_norm"): "pass",
        ("crashing-float64", "softmax"): "crashed", ("crashing-float64", "layer_norm"): "pass",
        ("hanging-float64", "softmax"): "pass", ("hanging-float64", "layer_norm"): "timeout"}
    assert document["summary"]["reasons"] == [
        "3 op result(s) failed: softmax on wrong_softmax-float64 (fail), softmax on crashing-float64 (crashed), "
        "layer_norm on hanging-float64 (timeout)"]
    suite = ET.parse(report_dir / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "2"  # wrong_softmax's two softmax tests
    # the timeout, and the crash (the crashing softmax's other test crashes too, or is skipped as
    # "not run" when it starts after the first crash: which depends on the workers' timing)
    assert int(suite.get("errors")) in (2, 3)


def test_the_report_names_the_op_the_worst_element_and_the_shrunk_example(broken_run):
    _, out, report_dir = broken_run
    softmax = next(r for r in load_report(report_dir)["results"] if r["status"] == "fail")
    assert {f["kind"] for f in softmax["failures"]} == {"property", "differential"}
    for failure in softmax["failures"]:
        assert failure["message"].startswith("WrongSoftmax[float64, cpu].softmax: out[")
        assert failure["worst_element"].startswith("out[")
        assert failure["falsifying_example"].startswith(("Failing test case: test_softmax", "Falsifying example"))
        assert "x=array(" in failure["falsifying_example"]
        assert failure["reproduce_blob"].startswith("@reproduce_failure(")
        assert failure["nodeid"] in out and failure["message"] in out
    assert "--ops softmax" in softmax["rerun"]
    markdown = (report_dir / "report.md").read_text()
    assert "| softmax | **fail** |" in markdown and "worst element: `out[" in markdown and "Shrunk example" in markdown
    assert "wrong_softmax-float64 (WrongSoftmax)" in out  # the backend's own name beside the factory's


def test_a_failure_carries_its_backend_calls_readable_and_saved_with_a_reproduction(broken_run, capsys):
    """The failing example's inputs are in the message (shapes, scalars, small arrays in full)
    and in REPORT_DIR/cases/*.npz; ``repro`` replays them: the broken backend still fails, the
    reference conforms on the same inputs."""
    _, out, report_dir = broken_run
    softmax = next(r for r in load_report(report_dir)["results"] if r["status"] == "fail")
    for failure in softmax["failures"]:
        assert failure["inputs"].startswith("softmax(float64(")
        assert failure["reproduce"] == f"python -m conformance repro {failure['case_file']}"
        assert Path(failure["case_file"]).parent == report_dir / "cases"
        assert f"reproduce the calls: {failure['reproduce']}" in out
        assert main(["repro", failure["case_file"]]) == 1
        assert "call 1: softmax: WrongSoftmax[float64, cpu].softmax: out[" in capsys.readouterr().out
        assert main(["repro", failure["case_file"], "--backend", "reference"]) == 0
        assert "conforms" in capsys.readouterr().out
    differential = next(f for f in softmax["failures"] if f["kind"] == "differential")
    assert differential["tolerance"].startswith("tolerance ") and " x bound " in differential["tolerance"]


def two_decimal(values, scale):
    """Every value a multiple of scale / 100 (conformance.kit.strategies.two_decimals)."""
    steps = np.asarray(values) / scale * 100
    return bool(np.allclose(steps, np.round(steps), rtol=0, atol=1e-6))


@pytest.mark.parametrize("scale", SCALES)
def test_an_array_shrinks_to_two_decimals_of_its_scale(scale):
    """The shrunk array is the simplest: two decimals of its scale, not a seed's 17 digits."""
    shrunk = find(arrays((2, 3), scales=(scale,)), lambda x: (np.abs(x) > scale).sum() >= 2,
                  settings=settings(database=None, derandomize=True, max_examples=500))
    assert two_decimal(shrunk, scale), shrunk
    assert not two_decimal(np.random.default_rng(0).normal(0.0, scale, (2, 3)), scale)  # the check can fail


def test_the_saved_case_of_a_shrunk_failure_holds_two_decimal_arrays(broken_run):
    _, _, report_dir = broken_run
    softmax = next(r for r in load_report(report_dir)["results"] if r["status"] == "fail")
    differential = next(f for f in softmax["failures"] if f["kind"] == "differential")
    _, calls = failing_cases.load(Path(differential["case_file"]))
    (op, (x,), _), *_ = calls
    assert op == "softmax" and any(two_decimal(x, scale) for scale in SCALES), x


def test_repro_compares_token_ids_exactly(tmp_path, capsys):
    """A greedy-decoding case replays with token ids compared exactly (no error bound exists)."""
    import reference

    config = {"d_model": 4, "num_heads": 2, "d_ff": 4, "num_encoder_layers": 1, "num_decoder_layers": 1,
              "src_vocab_size": 5, "tgt_vocab_size": 5}
    args = [np.array([[1, 2, 3]]), reference.init_params(config, 0), config, 4, 0, 1]
    case = failing_cases.save(tmp_path / "greedy.npz", [("greedy_decode", args, {})],
                              target={"spec": "reference", "dtype": "float64", "device": "cpu"}, nodeid="t")
    assert main(["repro", str(case)]) == 0
    assert "call 1: greedy_decode: conforms" in capsys.readouterr().out


def test_a_crash_and_a_hang_are_reported_with_where_they_happened(broken_run):
    _, _, report_dir = broken_run
    results = load_report(report_dir)["results"]
    crash = next(r for r in results if r["status"] == "crashed")["failures"][0]
    assert "crashed while running" in crash["message"]
    hang = next(r for r in results if r["status"] == "timeout")["failures"][0]
    assert hang["message"].startswith("no result after 0:00:08 (the per-test timeout, or the per-call watchdog")
    assert "in layer_norm" in hang["failure_text"]  # the stack where it hung


def deviations_file(tmp_path):
    path = tmp_path / "known.toml"
    path.write_text(textwrap.dedent(f"""
        [[deviation]]
        backend = "{BROKEN}:wrong_softmax"
        dtype = "float64"
        op = "softmax"
        reason = "divides by sum + 0.01, accepted for this test"

        [[deviation]]
        backend = "wrong_softmax"
        dtype = "*"
        test = "test_layer_norm_zero_mean"
        reason = "fixed long ago"
    """))
    return path


def test_known_deviations_accept_a_failure_and_report_stale_entries(tmp_path, capsys):
    known = deviations_file(tmp_path)
    args = ["--backend", f"{BROKEN}:wrong_softmax", "--dtype", "float64", "--ops", "softmax,layer_norm",
            "--known-deviations", str(known)]
    assert gate(*args, report_dir=tmp_path / "r") == 0
    out = capsys.readouterr().out
    assert "known deviation" in out and f"stale known deviation: {known}:8:" in out
    document = load_report(tmp_path / "r")
    assert statuses(document) == {("wrong_softmax-float64", "softmax"): "known deviation",
                                  ("wrong_softmax-float64", "layer_norm"): "pass"}
    assert [d["line"] for d in document["known_deviations"]["stale"]] == [8]
    assert [d["line"] for d in document["known_deviations"]["applied"]] == [2]
    suite = ET.parse(tmp_path / "r" / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "0" and suite.get("skipped") == "2"
    assert gate(*args, "--strict-deviations", report_dir=tmp_path / "strict") == 1


def test_require_fails_when_a_required_op_is_not_implemented(tmp_path, capsys):
    args = ["--backend", f"{BROKEN}:no_embedding", "--dtype", "float64", "--ops", "softmax"]
    assert gate(*args, report_dir=tmp_path / "a") == 0  # not implemented is not a failure ...
    assert gate(*args, "--require", "embedding", report_dir=tmp_path / "b") == 1  # ... unless required
    document = load_report(tmp_path / "b")
    assert statuses(document) == {("no_embedding-float64", "softmax"): "pass",
                                  ("no_embedding-float64", "embedding"): "not implemented"}  # --ops filtered layer_norm
    assert document["require"]["missing"] == [{"op": "embedding", "target": "no_embedding-float64",
                                               "status": "not implemented", "requirement": "embedding",
                                               "not_tested": []}]
    failures = ET.parse(tmp_path / "b" / "junit.xml").getroot().findall(".//testcase/failure")
    assert [f.get("message") for f in failures] == [
        "required but not implemented: embedding on no_embedding-float64 (not implemented)"]


@pytest.mark.parametrize("spec, libraries", [("torch-nn", {"torch"}), ("torch-sdpa", {"torch"}),
                                             ("jax", {"jax", "jaxlib", "flax"})])
def test_the_report_records_the_versions_of_the_libraries_a_builtin_backend_runs(spec, libraries):
    assert set(backend_versions(spec)) == {"transformer-conformance"} | libraries


def test_selecting_no_test_is_an_error(tmp_path, capsys):
    assert gate("--backend", "reference", "--ops", "greedy_decode", report_dir=tmp_path) == 2
    assert "no tests were collected (--ops greedy_decode)" in capsys.readouterr().err
    assert load_report(tmp_path)["summary"]["verdict"] == "error"


def test_a_selection_with_no_supported_target_is_an_error(capsys):
    assert gate("--backend", "reference", "--dtype", "float32") == 2
    assert "no target of this selection is supported here: reference-float32" in capsys.readouterr().err


@pytest.mark.parametrize(("spec", "message"), [
    ("nope", "unknown backend 'nope'; known backends: .*reference"),
    ("no_such_module_xyz:factory", "backend 'no_such_module_xyz:factory' could not be loaded: ModuleNotFoundError"),
    (f"{BROKEN}:raising_factory", r"the factory raised for dtype='float32', device='cpu': "
                                  r"RuntimeError: libfoo.so: cannot open shared object file"),
])
def test_set_up_errors_exit_2_with_a_clear_message_and_an_error_report(tmp_path, capsys, spec, message):
    assert gate("--backend", spec, "--dtype", "float32", report_dir=tmp_path) == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)
    document = load_report(tmp_path)
    assert document["summary"]["verdict"] == "error" and document["results"] == []


def test_a_backend_module_that_fails_to_import_exits_2(tmp_path, capsys):
    module = tmp_path / "bad_backend.py"
    module.write_text("raise ImportError('libcudart.so.12: cannot open shared object file')\n")
    assert gate("--backend", f"{module}:factory") == 2
    assert "ImportError: libcudart.so.12: cannot open shared object file" in capsys.readouterr().err


def test_a_known_deviations_syntax_error_exits_2_naming_file_and_line(tmp_path, capsys):
    known = tmp_path / "known.toml"
    known.write_text('[[deviation]]\nbackend = "torch"\ndtype = float32\n')
    assert gate("--backend", "reference", "--known-deviations", str(known)) == 2
    assert f"{known}:3:9: TOML syntax error" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["run", "--ops", "softmaxx"], ["run", "--dtype", "float8"], ["run", "-n", "many"],
                                  []])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_the_module_runs_as_a_program():
    done = subprocess.run([sys.executable, "-m", "conformance", "run", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--known-deviations FILE" in done.stdout
