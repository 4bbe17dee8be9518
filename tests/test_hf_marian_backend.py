"""The ``hf-marian`` and ``hf-marian-sdpa`` adapters: Marian modules (transformers) loaded with our
params reproduce the float64 reference on inputs without edge cases, where Marian's convention is
the contract's; where it is not (the positional table, [sin | cos] halves held in float32), they
reproduce the reference evaluated under those catalogue variants. The factory refuses what it
cannot run, including a machine without transformers ("unsupported", never a silent skip).

Skipped as a whole, except the "not installed" test, when transformers is not importable (the
optional extra ``hf``).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

import reference as ref
from backends import hf_marian, hf_marian_mapping
from conformance.kit.harness import to_native
from reference import variants
from tests.masks import padding_mask, random_mask
from tests.matching import assert_matches_reference

CONFIG: dict[str, Any] = {"d_model": 8, "num_heads": 2, "d_ff": 16, "num_encoder_layers": 2,
                          "num_decoder_layers": 2, "src_vocab_size": 11, "tgt_vocab_size": 7}
B, S_SRC, S_TGT = 3, 5, 4
VARIANTS = [("relu", True), ("gelu", False)]  # (activation, scale_embedding); Marian is post-LN only
MARIAN_PE = ("pe-sin-cos-halves", "pe-table-float32")  # Marian's table, as conformance/tolerance/VARIANTS.md names it
FACTORIES = {"hf-marian": hf_marian.factory, "hf-marian-sdpa": hf_marian.sdpa_factory}


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def marian64(request: pytest.FixtureRequest) -> hf_marian.HFMarianBackend:
    """Each backend at float64 (not named ``backend``: the plugin parametrizes that name)."""
    pytest.importorskip("transformers", reason="transformers is not installed (optional extra 'hf')")
    return FACTORIES[request.param](dtype="float64")


@pytest.fixture
def eager64(marian64: hf_marian.HFMarianBackend) -> hf_marian.HFMarianBackend:
    if marian64.attn_implementation != "eager":
        pytest.skip("sdpa declares softmax and attention_weights unsupported")
    return marian64


def model_config(activation: str, scale_embedding: bool) -> dict:
    return {**CONFIG, "activation": activation, "scale_embedding": scale_embedding}


# -- the factory and the declarations -----------------------------------------------------------


def test_factory_without_transformers_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs with or without transformers installed: the import failure is simulated."""
    for module in ("transformers", "transformers.masking_utils", "transformers.models.marian.modeling_marian"):
        monkeypatch.setitem(sys.modules, module, None)  # ``import transformers`` raises ImportError
    monkeypatch.setattr(hf_marian, "marian", None)
    for factory in FACTORIES.values():
        with pytest.raises(ValueError, match="unsupported: transformers is not installed"):
            factory(dtype="float32")


def test_factory_dtypes_and_devices(marian64: hf_marian.HFMarianBackend) -> None:
    assert marian64.dtype == "float64" and marian64.device == "cpu"
    factory = FACTORIES[marian64.name]
    for dtype in ("float32", "float16", "bfloat16"):
        assert factory(dtype=dtype).dtype == dtype
    for bad in ({"dtype": "int8"}, {"device": "tpu"}):
        with pytest.raises(ValueError, match="unsupported"):
            factory(**bad)


def test_declared_features(marian64: hf_marian.HFMarianBackend) -> None:
    """Post-LN only, no final norm; sdpa has no softmax or weights of its own."""
    supports = marian64.supports
    assert supports("encoder_layer", norm_first=False) and not supports("decoder_layer", norm_first=True)
    for op in ("encode", "decode", "forward", "greedy_decode"):
        assert not supports(op, final_norm=True) and not supports(op, norm_first=True)
        assert supports(op, activation="gelu", scale_embedding=False, src_mask="holes")
    sdpa = marian64.attn_implementation == "sdpa"
    assert supports("softmax") is not sdpa and supports("attention_weights") is not sdpa


