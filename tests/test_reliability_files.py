"""Issue 8, bad files: golden directories and known-deviations files that are damaged, hostile or
incomplete give clear errors; nothing outside the golden and outputs directories is opened, and
nothing in them is executed (no unpickling).

tests/test_golden.py and tests/test_deviations.py cover the common cases (truncated and
mis-shaped files, pickles, ``../`` names in the output field, symlinks, TOML syntax errors); this
module adds the cases they leave out: traversal names in every file field of the manifest, a
spy on every file opened, pickles whose loading would run code, files the manifest does not
list, a directory where a file should be, the wrong dtype with the right shape, and
known-deviations files that are not UTF-8, not tables, or stop the gate (which still writes its
reports).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.registry import load_backend
from conformance.gate import deviations
from conformance import golden
from conformance.gate.cli import main
from conformance.golden import GoldenError

REAL_OPEN = builtins.open
KEPT = ("softmax-0", "embedding-0")  # two small cases: exported in a second, not the whole set


@pytest.fixture(scope="module")
def small_golden(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A golden directory of the zip layout (npz, format 1; tests/test_golden.py covers the npy
    layout's files) with two cases, and the reference's outputs for them."""
    directory = tmp_path_factory.mktemp("golden")
    golden.export(directory, layout="npz", cases=[c for c in golden.build_cases() if c.name in KEPT])
    outputs = tmp_path_factory.mktemp("outputs")
    assert golden.run_backend(directory, outputs, load_backend("reference", dtype="float64")) == len(KEPT)
    return directory, outputs


@pytest.fixture
def dirs(small_golden: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """Private copies to damage: (golden directory, outputs directory)."""
    return (shutil.copytree(small_golden[0], tmp_path / "golden"),
            shutil.copytree(small_golden[1], tmp_path / "out"))


def edit_manifest(directory: Path, edit: Any) -> Path:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    return path


class Trap:
    """Unpickling it calls ``open(sentinel, "w")``: a harmless stand-in for running code."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, ...]:
        return (REAL_OPEN, (str(self.sentinel), "w"))


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path opened through open()/io.open() while the test runs (np.load and pathlib use them)."""
    paths: list[Path] = []

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, bytes, os.PathLike)):
            paths.append(Path(os.fsdecode(file)).resolve())
        return REAL_OPEN(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)
    return paths


def inside(paths: list[Path], *directories: Path) -> bool:
    roots = [d.resolve() for d in directories]
    return all(any(p.is_relative_to(root) for root in roots) for p in paths)


# --- golden: names in the manifest ----------------------------------------------------------------

@pytest.mark.parametrize("part", ["inputs", "expected", "output"])
@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", "x/../../outside.npz",
                                  "..\\..\\outside.npz", "outside.npz\x00.npy", ""])
def test_a_traversal_name_in_any_file_field_is_refused_before_anything_is_read(dirs, opened, part, name):
    directory, outputs = dirs
    manifest = edit_manifest(directory, lambda m: m["cases"][1][part].update(file=name))
    opened.clear()
    refused = rf"^{re.escape(str(manifest))}: case 'embedding-0' {part} file name .* is not a plain file name"
    with pytest.raises(GoldenError, match=refused):
        golden.check(directory, outputs)
    assert opened == [manifest.resolve()]  # only the manifest was read


def test_a_traversal_case_name_is_refused(dirs):
    directory, outputs = dirs
    edit_manifest(directory, lambda m: m["cases"][0].update(name="../../etc/passwd"))
    with pytest.raises(GoldenError, match="case file name '../../etc/passwd' is not a plain file name"):
        golden.check(directory, outputs)


def test_check_and_run_open_nothing_outside_their_directories(dirs, opened, tmp_path):
    directory, outputs = dirs
    golden.check(directory, outputs)
    golden.run_backend(directory, tmp_path / "new_outputs", load_backend("reference", dtype="float64"))
    assert opened and inside(opened, directory, outputs, tmp_path / "new_outputs"), opened


# --- golden: files that would run code ------------------------------------------------------------

def test_a_pickled_output_that_would_run_code_fails_its_case_and_runs_nothing(dirs, tmp_path):
    directory, outputs = dirs
    sentinel = tmp_path / "pwned"
    (outputs / "softmax-0.npy").write_bytes(pickle.dumps(Trap(sentinel)))
    np.save(outputs / "embedding-0.npy", np.array([Trap(sentinel)], dtype=object), allow_pickle=True)
    outcome = golden.check(directory, outputs, dtype="float64")
    messages = {t.test: t.message for t in outcome.tests}
    assert "a pickle: it does not start with the .npy magic" in messages["golden/softmax-0"]
    assert "holds an object array (pickled Python objects); refused" in messages["golden/embedding-0"]
    assert not sentinel.exists()


@pytest.mark.parametrize("kind", ["expected", "inputs"])
def test_a_golden_file_holding_an_object_array_is_refused_unread(dirs, tmp_path, kind):
    directory, outputs = dirs
    sentinel = tmp_path / "pwned"
    path = directory / f"softmax-0.{kind}.npz"
    np.savez(path, **{key: np.array([Trap(sentinel)], dtype=object) for key in np.load(path).files})
    with pytest.raises(GoldenError, match=rf"^{re.escape(str(path))}: cannot be read without pickling"):
        if kind == "expected":
            golden.check(directory, outputs)
        else:
            golden.run_backend(directory, tmp_path / "o", load_backend("reference", dtype="float64"))
    assert not sentinel.exists()


