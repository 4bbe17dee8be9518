"""The ``jax`` adapter: Flax modules loaded with our params reproduce the float64 reference
(JAX x64 mode) on inputs without edge cases; the factory refuses what it cannot run, including
a machine without JAX ("unsupported", never a silent skip of the suite).

Skipped as a whole, except the "not installed" test, when jax/flax are not importable (the
optional extra ``jax``). Every new input shape compiles (XLA on CPU, about a second), so the
shapes here are few and repeated.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

import reference as ref
from backends import jax_backend, jax_support
from conformance.kit.harness import to_native
from tests.masks import padding_mask, random_mask
from tests.matching import assert_matches_reference

CONFIG: dict[str, Any] = {"d_model": 8, "num_heads": 2, "d_ff": 16, "num_encoder_layers": 2,
                          "num_decoder_layers": 2, "src_vocab_size": 11, "tgt_vocab_size": 7}
B, S_SRC, S_TGT = 3, 5, 4
VARIANTS = [(False, False, "relu", True), (True, True, "gelu", False)]  # (norm_first, final_norm, act, scale)


@pytest.fixture(scope="module")
def jax64() -> jax_backend.JaxBackend:
    """The backend at float64 (not named ``backend``: the plugin parametrizes that name)."""
    pytest.importorskip("jax", reason="jax is not installed (optional extra 'jax')")
    pytest.importorskip("flax", reason="flax is not installed (optional extra 'jax')")
    return jax_backend.factory(dtype="float64")


def model_config(norm_first: bool, final_norm: bool, activation: str, scale_embedding: bool) -> dict:
    return {**CONFIG, "norm_first": norm_first, "final_norm": final_norm, "activation": activation,
            "scale_embedding": scale_embedding}


# -- the factory ------------------------------------------------------------------------------


def test_factory_without_jax_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs with or without JAX installed: the import failure is simulated."""
    for module in ("jax", "jax.numpy", "flax", "flax.linen"):
        monkeypatch.setitem(sys.modules, module, None)  # ``import jax`` raises ImportError
    monkeypatch.setattr(jax_backend, "linen", None)
    with pytest.raises(ValueError, match="unsupported: jax is not installed"):
        jax_backend.factory(dtype="float32")


def test_factory_dtypes_and_devices(jax64: jax_backend.JaxBackend) -> None:
    import jax

    assert (jax64.name, jax64.dtype, jax64.device) == ("jax", "float64", "cpu")
    assert jax.config.read("jax_enable_x64"), "float64 needs x64 mode"
    for dtype in ("float32", "float16", "bfloat16"):
        assert jax_backend.factory(dtype=dtype).dtype == dtype
    with pytest.raises(ValueError, match="unsupported"):
        jax_backend.factory(dtype="int8")
    for device in ("tpu", "cpu:1", "cuda:x"):
        with pytest.raises(ValueError, match="unsupported"):
            jax_backend.factory(device=device)


def test_cuda_is_unsupported_without_a_gpu(jax64: jax_backend.JaxBackend) -> None:
    import jax

    try:
        has_gpu = bool(jax.devices("gpu"))
    except RuntimeError:
        has_gpu = False
    if has_gpu:
        pytest.skip("JAX sees a GPU")
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match="unsupported"):
            jax_backend.factory(dtype="float32", device=device)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_conversions(jax64: jax_backend.JaxBackend, dtype: str) -> None:
    backend = jax_backend.factory(dtype=dtype)
    floats = backend.asarray(np.array([[1.5, -2.0]]))
    ids = backend.asarray(np.array([[1, 2]], dtype=np.int64))
    mask = backend.asarray(np.array([True, False]))
    assert str(floats.dtype) == dtype and np.issubdtype(ids.dtype, np.integer) and mask.dtype == bool
    back = backend.to_numpy(floats)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, [[1.5, -2.0]])


def test_mha_variables_have_flax_shapes(jax64: jax_backend.JaxBackend) -> None:
    import jax
    from flax import linen

    p = to_native(jax64, ref.init_params(CONFIG, 0)["encoder"][0]["self_attn"])
    module = linen.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, out_features=8, param_dtype=np.float64)
    x = np.zeros((1, 3, 8))
    initialised = module.init(jax.random.key(0), x, x, x)
    shapes = jax.tree.map(lambda a: a.shape, initialised)
    assert jax.tree.map(lambda a: a.shape, jax_support.mha_variables(p, 2)) == shapes