def test_what_marian_cannot_express_raises_not_implemented(marian64: hf_marian.HFMarianBackend,
                                                           rng: np.random.Generator) -> None:
    params = ref.init_params(CONFIG, 0)
    x, src = rng.normal(size=(B, S_SRC, 8)), rng.integers(0, 11, (B, S_SRC))
    with pytest.raises(NotImplementedError, match="eps"):
        marian64.encoder_layer(*to_native(marian64, [x, params["encoder"][0]]), {**CONFIG, "layer_norm_eps": 1e-6})
    with pytest.raises(NotImplementedError, match="post-LN"):
        marian64.encode(*to_native(marian64, [src, params]), {**CONFIG, "norm_first": True})
    with pytest.raises(NotImplementedError, match="max_length 1"):
        marian64.greedy_decode(*to_native(marian64, [src, params]), CONFIG, 1, 1, 2)


def test_state_dict_mapping_covers_marian_mt_model(marian64: hf_marian.HFMarianBackend) -> None:
    """Our params name every tensor of an untied MarianMTModel except its own positional tables."""
    model = marian64._model(to_native(marian64, ref.init_params(CONFIG, 0)), CONFIG, S_SRC)
    ours = set(hf_marian_mapping.mt_model_state(to_native(marian64, ref.init_params(CONFIG, 0))))
    assert set(model.state_dict()) - ours == {"model.encoder.embed_positions.weight",
                                              "model.decoder.embed_positions.weight"}
    assert model.lm_head.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr(), "tied"


def test_masks_are_transformers_own(marian64: hf_marian.HFMarianBackend, rng: np.random.Generator) -> None:
    """eager: 0 where True, finfo(dtype).min where False; sdpa: the boolean mask itself."""
    import torch

    mask = random_mask(rng, (B, 4, 6))
    built = marian64._mask(marian64.asarray(mask), B, 4, 6)
    assert built.shape == (B, 1, 4, 6)
    if marian64.attn_implementation == "sdpa":
        np.testing.assert_array_equal(built[:, 0].numpy(), mask)
    else:
        expected = np.where(mask, 0.0, torch.finfo(torch.float64).min)
        np.testing.assert_array_equal(built[:, 0].numpy(), expected)


# -- ops against the reference (float64) --------------------------------------------------------


def test_softmax(eager64: hf_marian.HFMarianBackend, rng: np.random.Generator) -> None:
    x = rng.normal(0, 3, (B, 4, 6))
    x[rng.random(x.shape) < 0.3] = -np.inf
    x[..., 0] = 0.0  # some -inf entries, but no row of them all (that is the gate's edge case)
    assert_matches_reference(eager64.softmax(eager64.asarray(x), axis=-1), ref.softmax(x, axis=-1), op="softmax")


def test_positional_table_is_sin_cos_halves_in_float32(marian64: hf_marian.HFMarianBackend) -> None:
    """Marian's documented convention, not the contract's: [sin | cos] halves through torch.FloatTensor."""
    with variants.active(*MARIAN_PE):
        expected = ref.positional_encoding(70, 8)  # 70 > 64: a second table size
    np.testing.assert_allclose(marian64.positional_encoding(70, 8).numpy(), expected, rtol=0, atol=1e-15)


def test_elementary_ops(marian64: hf_marian.HFMarianBackend, rng: np.random.Generator) -> None:
    ids, table = rng.integers(0, 9, (B, S_SRC)), rng.normal(size=(9, 8))
    assert_matches_reference(marian64.embedding(*to_native(marian64, [ids, table])), ref.embedding(ids, table),
                             op="embedding")
    x, gamma, beta = rng.normal(3.0, 2.0, (B, S_SRC, 8)), rng.normal(1.0, 0.1, 8), rng.normal(0.0, 0.1, 8)
    assert_matches_reference(marian64.layer_norm(*to_native(marian64, [x, gamma, beta]), 1e-3),
                             ref.layer_norm(x, gamma, beta, 1e-3), op="layer_norm")
    p = ref.init_params({**CONFIG, "d_ff": 5}, 1)["encoder"][0]["ffn"]
    for activation in ("relu", "gelu"):
        assert_matches_reference(marian64.feed_forward(marian64.asarray(x), to_native(marian64, p), activation),
                                 ref.feed_forward(x, p, activation), op=f"feed_forward({activation})")


