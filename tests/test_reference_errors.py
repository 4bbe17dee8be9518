"""Every invalid input to the reference is a ValueError that names the argument and the value."""

import numpy as np
import pytest

import reference as ref

pytestmark = pytest.mark.filterwarnings("error")

CONFIG = {"d_model": 4, "num_heads": 2, "d_ff": 6, "num_encoder_layers": 1, "num_decoder_layers": 1,
          "src_vocab_size": 5, "tgt_vocab_size": 7}
PARAMS = ref.init_params(CONFIG, 0)
ATTN = PARAMS["encoder"][0]["self_attn"]
X = np.zeros((2, 3, 4))
IDS = np.array([[1, 2, 3], [0, 1, 2]])


def raises(match: str):
    return pytest.raises(ValueError, match=match)


@pytest.mark.parametrize(("change", "match"), [
    ({"num_heads": 3}, r"d_model \(4\) must be divisible by num_heads \(3\)"),
    ({"d_model": 3, "num_heads": 1}, r"d_model must be even .* got 3"),
    ({"activation": "swish"}, r"activation must be one of .* got 'swish'"),
    ({"layer_norm_eps": 0.0}, r"layer_norm_eps must be a positive number, got 0.0"),
    ({"d_ff": 0}, r"d_ff must be an integer >= 1, got 0"),
    ({"num_encoder_layers": -1}, r"num_encoder_layers must be an integer >= 0, got -1"),
    ({"src_vocab_size": 2.5}, r"src_vocab_size must be an integer >= 1, got 2.5"),
    ({"dropout": 0.1}, r"config has unknown keys \['dropout'\]"),
])
def test_bad_config(change, match):
    with raises(match):
        ref.as_config({**CONFIG, **change})


def test_incomplete_config():
    with raises("config is incomplete"):
        ref.as_config({"d_model": 4})


def test_mha_d_model_not_divisible_by_num_heads():
    with raises(r"d_model \(4\) must be divisible by num_heads \(3\)"):
        ref.multi_head_attention(X, X, ATTN, num_heads=3)


def test_positional_encoding_odd_d_model():
    with raises("d_model must be even for the positional encoding, got 5"):
        ref.positional_encoding(3, 5)


def test_positional_encoding_negative_length():
    with raises("seq_len must be an integer >= 0, got -1"):
        ref.positional_encoding(-1, 4)


@pytest.mark.parametrize("bad_id", [-1, 5])
def test_ids_out_of_range(bad_id):
    ids = IDS.copy()
    ids[1, 2] = bad_id
    with raises(rf"src_ids must lie in \[0, 5\), got id {bad_id}"):
        ref.encode(ids, PARAMS, CONFIG)


def test_ids_must_be_integers():
    with raises("ids must be an integer array, got dtype float64"):
        ref.embedding(np.array([[0.0, 1.0]]), np.zeros((3, 2)))


def test_tgt_ids_out_of_range():
    with raises(r"tgt_ids must lie in \[0, 7\), got id 7"):
        ref.forward(IDS, np.array([[7], [0]]), PARAMS, CONFIG)


@pytest.mark.parametrize(("fn", "match"), [
    (lambda: ref.attention(np.zeros((3, 4)), np.zeros((3, 5)), np.zeros((3, 4))), r"must share d_k"),
    (lambda: ref.attention(np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((2, 4))), r"v must have shape \(\.\.\., Sk=3, d_v\)"),
    (lambda: ref.multi_head_attention(X, np.zeros((3, 3, 4)), ATTN, 2), r"x_kv must have shape \(2, \*, 4\), got \(3, 3, 4\)"),
    (lambda: ref.layer_norm(X, np.ones(3), np.zeros(4), 1e-5), r"norm\['gamma'\] must have shape \(4\), got \(3,\)"),
    (lambda: ref.encoder_layer(np.zeros((2, 3, 6)), PARAMS["encoder"][0], CONFIG), r"x must have shape \(\*, \*, 4\)"),
    (lambda: ref.decode(IDS, np.zeros((2, 3, 6)), PARAMS, CONFIG), r"memory must have shape \(2, \*, 4\)"),
    (lambda: ref.forward(IDS, IDS[:1], PARAMS, CONFIG), r"tgt_ids must have batch size 2"),
    (lambda: ref.feed_forward(X, {"w_1": np.zeros((4, 6))}, "relu"), r"p is missing keys \['b_1', 'b_2', 'w_2'\]"),
])
def test_mismatched_shapes(fn, match):
    with raises(match):
        fn()