# -- ops against the reference ----------------------------------------------------------------


def test_softmax(jax64: jax_backend.JaxBackend, rng: np.random.Generator) -> None:
    x = rng.normal(0, 3, (B, 4, 6))
    x[rng.random(x.shape) < 0.3] = -np.inf
    x[..., 0] = 0.0  # some -inf entries, but no row of them all (that is the gate's edge case)
    assert_matches_reference(jax64.softmax(jax64.asarray(x), axis=-1), ref.softmax(x, axis=-1), op="softmax")


def test_elementary_ops(jax64: jax_backend.JaxBackend, rng: np.random.Generator) -> None:
    assert_matches_reference(jax64.positional_encoding(S_SRC, 8), ref.positional_encoding(S_SRC, 8),
                   op="positional_encoding")
    ids, table = rng.integers(0, 9, (B, S_SRC)), rng.normal(size=(9, 8))
    assert_matches_reference(jax64.embedding(*to_native(jax64, [ids, table])), ref.embedding(ids, table), op="embedding")
    x, gamma, beta = rng.normal(3.0, 2.0, (B, S_SRC, 8)), rng.normal(1.0, 0.1, 8), rng.normal(0.0, 0.1, 8)
    assert_matches_reference(jax64.layer_norm(*to_native(jax64, [x, gamma, beta]), 1e-5),
                   ref.layer_norm(x, gamma, beta, 1e-5), op="layer_norm")
    p = ref.init_params(CONFIG, 1)["encoder"][0]["ffn"]
    for activation in ("relu", "gelu"):
        assert_matches_reference(jax64.feed_forward(jax64.asarray(x), to_native(jax64, p), activation),
                       ref.feed_forward(x, p, activation), op=f"feed_forward({activation})")


@pytest.mark.parametrize("mask_kind", ["none", "causal", "random"])
def test_attention(jax64: jax_backend.JaxBackend, rng: np.random.Generator, mask_kind: str) -> None:
    q, k, v = rng.normal(size=(B, 4, 3)), rng.normal(size=(B, 6, 3)), rng.normal(size=(B, 6, 5))
    mask = {"none": None, "causal": np.tril(np.ones((4, 6), dtype=bool)),
            "random": random_mask(rng, (B, 4, 6))}[mask_kind]
    assert_matches_reference(jax64.attention_weights(*to_native(jax64, [q, k, mask])), ref.attention_weights(q, k, mask),
                   op=f"attention_weights({mask_kind})")
    assert_matches_reference(jax64.attention(*to_native(jax64, [q, k, v, mask])), ref.attention(q, k, v, mask),
                   op=f"attention({mask_kind})")


@pytest.mark.parametrize("num_heads", [1, 2, 4])
def test_multi_head_attention(jax64: jax_backend.JaxBackend, rng: np.random.Generator, num_heads: int) -> None:
    x_q, x_kv = rng.normal(size=(B, 4, 8)), rng.normal(size=(B, 6, 8))
    p = ref.init_params(CONFIG, 2)["decoder"][0]["cross_attn"]
    mask = random_mask(rng, (B, 4, 6))
    out = jax64.multi_head_attention(*to_native(jax64, [x_q, x_kv, p]), num_heads, jax64.asarray(mask))
    assert_matches_reference(out, ref.multi_head_attention(x_q, x_kv, p, num_heads, mask),
                   op=f"multi_head_attention(h={num_heads})")


@pytest.mark.parametrize("variant", VARIANTS)
def test_layers(jax64: jax_backend.JaxBackend, rng: np.random.Generator, variant: tuple) -> None:
    config = model_config(*variant)
    params = ref.init_params(config, 3)
    x, memory = rng.normal(size=(B, S_TGT, 8)), rng.normal(size=(B, S_SRC, 8))
    self_mask = np.tril(np.ones((S_TGT, S_TGT), dtype=bool))
    cross_mask = padding_mask(rng, B, S_SRC)[:, None, :]
    enc = jax64.encoder_layer(*to_native(jax64, [memory, params["encoder"][0]]), config, jax64.asarray(cross_mask))
    assert_matches_reference(enc, ref.encoder_layer(memory, params["encoder"][0], config, cross_mask), op="encoder_layer")
    dec = jax64.decoder_layer(*to_native(jax64, [x, memory, params["decoder"][0]]), config,
                              *to_native(jax64, [self_mask, cross_mask]))
    assert_matches_reference(dec, ref.decoder_layer(x, memory, params["decoder"][0], config, self_mask, cross_mask),
                   op="decoder_layer")


