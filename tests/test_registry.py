"""Backend specs: built-in names, module:attr, file.py:attr, entry points, and clear errors."""

import textwrap
from importlib.metadata import EntryPoint

import pytest

from backends import registry
from backends.registry import BackendSpecError, Target, load_backend, resolve


def test_builtin_names_load():
    assert load_backend("reference", dtype="float64").name == "reference"
    assert load_backend("numpy", dtype="float16").dtype == "float16"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(BackendSpecError, match="unknown backend 'nope'; known backends: .*numpy.*reference.*torch"):
        resolve("nope")


def test_module_attribute_spec():
    assert resolve("backends.numpy_backend:factory")(dtype="float32").name == "numpy"


def test_file_spec(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent("""
        from backends.numpy_backend import NumpyBackend
        def make(*, dtype, device):
            return NumpyBackend("mine", dtype)
    """))
    assert load_backend(f"{path}:make", dtype="float32").name == "mine"


@pytest.mark.parametrize(("spec", "match"), [
    ("no_such_module_xyz:factory", "could not be loaded: ModuleNotFoundError"),
    ("backends.numpy_backend:nope", "has no attribute 'nope'"),
    ("/nonexistent/file.py:factory", "could not be loaded: FileNotFoundError"),
])
def test_bad_specs_are_set_up_errors(spec, match):
    with pytest.raises(BackendSpecError, match=match):
        resolve(spec)


def test_a_backend_module_that_raises_on_import_is_a_set_up_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('missing CUDA library')\n")
    with pytest.raises(BackendSpecError, match="RuntimeError: missing CUDA library"):
        resolve(f"{path}:factory")


def test_entry_point_names_resolve(monkeypatch):
    ep = EntryPoint("team-x", "backends.numpy_backend:factory", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    assert "team-x" in registry.known_backends()
    assert resolve("team-x")(dtype="float32").name == "numpy"


def test_unsupported_dtype_is_a_value_error():
    with pytest.raises(ValueError, match="unsupported"):
        load_backend("reference", dtype="float32")


def test_target_ids():
    assert Target("torch", "float32").id == "torch-float32"
    assert Target("tests/x.py:mutant", "float64", "cuda").id == "mutant-float64-cuda"
    assert Target("path/to/my_backend.py:factory", "float32").id == "my_backend-float32"
    assert Target("team.kernels.fused:factory", "bfloat16").id == "fused-bfloat16"
