"""Golden vectors: export -> a backend's outputs -> check round-trips in both layouts (npy, the
default, and the old npz), and every bad file (corrupted, pickle-bearing, mis-shaped, missing,
outside the directory) is refused with a message naming it. The checker's CI behaviours and the
hazard cases: tests/test_golden_check.py."""

import json
import pickle
import shutil

import ml_dtypes
import numpy as np
import pytest

from backends.contract import OPS
from backends.registry import load_backend
from conformance import golden
from conformance.gate.cli import main
from conformance.golden import GoldenError


@pytest.fixture(scope="module")
def torch_outputs(golden_dir, tmp_path_factory):
    pytest.importorskip("torch")
    outputs = tmp_path_factory.mktemp("torch-float32")
    cases = golden.load_manifest(golden_dir)["cases"]
    assert golden.run_backend(golden_dir, outputs, load_backend("torch", dtype="float32")) == len(cases)
    return outputs


OLD_KEPT = ("softmax-0", "layer_norm-1", "feed_forward-1", "encoder_layer-0", "greedy_decode-0")


@pytest.fixture(scope="module")
def old_golden_dir(tmp_path_factory):
    """A few cases in the zip layout (npz, format version 1), which the tools still read."""
    directory = tmp_path_factory.mktemp("golden-npz")
    golden.export(directory, layout="npz", cases=[c for c in golden.build_cases() if c.name in OLD_KEPT])
    return directory


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
    assert manifest["format_version"] == golden.FORMAT_VERSION == 2 and manifest["seed"] == golden.DEFAULT_SEED
    assert manifest["contract_version"] == 1 and manifest["dtypes"] == ["float64", "float32", "float16", "bfloat16"]
    assert {c["op"] for c in manifest["cases"]} == set(OPS)
    assert all(sum(c["op"] == op for c in manifest["cases"]) >= 3 for op in OPS)
    for case in manifest["cases"]:
        for part in ("inputs", "expected"):
            for entry in case[part]["arrays"].values():
                assert (golden_dir / entry["file"]).is_file()
        assert case["output"]["file"] == f"{case['name']}.npy"
    listed = (golden_dir / "cases.txt").read_text(encoding="ascii").splitlines()
    assert listed == [f"{c['name']} {c['op']}" for c in manifest["cases"]]


def test_the_npy_layout_is_plain_little_endian_npy_files_with_scalars_as_0d_arrays(manifest, golden_dir):
    assert not list(golden_dir.glob("*.npz"))
    case = next(c for c in manifest["cases"] if c["name"] == "layer_norm-0")
    files = {k: e["file"] for k, e in case["inputs"]["arrays"].items()}
    assert files == {"x": "layer_norm-0.in.x.npy", "gamma": "layer_norm-0.in.gamma.npy",
                     "beta": "layer_norm-0.in.beta.npy", "eps": "layer_norm-0.in.eps.npy"}
    eps = np.load(golden_dir / files["eps"])
    assert eps.shape == () and eps.dtype == np.dtype("<f8") and eps.item() == 1e-5
    assert (golden_dir / "layer_norm-0.tol.float16.npy").is_file() and (golden_dir / "layer_norm-0.compare.npy").is_file()
    ffn = next(c for c in manifest["cases"] if c["name"] == "feed_forward-1")
    activation = np.load(golden_dir / ffn["inputs"]["arrays"]["activation"]["file"])
    assert activation.dtype == np.dtype("S4") and activation.item() == b"gelu"
    for entry in (e for c in manifest["cases"] for p in ("inputs", "expected") for e in c[p]["arrays"].values()):
        header = (golden_dir / entry["file"]).read_bytes()[:128]
        assert b"'descr': '>" not in header and b"'fortran_order': False" in header, entry["file"]


def test_float_inputs_are_exact_in_float16_and_bfloat16(manifest, golden_dir):
    for case in manifest["cases"]:
        for key, a in golden.read_part(golden_dir, manifest, case, "inputs").items():
            if a.dtype == np.float64 and a.ndim:  # arrays; a 0-d float is a scalar (eps), not rounded
                assert np.array_equal(a.astype(np.float16).astype(np.float64), a), (case["name"], key)
                assert np.array_equal(a.astype(ml_dtypes.bfloat16).astype(np.float64), a), (case["name"], key)


