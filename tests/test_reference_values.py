"""The reference equals values derived by hand from the equations."""

import math

import numpy as np
import pytest

import reference as ref

pytestmark = pytest.mark.filterwarnings("error")  # a NumPy RuntimeWarning in the reference is a bug

CONFIG = {"d_model": 4, "num_heads": 2, "d_ff": 6, "num_encoder_layers": 1, "num_decoder_layers": 1,
          "src_vocab_size": 5, "tgt_vocab_size": 5}


def test_softmax_of_1_2_3():
    """softmax([1, 2, 3]) = e^i / (e + e^2 + e^3)."""
    total = math.e + math.e**2 + math.e**3
    np.testing.assert_allclose(ref.softmax([1.0, 2.0, 3.0]), [math.e / total, math.e**2 / total, math.e**3 / total],
                               rtol=1e-15)


def test_softmax_minus_inf_entries_are_exactly_zero_and_all_minus_inf_row_is_zero():
    out = ref.softmax(np.array([[0.0, -np.inf, 0.0], [-np.inf, -np.inf, -np.inf]]))
    assert out.tolist() == [[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]


def test_positional_encoding_at_zero_is_0_1_0_1():
    assert ref.positional_encoding(1, 8).tolist() == [[0.0, 1.0] * 4]


@pytest.mark.parametrize(("pos", "col", "d_model", "value"), [
    (1, 0, 4, math.sin(1.0)),                      # 2i = 0: sin(pos / 10000^0)
    (1, 1, 4, math.cos(1.0)),
    (2, 2, 4, math.sin(2 / 100.0)),                # 2i = 2, d_model = 4: 10000^(1/2) = 100
    (3, 3, 4, math.cos(3 / 100.0)),
    (5, 4, 6, math.sin(5 / 10000 ** (4 / 6))),
])
def test_positional_encoding_by_hand(pos, col, d_model, value):
    assert ref.positional_encoding(pos + 1, d_model)[pos, col] == pytest.approx(value, rel=1e-15, abs=1e-16)


def test_layer_norm_of_a_small_row_by_hand():
    """x = [1, 2, 3, 4]: mean 2.5, biased var 1.25, so x_hat = (x - 2.5) / sqrt(1.25 + eps)."""
    eps = 1e-5
    x_hat = (np.array([1.0, 2.0, 3.0, 4.0]) - 2.5) / math.sqrt(1.25 + eps)
    out = ref.layer_norm([[1.0, 2.0, 3.0, 4.0]], gamma=[1.0, 2.0, 1.0, 1.0], beta=[0.0, 0.0, 1.0, 0.0], eps=eps)
    np.testing.assert_allclose(out[0], x_hat * [1, 2, 1, 1] + [0, 0, 1, 0], rtol=1e-15)


def test_attention_by_hand():
    """q = [1, 0], keys e1, e2: scores [1/sqrt(2), 0], weights w = softmax, out = w @ v."""
    q, k, v = np.array([[1.0, 0.0]]), np.eye(2), np.array([[1.0, 2.0], [3.0, 4.0]])
    a = math.exp(1 / math.sqrt(2))
    w = np.array([a / (a + 1), 1 / (a + 1)])
    np.testing.assert_allclose(ref.attention_weights(q, k)[0], w, rtol=1e-15)
    np.testing.assert_allclose(ref.attention(q, k, v)[0], w @ v, rtol=1e-15)


def test_seed_example_six_tokens_d_model_512_single_head():
    """The seed example: 6 tokens, d_model = d_k = 512, one head, Q = K = V = x. The output is
    (6, 512) and every row of the (6, 6) weights sums to 1; row 0 matches a hand loop."""
    x = np.random.default_rng(0).normal(size=(6, 512))
    weights, out = ref.attention_weights(x, x), ref.attention(x, x, x)
    assert out.shape == (6, 512) and weights.shape == (6, 6)
    np.testing.assert_allclose(weights.sum(axis=-1), np.ones(6), rtol=1e-14)
    scores = [sum(a * b for a, b in zip(x[0], x[j])) / math.sqrt(512) for j in range(6)]
    top = max(scores)
    row0 = [math.exp(s - top) for s in scores]
    np.testing.assert_allclose(weights[0], np.array(row0) / sum(row0), rtol=1e-12)
    np.testing.assert_allclose(out[0], np.array(row0) / sum(row0) @ x, rtol=1e-12)


def test_fully_masked_query_row_gives_zeros():
    q = k = v = np.ones((2, 3))
    mask = np.array([[True, False], [False, False]])
    assert ref.attention(q, k, v, mask)[1].tolist() == [0.0, 0.0, 0.0]
    assert ref.attention_weights(q, k, mask).tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_embedding_is_a_row_lookup():
    table = np.arange(12.0).reshape(4, 3)
    assert ref.embedding(np.array([[3, 0]]), table).tolist() == [[[9.0, 10.0, 11.0], [0.0, 1.0, 2.0]]]


def test_feed_forward_by_hand():
    """relu(x W1 + b1) W2 + b2 with x = [1, -1], W1 = I, b1 = 0, W2 = [[2, 0], [3, 1]], b2 = [1, 0]:
    relu([1, -1]) = [1, 0] -> [1*2 + 0*3 + 1, 0] = [3, 0]; gelu(x) = x * Phi(x)."""
    p = {"w_1": np.eye(2), "b_1": np.zeros(2), "w_2": np.array([[2.0, 0.0], [3.0, 1.0]]), "b_2": np.array([1.0, 0.0])}
    assert ref.feed_forward(np.array([1.0, -1.0]), p).tolist() == [3.0, 0.0]
    phi = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))  # noqa: E731
    expected = 1 * phi(1) * 2 + (-1) * phi(-1) * 3 + 1
    assert ref.feed_forward(np.array([1.0, -1.0]), p, "gelu")[0] == pytest.approx(expected, rel=1e-15)


