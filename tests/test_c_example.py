"""The C consumer of examples/c/ (issue 16): built with the system C compiler, it reads the golden
vectors of layout npy with its single-header reader and writes its float32 outputs; ``golden
check --require`` passes for the ops it implements, and fails with a bug compiled in."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conformance import golden
from conformance.gate.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "c"
IMPLEMENTED = "softmax,positional_encoding,embedding,layer_norm,feed_forward"
COMPILER = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def build(tmp_path: Path, *defines: str) -> Path:
    """examples/c/engine.c compiled with warnings as errors (and ``-D`` each of ``defines``)."""
    if COMPILER is None:
        pytest.skip("no C compiler (cc, gcc or clang, or $CC) on this machine: the C example cannot be built")
    binary = tmp_path / ("engine" + "".join(f"-{d}" for d in defines))
    command = [COMPILER, "-O2", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror",
               *(f"-D{d}" for d in defines), "-o", str(binary), str(EXAMPLE / "engine.c"), "-lm"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return binary


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("golden")
    assert main(["golden", "export", str(directory)]) == 0
    return directory


def run_engine(binary: Path, golden_dir: Path, outputs: Path) -> str:
    outputs.mkdir()
    done = subprocess.run([str(binary), str(golden_dir), str(outputs)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_c_engine_passes_the_check_of_the_ops_it_implements(golden_dir, tmp_path, capsys):
    stdout = run_engine(build(tmp_path), golden_dir, tmp_path / "out")
    assert "attention-0: not implemented (attention)" in stdout
    code = main(["golden", "check", str(golden_dir), "--outputs", str(tmp_path / "out"), "--require", IMPLEMENTED])
    out = capsys.readouterr().out
    assert code == 0, out
    cases = golden.load_manifest(golden_dir)["cases"]
    n = sum(c["op"] in IMPLEMENTED.split(",") for c in cases)
    assert f"golden check: PASS (exit 0) at float32: {n} checked ({n} passed, 0 failed), {len(cases) - n} not implemented" in out


@pytest.mark.parametrize(("bug", "case"), [("BUG_SOFTMAX_NO_MAX", "softmax-3"), ("BUG_EPS_OUTSIDE_SQRT", "layer_norm-3")])
def test_a_bug_compiled_into_the_c_engine_fails_the_check(golden_dir, tmp_path, capsys, bug, case):
    run_engine(build(tmp_path, bug), golden_dir, tmp_path / "out")
    code = main(["golden", "check", str(golden_dir), "--outputs", str(tmp_path / "out"), "--require", IMPLEMENTED])
    out = capsys.readouterr().out
    assert code == 1 and f"FAIL: golden/{case}: golden:{case}.npy[float32, -]" in out
