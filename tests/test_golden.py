"""Golden vectors: export -> a backend's outputs -> check round-trips, and every bad file (corrupted,
pickle-bearing, mis-shaped, missing, outside the directory) is refused with a message naming it."""

import json
import pickle
import shutil

import ml_dtypes
import numpy as np
import pytest

from backends.contract import OPS
from backends.registry import load_backend
from conformance import golden
from conformance.cli import main
from conformance.golden import GoldenError


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("golden")
    golden.export(directory)
    return directory


@pytest.fixture(scope="module")
def torch_outputs(golden_dir, tmp_path_factory):
    pytest.importorskip("torch")
    outputs = tmp_path_factory.mktemp("torch-float32")
    assert golden.run_backend(golden_dir, outputs, load_backend("torch", dtype="float32")) == 29
    return outputs


@pytest.fixture
def outputs(torch_outputs, tmp_path):
    """A private copy of the torch float32 outputs, to damage."""
    return shutil.copytree(torch_outputs, tmp_path / "out")


@pytest.fixture
def manifest(golden_dir):
    return json.loads((golden_dir / "manifest.json").read_text())


def case_result(outcome, name):
    return next(t for t in outcome.tests if t.test == f"golden/{name}")


def test_the_manifest_covers_every_op_with_versioned_seeded_cases(manifest, golden_dir):
    assert manifest["format_version"] == golden.FORMAT_VERSION and manifest["seed"] == golden.DEFAULT_SEED
    assert manifest["contract_version"] == 1 and manifest["dtypes"] == ["float64", "float32", "float16", "bfloat16"]
    assert {c["op"] for c in manifest["cases"]} == set(OPS)
    assert all(sum(c["op"] == op for c in manifest["cases"]) >= 2 for op in OPS)
    for case in manifest["cases"]:
        for part in ("inputs", "expected"):
            assert (golden_dir / case[part]["file"]).is_file()
        assert case["output"]["file"] == f"{case['name']}.npy"


def test_float_inputs_are_exact_in_float16_and_bfloat16(manifest, golden_dir):
    for case in manifest["cases"]:
        with np.load(golden_dir / case["inputs"]["file"], allow_pickle=False) as arrays:
            for key in arrays.files:
                a = arrays[key]
                if a.dtype == np.float64:
                    assert np.array_equal(a.astype(np.float16).astype(np.float64), a), (case["name"], key)
                    assert np.array_equal(a.astype(ml_dtypes.bfloat16).astype(np.float64), a), (case["name"], key)


def test_inputs_unflatten_to_the_contract_arguments(manifest, golden_dir):
    case = next(c for c in manifest["cases"] if c["op"] == "forward")
    arguments = golden.read_case(golden_dir, case)
    assert list(arguments) == ["src_ids", "tgt_ids", "params", "config", "src_mask", "tgt_mask"]
    params = arguments["params"]
    assert len(params["encoder"]) == arguments["config"]["num_encoder_layers"] == 2
    assert params["decoder"][1]["cross_attn"]["w_q"].shape == (16, 16)
    assert arguments["config"]["layer_norm_eps"] == 1e-5  # defaults spelled out


def test_export_is_deterministic_in_the_seed(golden_dir, manifest, tmp_path):
    again = golden.export(tmp_path)
    assert again["cases"] == manifest["cases"]
    for case in manifest["cases"]:
        for part in ("inputs", "expected"):
            with np.load(golden_dir / case[part]["file"]) as first, np.load(tmp_path / case[part]["file"]) as second:
                for key in first.files:
                    assert np.array_equal(first[key], second[key], equal_nan=True), (case["name"], key)


def test_round_trip_with_the_torch_backend(golden_dir, torch_outputs, capsys):
    outcome = golden.check(golden_dir, torch_outputs)
    assert outcome.dtype == "float32"
    assert [t.nodeid for t in outcome.tests if t.outcome != "passed"] == []
    assert max(t.worst_ratio for t in outcome.tests) <= 1.0
    assert main(["golden", "check", str(golden_dir), "--outputs", str(torch_outputs)]) == 0
    assert "29/29 cases within tolerance at float32" in capsys.readouterr().out


@pytest.mark.parametrize(("spec", "dtype"), [("reference", "float64"), ("numpy", "bfloat16")])
def test_round_trip_at_other_precisions(golden_dir, tmp_path, spec, dtype):
    golden.run_backend(golden_dir, tmp_path, load_backend(spec, dtype=dtype))
    outcome = golden.check(golden_dir, tmp_path, dtype=dtype)
    assert not outcome.failures, [t.message for t in outcome.failures]
    skipped = {t.op for t in outcome.tests if t.outcome != "passed"}
    assert skipped == (set() if dtype in golden.EXACT_TOKEN_DTYPES else {"greedy_decode"}), skipped