@pytest.mark.parametrize("mask_kind", ["none", "causal", "random"])
def test_attention(marian64: hf_marian.HFMarianBackend, rng: np.random.Generator, mask_kind: str) -> None:
    """No fully masked row: there Marian's finfo.min mask differs (the gate's edge case)."""
    q, k, v = rng.normal(size=(2, B, 4, 3)), rng.normal(size=(2, B, 6, 3)), rng.normal(size=(2, B, 6, 5))
    mask = {"none": None, "causal": np.tril(np.ones((4, 6), dtype=bool)),
            "random": random_mask(rng, (B, 4, 6))}[mask_kind]
    assert_matches_reference(marian64.attention(*to_native(marian64, [q, k, v, mask])), ref.attention(q, k, v, mask),
                             op=f"attention({mask_kind})")
    if marian64.supports("attention_weights"):
        assert_matches_reference(marian64.attention_weights(*to_native(marian64, [q, k, mask])),
                                 ref.attention_weights(q, k, mask), op=f"attention_weights({mask_kind})")


@pytest.mark.parametrize("num_heads", [1, 2, 4])
def test_multi_head_attention(marian64: hf_marian.HFMarianBackend, rng: np.random.Generator, num_heads: int) -> None:
    x_q, x_kv = rng.normal(size=(B, 4, 8)), rng.normal(size=(B, 6, 8))
    p = ref.init_params(CONFIG, 2)["decoder"][0]["cross_attn"]
    mask = random_mask(rng, (B, 4, 6))
    out = marian64.multi_head_attention(*to_native(marian64, [x_q, x_kv, p]), num_heads, marian64.asarray(mask))
    assert_matches_reference(out, ref.multi_head_attention(x_q, x_kv, p, num_heads, mask),
                             op=f"multi_head_attention(h={num_heads})")
    self_out = marian64.multi_head_attention(*to_native(marian64, [x_q, x_q, p]), num_heads)
    assert_matches_reference(self_out, ref.multi_head_attention(x_q, x_q, p, num_heads), op="self-attention")


@pytest.mark.parametrize("variant", VARIANTS)
def test_layers(marian64: hf_marian.HFMarianBackend, rng: np.random.Generator, variant: tuple) -> None:
    config = model_config(*variant)
    params = ref.init_params(config, 3)
    x, memory = rng.normal(size=(B, S_TGT, 8)), rng.normal(size=(B, S_SRC, 8))
    self_mask = np.tril(np.ones((S_TGT, S_TGT), dtype=bool))
    cross_mask = padding_mask(rng, B, S_SRC)[:, None, :]
    enc = marian64.encoder_layer(*to_native(marian64, [memory, params["encoder"][0]]), config,
                                 marian64.asarray(cross_mask))
    assert_matches_reference(enc, ref.encoder_layer(memory, params["encoder"][0], config, cross_mask),
                             op="encoder_layer")
    dec = marian64.decoder_layer(*to_native(marian64, [x, memory, params["decoder"][0]]), config,
                                 *to_native(marian64, [self_mask, cross_mask]))
    assert_matches_reference(dec, ref.decoder_layer(x, memory, params["decoder"][0], config, self_mask, cross_mask),
                             op="decoder_layer")