def test_inputs_unflatten_to_the_contract_arguments_scalars_read_from_their_files(manifest, golden_dir):
    case = next(c for c in manifest["cases"] if c["op"] == "forward")
    arguments = golden.read_case(golden_dir, case)
    assert list(arguments) == ["src_ids", "tgt_ids", "params", "config", "src_mask", "tgt_mask"]
    params = arguments["params"]
    assert len(params["encoder"]) == arguments["config"]["num_encoder_layers"] == 2
    assert params["decoder"][1]["cross_attn"]["w_q"].shape == (16, 16)
    assert arguments["config"]["layer_norm_eps"] == 1e-5  # defaults spelled out
    for case in manifest["cases"]:  # every 0-d file holds exactly the manifest's JSON value, typed
        arguments = golden.read_case(golden_dir, case)
        for how in case["arguments"]:
            if "value" in how:
                value = arguments[how["name"]]
                assert value == how["value"] and type(value) is type(how["value"]), (case["name"], how["name"])


def test_export_is_deterministic_in_the_seed(golden_dir, manifest, tmp_path):
    again = golden.export(tmp_path)
    assert again["cases"] == manifest["cases"]
    for case in manifest["cases"]:
        for part in ("inputs", "expected"):
            first, second = (golden.read_part(d, manifest, case, part) for d in (golden_dir, tmp_path))
            for key in first:
                assert np.array_equal(first[key], second[key], equal_nan=first[key].dtype.kind == "f"), (case["name"], key)


def test_the_old_npz_layout_is_still_read_and_checked(old_golden_dir, tmp_path):
    manifest = golden.load_manifest(old_golden_dir)
    assert manifest["format_version"] == 1 and [c["name"] for c in manifest["cases"]] == list(OLD_KEPT)
    assert not list(old_golden_dir.glob("*.npy")) and not (old_golden_dir / "cases.txt").exists()
    assert golden.run_backend(old_golden_dir, tmp_path, load_backend("numpy", dtype="float32")) == len(OLD_KEPT)
    outcome = golden.check(old_golden_dir, tmp_path, require=["all"])
    assert outcome.verdict()[1] == 0 and len(outcome.checked) == len(OLD_KEPT)
    np.save(tmp_path / "layer_norm-1.npy", np.load(tmp_path / "layer_norm-1.npy") * 1.01)
    assert [t.test for t in golden.check(old_golden_dir, tmp_path).failures] == ["golden/layer_norm-1"]


def test_round_trip_with_the_torch_backend(golden_dir, torch_outputs, capsys):
    outcome = golden.check(golden_dir, torch_outputs)
    assert outcome.dtype == "float32"
    assert [t.nodeid for t in outcome.tests if t.outcome != "passed"] == []
    assert max(t.worst_ratio for t in outcome.tests) <= 1.0
    assert main(["golden", "check", str(golden_dir), "--outputs", str(torch_outputs), "--require", "all"]) == 0
    n = len(outcome.tests)
    assert (f"golden check: PASS (exit 0) at float32: {n} checked ({n} passed, 0 failed), 0 not implemented; "
            "required: every op (--require all)") in capsys.readouterr().out


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


@pytest.fixture
def golden_copy(golden_dir, tmp_path):
    return shutil.copytree(golden_dir, tmp_path / "golden")


