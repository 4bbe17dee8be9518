"""The property suite's own strategies and bounds on the cases where they once raised false
alarms (benchmarks/correct_zoo.py, thorough profile): each test fails without its fix."""

from __future__ import annotations

import numpy as np

from backends import numpy_backend
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