@pytest.mark.parametrize("variant", VARIANTS)
def test_stacks_and_greedy_decode(marian64: hf_marian.HFMarianBackend, rng: np.random.Generator,
                                  variant: tuple) -> None:
    """The stacks against the reference under Marian's positional table (MARIAN_PE)."""
    config = model_config(*variant)
    params = ref.init_params(config, 4)
    src, tgt = rng.integers(0, 11, (B, S_SRC)), rng.integers(0, 7, (B, S_TGT))
    src_mask, tgt_mask = padding_mask(rng, B, S_SRC), padding_mask(rng, B, S_TGT, right=True)
    n = to_native(marian64, {"params": params, "src": src, "tgt": tgt, "src_mask": src_mask, "tgt_mask": tgt_mask})
    with variants.active(*MARIAN_PE):
        memory = ref.encode(src, params, config, src_mask)
        decoded = ref.decode(tgt, memory, params, config, src_mask, tgt_mask)
        logits = ref.forward(src, tgt, params, config, src_mask, tgt_mask)
        tokens = ref.greedy_decode(src, params, config, 6, 1, 2, src_mask)
    assert_matches_reference(marian64.encode(n["src"], n["params"], config, n["src_mask"]), memory, op="encode",
                             where=src_mask)
    assert_matches_reference(marian64.decode(n["tgt"], marian64.asarray(memory), n["params"], config, n["src_mask"],
                                             n["tgt_mask"]), decoded, op="decode", where=tgt_mask)
    assert_matches_reference(marian64.forward(n["src"], n["tgt"], n["params"], config, n["src_mask"], n["tgt_mask"]),
                             logits, op="forward", where=tgt_mask)
    np.testing.assert_array_equal(marian64.greedy_decode(n["src"], n["params"], config, 6, 1, 2, n["src_mask"]).numpy(),
                                  tokens)


def test_greedy_decode_stops_when_every_row_emitted_eos(marian64: hf_marian.HFMarianBackend,
                                                      rng: np.random.Generator) -> None:
    params = ref.init_params(CONFIG, 5)
    params["generator"]["b"][2] = 100.0  # eos = 2 wins at every step
    src = rng.integers(0, 11, (B, S_SRC))
    tokens = marian64.greedy_decode(*to_native(marian64, [src, params]), CONFIG, 6, 1, 2)
    np.testing.assert_array_equal(tokens.numpy(), [[1, 2]] * B)


# -- the upstream behaviours the known-deviations files name (evidence; a fix upstream fails these) --


def test_decoder_layer_without_self_mask_is_causal_under_sdpa_only(marian64: hf_marian.HFMarianBackend,
                                                                    rng: np.random.Generator) -> None:
    """sdpa_attention_forward reads attention_mask=None of an is_causal module as causal; eager does not."""
    params = ref.init_params(CONFIG, 6)["decoder"][0]
    x, memory = rng.normal(size=(B, S_TGT, 8)), rng.normal(size=(B, S_SRC, 8))
    out = marian64.decoder_layer(*to_native(marian64, [x, memory, params]), CONFIG)
    causal = np.tril(np.ones((S_TGT, S_TGT), dtype=bool))
    expected = ref.decoder_layer(x, memory, params, CONFIG, causal if marian64.attn_implementation == "sdpa" else None)
    assert_matches_reference(out, expected, op="decoder_layer(self_mask=None)")


def test_cached_generate_without_decoder_layers_stays_at_position_zero(marian64: hf_marian.HFMarianBackend) -> None:
    """No decoder layer fills the cache, so MarianDecoder reads past_key_values_length 0 at every step:
    the cached generate() disagrees with its own forward on the prefix (the gate's greedy property)."""
    import torch

    config = {**CONFIG, "num_encoder_layers": 0, "num_decoder_layers": 0, "src_vocab_size": 3, "tgt_vocab_size": 3,
              "d_model": 2, "num_heads": 1}
    params = ref.init_params(config, 0)
    params["tgt_embedding"] = np.array([[0.92, 0.67], [-0.50, -0.89], [-0.44, 0.03]])
    params["generator"] = {"w": np.array([[0.78, -1.02, 0.50], [-0.71, 0.80, 0.09]]), "b": np.array([0.04, 0.10, -0.01])}
    n = to_native(marian64, {"params": params, "src": np.array([[0]])})
    tokens = marian64.greedy_decode(n["src"], n["params"], config, 3, 1, 0)
    with torch.no_grad():
        logits = marian64.forward(n["src"], tokens[:, :-1], n["params"], config)
    assert tokens.tolist() == [[1, 1, 1]] and logits.argmax(-1).tolist() == [[1, 0]]