@pytest.fixture
def old_copy(old_golden_dir, tmp_path):
    return shutil.copytree(old_golden_dir, tmp_path / "golden-npz")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "cannot be read without pickling .*BadZipFile"),
    (lambda p: np.savez(p, expected=np.array([None], dtype=object), tol_float64=np.zeros(1)),
     "cannot be read without pickling .*Object arrays cannot be loaded"),
    (lambda p: p.write_bytes(pickle.dumps({"expected": np.zeros((2, 5))})), "not an .npz archive|cannot be read"),
    (lambda p: np.savez(p, **{k: np.zeros((3, 3)) for k in ("expected", "compare", "tol_float64", "tol_float32",
                                                            "tol_float16", "tol_bfloat16")}),
     r"array '\w+' is float64\[3, 3\], the manifest says"),
])
def test_a_bad_npz_golden_file_is_an_error_naming_it(old_copy, outputs, damage, message, capsys):
    path = old_copy / "softmax-0.expected.npz"
    damage(path)
    with pytest.raises(GoldenError, match=rf"^{path}: ({message})"):
        golden.check(old_copy, outputs)
    assert main(["golden", "check", str(old_copy), "--outputs", str(outputs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("golden check: ERROR (exit 2): ") and str(path) in err


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "not a readable .npy array"),
    (lambda p: np.save(p, np.array([None], dtype=object), allow_pickle=True), "holds an object array"),
    (lambda p: p.write_bytes(pickle.dumps(np.zeros((2, 5)))), "a pickle: it does not start with the .npy magic"),
    (lambda p: np.save(p, np.zeros((3, 3))), r"array 'expected' is float64\[3, 3\], the manifest says float64\[2, 5\]"),
    (lambda p: p.unlink(), "missing"),
])
def test_a_bad_npy_golden_file_is_an_error_naming_it(golden_copy, outputs, damage, message, capsys):
    path = golden_copy / "softmax-0.expected.npy"
    damage(path)
    with pytest.raises(GoldenError, match=rf"^{path}: ({message})"):
        golden.check(golden_copy, outputs)
    assert main(["golden", "check", str(golden_copy), "--outputs", str(outputs)]) == 2
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize(("layout", "name"), [("npz", "softmax-0.inputs.npz"), ("npy", "softmax-0.in.x.npy")])
def test_a_pickle_bearing_input_file_is_refused(golden_copy, old_copy, tmp_path, layout, name):
    directory = old_copy if layout == "npz" else golden_copy
    path = directory / name
    x = np.array([object()] * 10, dtype=object).reshape(2, 5)
    np.savez(path, x=x) if layout == "npz" else np.save(path, x, allow_pickle=True)
    with pytest.raises(GoldenError, match=rf"^{path}: (cannot be read without pickling|holds an object array)"):
        golden.run_backend(directory, tmp_path / "out", load_backend("reference", dtype="float64"))


@pytest.mark.parametrize("name", ["../outside.npy", "/etc/passwd", "sub/dir.npy", "..", ".hidden.npy"])
def test_manifest_names_that_leave_the_directory_are_refused(golden_copy, outputs, name):
    manifest_path = golden_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["cases"][0]["output"]["file"] = name
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(GoldenError, match="is not a plain file name"):
        golden.check(golden_copy, outputs)


def test_a_link_out_of_the_directory_is_refused(golden_copy, outputs, tmp_path):
    outside = tmp_path / "elsewhere.npy"
    shutil.copy(golden_copy / "softmax-0.expected.npy", outside)
    (golden_copy / "softmax-0.expected.npy").unlink()
    (golden_copy / "softmax-0.expected.npy").symlink_to(outside)
    with pytest.raises(GoldenError, match=r"resolves outside .*refused"):
        golden.check(golden_copy, outputs)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(format_version=3), "format_version 3; this tool reads versions 1, 2"),
    (lambda m: m.update(format="something else"), "not a golden manifest"),
    (lambda m: m["cases"][0].update(op="softmaxx"), "case #0: unknown op 'softmaxx'"),
    (lambda m: m["cases"][0].pop("inputs"), "case #0 is missing a field: 'inputs'"),
    (lambda m: m["cases"][0]["arguments"][0].update(array="nope"), "case 'softmax-0': argument 'x' names no array"),
    (lambda m: m["cases"][0]["inputs"]["arrays"]["x"].update(file="../x.npy"), "case 'softmax-0' inputs 'x' file"),
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


def test_an_op_without_outputs_is_not_implemented_in_the_report(golden_dir, outputs, tmp_path):
    """The golden check's skips carry their kind (tally.TestResult.skip_kind), as the gate's do."""
    for path in outputs.glob("softmax-*.npy"):
        path.unlink()
    report_dir = tmp_path / "r"
    main(["golden", "check", str(golden_dir), "--outputs", str(outputs), "--report-dir", str(report_dir)])
    document = json.loads((report_dir / "report.json").read_text())
    assert {r["status"] for r in document["results"] if r["op"] == "softmax"} == {"not implemented"}
