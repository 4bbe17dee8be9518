"""The built-in ``torch`` backend: float64 against the float64 reference on every op (masks,
fully masked rows, pre-/post-LN, final norm, GELU, greedy decoding), the factory's refusals,
the conversions, and a smoke run of every op at float32, float16 and bfloat16."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import reference as ref
from backends.contract import OPS
from backends.torch_backend import TorchBackend, factory
from conformance.kit.harness import to_native
from tests.masks import padding_mask
from tests.matching import assert_matches_reference

LOW_PRECISIONS = ("float32", "float16", "bfloat16")

CONFIG: dict[str, Any] = {
    "d_model": 8,
    "num_heads": 2,
    "d_ff": 16,
    "num_encoder_layers": 2,
    "num_decoder_layers": 2,
    "src_vocab_size": 11,
    "tgt_vocab_size": 7,
}
B, S_SRC, S_TGT = 3, 5, 4

# (norm_first, final_norm, activation, scale_embedding): the variants the stacks must honour.
VARIANTS = [
    (False, False, "relu", True),
    (False, True, "gelu", True),
    (True, True, "relu", False),
    (True, False, "gelu", True),
]


# -- plumbing ---------------------------------------------------------------------------------


def attention_mask(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A random (..., Sq, Sk) mask whose first query row is fully masked."""
    mask = rng.random(shape) < 0.6
    mask[..., 0, :] = False
    return mask


def model_config(norm_first: bool, final_norm: bool, activation: str, scale_embedding: bool) -> dict:
    return {**CONFIG, "norm_first": norm_first, "final_norm": final_norm,
            "activation": activation, "scale_embedding": scale_embedding}


@pytest.fixture(scope="module")
def torch64() -> TorchBackend:
    """The backend under test at float64 (not named ``backend``: the suite's plugin
    parametrizes that fixture name over every registered backend)."""
    return factory(dtype="float64")


# -- elementary ops ---------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax(torch64: TorchBackend, rng: np.random.Generator, axis: int) -> None:
    x = rng.normal(0, 3, (4, 5, 6))
    x[rng.random(x.shape) < 0.3] = -np.inf
    x[0, 0, :] = x[1, :, 2] = x[:, 3, 4] = -np.inf  # all -inf along every axis somewhere
    out = torch64.softmax(torch64.asarray(x), axis=axis)
    assert_matches_reference(out, ref.softmax(x, axis=axis), op=f"softmax(axis={axis})")
    assert (out.numpy()[np.isneginf(x)] == 0).all(), "-inf entries must give exactly 0"


def test_softmax_all_neg_inf_row_is_zeros(torch64: TorchBackend) -> None:
    out = torch64.softmax(torch64.asarray(np.array([[-np.inf, -np.inf], [0.0, -np.inf]])))
    np.testing.assert_array_equal(out.numpy(), [[0.0, 0.0], [1.0, 0.0]])


@pytest.mark.parametrize(("seq_len", "d_model"), [(1, 2), (10, 8), (60, 64)])
def test_positional_encoding(torch64: TorchBackend, seq_len: int, d_model: int) -> None:
    out = torch64.positional_encoding(seq_len, d_model)
    assert_matches_reference(out, ref.positional_encoding(seq_len, d_model), op="positional_encoding")


def test_positional_encoding_rejects_odd_d_model(torch64: TorchBackend) -> None:
    with pytest.raises(ValueError, match="even"):
        torch64.positional_encoding(4, 5)


def test_embedding(torch64: TorchBackend, rng: np.random.Generator) -> None:
    ids, table = rng.integers(0, 9, (B, S_SRC)), rng.normal(size=(9, 6))
    out = torch64.embedding(torch64.asarray(ids), torch64.asarray(table))
    assert_matches_reference(out, ref.embedding(ids, table), op="embedding")


