"""The ``torch-nn`` adapters: torch.nn modules built from our params reproduce the float64
reference on inputs without edge cases (no fully masked query row; padded positions, which
the contract leaves unspecified, not compared), on both the fast and the slow path.

Also: the parameter and mask mappings on their own, that the fast path really is taken (and
the slow-path variant really avoids it), and the factories' refusals. What the modules do on
edge cases is the gate's business (README.md, "What the suite finds in the libraries people deploy").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import reference as ref
from backends import torch_nn, torch_nn_mapping
from backends.torch_nn import TorchNNBackend
from backends.torch_nn_mapping import (
    build_transformer, causal_disallowed, decoder_layer_state, encoder_layer_state, mha_state, nn_masks)
from conformance.kit.harness import to_native
from tests.masks import padding_mask, random_mask
from tests.matching import assert_matches_reference

CONFIG: dict[str, Any] = {"d_model": 8, "num_heads": 2, "d_ff": 16, "num_encoder_layers": 2,
                          "num_decoder_layers": 2, "src_vocab_size": 11, "tgt_vocab_size": 7}
B, S_SRC, S_TGT = 3, 5, 4
# (norm_first, final_norm, activation, scale_embedding)
VARIANTS = [(False, False, "relu", True), (False, True, "gelu", True), (True, True, "relu", False),
            (True, False, "gelu", True)]
FACTORIES: dict[str, Callable[..., TorchNNBackend]] = {"torch-nn": torch_nn.factory,
                                                       "torch-nn-slowpath": torch_nn.slowpath_factory}


# -- plumbing ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def nn64(request: pytest.FixtureRequest) -> TorchNNBackend:
    """Each torch.nn backend at float64 (not named ``backend``: the suite's plugin
    parametrizes that name over the registered targets)."""
    return FACTORIES[request.param](dtype="float64")


def model_config(norm_first: bool, final_norm: bool, activation: str, scale_embedding: bool, **extra: Any) -> dict:
    return {**CONFIG, "norm_first": norm_first, "final_norm": final_norm, "activation": activation,
            "scale_embedding": scale_embedding, **extra}


MASK_KINDS = ["none", "causal", "key_padding", "random", "batch_shared"]


def make_mask(kind: str, rng: np.random.Generator, s_q: int, s_k: int) -> np.ndarray | None:
    """A mask of each form torch.nn receives differently (see ``nn_masks``), no row fully masked."""
    if kind == "causal":
        return np.tril(np.ones((s_q, s_k), dtype=bool))
    if kind == "key_padding":
        return padding_mask(rng, B, s_k)[:, None, :]  # (B, 1, Sk) -> key_padding_mask
    if kind == "random":
        return random_mask(rng, (B, s_q, s_k))  # -> attn_mask (B * h, Sq, Sk)
    if kind == "batch_shared":
        return random_mask(rng, (1, s_q, s_k))  # -> attn_mask (Sq, Sk)
    return None


# -- the mappings on their own ----------------------------------------------------------------


def test_mha_state_loads_strictly_and_reproduces_the_reference(rng: np.random.Generator) -> None:
    backend = torch_nn.factory(dtype="float64")
    p = ref.init_params(CONFIG, 0)["decoder"][0]["cross_attn"]
    mha = nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64).eval()
    mha.load_state_dict(mha_state(to_native(backend, p)), strict=True)  # every parameter, no extra key
    x_q, x_kv = rng.normal(size=(B, 4, 8)), rng.normal(size=(B, 6, 8))
    with torch.no_grad():
        out, _ = mha(torch.tensor(x_q), torch.tensor(x_kv), torch.tensor(x_kv), need_weights=False)
    assert_matches_reference(out, ref.multi_head_attention(x_q, x_kv, p, 2), op="mha_state")


@pytest.mark.parametrize("norm_first", [False, True])
def test_layer_states_cover_every_parameter(norm_first: bool) -> None:
    backend = torch_nn.factory(dtype="float64")
    layers = to_native(backend, ref.init_params(CONFIG, 1))
    kwargs = torch_nn_mapping.layer_kwargs(model_config(norm_first, False, "relu", True, layer_norm_eps=1e-5))
    enc = nn.TransformerEncoderLayer(**kwargs, dtype=torch.float64)
    dec = nn.TransformerDecoderLayer(**kwargs, dtype=torch.float64)
    assert set(encoder_layer_state(layers["encoder"][0])) == set(enc.state_dict())
    assert set(decoder_layer_state(layers["decoder"][0])) == set(dec.state_dict())


@pytest.mark.parametrize("final_norm", [False, True])
def test_transformer_final_norms_follow_final_norm(final_norm: bool) -> None:
    config = model_config(True, final_norm, "relu", True)
    backend = torch_nn.factory(dtype="float64")
    model = build_transformer(to_native(backend, ref.init_params(config, 2)), config,
                              dtype=torch.float64, device=torch.device("cpu"))
    assert (model.encoder.norm is not None) == final_norm
    assert (model.decoder.norm is not None) == final_norm
    assert not model.training


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((B, 1, 6), "key_padding_mask"),
        ((4, 6), "attn_mask_2d"),
        ((1, 4, 6), "attn_mask_2d"),
        ((6,), "attn_mask_2d"),
        ((1, 1, B, 4, 6), "attn_mask_3d"),
        ((B, 4, 6), "attn_mask_3d"),
        ((B, 4, 1), "attn_mask_3d"),
    ],
)
def test_nn_masks_inverts_and_picks_the_torch_form(rng: np.random.Generator, shape: tuple, expected: str) -> None:
    num_heads = 2
    mask = rng.random(shape) < 0.5
    attn_mask, key_padding_mask = nn_masks(torch.tensor(mask), B, 4, 6, num_heads)
    full = np.broadcast_to(mask, np.broadcast_shapes(shape, (B, 4, 6))).reshape(B, 4, 6)  # True = may attend
    if expected == "key_padding_mask":
        assert attn_mask is None
        np.testing.assert_array_equal(key_padding_mask.numpy(), ~full[:, 0, :])
    elif expected == "attn_mask_2d":
        assert key_padding_mask is None and attn_mask.shape == (4, 6)
        np.testing.assert_array_equal(attn_mask.numpy(), ~full[0])
    else:  # torch's 3-D attn_mask is (B * h, Sq, Sk), row b * h + head
        assert key_padding_mask is None and attn_mask.shape == (B * num_heads, 4, 6)
        np.testing.assert_array_equal(attn_mask.numpy(), ~np.repeat(full, num_heads, axis=0))


def test_nn_masks_none() -> None:
    assert nn_masks(None, B, 4, 6, 2) == (None, None)


def test_causal_disallowed_masks_the_future() -> None:
    np.testing.assert_array_equal(causal_disallowed(3, torch.device("cpu")).numpy(),
                                  [[False, True, True], [False, False, True], [False, False, False]])


# -- ops against the reference ----------------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_layer_norm(nn64: TorchNNBackend, rng: np.random.Generator, eps: float) -> None:
    x, gamma, beta = rng.normal(3.0, 2.0, (B, S_SRC, 8)), rng.normal(1.0, 0.1, 8), rng.normal(0.0, 0.1, 8)
    out = nn64.layer_norm(*to_native(nn64, [x, gamma, beta]), eps)
    assert_matches_reference(out, ref.layer_norm(x, gamma, beta, eps), op="layer_norm")


@pytest.mark.parametrize("d_v", [2, 3, 7])  # < d_k, = d_k, > d_k (V goes in d_k-wide blocks)
@pytest.mark.parametrize("mask_kind", ["none", "causal", "random", "key_padding"])
def test_attention(nn64: TorchNNBackend, rng: np.random.Generator, d_v: int, mask_kind: str) -> None:
    q, k, v = rng.normal(size=(B, 4, 3)), rng.normal(size=(B, 6, 3)), rng.normal(size=(B, 6, d_v))
    mask = make_mask(mask_kind, rng, 4, 6)
    weights = nn64.attention_weights(*to_native(nn64, [q, k, mask]))
    out = nn64.attention(*to_native(nn64, [q, k, v, mask]))
    assert_matches_reference(weights, ref.attention_weights(q, k, mask), op=f"attention_weights({mask_kind})")
    assert_matches_reference(out, ref.attention(q, k, v, mask), op=f"attention({mask_kind}, d_v={d_v})")


@pytest.mark.parametrize("lead", [(), (2, 3)])
def test_attention_batch_axes(nn64: TorchNNBackend, rng: np.random.Generator, lead: tuple) -> None:
    q, k, v = (rng.normal(size=(*lead, s, 4)) for s in (3, 5, 5))
    mask = random_mask(rng, (3, 5))
    assert_matches_reference(nn64.attention(*to_native(nn64, [q, k, v, mask])), ref.attention(q, k, v, mask), op="attention")
    assert_matches_reference(nn64.attention_weights(*to_native(nn64, [q, k, mask])), ref.attention_weights(q, k, mask),
                   op="attention_weights")


@pytest.mark.parametrize("self_attention", [False, True])
@pytest.mark.parametrize("num_heads", [1, 2, 4])
@pytest.mark.parametrize("mask_kind", MASK_KINDS)
def test_multi_head_attention(
    nn64: TorchNNBackend, rng: np.random.Generator, num_heads: int, mask_kind: str, self_attention: bool
) -> None:
    s_k = 4 if self_attention else 6
    x_q = rng.normal(size=(B, 4, 8))
    x_kv = x_q.copy() if self_attention else rng.normal(size=(B, s_k, 8))
    p = ref.init_params(CONFIG, 3)["decoder"][0]["cross_attn"]
    mask = make_mask(mask_kind, rng, 4, s_k)
    out = nn64.multi_head_attention(*to_native(nn64, [x_q, x_kv, p]), num_heads, to_native(nn64, mask))
    expected = ref.multi_head_attention(x_q, x_kv, p, num_heads, mask)
    assert_matches_reference(out, expected, op=f"multi_head_attention(h={num_heads}, {mask_kind})")


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_layer(nn64: TorchNNBackend, rng: np.random.Generator, variant: tuple, mask_kind: str) -> None:
    config = model_config(*variant)
    p = ref.init_params(config, 4)["encoder"][0]
    x, mask = rng.normal(size=(B, S_SRC, 8)), make_mask(mask_kind, rng, S_SRC, S_SRC)
    out = nn64.encoder_layer(*to_native(nn64, [x, p]), config, to_native(nn64, mask))
    assert_matches_reference(out, ref.encoder_layer(x, p, config, mask), op=f"encoder_layer{variant}")


@pytest.mark.parametrize("mask_kind", ["none", "causal", "random"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_decoder_layer(nn64: TorchNNBackend, rng: np.random.Generator, variant: tuple, mask_kind: str) -> None:
    config = model_config(*variant)
    p = ref.init_params(config, 5)["decoder"][0]
    y, memory = rng.normal(size=(B, S_TGT, 8)), rng.normal(size=(B, S_SRC, 8))
    self_mask = make_mask(mask_kind, rng, S_TGT, S_TGT)
    cross_mask = padding_mask(rng, B, S_SRC)[:, None, :]
    out = nn64.decoder_layer(*to_native(nn64, [y, memory, p]), config, *to_native(nn64, [self_mask, cross_mask]))
    assert_matches_reference(out, ref.decoder_layer(y, memory, p, config, self_mask, cross_mask), op=f"decoder_layer{variant}")


@pytest.mark.parametrize("padding", ["none", "right", "pattern"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_stacks(nn64: TorchNNBackend, rng: np.random.Generator, variant: tuple, padding: str) -> None:
    config = model_config(*variant)
    params = ref.init_params(config, 6)
    src, tgt = rng.integers(0, 11, (B, S_SRC)), rng.integers(0, 7, (B, S_TGT))
    src_mask = None if padding == "none" else padding_mask(rng, B, S_SRC, right=padding == "right")
    # target padding on the right only: a left-padded query has every key masked (an edge case)
    tgt_mask = None if padding == "none" else padding_mask(rng, B, S_TGT, right=True)
    n = to_native(nn64, {"params": params, "src": src, "tgt": tgt, "src_mask": src_mask, "tgt_mask": tgt_mask})
    src_real = None if src_mask is None else src_mask  # padded positions: unspecified
    tgt_real = None if tgt_mask is None else tgt_mask
    memory = ref.encode(src, params, config, src_mask)
    assert_matches_reference(nn64.encode(n["src"], n["params"], config, n["src_mask"]), memory,
                   op=f"encode{variant}", where=src_real)
    assert_matches_reference(nn64.decode(n["tgt"], nn64.asarray(memory), n["params"], config, n["src_mask"], n["tgt_mask"]),
                   ref.decode(tgt, memory, params, config, src_mask, tgt_mask), op=f"decode{variant}", where=tgt_real)
    assert_matches_reference(nn64.forward(n["src"], n["tgt"], n["params"], config, n["src_mask"], n["tgt_mask"]),
                   ref.forward(src, tgt, params, config, src_mask, tgt_mask), op=f"forward{variant}", where=tgt_real)


@pytest.mark.parametrize(("n_enc", "n_dec"), [(0, 1), (1, 0), (0, 0)])
@pytest.mark.parametrize("final_norm", [False, True])
def test_stacks_with_zero_layers(nn64: TorchNNBackend, rng: np.random.Generator, n_enc: int, n_dec: int,
                                 final_norm: bool) -> None:
    config = model_config(True, final_norm, "relu", True, num_encoder_layers=n_enc, num_decoder_layers=n_dec)
    params = ref.init_params(config, 7)
    src, tgt = rng.integers(0, 11, (B, S_SRC)), rng.integers(0, 7, (B, S_TGT))
    out = nn64.forward(*to_native(nn64, [src, tgt, params]), config)
    assert_matches_reference(out, ref.forward(src, tgt, params, config), op=f"forward({n_enc} + {n_dec} layers)")


@pytest.mark.parametrize("seed", range(4))
def test_greedy_decode(nn64: TorchNNBackend, seed: int) -> None:
    config = model_config(*VARIANTS[seed])
    params, rng = ref.init_params(config, seed), np.random.default_rng(seed)
    src, src_mask = rng.integers(0, 11, (4, S_SRC)), padding_mask(rng, 4, S_SRC, right=True)
    out = nn64.greedy_decode(*to_native(nn64, [src, params]), config, 7, 1, 2, nn64.asarray(src_mask))
    np.testing.assert_array_equal(out.numpy(), ref.greedy_decode(src, params, config, 7, 1, 2, src_mask))


# -- the fast path is taken (torch-nn) and avoided (torch-nn-slowpath) -------------------------


@pytest.mark.parametrize(("name", "padded_is_zero"), [("torch-nn", True), ("torch-nn-slowpath", False)])
def test_nested_tensor_fast_path_is_taken_only_on_torch_nn(name: str, padded_is_zero: bool,
                                                           rng: np.random.Generator) -> None:
    """nn.TransformerEncoder's nested-tensor fast path (post-LN, even heads, eval, no grad,
    right padding) writes zeros at padded positions; the slow path computes them."""
    backend = FACTORIES[name](dtype="float64")
    config = model_config(False, False, "relu", True)
    params = ref.init_params(config, 8)
    src, src_mask = rng.integers(0, 11, (B, S_SRC)), np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    out = backend.encode(*to_native(backend, [src, params]), config, backend.asarray(src_mask)).numpy()
    assert (out[~src_mask] == 0).all() == padded_is_zero
    assert_matches_reference(torch.tensor(out), ref.encode(src, params, config, src_mask), op="encode", where=src_mask)


@pytest.mark.parametrize(("name", "expect_nan"), [("torch-nn", True), ("torch-nn-slowpath", False)])
def test_fast_path_self_attention_on_a_fully_masked_row(name: str, expect_nan: bool,
                                                        rng: np.random.Generator) -> None:
    """Upstream behaviour the adapter must expose, not hide: torch's native MHA (the fast path,
    taken for mha(x, x, x) with even heads) gives NaN for a query row with every key masked
    (pytorch/pytorch#41508, #152028); the slow path's SDPA gives the contract's zeros (+ b_o).
    If this starts failing, torch changed: update conformance/known_deviations/torch-nn.toml."""
    backend = FACTORIES[name](dtype="float64")
    p = ref.init_params(CONFIG, 9)["encoder"][0]["self_attn"]
    x, mask = rng.normal(size=(B, 4, 8)), random_mask(rng, (B, 4, 4))
    mask[:, 1, :] = False
    out = backend.multi_head_attention(*to_native(backend, [x, x.copy(), p]), 2, backend.asarray(mask)).numpy()
    assert np.isnan(out[:, 1]).all() == expect_nan
    real = np.ones(out.shape[:2], bool)
    real[:, 1] = expect_nan is False
    assert_matches_reference(torch.tensor(out), ref.multi_head_attention(x, x, p, 2, mask), op="mha", where=real)


def test_attention_weights_use_need_weights_path(rng: np.random.Generator) -> None:
    """``need_weights=True`` is the path that returns weights; on a fully masked row it gives
    NaN in torch 2.13 on either path (the gate reports it; this pins that the adapter reaches it)."""
    backend = torch_nn.slowpath_factory(dtype="float64")
    q, k = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4))
    mask = random_mask(rng, (2, 3, 5))
    mask[:, 0, :] = False
    weights = backend.attention_weights(*to_native(backend, [q, k, mask])).numpy()
    assert np.isnan(weights[:, 0]).all()
    assert_matches_reference(torch.tensor(weights[:, 1:]), ref.attention_weights(q, k, mask)[:, 1:], op="attention_weights")


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("before", [False, True])
def test_fastpath_setting_is_restored(name: str, before: bool, rng: np.random.Generator) -> None:
    backend = FACTORIES[name](dtype="float64")
    x, gamma, beta = rng.normal(size=(2, 4)), np.ones(4), np.zeros(4)
    torch.backends.mha.set_fastpath_enabled(before)
    try:
        backend.layer_norm(*to_native(backend, [x, gamma, beta]), 1e-5)
        assert torch.backends.mha.get_fastpath_enabled() is before
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


# -- factories --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_factory_names_and_dtypes(name: str) -> None:
    for dtype in ("float64", "float32", "float16", "bfloat16"):
        backend = FACTORIES[name](dtype=dtype)
        assert (backend.name, backend.dtype, backend.device) == (name, dtype, "cpu")
    with pytest.raises(ValueError, match="unsupported"):
        FACTORIES[name](dtype="int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_cuda_is_unsupported_without_a_gpu(name: str, device: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        FACTORIES[name](dtype="float32", device=device)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_low_precision_forward_runs(name: str, dtype: str, rng: np.random.Generator) -> None:
    backend = FACTORIES[name](dtype=dtype)
    config = model_config(False, True, "gelu", True)
    params = ref.init_params(config, 10)
    src, tgt = rng.integers(0, 11, (B, S_SRC)), rng.integers(0, 7, (B, S_TGT))
    src_mask = padding_mask(rng, B, S_SRC, right=True)
    out = backend.forward(*to_native(backend, [src, tgt, params]), config, backend.asarray(src_mask))
    assert out.dtype == backend.torch_dtype and out.shape == (B, S_TGT, 7)
    assert np.isfinite(backend.to_numpy(out)).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_cuda_matches_reference(name: str) -> None:
    backend, config = FACTORIES[name](dtype="float64", device="cuda"), model_config(False, True, "gelu", True)
    params, rng = ref.init_params(config, 11), np.random.default_rng(11)
    src, tgt = rng.integers(0, 11, (B, S_SRC)), rng.integers(0, 7, (B, S_TGT))
    src_mask = padding_mask(rng, B, S_SRC, right=True)
    logits = backend.forward(*to_native(backend, [src, tgt, params]), config, backend.asarray(src_mask))
    assert logits.device.type == "cuda"
    assert_matches_reference(logits, ref.forward(src, tgt, params, config, src_mask), op="forward(cuda)")