def test_params_with_a_wrong_shape_are_named_by_their_path():
    bad = ref.init_params(CONFIG, 0)
    bad["decoder"][0]["cross_attn"]["w_v"] = np.zeros((4, 3))
    with raises(r"params\['decoder'\]\[0\]\['cross_attn'\]\['w_v'\] must have shape \(4, 4\), got \(4, 3\)"):
        ref.forward(IDS, IDS, bad, CONFIG)


def test_params_with_the_wrong_number_of_layers():
    with raises(r"params\['encoder'\] must be a list of 1 layers, got 2"):
        ref.encode(IDS, {**PARAMS, "encoder": PARAMS["encoder"] * 2}, CONFIG)


@pytest.mark.parametrize(("mask", "match"), [
    (np.ones((3, 2), bool), r"mask of shape \(3, 2\) does not broadcast to \(3, 3\)"),
    (np.ones((3, 3), int), r"mask must be a boolean array \(True = may attend\), got dtype int64"),
])
def test_attention_mask_of_the_wrong_shape_or_dtype(mask, match):
    with raises(match):
        ref.attention(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2)), mask)


def test_mha_mask_of_the_wrong_shape():
    with raises(r"mask of shape \(2, 2, 3\) does not broadcast to \(2, 3, 3\)"):
        ref.multi_head_attention(X, X, ATTN, 2, mask=np.ones((2, 2, 3), bool))


@pytest.mark.parametrize(("mask", "match"), [
    (np.ones((2, 2), bool), r"src_mask must have shape \(2, 3\), got \(2, 2\)"),
    (np.array([[True, True, True], [False, False, False]]), "src_mask row 1 has no real token"),
])
def test_padding_mask_errors(mask, match):
    with raises(match):
        ref.encode(IDS, PARAMS, CONFIG, src_mask=mask)


def test_unknown_activation():
    with raises(r"activation must be one of \('relu', 'gelu'\), got 'tanh'"):
        ref.feed_forward(X, PARAMS["encoder"][0]["ffn"], "tanh")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_len": 0}, "max_len must be an integer >= 1, got 0"),
    ({"bos_id": 7}, r"bos_id must lie in \[0, 7\), got 7"),
    ({"eos_id": -1}, "eos_id must be an integer >= 0, got -1"),
])
def test_greedy_decode_bad_arguments(kwargs, match):
    with raises(match):
        ref.greedy_decode(IDS, PARAMS, CONFIG, **{"max_len": 4, "bos_id": 1, "eos_id": 2, **kwargs})


@pytest.mark.parametrize(("fn", "match"), [
    (lambda: ref.softmax(np.array([1.0, np.nan])), "x contains NaN"),
    (lambda: ref.softmax(np.array([1.0, np.inf])), r"x contains \+inf"),
    (lambda: ref.softmax(np.zeros((2, 0))), "x must have at least one entry along axis -1"),
    (lambda: ref.softmax(np.zeros(3), axis=1), r"axis must be an integer in \[-1, 1\), got 1"),
    (lambda: ref.softmax(np.array(["a"])), "x must be a real floating array"),
    (lambda: ref.layer_norm(X, np.ones(4), np.zeros(4), eps=-1.0), "eps must be a positive number, got -1.0"),
    (lambda: ref.softmax(np.zeros(3), dtype="float8"), "dtype must be one of"),
])
def test_bad_values(fn, match):
    with raises(match):
        fn()