@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_layer_norm(torch64: TorchBackend, rng: np.random.Generator, eps: float) -> None:
    x = rng.normal(3.0, 2.0, (B, S_SRC, 8))
    gamma, beta = rng.normal(1.0, 0.1, 8), rng.normal(0.0, 0.1, 8)
    out = torch64.layer_norm(*to_native(torch64, [x, gamma, beta]), eps)
    assert_matches_reference(out, ref.layer_norm(x, gamma, beta, eps), op=f"layer_norm(eps={eps})")


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_feed_forward(torch64: TorchBackend, rng: np.random.Generator, activation: str) -> None:
    x, p = rng.normal(size=(B, S_SRC, 8)), ref.init_params(CONFIG, 0)["encoder"][0]["ffn"]
    out = torch64.feed_forward(torch64.asarray(x), to_native(torch64, p), activation)
    assert_matches_reference(out, ref.feed_forward(x, p, activation), op=f"feed_forward({activation})")


# -- attention --------------------------------------------------------------------------------

MASK_KINDS = ["none", "random", "causal", "key_padding"]


def make_mask(kind: str, rng: np.random.Generator, batch: int, s_q: int, s_k: int) -> np.ndarray | None:
    """A mask of the given kind broadcasting to (batch, s_q, s_k); ``random`` masks a whole row."""
    if kind == "random":
        return attention_mask(rng, (batch, s_q, s_k))
    if kind == "causal":
        return np.tril(np.ones((s_q, s_k), dtype=bool))
    if kind == "key_padding":
        return padding_mask(rng, batch, s_k)[:, None, :]
    return None


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
def test_attention(torch64: TorchBackend, rng: np.random.Generator, mask_kind: str) -> None:
    q, k, v = rng.normal(size=(B, 4, 3)), rng.normal(size=(B, 6, 3)), rng.normal(size=(B, 6, 5))
    mask = make_mask(mask_kind, rng, B, 4, 6)
    weights = torch64.attention_weights(*to_native(torch64, [q, k, mask]))
    out = torch64.attention(*to_native(torch64, [q, k, v, mask]))
    assert_matches_reference(weights, ref.attention_weights(q, k, mask), op=f"attention_weights({mask_kind})")
    assert_matches_reference(out, ref.attention(q, k, v, mask), op=f"attention({mask_kind})")


def test_fully_masked_query_row_gives_zeros(torch64: TorchBackend, rng: np.random.Generator) -> None:
    q, k, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 4))
    mask = attention_mask(rng, (2, 3, 5))
    weights = torch64.attention_weights(*to_native(torch64, [q, k, mask]))
    out = torch64.attention(*to_native(torch64, [q, k, v, mask]))
    assert (weights.numpy()[:, 0] == 0).all() and (out.numpy()[:, 0] == 0).all()
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("num_heads", [1, 2, 4])
@pytest.mark.parametrize("mask_kind", MASK_KINDS)
def test_multi_head_attention(
    torch64: TorchBackend, rng: np.random.Generator, num_heads: int, mask_kind: str
) -> None:
    x_q, x_kv = rng.normal(size=(B, 4, 8)), rng.normal(size=(B, 6, 8))
    p = ref.init_params(CONFIG, 1)["decoder"][0]["cross_attn"]
    mask = make_mask(mask_kind, rng, B, 4, 6)
    out = torch64.multi_head_attention(*to_native(torch64, [x_q, x_kv, p]), num_heads, to_native(torch64, mask))
    expected = ref.multi_head_attention(x_q, x_kv, p, num_heads, mask)
    assert_matches_reference(out, expected, op=f"multi_head_attention(h={num_heads}, {mask_kind})")