def test_multi_head_attention_with_identity_projections_is_per_head_attention():
    """W = I, b = 0: head h attends with the columns [h*d_k:(h+1)*d_k] of x itself."""
    x = np.random.default_rng(1).normal(size=(1, 3, 4))
    p = {f"{w}_{n}": (np.eye(4) if w == "w" else np.zeros(4)) for n in "qkvo" for w in "wb"}
    heads = [ref.attention(x[0, :, h * 2:(h + 1) * 2], x[0, :, h * 2:(h + 1) * 2], x[0, :, h * 2:(h + 1) * 2])
             for h in range(2)]
    np.testing.assert_allclose(ref.multi_head_attention(x, x, p, num_heads=2)[0], np.concatenate(heads, -1),
                               rtol=1e-14)


def test_causal_mask_lets_position_i_see_up_to_i():
    assert ref.causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def _constant_logit_params(bias: list[float]) -> dict:
    params = ref.init_params(CONFIG, seed=0)
    params["generator"] = {"w": np.zeros((4, 5)), "b": np.array(bias)}
    return params


def test_greedy_decode_ties_go_to_the_lowest_index_and_max_len_counts_bos():
    """All logits equal: argmax picks token 0 at every step; max_len = 4 gives 4 columns."""
    out = ref.greedy_decode(np.array([[1, 2]]), _constant_logit_params([0.0] * 5), CONFIG, max_len=4,
                            bos_id=3, eos_id=4)
    assert out.tolist() == [[3, 0, 0, 0]]
    assert out.dtype == np.int64


def test_greedy_decode_stops_when_every_row_emitted_eos():
    """Token 4 (eos) has the largest logit: every row emits eos at step 1 and decoding stops."""
    out = ref.greedy_decode(np.array([[1, 2], [3, 4]]), _constant_logit_params([0, 0, 0, 0, 1.0]), CONFIG,
                            max_len=10, bos_id=3, eos_id=4)
    assert out.tolist() == [[3, 4], [3, 4]]


def test_greedy_decode_max_len_one_is_bos_alone():
    out = ref.greedy_decode(np.array([[1]]), ref.init_params(CONFIG, 0), CONFIG, max_len=1, bos_id=2, eos_id=4)
    assert out.tolist() == [[2]]


def test_config_defaults():
    c = ref.as_config(CONFIG)
    assert (c.layer_norm_eps, c.norm_first, c.final_norm, c.scale_embedding, c.activation) == (1e-5, False, False, True, "relu")
    assert ref.as_config({**CONFIG, "norm_first": True}).final_norm is True


def test_init_params_is_deterministic_and_has_the_contract_layout():
    a, b = ref.init_params(CONFIG, 3), ref.init_params(CONFIG, 3)
    assert a["encoder"][0]["self_attn"]["w_q"].shape == (4, 4)
    assert a["decoder"][0]["ffn"]["w_1"].shape == (4, 6)
    assert "encoder_norm" not in a and "encoder_norm" in ref.init_params({**CONFIG, "final_norm": True}, 0)
    np.testing.assert_array_equal(a["generator"]["w"], b["generator"]["w"])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_lower_precision_is_the_same_equations_rounded(dtype):
    """The baseline at ``dtype`` is close to float64 at that precision, and really rounded."""
    x = np.random.default_rng(0).normal(size=(3, 7))
    low, exact = ref.softmax(x, dtype=dtype), ref.softmax(x)
    u = ref.unit_roundoff(dtype)
    assert 0 < np.max(np.abs(low - exact)) <= 8 * u
