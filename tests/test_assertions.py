"""The assertion helpers fail on bad input with a message that explains the failure."""

import numpy as np
import pytest

from conformance.kit import record
from conformance.kit.assertions import assert_close, assert_equal, assert_true
from tests.matching import assert_matches_reference


class Fake:
    name, dtype, device = "fake", "float32", "cpu"


def test_assert_close_names_op_backend_worst_element_error_and_tolerance():
    expected = np.zeros((2, 3))
    actual = expected.copy()
    actual[1, 2] = 0.5
    actual[0, 0] = 0.01
    with pytest.raises(AssertionError) as info:
        assert_close(actual, expected, tol=0.1, backend=Fake(), op="softmax", what="rows sum to 1")
    message = str(info.value)
    assert message.startswith("fake[float32, cpu].softmax: out[1, 2] = 0.5 but should be 0.0")
    assert "abs err 0.5" in message and "tolerance 0.1" in message and "5 x over" in message
    assert "1 of 6 compared elements exceed their tolerance [rows sum to 1]" in message


def test_assert_close_passes_within_tolerance_and_returns_the_worst_ratio():
    assert assert_close(np.array([1.0, 2.05]), np.array([1.0, 2.0]), tol=0.1, backend=Fake(), op="x") == pytest.approx(0.5)


def test_assert_close_ignores_positions_outside_where():
    where = np.array([True, False])
    assert_close(np.array([1.0, 99.0]), np.array([1.0, 2.0]), tol=0.0, backend=Fake(), op="encode", where=where)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_assert_close_never_accepts_nan_or_inf_for_a_finite_expected_value(bad):
    with pytest.raises(AssertionError, match="out\\[1\\] = (nan|inf) but should be 2.0"):
        assert_close(np.array([1.0, bad]), np.array([1.0, 2.0]), tol=1e9, backend=Fake(), op="x")


def test_assert_close_says_when_both_sides_are_nan():
    """A property comparing two evaluations of the backend gets NaN from both: the message says
    so instead of "= nan but should be nan"."""
    with pytest.raises(AssertionError) as info:
        assert_close(np.array([1.0, np.nan]), np.array([1.0, np.nan]), tol=1.0, backend=Fake(), op="layer_norm")
    message = str(info.value)
    assert message.startswith("fake[float32, cpu].layer_norm: out[1] is NaN, and so is the value it is compared with")
    assert "should be" not in message and "1 of 2 compared elements exceed their tolerance" in message


def test_assert_close_reports_a_shape_mismatch():
    with pytest.raises(AssertionError, match=r"expected shape \(2, 5, 16\), got \(2, 16, 5\)"):
        assert_close(np.zeros((2, 16, 5)), np.zeros((2, 5, 16)), tol=1.0, backend=Fake(), op="encode")


def test_assert_equal_is_bitwise():
    with pytest.raises(AssertionError, match="tolerance 0"):
        assert_equal(np.array([1.0 + 2**-52]), np.array([1.0]), backend=Fake(), op="embedding")
    assert_equal(np.array([-np.inf, 0.0]), np.array([-np.inf, 0.0]), backend=Fake(), op="softmax")


def test_assert_true_names_the_first_violation():
    values = np.array([0.2, 1.5, -0.1])
    with pytest.raises(AssertionError, match=r"out\[1\] = 1.5 violates 0 <= p <= 1; 2 of 3 elements do"):
        assert_true((values >= 0) & (values <= 1), values=values, backend=Fake(), op="softmax", what="0 <= p <= 1")


def test_assert_true_names_what_it_measures_when_it_is_not_the_output():
    """A greedy-decoding property measures a logit gap, not the op's output: the message says so."""
    gap = np.array([[0.0], [0.25]])
    with pytest.raises(AssertionError, match=r"greedy_decode: logit_gap\[1, 0\] = 0.25 violates token at step 1"):
        assert_true(gap <= 0.1, values=gap, backend=Fake(), op="greedy_decode", name="logit_gap",
                    what="token at step 1 is an argmax of forward")


def test_a_failure_is_recorded_for_the_report():
    rec = record.start()
    try:
        with pytest.raises(AssertionError):
            assert_close(np.array([3.0]), np.array([1.0]), tol=1.0, backend=Fake(), op="x")
    finally:
        record.stop()
    assert rec.worst_ratio == pytest.approx(2.0) and rec.failure.startswith("fake[float32, cpu].x: out[0] = 3.0")


def test_the_adapter_tests_comparison_fails_on_a_wrong_value_dtype_shape_or_nan():
    """tests/matching.py, used by every adapter test, can fail: value, dtype, shape and NaN."""
    expected = np.linspace(0.0, 1.0, 6).reshape(2, 3)
    assert_matches_reference(expected.copy(), expected, op="same")
    for wrong, why in ((expected + 1e-9, "Not equal"), (expected.astype(np.float32), "float32"),
                       (expected.T, "shape"), (np.where(expected > 0.5, np.nan, expected), "nan")):
        with pytest.raises(AssertionError, match=why):
            assert_matches_reference(wrong, expected, op="wrong")
