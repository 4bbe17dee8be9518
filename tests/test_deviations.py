"""Known-deviations files: parsing, errors that name the file and line, matching, stale entries."""

import textwrap

import pytest

from conformance.gate.deviations import Deviation, DeviationsError, apply, load, stale
from conformance.gate.tally import TestResult

TORCH32 = {"id": "torch-float32", "spec": "torch", "dtype": "float32", "device": "cpu"}
MINE16 = {"id": "make-float16-cuda", "spec": "pkg/mine.py:make", "dtype": "float16", "device": "cuda"}
TARGETS = {t["id"]: t for t in (TORCH32, MINE16)}


def write(tmp_path, text):
    path = tmp_path / "known.toml"
    path.write_text(textwrap.dedent(text))
    return path


def result(target, op, test, outcome="failed"):
    return TestResult(nodeid=f"{test}[{target}]", test=test, op=op, kind="property", target=target, outcome=outcome)


def test_entries_load_with_their_line(tmp_path):
    path = write(tmp_path, """
        # accepted failures
        [[deviation]]
        backend = "torch"
        dtype = "float32"
        op = "softmax"
        reason = "fused kernel"

        [[deviation]]
        backend = "make"
        dtype = "*"
        device = "cuda"
        test = "test_rows_sum_to_one"
        reason = "known rounding"
        reference = "https://example.org/issues/1"
    """)
    first, second = load(path)
    assert (first.backend, first.dtype, first.op, first.test, first.line) == ("torch", "float32", "softmax", None, 3)
    assert (second.device, second.test, second.reference, second.line) == ("cuda", "test_rows_sum_to_one",
                                                                            "https://example.org/issues/1", 9)
    assert first.file == str(path)


def test_an_empty_file_has_no_entries(tmp_path):
    assert load(write(tmp_path, "# nothing accepted yet\n")) == []


def test_a_toml_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path, """\
        [[deviation]]
        backend = "torch"
        dtype = float32
    """)
    with pytest.raises(DeviationsError, match=rf"^{path}:3:9: TOML syntax error: Invalid value"):
        load(path)


@pytest.mark.parametrize(("body", "message"), [
    ('backend = "torch"\ndtype = "float32"\nop = "softmax"\n', "missing required key 'reason'"),
    ('backend = "torch"\ndtype = "float32"\nop = "softmax"\nreason = "x"\ncolour = "red"\n',
     r"unknown key\(s\) \['colour'\]"),
    ('backend = "torch"\ndtype = "float8"\nop = "softmax"\nreason = "x"\n', "unknown dtype 'float8'"),
    ('backend = "torch"\ndtype = "float32"\nop = "softmaxx"\nreason = "x"\n',
     "unknown op 'softmaxx'; contract ops: softmax"),
    ('backend = "torch"\ndtype = "float32"\nreason = "x"\n', "give exactly one of 'op'"),
    ('backend = "torch"\ndtype = "float32"\nop = "softmax"\ntest = "t"\nreason = "x"\n', "give exactly one of 'op'"),
    ('backend = "torch"\ndtype = "float32"\nop = "softmax"\nreason = ""\n', "reason must be a non-empty string"),
    ('backend = 3\ndtype = "float32"\nop = "softmax"\nreason = "x"\n', "backend must be a non-empty string, got 3"),
])
def test_an_invalid_entry_names_file_line_and_entry(tmp_path, body, message):
    good = '[[deviation]]\nbackend = "torch"\ndtype = "float32"\nop = "attention"\nreason = "ok"\n\n'
    path = write(tmp_path, good + "[[deviation]]\n" + body)
    with pytest.raises(DeviationsError, match=rf"^{path}:7: deviation #2: {message}"):
        load(path)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DeviationsError, match=r"known-deviations file .*nope.toml: cannot be read"):
        load(tmp_path / "nope.toml")


def test_top_level_keys_other_than_deviation_are_rejected(tmp_path):
    with pytest.raises(DeviationsError, match=r"unknown top-level key\(s\) \['backend'\]"):
        load(write(tmp_path, 'backend = "torch"\n'))


def test_matching_by_spec_or_name_dtype_device_op_and_test(tmp_path):
    by_op, by_test = load(write(tmp_path, """
        [[deviation]]
        backend = "torch"
        dtype = "float32"
        op = "softmax"
        reason = "r"
        [[deviation]]
        backend = "make"
        dtype = "*"
        device = "cuda"
        test = "test_rows"
        reason = "r"
    """))
    assert by_op.covers(TORCH32, "softmax", "properties/test_softmax.py::test_any")
    assert not by_op.covers(TORCH32, "attention", "properties/test_attention.py::test_any")
    assert not by_op.covers({**TORCH32, "dtype": "float16"}, "softmax", "x::y")
    assert by_test.covers(MINE16, "softmax", "properties/test_softmax.py::test_rows")  # name of a file spec, any dtype
    assert by_test.covers({**MINE16, "dtype": "bfloat16"}, "softmax", "properties/test_softmax.py::test_rows")
    assert not by_test.covers({**MINE16, "device": "cpu"}, "softmax", "properties/test_softmax.py::test_rows")
    assert not by_test.covers(MINE16, "softmax", "properties/test_softmax.py::test_rows_sum")
    factory = {"id": "mine-float16", "spec": "pkg/mine.py:factory", "dtype": "float16", "device": "cpu"}
    by_file = Deviation(backend="mine", dtype="*", op="softmax", reason="r")
    assert by_file.covers(factory, "softmax", "x::y")  # the target id's name: the file of a `factory`


def test_apply_marks_covered_failures_and_stale_finds_entries_that_no_longer_fail(tmp_path):
    softmax, layer_norm, attention = load(write(tmp_path, """
        [[deviation]]
        backend = "torch"
        dtype = "float32"
        op = "softmax"
        reason = "still fails"
        [[deviation]]
        backend = "torch"
        dtype = "float32"
        op = "layer_norm"
        reason = "fixed since"
        [[deviation]]
        backend = "torch"
        dtype = "float16"
        op = "attention"
        reason = "not run this time"
    """))
    tests = [result("torch-float32", "softmax", "p/test_s.py::test_a"),
             result("torch-float32", "softmax", "p/test_s.py::test_b", outcome="passed"),
             result("torch-float32", "layer_norm", "p/test_l.py::test_a", outcome="passed"),
             result("torch-float32", "embedding", "p/test_e.py::test_a")]
    entries = [softmax, layer_norm, attention]
    apply(entries, tests, TARGETS)
    assert tests[0].deviation is softmax
    assert tests[1].deviation is None  # passed: nothing to accept
    assert tests[3].deviation is None  # no entry for embedding
    assert stale(entries, tests, TARGETS) == [layer_norm]  # attention (float16) did not run: not stale
