"""The property suite's own strategies and bounds on the cases where they once raised false
alarms (benchmarks/correct_zoo.py, thorough profile): each test fails without its fix."""

from __future__ import annotations

import numpy as np
import pytest

import reference
from backends import numpy_backend
from backends.registry import load_backend
from conformance.kit.harness import call_op
from properties import tolerances
from properties.test_self_attention import centred_directions


def test_a_constant_row_gets_a_direction_instead_of_nan():
    rows = centred_directions(np.array([[[0.53, 0.53, 0.53], [1.0, 2.0, 4.0]], [[0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]]]))
    norms = np.linalg.norm(rows, axis=-1)
    assert np.isfinite(rows).all() and (norms > 0.5).all()
    np.testing.assert_allclose(rows.sum(axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(rows[0, 1], [-4 / 3, -1 / 3, 5 / 3])


def test_the_feed_forward_bound_covers_float16_underflow():
    """The shrunk homogeneity case of numpy at float16: FFN(x) = 3.2e-6 lies below float16's
    smallest normal (6.1e-5), where one rounding is off by up to half the subnormal spacing
    (3e-8), which a relative bound (u |x| |W_1| |W_2|, 1e-9 here) misses."""
    backend = numpy_backend.factory(dtype="float16")
    x = np.array([[[0.0200042724609375]]])
    p = {"w_1": np.array([[0.00835418701171875]]), "b_1": np.zeros(1),
         "w_2": np.array([[0.0189971923828125]]), "b_2": np.zeros(1)}
    a = 0.5
    out = np.asarray(backend.feed_forward(x, p, activation="relu"), dtype=np.float64)
    scaled = np.asarray(backend.feed_forward(a * x, p, activation="relu"), dtype=np.float64)
    tol = tolerances.difference(tolerances.feed_forward_error("float16", a * x, p["w_1"], p["w_2"]),
                                a * tolerances.feed_forward_error("float16", x, p["w_1"], p["w_2"]))
    magnitude = (np.abs(x) @ np.abs(p["w_1"])) @ np.abs(p["w_2"])
    relative_part = 2 * a * tolerances.SAFETY * tolerances.gamma("float16", 4) * magnitude
    error = np.abs(scaled - a * out)
    assert (error > relative_part).all() and (error <= tol).all()


# The shrunk permutation case of torch float64 under OPENBLAS_CORETYPE=Haswell: d_model = 2,
# pre-LN; norm2's input row 0 is (-1.1201, -1.1333), sigma = |x| / 170.
PERMUTATION_CASE = {
    "x": [[[0.7730586609029779, -0.09667641145106248], [0.88433642502614, -2.3059074299675926],
           [0.9690268477752247, -1.1244761026460899]]],
    "p": {"self_attn": {"w_q": [[0.4389033272319989, 0.9065279903732075], [-0.6679304756653448, 0.9686464062465681]],
                        "b_q": [-0.09807473560440126, -0.017315522486203206],
                        "w_k": [[0.5082582638653921, -1.2218062587510667],
                                [0.008239999118777153, -0.15513340607596082]],
                        "b_k": [-0.10479265051202463, -0.03961903304730927],
                        "w_v": [[0.7500713124336986, -0.44959872921196464], [-0.8596763897472102, 0.4862530841041759]],
                        "b_v": [0.11702961011782934, 0.07165876558738361],
                        "w_o": [[-0.6478497249634898, -0.4414356407394824], [0.734551823142289, 0.017313333793413488]],
                        "b_o": [0.004363199256942161, -0.19884297882311208]},
          "norm1": {"gamma": [0.976657747623423, 0.9744209968600609],
                    "beta": [0.09620005318430945, -0.11814468079562157]},
          "ffn": {"w_1": [[-0.2894587983163073, 0.9881418430166709, -0.22034821179387698],
                          [0.9561966492597191, 0.1230399035373686, -0.5693349703489758]],
                  "b_1": [0.24317325028452125, 0.06419163790823205, 0.08449927337191754],
                  "w_2": [[-0.07925685605809618, -0.6093116385835662], [0.30878437898913424, -0.8608237841853156],
                          [0.42113790351170666, 0.2966176171543209]],
                  "b_2": [-0.00212234604172898, 0.06092164928327407]},
          "norm2": {"gamma": [0.9635091258052627, 0.9847638111243152],
                    "beta": [0.024238142867215044, 0.01030231384868077]}},
    "config": {"d_model": 2, "num_heads": 1, "d_ff": 3, "num_encoder_layers": 1, "num_decoder_layers": 1,
               "src_vocab_size": 4, "tgt_vocab_size": 8, "layer_norm_eps": 1e-06, "norm_first": True,
               "scale_embedding": True, "activation": "relu"},
    "error": 2.42e-14,  # |EncoderLayer(PX) - P EncoderLayer(X)| at out[0, 0, 1], as the report gave it
}


def test_the_chain_bound_is_conditioned_by_the_layer_norms():
    """The chain bound alone (LAMBDA sqrt(length) u max|y|) does not see norm2's 1 / sigma and
    fell below the measured difference; its differential-model floor covers it (at 2.5 % of it:
    this floor is what the differential test of the same op allows, and the op passes that)."""
    case = PERMUTATION_CASE
    x = np.array(case["x"])
    p = {name: {key: np.array(value) for key, value in part.items()} for name, part in case["p"].items()}
    order = np.array([0, 2, 1])
    y = reference.encoder_layer(x, p, case["config"])
    length = tolerances.encoder_layer_length(case["config"], x.shape[-2])
    chain = tolerances.chain_difference("float64", length, y, y)[0, 0, 0]
    conditioned = tolerances.difference(
        tolerances.conditioned_error("float64", length, y[:, order], "encoder_layer", x[:, order], p, case["config"]),
        tolerances.conditioned_error("float64", length, y, "encoder_layer", x, p, case["config"])[:, order])[0, 0, 0]
    assert chain < case["error"] <= conditioned


ONE_PASS_VARIANCE_ROWS = ([14.867430291108246, 14.864377768425195], [1.27, 1.26])
"""The shrunk cases of the variance property on torch at float64 (thorough zoo run, session 12):
d = 2 rows whose mean dwarfs their spread (kappa 4234 and 214), eps 1e-5, where torch's
one-pass (Welford) variance was 4.6x and 2.6x over the bound without the running mean's term."""


def normalised_variance_error_of(backend, row: list[float], eps: float) -> float:
    """|var(LN(x)) - var / (var + eps)| of ``backend`` on the one row x, gamma = 1, beta = 0."""
    x = np.array([[row]])
    y = call_op(backend, "layer_norm", x, np.ones(2), np.zeros(2), eps, shape=x.shape)
    var = np.var(x, axis=-1)
    return float(np.abs(np.var(y, axis=-1) - var / (var + eps))[0, 0])


@pytest.mark.parametrize("row", ONE_PASS_VARIANCE_ROWS)
def test_the_variance_bound_covers_a_one_pass_variance_and_not_a_cancelling_one(row):
    """torch's Welford variance needs the first-order running-mean term; the two-pass
    variance (NumPy) stays within the bound without it; E[x^2] - E[x]^2 (Flax's fast
    variance) cancels and is over the bound with it."""
    pytest.importorskip("torch")
    from tests.mutants.conventions import layer_norm_fast_variance

    eps, x = 1e-5, np.array([[row]])
    bound = tolerances.normalised_variance_error("float64", x, eps)[0, 0]
    _, var, _ = tolerances._row_stats(x, eps)
    without_running_mean = bound - tolerances.SAFETY * tolerances._running_mean_effect("float64", x, var, eps)[0, 0]
    welford = normalised_variance_error_of(load_backend("torch", dtype="float64"), row, eps)
    two_pass = normalised_variance_error_of(numpy_backend.factory(dtype="float64"), row, eps)
    cancelling = normalised_variance_error_of(layer_norm_fast_variance(dtype="float64"), row, eps)
    assert without_running_mean < welford <= bound
    assert two_pass <= without_running_mean
    assert cancelling > bound