@pytest.mark.parametrize("variant", VARIANTS)
def test_stacks_and_greedy_decode(jax64: jax_backend.JaxBackend, rng: np.random.Generator, variant: tuple) -> None:
    config = model_config(*variant)
    params = ref.init_params(config, 4)
    src, tgt = rng.integers(0, 11, (B, S_SRC)), rng.integers(0, 7, (B, S_TGT))
    src_mask, tgt_mask = padding_mask(rng, B, S_SRC), padding_mask(rng, B, S_TGT, right=True)
    n = to_native(jax64, {"params": params, "src": src, "tgt": tgt, "src_mask": src_mask, "tgt_mask": tgt_mask})
    memory = ref.encode(src, params, config, src_mask)
    assert_matches_reference(jax64.encode(n["src"], n["params"], config, n["src_mask"]), memory, op="encode",
                   where=src_mask)
    assert_matches_reference(jax64.decode(n["tgt"], jax64.asarray(memory), n["params"], config, n["src_mask"],
                                       n["tgt_mask"]),
                   ref.decode(tgt, memory, params, config, src_mask, tgt_mask), op="decode", where=tgt_mask)
    assert_matches_reference(jax64.forward(n["src"], n["tgt"], n["params"], config, n["src_mask"], n["tgt_mask"]),
                   ref.forward(src, tgt, params, config, src_mask, tgt_mask), op="forward", where=tgt_mask)
    tokens = jax64.greedy_decode(n["src"], n["params"], config, 6, 1, 2, n["src_mask"])
    np.testing.assert_array_equal(np.asarray(tokens), ref.greedy_decode(src, params, config, 6, 1, 2, src_mask))


def test_greedy_decode_max_len_one_and_eos_stop(jax64: jax_backend.JaxBackend, rng: np.random.Generator) -> None:
    params = ref.init_params(CONFIG, 5)
    src = rng.integers(0, 11, (B, S_SRC))
    n = to_native(jax64, {"params": params, "src": src})
    np.testing.assert_array_equal(np.asarray(jax64.greedy_decode(n["src"], n["params"], CONFIG, 1, 1, 2)), [[1]] * B)
    params["generator"]["b"][2] = 100.0  # eos = 2 wins at every step
    tokens = jax64.greedy_decode(n["src"], to_native(jax64, params), CONFIG, 6, 1, 2)
    np.testing.assert_array_equal(np.asarray(tokens), [[1, 2]] * B)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_low_precision_forward_runs(jax64: jax_backend.JaxBackend, rng: np.random.Generator, dtype: str) -> None:
    backend = jax_backend.factory(dtype=dtype)
    config = model_config(*VARIANTS[1])
    params = ref.init_params(config, 6)
    src, tgt = rng.integers(0, 11, (B, S_SRC)), rng.integers(0, 7, (B, S_TGT))
    out = backend.forward(*to_native(backend, [src, tgt, params]), config)
    assert str(out.dtype) == dtype and out.shape == (B, S_TGT, 7)
    assert np.isfinite(backend.to_numpy(out)).all()


def test_a_layer_compiles_once_for_every_layer_of_a_stack_and_every_op_on_it(rng: np.random.Generator) -> None:
    """encode, decode and forward compose the jitted layers: forward (two encoder layers), then
    encode of the same sources and a model differing only in vocabularies and depth, run the
    one compiled encoder layer (``_layer_config``: a layer is keyed by what it reads)."""
    backend = jax_backend.factory(dtype="float64")
    params = ref.init_params(CONFIG, 7)
    src, tgt = rng.integers(0, 11, (B, S_SRC)), rng.integers(0, 7, (B, S_TGT))
    backend.forward(*to_native(backend, [src, tgt, params]), CONFIG)
    other = {**CONFIG, "src_vocab_size": 12, "num_encoder_layers": 1}
    backend.encode(*to_native(backend, [src, ref.init_params(other, 8)]), other)
    layers = [fn for key, fn in backend._compiled.items() if key[0] == "encoder_layer"]
    assert len(layers) == 1 and layers[0]._cache_size() == 1, [fn._cache_size() for fn in layers]
