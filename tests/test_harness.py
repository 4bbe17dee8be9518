"""call_op turns everything a backend can do wrong into a precise failure, and skips absent ops."""

import ml_dtypes
import numpy as np
import pytest

from backends.numpy_backend import NumpyBackend
from conformance.kit.harness import BackendFault, call_op


class Faulty(NumpyBackend):
    def __init__(self, result):
        super().__init__("faulty", "float32")
        self.result = result

    def softmax(self, x, axis=-1):
        return self.result(x)


def x():
    return np.zeros((2, 3))


def test_a_correct_op_comes_back_as_float64():
    out = call_op(NumpyBackend("numpy", "float32"), "softmax", x(), shape=(2, 3))
    assert out.dtype == np.float64 and np.allclose(out, 1 / 3)


@pytest.mark.parametrize(("result", "match"), [
    (lambda x: None, "returned NoneType, expected an array"),
    (lambda x: [[0.0]], "returned list, expected an array"),
    (lambda x: x.T, r"expected shape \(2, 3\), got \(3, 2\)"),
    (lambda x: x.astype(np.float64), "returned dtype float64, but the backend claims float32"),
])
def test_bad_results_are_precise_failures(result, match):
    with pytest.raises(BackendFault, match=match):
        call_op(Faulty(result), "softmax", x(), shape=(2, 3))


def test_an_exception_names_the_op_its_type_message_and_inputs():
    def boom(x):
        raise KeyError("w_q")
    with pytest.raises(BackendFault, match=r"faulty\[float32, cpu\].softmax raised KeyError: 'w_q'\n  inputs: \(float32\(2, 3\)\)"):
        call_op(Faulty(boom), "softmax", x())


def test_described_inputs_carry_the_dtype_the_backend_gets():
    """Floating inputs are held as float64 (already rounded) and given to the backend in its
    dtype: the printed calls say that dtype; token ids and masks keep their own."""
    from conformance.kit.failing_cases import describe

    calls = [("attention", [np.zeros((1, 1, 2))], {"mask": np.ones((1, 1), bool), "ids": np.zeros(2, np.int64)})]
    assert describe(calls, "bfloat16") == (
        "attention(bfloat16(1, 1, 2) [[[0., 0.]]], mask=bool(1, 1) [[ True]], ids=int64(2,) [0, 0])")


def test_in_place_mutation_of_an_input_is_detected():
    def mutate(x):
        x += 1
        return x.copy()
    with pytest.raises(BackendFault, match=r"changed its input #0 \(float32\(2, 3\)\) in place"):
        call_op(Faulty(mutate), "softmax", x())


def test_inputs_left_alone_pass_the_in_place_check_nans_and_masks_included():
    """The check compares bits: a NaN input left as it is passes (bfloat16 too, an ml_dtypes kind-V
    dtype); one flipped mask entry fails."""
    nan_input = x()
    nan_input[0, 1] = np.nan
    assert call_op(Faulty(lambda a: a.copy()), "softmax", nan_input).shape == (2, 3)
    bfloat16 = Faulty(lambda a: a.copy())
    bfloat16.asarray = lambda a: a.astype(ml_dtypes.bfloat16)  # arrays as JAX hands them back
    bfloat16.dtype = "bfloat16"
    assert call_op(bfloat16, "softmax", nan_input).shape == (2, 3)

    class FlipsMask(NumpyBackend):
        def attention_weights(self, q, k, mask=None):
            mask[0, 0, 0] = not mask[0, 0, 0]
            return super().attention_weights(q, k, mask)

    q, mask = np.ones((1, 2, 4)), np.ones((1, 2, 2), dtype=bool)
    with pytest.raises(BackendFault, match=r"changed its input #2 \(bool\(1, 2, 2\)\) in place"):
        call_op(FlipsMask("flips", "float32"), "attention_weights", q, q, mask)


def test_not_implemented_skips_with_that_reason():
    def lazy(x):
        raise NotImplementedError
    with pytest.raises(pytest.skip.Exception, match="not implemented"):
        call_op(Faulty(lazy), "softmax", x())


def test_an_absent_op_skips_as_not_implemented():
    class Empty:
        name, dtype, device = "empty", "float32", "cpu"
    with pytest.raises(pytest.skip.Exception, match="not implemented: empty\\[float32, cpu\\].softmax"):
        call_op(Empty(), "softmax", x())