def test_a_wrong_value_fails_naming_the_worst_element(golden_dir, outputs, tmp_path):
    out = np.load(outputs / "layer_norm-1.npy")
    out[2, 5] += 1e-3
    np.save(outputs / "layer_norm-1.npy", out)
    report_dir = tmp_path / "r"
    assert main(["golden", "check", str(golden_dir), "--outputs", str(outputs), "--report-dir", str(report_dir)]) == 1
    result = case_result(golden.check(golden_dir, outputs), "layer_norm-1")
    assert result.outcome == "failed"
    assert result.message.startswith("golden:layer_norm-1.npy[float32, -].layer_norm: out[2, 5] = ")
    document = json.loads((tmp_path / "r" / "report.json").read_text())
    assert document["kind"] == "golden" and document["summary"]["verdict"] == "fail"
    failing = [r for r in document["results"] if r["status"] == "fail"]
    assert [(r["op"], r["failures"][0]["worst_element"]) for r in failing] == [("layer_norm", "out[2, 5]")]
    assert (tmp_path / "r" / "junit.xml").exists() and (tmp_path / "r" / "report.md").exists()


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "not a readable .npy array"),
    (lambda p: p.write_bytes(b"garbage" * 10), "not an .npy file: it does not start with the .npy magic"),
    (lambda p: p.write_bytes(pickle.dumps(np.zeros((2, 5)))), "a pickle: it does not start with the .npy magic"),
    (lambda p: np.save(p, np.array([{"x": 1}], dtype=object), allow_pickle=True), "holds an object array"),
    (lambda p: np.save(p, np.zeros((5, 2))), r"shape \(5, 2\), expected \(2, 5\)"),
    (lambda p: np.save(p, np.zeros((2, 5), dtype=np.int64)), "dtype int64, expected floating point"),
])
def test_a_bad_output_file_fails_its_case_naming_the_file(golden_dir, outputs, damage, message):
    path = outputs / "softmax-0.npy"
    damage(path)
    result = case_result(golden.check(golden_dir, outputs, dtype="float32"), "softmax-0")
    assert result.outcome == "failed"
    assert result.message.startswith(str(path)) and pytest.importorskip("re").search(message, result.message)


def test_a_missing_output_is_not_implemented_and_no_output_at_all_is_an_error(golden_dir, outputs, tmp_path, capsys):
    (outputs / "embedding-0.npy").unlink()
    (outputs / "embedding-1.npy").unlink()
    statuses = {r.op: r.status for r in golden.check(golden_dir, outputs).op_results()}
    assert statuses["embedding"] == "not implemented" and statuses["softmax"] == "pass"
    (tmp_path / "empty").mkdir()
    assert main(["golden", "check", str(golden_dir), "--outputs", str(tmp_path / "empty")]) == 2


def test_outputs_of_several_dtypes_need_dtype(golden_dir, outputs):
    np.save(outputs / "softmax-0.npy", np.load(outputs / "softmax-0.npy").astype(np.float64))
    with pytest.raises(GoldenError, match=r"outputs of several dtypes \(float32, float64\); pass --dtype"):
        golden.check(golden_dir, outputs)


@pytest.fixture
def golden_copy(golden_dir, tmp_path):
    return shutil.copytree(golden_dir, tmp_path / "golden")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "cannot be read without pickling .*BadZipFile"),
    (lambda p: np.savez(p, expected=np.array([None], dtype=object), tol_float64=np.zeros(1)),
     "cannot be read without pickling .*Object arrays cannot be loaded"),
    (lambda p: p.write_bytes(pickle.dumps({"expected": np.zeros((2, 5))})), "not an .npz archive|cannot be read"),
    (lambda p: np.savez(p, **{k: np.zeros((3, 3)) for k in ("expected", "compare", "tol_float64", "tol_float32",
                                                            "tol_float16", "tol_bfloat16")}),
     r"array '\w+' is float64\[3, 3\], the manifest says"),
])
def test_a_bad_golden_file_is_an_error_naming_it(golden_copy, outputs, damage, message, capsys):
    path = golden_copy / "softmax-0.expected.npz"
    damage(path)
    with pytest.raises(GoldenError, match=rf"^{path}: ({message})"):
        golden.check(golden_copy, outputs)
    assert main(["golden", "check", str(golden_copy), "--outputs", str(outputs)]) == 2
    assert str(path) in capsys.readouterr().err


def test_a_pickle_bearing_input_file_is_refused(golden_copy, manifest, tmp_path):
    path = golden_copy / "softmax-0.inputs.npz"
    np.savez(path, x=np.array([object()] * 10, dtype=object).reshape(2, 5))
    with pytest.raises(GoldenError, match=rf"^{path}: cannot be read without pickling"):
        golden.run_backend(golden_copy, tmp_path / "out", load_backend("reference", dtype="float64"))


@pytest.mark.parametrize("name", ["../outside.npy", "/etc/passwd", "sub/dir.npy", "..", ".hidden.npy"])
def test_manifest_names_that_leave_the_directory_are_refused(golden_copy, outputs, name):
    manifest_path = golden_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["cases"][0]["output"]["file"] = name
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(GoldenError, match="is not a plain file name"):
        golden.check(golden_copy, outputs)


def test_a_link_out_of_the_directory_is_refused(golden_copy, outputs, tmp_path):
    outside = tmp_path / "elsewhere.npz"
    shutil.copy(golden_copy / "softmax-0.expected.npz", outside)
    (golden_copy / "softmax-0.expected.npz").unlink()
    (golden_copy / "softmax-0.expected.npz").symlink_to(outside)
    with pytest.raises(GoldenError, match=r"resolves outside .*refused"):
        golden.check(golden_copy, outputs)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(format_version=2), "format_version 2; this tool reads version 1"),
    (lambda m: m.update(format="something else"), "not a golden manifest"),
    (lambda m: m["cases"][0].update(op="softmaxx"), "case #0: unknown op 'softmaxx'"),
    (lambda m: m["cases"][0].pop("inputs"), "case #0 is missing a field: 'inputs'"),
    (lambda m: m["cases"][0]["arguments"][0].update(array="nope"), "case 'softmax-0': argument 'x' names no array"),
])
def test_a_bad_manifest_is_an_error_naming_it(golden_copy, outputs, edit, message):
    path = golden_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(GoldenError, match=rf"^{path}: {message}"):
        golden.check(golden_copy, outputs)


def test_a_missing_or_corrupted_manifest(tmp_path, outputs):
    with pytest.raises(GoldenError, match="no manifest"):
        golden.check(tmp_path, outputs)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(GoldenError, match="not a readable JSON manifest"):
        golden.check(tmp_path, outputs)