# -- layers and stacks ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_layer(torch64: TorchBackend, rng: np.random.Generator, variant: tuple) -> None:
    config = model_config(*variant)
    p = ref.init_params(config, 2)["encoder"][0]
    x, mask = rng.normal(size=(B, S_SRC, 8)), padding_mask(rng, B, S_SRC)[:, None, :]
    out = torch64.encoder_layer(*to_native(torch64, [x, p]), config, to_native(torch64, mask))
    assert_matches_reference(out, ref.encoder_layer(x, p, config, mask), op=f"encoder_layer{variant}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_decoder_layer(torch64: TorchBackend, rng: np.random.Generator, variant: tuple) -> None:
    config = model_config(*variant)
    p = ref.init_params(config, 3)["decoder"][0]
    y, memory = rng.normal(size=(B, S_TGT, 8)), rng.normal(size=(B, S_SRC, 8))
    self_mask = np.tril(np.ones((S_TGT, S_TGT), dtype=bool)) & padding_mask(rng, B, S_TGT)[:, None, :]
    cross_mask = padding_mask(rng, B, S_SRC)[:, None, :]
    out = torch64.decoder_layer(*to_native(torch64, [y, memory, p]), config, *to_native(torch64, [self_mask, cross_mask]))
    expected = ref.decoder_layer(y, memory, p, config, self_mask, cross_mask)
    assert_matches_reference(out, expected, op=f"decoder_layer{variant}")


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("variant", VARIANTS)
def test_stacks(torch64: TorchBackend, rng: np.random.Generator, variant: tuple, masked: bool) -> None:
    config = model_config(*variant)
    params = ref.init_params(config, 4)
    src = rng.integers(0, CONFIG["src_vocab_size"], (B, S_SRC))
    tgt = rng.integers(0, CONFIG["tgt_vocab_size"], (B, S_TGT))
    src_mask = padding_mask(rng, B, S_SRC) if masked else None
    tgt_mask = padding_mask(rng, B, S_TGT) if masked else None
    n = to_native(torch64, {"params": params, "src": src, "tgt": tgt, "src_mask": src_mask, "tgt_mask": tgt_mask})
    memory = ref.encode(src, params, config, src_mask)
    assert_matches_reference(
        torch64.encode(n["src"], n["params"], config, n["src_mask"]), memory, op=f"encode{variant}"
    )
    assert_matches_reference(
        torch64.decode(n["tgt"], torch64.asarray(memory), n["params"], config, n["src_mask"], n["tgt_mask"]),
        ref.decode(tgt, memory, params, config, src_mask, tgt_mask),
        op=f"decode{variant}",
    )
    assert_matches_reference(
        torch64.forward(n["src"], n["tgt"], n["params"], config, n["src_mask"], n["tgt_mask"]),
        ref.forward(src, tgt, params, config, src_mask, tgt_mask),
        op=f"forward{variant}",
    )


@pytest.mark.parametrize("options", [{}, {"norm_first": True}, {"norm_first": True, "final_norm": None}])
def test_stacks_with_config_defaults(torch64: TorchBackend, rng: np.random.Generator, options: dict) -> None:
    config = {**CONFIG, "num_encoder_layers": 0, "num_decoder_layers": 1, **options}
    params = ref.init_params(config, 5)
    src, tgt = rng.integers(0, 11, (B, S_SRC)), rng.integers(0, 7, (B, S_TGT))
    out = torch64.forward(*to_native(torch64, [src, tgt, params]), config)
    assert_matches_reference(out, ref.forward(src, tgt, params, config), op=f"forward(0 encoder layers, {options})")


# -- greedy decoding --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_len", [1, 2, 9])
def test_greedy_decode(torch64: TorchBackend, seed: int, max_len: int) -> None:
    config = model_config(*VARIANTS[seed % len(VARIANTS)])
    params = ref.init_params(config, seed)
    rng = np.random.default_rng(seed)
    src, src_mask = rng.integers(0, 11, (4, S_SRC)), padding_mask(rng, 4, S_SRC)
    out = torch64.greedy_decode(*to_native(torch64, [src, params]), config, max_len, 1, 2, torch64.asarray(src_mask))
    expected = ref.greedy_decode(src, params, config, max_len, 1, 2, src_mask)
    assert out.dtype == torch.int64
    np.testing.assert_array_equal(out.numpy(), expected, err_msg="[greedy_decode] tokens differ")


def test_greedy_decode_stops_when_every_row_emits_eos(torch64: TorchBackend, rng: np.random.Generator) -> None:
    params = ref.init_params(CONFIG, 6)
    params["generator"]["b"][2] = 100.0  # eos = 2 wins at every step
    src = rng.integers(0, 11, (B, S_SRC))
    out = torch64.greedy_decode(*to_native(torch64, [src, params]), CONFIG, 10, 1, 2)
    np.testing.assert_array_equal(out.numpy(), [[1, 2]] * B)


class ScriptedBackend(TorchBackend):
    """Emits a fixed token per row at each step, to test the loop apart from the model."""

    def __init__(self, script: list[list[int]]) -> None:
        super().__init__(dtype="float64")
        self.script = iter(script)

    def _next_token(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.tensor(next(self.script))


@pytest.mark.parametrize(
    ("script", "max_len", "expected"),
    [
        ([[2, 3, 4], [5, 2, 4], [5, 5, 2]], 10, [[1, 2, 2, 2], [1, 3, 2, 2], [1, 4, 4, 2]]),
        ([[3, 3, 3], [2, 4, 4], [4, 4, 4]], 3, [[1, 3, 2], [1, 3, 4], [1, 3, 4]]),
    ],
)
def test_greedy_loop_fills_eos_and_stops(script: list, max_len: int, expected: list) -> None:
    backend = ScriptedBackend(script)
    params = to_native(backend, ref.init_params(CONFIG, 9))
    src = backend.asarray(np.zeros((3, 2), dtype=np.int64))
    out = backend.greedy_decode(src, params, CONFIG, max_len, 1, 2)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_next_token_takes_lowest_index_on_ties(torch64: TorchBackend) -> None:
    logits = torch64.asarray(np.array([[0.0, 3.0, 3.0, 1.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 7.0]]))
    np.testing.assert_array_equal(torch64._next_token(logits).numpy(), [1, 0, 3])


# -- factory and conversions ------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_factory_rejects_cuda_without_gpu(device: str) -> None:
    with pytest.raises(ValueError, match=f"{device}.*unsupported"):
        factory(dtype="float32", device=device)


@pytest.mark.parametrize("device", ["tpu", "not a device", "cuda:99"])
def test_factory_rejects_unknown_device(device: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        factory(device=device)


@pytest.mark.parametrize("dtype", ["float8", "int64", "complex128"])
def test_factory_rejects_unknown_dtype(dtype: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        factory(dtype=dtype)


def test_factory_defaults_and_attributes() -> None:
    backend = factory()
    assert (backend.name, backend.dtype, backend.device) == ("torch", "float32", "cpu")


@pytest.mark.parametrize("dtype", ["float64", *LOW_PRECISIONS])
def test_conversions(dtype: str) -> None:
    backend = factory(dtype=dtype)
    floats = backend.asarray(np.array([[1.5, -2.0]]))
    ids = backend.asarray(np.array([[1, 2]], dtype=np.int32))
    mask = backend.asarray(np.array([True, False]))
    assert (floats.dtype, ids.dtype, mask.dtype) == (backend.torch_dtype, torch.int64, torch.bool)
    back = backend.to_numpy(floats)
    assert back.dtype == (np.float32 if dtype == "bfloat16" else np.dtype(dtype))
    np.testing.assert_array_equal(back, [[1.5, -2.0]])


def test_float16_inputs_are_rounded_once() -> None:
    x = 1 + 2**-11 + 2**-30  # just above a float16 tie: rounding via float32 would give 1.0
    assert factory(dtype="float16").asarray(np.array([x])).item() == float(np.float16(x))


# -- lower precisions: every op runs, with the right shape and finite values ------------------


def smoke_cases(backend: TorchBackend, rng: np.random.Generator) -> dict[str, tuple[Callable[[], Any], tuple]]:
    """op name -> (a call of that op on random inputs, the expected output shape)."""
    config = model_config(True, True, "gelu", True)
    params = to_native(backend, ref.init_params(config, 7))
    x, memory = (backend.asarray(rng.normal(size=(B, s, 8))) for s in (S_TGT, S_SRC))
    src, tgt = backend.asarray(rng.integers(0, 11, (B, S_SRC))), backend.asarray(rng.integers(0, 7, (B, S_TGT)))
    src_mask, tgt_mask = backend.asarray(padding_mask(rng, B, S_SRC)), backend.asarray(padding_mask(rng, B, S_TGT))
    mask = backend.asarray(attention_mask(rng, (B, S_TGT, S_SRC)))
    scores = backend.asarray(rng.normal(0, 3, (B, S_TGT, S_SRC)))
    layer = params["decoder"][0]
    norm, attn = layer["norm1"], layer["cross_attn"]
    return {
        "softmax": (lambda: backend.softmax(scores.masked_fill(~mask, float("-inf"))), (B, S_TGT, S_SRC)),
        "positional_encoding": (lambda: backend.positional_encoding(S_SRC, 8), (S_SRC, 8)),
        "embedding": (lambda: backend.embedding(src, params["src_embedding"]), (B, S_SRC, 8)),
        "layer_norm": (lambda: backend.layer_norm(x, norm["gamma"], norm["beta"], 1e-5), x.shape),
        "attention": (lambda: backend.attention(x, memory, memory, mask), (B, S_TGT, 8)),
        "attention_weights": (lambda: backend.attention_weights(x, memory, mask), (B, S_TGT, S_SRC)),
        "multi_head_attention": (lambda: backend.multi_head_attention(x, memory, attn, 2, mask), x.shape),
        "feed_forward": (lambda: backend.feed_forward(x, layer["ffn"], "gelu"), x.shape),
        "encoder_layer": (lambda: backend.encoder_layer(memory, params["encoder"][0], config), memory.shape),
        "decoder_layer": (lambda: backend.decoder_layer(x, memory, layer, config, None, mask), x.shape),
        "encode": (lambda: backend.encode(src, params, config, src_mask), (B, S_SRC, 8)),
        "decode": (lambda: backend.decode(tgt, memory, params, config, src_mask, tgt_mask), (B, S_TGT, 8)),
        "forward": (lambda: backend.forward(src, tgt, params, config, src_mask, tgt_mask), (B, S_TGT, 7)),
    }


SMOKE_OPS = [op for op in OPS if op != "greedy_decode"]  # greedy_decode: its own test below


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("op", SMOKE_OPS)
@pytest.mark.parametrize("dtype", LOW_PRECISIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_low_precision_runs(device: str, dtype: str, op: str, rng: np.random.Generator) -> None:
    backend = factory(dtype=dtype, device=device)
    call, shape = smoke_cases(backend, rng)[op]
    out = call()
    assert out.dtype == backend.torch_dtype, f"{op} returned {out.dtype}"
    assert tuple(out.shape) == tuple(shape), f"{op} returned shape {tuple(out.shape)}"
    assert np.isfinite(backend.to_numpy(out)).all(), f"{op} returned non-finite values at {dtype}"


@pytest.mark.parametrize("dtype", LOW_PRECISIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_low_precision_greedy_decode(device: str, dtype: str, rng: np.random.Generator) -> None:
    backend = factory(dtype=dtype, device=device)
    config = model_config(False, False, "relu", True)
    params = to_native(backend, ref.init_params(config, 8))
    src, src_mask = backend.asarray(rng.integers(0, 11, (B, S_SRC))), backend.asarray(padding_mask(rng, B, S_SRC))
    out = backend.greedy_decode(src, params, config, 5, 1, 2, src_mask)
    assert out.dtype == torch.int64 and out.shape[0] == B and 1 <= out.shape[1] <= 5
    assert ((out >= 0) & (out < CONFIG["tgt_vocab_size"])).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_cuda_matches_reference() -> None:
    backend, config = factory(dtype="float64", device="cuda"), model_config(True, True, "gelu", True)
    params, rng = ref.init_params(config, 10), np.random.default_rng(10)
    src, tgt = rng.integers(0, 11, (B, S_SRC)), rng.integers(0, 7, (B, S_TGT))
    logits = backend.forward(*to_native(backend, [src, tgt, params]), config)
    tokens = backend.greedy_decode(*to_native(backend, [src, params]), config, 6, 1, 2)
    assert logits.device.type == "cuda"
    assert_matches_reference(logits, ref.forward(src, tgt, params, config), op="forward(cuda)")
    np.testing.assert_array_equal(tokens.cpu().numpy(), ref.greedy_decode(src, params, config, 6, 1, 2))
