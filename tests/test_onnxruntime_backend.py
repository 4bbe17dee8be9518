"""The ``onnxruntime`` and ``onnxruntime-fused`` adapters: the ONNX graphs, run by ONNX Runtime,
reproduce the float64 reference to float64 precision where ORT has float64 kernels, and to the
tolerance model's float32 bound at float32, on inputs without edge cases; the factories refuse
what ORT cannot run (bfloat16, a missing onnxruntime: "unsupported", never a silent skip) and
declare what it lacks at float64 (``supports``).

Skipped as a whole, except the "not installed" test, when onnxruntime is not importable (the
optional extra ``onnxruntime``).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

import reference as ref
from backends import onnxruntime_backend as ob
from conformance.kit import features
from conformance.kit.harness import to_native
from conformance.tolerance.model import rounded_inputs
from tests.masks import padding_mask, random_mask
from tests.matching import assert_matches_reference, assert_within_tolerance

CONFIG: dict[str, Any] = {"d_model": 8, "num_heads": 2, "d_ff": 16, "num_encoder_layers": 2,
                          "num_decoder_layers": 2, "src_vocab_size": 11, "tgt_vocab_size": 7}
B, S_SRC, S_TGT = 3, 5, 4
VARIANTS = [(False, False, "relu", True), (True, True, "gelu", False)]  # (norm_first, final_norm, act, scale)
TARGETS = [("onnxruntime", "float64"), ("onnxruntime", "float32"), ("onnxruntime-fused", "float64"),
           ("onnxruntime-fused", "float32")]
FACTORIES = {"onnxruntime": "factory", "onnxruntime-fused": "fused_factory"}


@pytest.fixture(scope="module", params=TARGETS, ids=["-".join(t) for t in TARGETS])
def ort_backend(request: pytest.FixtureRequest) -> ob.OnnxRuntimeBackend:
    """One backend per target (not named ``backend``: the plugin parametrizes that name)."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (optional extra 'onnxruntime')")
    name, dtype = request.param
    return getattr(ob, FACTORIES[name])(dtype=dtype)


def model_config(norm_first: bool, final_norm: bool, activation: str, scale_embedding: bool) -> dict:
    return {**CONFIG, "norm_first": norm_first, "final_norm": final_norm, "activation": activation,
            "scale_embedding": scale_embedding}


def check(backend: ob.OnnxRuntimeBackend, op: str, args: list, kwargs: dict | None = None, *,
          where: np.ndarray | None = None) -> None:
    """``backend.<op>(*args, **kwargs)`` against the reference: float64 to 1e-12, float32 within
    the tolerance model's bound; inputs rounded to the backend's dtype first. An op or feature
    the backend declares unsupported must raise NotImplementedError instead."""
    __tracebackhide__ = True
    args, kwargs = rounded_inputs(list(args), backend.dtype), rounded_inputs(dict(kwargs or {}), backend.dtype)
    if not backend.supports(op, **features.of_call(op, args, kwargs)):
        with pytest.raises(NotImplementedError):
            getattr(backend, op)(*to_native(backend, args), **to_native(backend, kwargs))
        return
    got = backend.to_numpy(getattr(backend, op)(*to_native(backend, args), **to_native(backend, kwargs)))
    if backend.dtype == "float64":
        assert_matches_reference(got, getattr(ref, op)(*args, **kwargs), op=op, where=where)
    else:
        assert_within_tolerance(got, op, args, kwargs, dtype=backend.dtype, where=where)


# -- the factories ----------------------------------------------------------------------------


def test_factory_without_onnxruntime_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs with or without onnxruntime installed: the import failure is simulated."""
    for module in ("onnx", "onnxruntime", "backends.onnx_graph"):
        monkeypatch.setitem(sys.modules, module, None)  # ``import onnxruntime`` raises ImportError
    monkeypatch.setattr(ob, "ort", None)
    for factory in (ob.factory, ob.fused_factory):
        with pytest.raises(ValueError, match="unsupported: onnxruntime is not installed"):
            factory(dtype="float32")


def test_fused_factory_without_torch_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    """ORT's transformer optimizer imports torch: without it the fused variant is unsupported,
    named, instead of every op failing on ModuleNotFoundError (CI, before the extra had torch)."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setitem(sys.modules, "torch", None)
    assert ob.factory(dtype="float32").name == "onnxruntime"
    with pytest.raises(ValueError, match="unsupported: onnxruntime.transformers.optimizer imports torch"):
        ob.fused_factory(dtype="float32")