def test_a_file_the_manifest_does_not_list_is_never_opened(dirs, tmp_path, request):
    directory, outputs = dirs
    sentinel = tmp_path / "pwned"
    for extra in (outputs / "softmax-9.npy", directory / "softmax-9.expected.npz"):
        extra.write_bytes(pickle.dumps(Trap(sentinel)))
    opened = request.getfixturevalue("opened")  # spying from here on
    outcome = golden.check(directory, outputs)
    assert [t.test for t in outcome.tests] == ["golden/softmax-0", "golden/embedding-0"]
    assert not any(p.name.startswith("softmax-9") for p in opened) and not sentinel.exists()


# --- golden: incomplete or mis-typed files --------------------------------------------------------

def test_a_missing_expected_file_is_an_error_naming_it(dirs):
    directory, outputs = dirs
    (directory / "embedding-0.expected.npz").unlink()
    with pytest.raises(GoldenError, match=rf"^{re.escape(str(directory / 'embedding-0.expected.npz'))}: missing$"):
        golden.check(directory, outputs)


@pytest.mark.parametrize("field", ["expected", "output", "op", "arguments"])
def test_a_manifest_case_missing_a_field_is_an_error(dirs, field):
    directory, outputs = dirs
    manifest = edit_manifest(directory, lambda m: m["cases"][0].pop(field))
    with pytest.raises(GoldenError, match=rf"^{re.escape(str(manifest))}: case #0 is missing a field: '{field}'"):
        golden.check(directory, outputs)


def test_an_expected_array_of_the_right_shape_but_the_wrong_dtype_is_an_error(dirs):
    directory, outputs = dirs
    path = directory / "softmax-0.expected.npz"
    with np.load(path) as content:
        arrays = {key: content[key] for key in content.files}
    np.savez(path, **{**arrays, "expected": arrays["expected"].astype(np.float32)})
    shape = list(arrays["expected"].shape)
    with pytest.raises(GoldenError, match=rf"array 'expected' is float32\[{', '.join(map(str, shape))}\], the "
                                          rf"manifest says float64\[{', '.join(map(str, shape))}\]"):
        golden.check(directory, outputs)


def test_a_truncated_inputs_file_is_an_error_for_golden_run(dirs, tmp_path, capsys):
    directory, _ = dirs
    path = directory / "embedding-0.inputs.npz"
    path.write_bytes(path.read_bytes()[:150])
    argv = ["golden", "run", str(directory), "--backend", "reference", "--dtype", "float64",
            "--outputs", str(tmp_path / "o")]
    assert main(argv) == 2
    assert f"{path}: cannot be read without pickling" in capsys.readouterr().err


def test_a_directory_where_an_output_file_should_be_fails_that_case_only(dirs):
    directory, outputs = dirs
    (outputs / "softmax-0.npy").unlink()
    (outputs / "softmax-0.npy").mkdir()
    outcome = golden.check(directory, outputs, dtype="float64")
    result = {t.test: t for t in outcome.tests}
    assert result["golden/softmax-0"].outcome == "failed"
    assert result["golden/softmax-0"].message.startswith(f"{outputs / 'softmax-0.npy'}: cannot be read")
    assert result["golden/embedding-0"].outcome == "passed"


def test_golden_check_through_the_cli_exits_2_naming_the_bad_manifest(dirs, capsys):
    directory, outputs = dirs
    manifest = edit_manifest(directory, lambda m: m["cases"][0]["inputs"].update(file="../../etc/passwd"))
    assert main(["golden", "check", str(directory), "--outputs", str(outputs)]) == 2
    err = capsys.readouterr().err
    assert f"{manifest}: case 'softmax-0' inputs file name '../../etc/passwd' is not a plain file name" in err


# --- known-deviations files -----------------------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    (b'[[deviation]]\nbackend = "torch"\nreason = "caf\xe9"\n', r"not UTF-8 text"),
    (b"deviation = 3\n", r"'deviation' must be an array of tables: write \[\[deviation\]\]"),
    (b"deviation = [1, 2]\n", r"deviation #1: must be a table"),
    (b'deviation = ["softmax"]\n', r"deviation #1: must be a table"),
    (b"\x00\x01\x02", r"TOML syntax error"),
    (b'[[deviation]]\nbackend = "torch"\n[[deviation]\n', r":3:\d+: TOML syntax error"),
])
def test_a_malformed_known_deviations_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "known.toml"
    path.write_bytes(content)
    with pytest.raises(deviations.DeviationsError, match=rf"{re.escape(str(path))}.*{message}"):
        deviations.load(path)


def test_a_directory_as_the_known_deviations_file_is_a_clear_error(tmp_path):
    message = rf"known-deviations file {re.escape(str(tmp_path))}: cannot be read"
    with pytest.raises(deviations.DeviationsError, match=message):
        deviations.load(tmp_path)


def test_a_known_deviations_syntax_error_stops_the_gate_which_still_writes_its_reports(tmp_path, capsys):
    known = tmp_path / "known.toml"
    known.write_text('[[deviation]]\nbackend = "numpy"\ndtype = "float32"\nop = softmax\nreason = "x"\n')
    report_dir = tmp_path / "reports"
    argv = ["run", "--backend", "numpy", "--dtype", "float32", "--ops", "softmax", "--known-deviations", str(known),
            "--report-dir", str(report_dir)]
    assert main(argv) == 2
    assert f"{known}:4:6: TOML syntax error" in capsys.readouterr().err
    for name in ("report.json", "junit.xml", "report.md"):
        assert (report_dir / name).is_file()
    document = json.loads((report_dir / "report.json").read_text())
    assert document["summary"]["verdict"] == "error" and document["errors"][0].startswith(f"{known}:4:6:")
    assert f"{known}:4:6: TOML syntax error" in (report_dir / "report.md").read_text()
