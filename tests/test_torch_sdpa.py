"""The ``torch-sdpa`` adapter: attention goes through ``F.scaled_dot_product_attention`` (every
attention in the model, not just the ``attention`` op), reproduces the float64 reference, and
declines ``attention_weights``; CUDA is refused without a GPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference as ref
from backends import torch_sdpa
from backends.torch_sdpa import TorchSDPABackend, factory
from conformance.kit.harness import to_native
from tests.masks import padding_mask
from tests.matching import assert_matches_reference

CONFIG: dict[str, Any] = {"d_model": 8, "num_heads": 2, "d_ff": 16, "num_encoder_layers": 2,
                          "num_decoder_layers": 2, "src_vocab_size": 11, "tgt_vocab_size": 7}
B, S_SRC, S_TGT = 3, 5, 4


@pytest.fixture(scope="module")
def sdpa64() -> TorchSDPABackend:
    """The backend at float64 (not named ``backend``: the plugin parametrizes that name)."""
    return factory(dtype="float64")


@pytest.fixture
def sdpa_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Records the shapes of every ``scaled_dot_product_attention`` call the adapter makes."""
    calls: list[tuple] = []
    real = F.scaled_dot_product_attention

    def spy(q: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(tuple(q.shape))
        return real(q, *args, **kwargs)

    monkeypatch.setattr(torch_sdpa.F, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("mask_kind", ["none", "causal", "random", "key_padding"])
@pytest.mark.parametrize("lead", [(), (B,), (2, 3)])
def test_attention(sdpa64: TorchSDPABackend, rng: np.random.Generator, sdpa_calls: list, lead: tuple,
                   mask_kind: str) -> None:
    q, k, v = rng.normal(size=(*lead, 4, 3)), rng.normal(size=(*lead, 6, 3)), rng.normal(size=(*lead, 6, 5))
    mask = {"none": None, "causal": np.tril(np.ones((4, 6), dtype=bool)),
            "random": rng.random((*lead, 4, 6)) < 0.6,
            "key_padding": padding_mask(rng, 1, 6)}[mask_kind]
    if mask_kind == "random":
        mask[..., 0] = True  # no fully masked row here: that edge case is the gate's
    out = sdpa64.attention(*to_native(sdpa64, [q, k, v, mask]))
    assert_matches_reference(out, ref.attention(q, k, v, mask), op=f"attention({mask_kind})")
    assert sdpa_calls == [(*lead, 4, 3)]


def test_attention_weights_are_not_implemented(sdpa64: TorchSDPABackend, rng: np.random.Generator) -> None:
    q, k = sdpa64.asarray(rng.normal(size=(2, 3, 4))), sdpa64.asarray(rng.normal(size=(2, 5, 4)))
    with pytest.raises(NotImplementedError, match="no attention weights"):
        sdpa64.attention_weights(q, k)


@pytest.mark.parametrize("num_heads", [1, 2, 4])
def test_multi_head_attention_goes_through_sdpa(sdpa64: TorchSDPABackend, rng: np.random.Generator,
                                                sdpa_calls: list, num_heads: int) -> None:
    x_q, x_kv = rng.normal(size=(B, 4, 8)), rng.normal(size=(B, 6, 8))
    p = ref.init_params(CONFIG, 1)["decoder"][0]["cross_attn"]
    mask = padding_mask(rng, B, 6)[:, None, :]
    out = sdpa64.multi_head_attention(*to_native(sdpa64, [x_q, x_kv, p]), num_heads, sdpa64.asarray(mask))
    assert_matches_reference(out, ref.multi_head_attention(x_q, x_kv, p, num_heads, mask), op="multi_head_attention")
    assert sdpa_calls == [(B, num_heads, 4, 8 // num_heads)]


@pytest.mark.parametrize("norm_first", [False, True])
def test_forward_goes_through_sdpa_everywhere(sdpa64: TorchSDPABackend, rng: np.random.Generator,
                                              sdpa_calls: list, norm_first: bool) -> None:
    config = {**CONFIG, "norm_first": norm_first, "activation": "gelu"}
    params = ref.init_params(config, 2)
    src, tgt = rng.integers(0, 11, (B, S_SRC)), rng.integers(0, 7, (B, S_TGT))
    src_mask, tgt_mask = padding_mask(rng, B, S_SRC), np.ones((B, S_TGT), dtype=bool)
    n = to_native(sdpa64, {"src": src, "tgt": tgt, "params": params, "src_mask": src_mask, "tgt_mask": tgt_mask})
    out = sdpa64.forward(n["src"], n["tgt"], n["params"], config, n["src_mask"], n["tgt_mask"])
    assert_matches_reference(out, ref.forward(src, tgt, params, config, src_mask, tgt_mask), op="forward")
    # 2 encoder self-attentions + 2 x (decoder self + cross)
    assert len(sdpa_calls) == CONFIG["num_encoder_layers"] + 2 * CONFIG["num_decoder_layers"]


def test_greedy_decode(sdpa64: TorchSDPABackend) -> None:
    params, rng = ref.init_params(CONFIG, 3), np.random.default_rng(3)
    src, src_mask = rng.integers(0, 11, (4, S_SRC)), padding_mask(rng, 4, S_SRC)
    out = sdpa64.greedy_decode(*to_native(sdpa64, [src, params]), CONFIG, 7, 1, 2, sdpa64.asarray(src_mask))
    np.testing.assert_array_equal(out.numpy(), ref.greedy_decode(src, params, CONFIG, 7, 1, 2, src_mask))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_low_precision_attention_runs(dtype: str, rng: np.random.Generator) -> None:
    backend = factory(dtype=dtype)
    q, k, v = (backend.asarray(rng.normal(size=(B, s, 4))) for s in (3, 5, 5))
    out = backend.attention(q, k, v)
    assert out.dtype == backend.torch_dtype and tuple(out.shape) == (B, 3, 4)
    assert np.isfinite(backend.to_numpy(out)).all()


def test_factory_name() -> None:
    assert factory().name == "torch-sdpa"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_is_unsupported_without_a_gpu(device: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        factory(dtype="float16", device=device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_fused_kernels_run(dtype: str, rng: np.random.Generator) -> None:
    """On a GPU, half precisions without a mask are eligible for the fused kernels."""
    backend = factory(dtype=dtype, device="cuda")
    q, k, v = (backend.asarray(rng.normal(size=(2, 4, 16, 64))) for _ in range(3))
    out = backend.attention(q, k, v)
    expected = ref.attention(*(backend.to_numpy(x).astype(np.float64) for x in (q, k, v)))
    np.testing.assert_allclose(backend.to_numpy(out), expected, atol=3e-2)