def test_factory_dtypes_and_devices(ort_backend: ob.OnnxRuntimeBackend) -> None:
    assert ort_backend.device == "cpu" and ort_backend.name in FACTORIES
    for factory in (ob.factory, ob.fused_factory):
        assert factory(dtype="float16").dtype == "float16"
        with pytest.raises(ValueError, match="bfloat16' is unsupported: .*MatMul"):
            factory(dtype="bfloat16")  # ORT's CPU provider has no bfloat16 MatMul
        with pytest.raises(ValueError, match="unsupported"):
            factory(dtype="int8")
        with pytest.raises(ValueError, match="unsupported"):
            factory(dtype="float32", device="cuda")


def test_float64_declares_what_ort_lacks() -> None:
    """At float64 ORT's CPU provider has no Gelu (nor Erf) kernel, and the fused
    SkipLayerNormalization allows no double: declared, and the calls raise NotImplementedError."""
    pytest.importorskip("onnxruntime")
    plain, fused = ob.factory(dtype="float64"), ob.fused_factory(dtype="float64")
    assert not plain.supports("feed_forward", activation="gelu") and plain.supports("feed_forward", activation="relu")
    assert plain.supports("encoder_layer", activation="relu", norm_first=True)
    assert not fused.supports("encoder_layer") and not fused.supports("greedy_decode")
    assert fused.supports("multi_head_attention") and not fused.supports("feed_forward", activation="gelu")
    assert ob.factory(dtype="float32").unsupported == {} == ob.fused_factory(dtype="float32").unsupported
    p = to_native(plain, ref.init_params(CONFIG, 0)["encoder"][0]["ffn"])
    with pytest.raises(NotImplementedError, match="Erf|Gelu"):
        plain.feed_forward(plain.asarray(np.ones((1, 2, 8))), p, "gelu")


def test_conversions(ort_backend: ob.OnnxRuntimeBackend) -> None:
    floats = ort_backend.asarray(np.array([[1.5, -2.0]]))
    ids = ort_backend.asarray(np.array([[1, 2]], dtype=np.int32))
    mask = ort_backend.asarray(np.array([True, False]))
    assert (floats.dtype, ids.dtype, mask.dtype) == (np.dtype(ort_backend.dtype), np.int64, bool)
    np.testing.assert_array_equal(ort_backend.to_numpy(floats), [[1.5, -2.0]])


def test_sessions_are_reused_across_shapes_and_weights(ort_backend: ob.OnnxRuntimeBackend,
                                                       rng: np.random.Generator) -> None:
    """Activations have symbolic dimensions and weights are inputs: one session per model shape."""
    p = ref.init_params(CONFIG, 1)["encoder"][0]["ffn"]
    before = len(ort_backend._sessions)
    for batch, seq_len in ((1, 2), (3, 5)):
        check(ort_backend, "feed_forward", [rng.normal(size=(batch, seq_len, 8)), p, "relu"])
    check(ort_backend, "feed_forward", [rng.normal(size=(2, 2, 8)), ref.init_params(CONFIG, 2)["encoder"][0]["ffn"]])
    assert len(ort_backend._sessions) == before + 1


def test_fused_variant_runs_ort_fusions() -> None:
    """The optimizer fuses the residual Add + LayerNormalization of a float32 layer."""
    pytest.importorskip("onnxruntime")
    backend = ob.fused_factory(dtype="float32")
    params = to_native(backend, ref.init_params(CONFIG, 3)["encoder"][0])
    backend.encoder_layer(backend.asarray(np.ones((1, 3, 8))), params, CONFIG)
    assert backend.fusions().get("SkipLayerNormalization", 0) == 2
    assert ob.factory(dtype="float32").fusions() == {}


# -- ops against the reference ----------------------------------------------------------------


def test_softmax(ort_backend: ob.OnnxRuntimeBackend, rng: np.random.Generator) -> None:
    x = rng.normal(0, 3, (B, 4, 6))
    x[rng.random(x.shape) < 0.3] = -np.inf
    x[..., 0] = 0.0  # some -inf entries, but no row of them all (that is the gate's edge case)
    check(ort_backend, "softmax", [x], {"axis": -1})
    check(ort_backend, "softmax", [x[..., 0:1, :].repeat(2, axis=1).transpose(0, 2, 1)], {"axis": 1})


def test_elementary_ops(ort_backend: ob.OnnxRuntimeBackend, rng: np.random.Generator) -> None:
    check(ort_backend, "positional_encoding", [S_SRC, 8])
    check(ort_backend, "embedding", [rng.integers(0, 9, (B, S_SRC)), rng.normal(size=(9, 8))])
    x = rng.normal(3.0, 2.0, (B, S_SRC, 8))
    check(ort_backend, "layer_norm", [x, rng.normal(1.0, 0.1, 8), rng.normal(0.0, 0.1, 8), 1e-5])
    p = ref.init_params(CONFIG, 1)["encoder"][0]["ffn"]
    for activation in ("relu", "gelu"):
        check(ort_backend, "feed_forward", [x, p, activation])


@pytest.mark.parametrize("mask_kind", ["none", "causal", "random"])
def test_attention(ort_backend: ob.OnnxRuntimeBackend, rng: np.random.Generator, mask_kind: str) -> None:
    q, k, v = rng.normal(size=(B, 4, 3)), rng.normal(size=(B, 6, 3)), rng.normal(size=(B, 6, 5))
    mask = {"none": None, "causal": np.tril(np.ones((4, 6), dtype=bool)),
            "random": random_mask(rng, (B, 4, 6))}[mask_kind]
    check(ort_backend, "attention_weights", [q, k, mask])
    check(ort_backend, "attention", [q, k, v, mask])
    check(ort_backend, "attention", [q[None], k[None], v[None], mask])  # one more leading axis


@pytest.mark.parametrize("num_heads", [1, 2, 4])
def test_multi_head_attention(ort_backend: ob.OnnxRuntimeBackend, rng: np.random.Generator, num_heads: int) -> None:
    x_q, x_kv = rng.normal(size=(B, 4, 8)), rng.normal(size=(B, 6, 8))
    p = ref.init_params(CONFIG, 2)["decoder"][0]["cross_attn"]
    check(ort_backend, "multi_head_attention", [x_q, x_kv, p, num_heads, random_mask(rng, (B, 4, 6))])
    check(ort_backend, "multi_head_attention", [x_kv, x_kv, p, num_heads, padding_mask(rng, B, 6)[:, None, :]])


@pytest.mark.parametrize("variant", VARIANTS)
def test_layers(ort_backend: ob.OnnxRuntimeBackend, rng: np.random.Generator, variant: tuple) -> None:
    config = model_config(*variant)
    params = ref.init_params(config, 3)
    x, memory = rng.normal(size=(B, S_TGT, 8)), rng.normal(size=(B, S_SRC, 8))
    self_mask = np.tril(np.ones((S_TGT, S_TGT), dtype=bool))
    cross_mask = padding_mask(rng, B, S_SRC)[:, None, :]
    check(ort_backend, "encoder_layer", [memory, params["encoder"][0], config, cross_mask])
    check(ort_backend, "decoder_layer", [x, memory, params["decoder"][0], config, self_mask, cross_mask])


@pytest.mark.parametrize("variant", VARIANTS)
def test_stacks_and_greedy_decode(ort_backend: ob.OnnxRuntimeBackend, rng: np.random.Generator,
                                  variant: tuple) -> None:
    config = model_config(*variant)
    params = ref.init_params(config, 4)
    src, tgt = rng.integers(0, 11, (B, S_SRC)), rng.integers(0, 7, (B, S_TGT))
    src_mask, tgt_mask = padding_mask(rng, B, S_SRC), padding_mask(rng, B, S_TGT, right=True)
    memory = ref.encode(src, rounded_inputs(params, ort_backend.dtype), config, src_mask)
    check(ort_backend, "encode", [src, params, config, src_mask], where=src_mask)
    check(ort_backend, "decode", [tgt, memory, params, config, src_mask, tgt_mask], where=tgt_mask)
    check(ort_backend, "forward", [src, tgt, params, config, src_mask, tgt_mask], where=tgt_mask)
    if ort_backend.supports("greedy_decode", **features.of_call("greedy_decode", [src, params, config, 6, 1, 2], {})):
        tokens = ort_backend.greedy_decode(*to_native(ort_backend, [src, params]), config, 6, 1, 2,
                                           src_mask)
        np.testing.assert_array_equal(tokens, ref.greedy_decode(src, rounded_inputs(params, ort_backend.dtype),
                                                                config, 6, 1, 2, src_mask))


def test_greedy_decode_max_len_one_and_eos_stop(ort_backend: ob.OnnxRuntimeBackend,
                                                rng: np.random.Generator) -> None:
    if not ort_backend.supports("greedy_decode", activation="relu"):
        pytest.skip(f"greedy_decode is declared unsupported by {ort_backend.name} at {ort_backend.dtype}")
    params = ref.init_params(CONFIG, 5)
    src = rng.integers(0, 11, (B, S_SRC))
    n = to_native(ort_backend, {"params": params, "src": src})
    np.testing.assert_array_equal(ort_backend.greedy_decode(n["src"], n["params"], CONFIG, 1, 1, 2), [[1]] * B)
    params["generator"]["b"][2] = 100.0  # eos = 2 wins at every step
    tokens = ort_backend.greedy_decode(n["src"], to_native(ort_backend, params), CONFIG, 6, 1, 2)
    np.testing.assert_array_equal(tokens, [[1, 2]] * B)
