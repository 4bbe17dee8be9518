"""The ``onnxruntime`` and ``onnxruntime-fused`` backends: every contract op as a small ONNX graph
of standard operators (backends/onnx_graph.py), run by an ``onnxruntime.InferenceSession`` on
the CPU execution provider with ``GraphOptimizationLevel.ORT_ENABLE_ALL``.

An adapter, not an implementation: the graphs only wire ONNX operators; every number is
computed by ONNX Runtime's kernels.

| op | ONNX operators |
|---|---|
| softmax | ``Softmax(axis)`` |
| positional_encoding | ``Range``, ``Pow``, ``Div``, ``Sin``, ``Cos``, ``Concat``, ``Reshape``, ``Cast`` |
| embedding | ``Gather(axis=0)`` |
| layer_norm | ``LayerNormalization`` (opset 17) |
| attention_weights, attention | ``MatMul``, ``Transpose``, ``Div`` by ``Sqrt(d_k)``, ``Where`` (-inf), ``Softmax`` |
| multi_head_attention | ``MatMul``+``Add`` projections, ``Reshape``/``Transpose`` heads, the attention above |
| feed_forward | ``MatMul``, ``Add``, ``Relu`` / ``Gelu`` (opset 20, exact) |
| layers, encode, decode, forward | one graph each, composed from the above |
| greedy_decode | the encode graph, then a decode-step graph ending in ``ArgMax`` per step (Python loop) |

``onnxruntime-fused`` passes every graph through ``onnxruntime.transformers.optimizer.
optimize_model(model_type="bert", num_heads, hidden_size)``, as users do before deploying a
transformer, so that ORT's own fusions (SkipLayerNormalization, Attention, BiasGelu, ...) run
where they match; ``fusions()`` counts the fused operators of the cached sessions. On these
graphs only SkipLayerNormalization fires (residual Add + LayerNormalization, both pre- and
post-LN); the bert Attention fusion does not match them (it looks for the exporters' mask
patterns and anchors).

Choices:
- Sessions are cached per (op, its non-array arguments, dtype, parameter shapes, ranks of the
  other inputs): weights are graph inputs and activations have symbolic dimensions, so one
  session serves every batch size, length and weight value of a model shape.
- One intra-op thread per session (the gate runs one worker per core).
- dtypes: float32, float16 (the graphs are float16 throughout; where ORT's CPU provider has no
  float16 kernel it inserts casts to float32 itself) and float64 where ORT has the kernels:
  ``supports`` declares what it lacks (measured at the factory by building a one-node
  session, e.g. ``Gelu`` has no float64 CPU kernel, so gelu is unsupported at float64).
  bfloat16: the factory raises ValueError when ORT's CPU provider cannot run ``MatMul`` in it.
- Inputs and results are NumPy arrays (the native type of ORT's Python API).

onnx and onnxruntime are the optional extra ``onnxruntime``; the factory raises ValueError
("unsupported") without them.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from backends.contract import supports_from

ort: Any = None  # onnxruntime, onnx and backends.onnx_graph: bound by _import_ort()
onnx: Any = None
graph: Any = None

Array = np.ndarray
Params = Mapping[str, Any]
Config = Mapping[str, Any]

_NUMPY_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16}
RESIDUAL_OPS = ("encoder_layer", "decoder_layer", "encode", "decode", "forward", "greedy_decode")
"""The ops with a residual Add before a LayerNormalization: SkipLayerNormalization when fused."""
GELU_OPS = ("feed_forward", "encoder_layer", "decoder_layer", "encode", "decode", "forward", "greedy_decode")
"""The ops whose ``activation`` may be gelu (conformance/kit/features.py)."""
CACHE_SIZE = 256


def _import_ort() -> None:
    """Bind ``onnxruntime`` and the graph builder; ValueError (= unsupported) if absent."""
    global ort, onnx, graph
    if ort is not None:
        return
    try:
        import onnx as _onnx
        import onnxruntime as _ort

        from backends import onnx_graph as _graph
    except ImportError as exc:
        raise ValueError(f"unsupported: onnxruntime is not installed ({exc}); "
                         "pip install 'transformer-conformance[onnxruntime]'") from None
    ort, onnx, graph = _ort, _onnx, _graph


def session_options() -> Any:
    """ORT_ENABLE_ALL, one intra-op thread, errors only in the log."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def session(model: Any) -> Any:
    """An InferenceSession on the CPU provider; NotImplementedError when ORT has no kernel for
    one of the model's nodes at its type."""
    try:
        return ort.InferenceSession(model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    except ort.capi.onnxruntime_pybind11_state.NotImplemented as exc:
        raise NotImplementedError(f"onnxruntime {ort.__version__} CPU: {exc}") from None


def missing_kernel(op_type: str, elem_type: int, arity: int = 1, domain: str = "", **attributes: Any) -> str | None:
    """Why ORT's CPU provider cannot run ``op_type`` (``arity`` inputs) on tensors of
    ``elem_type``: no kernel, or a type its schema does not allow; None if it can."""
    g = graph.Graph(elem_type)
    x = g.input("x", np.zeros(2, dtype=onnx.helper.tensor_dtype_to_np_dtype(elem_type)), concrete=True)
    g.nodes.append(onnx.helper.make_node(op_type, [x] * arity, ["y"], domain=domain, **attributes))
    model = g.model("y")
    if domain:
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    try:
        typed_session(model)
    except NotImplementedError as exc:
        return str(exc)
    return None


def typed_session(model: Any) -> Any:
    """``session(model)``, where a node's type that its schema does not allow (a fused
    operator without that type) is NotImplementedError too."""
    try:
        return session(model)
    except ort.capi.onnxruntime_pybind11_state.InvalidGraph as exc:
        if "Type Error" not in str(exc):
            raise
        raise NotImplementedError(f"onnxruntime {ort.__version__} CPU: {exc}") from None


class OnnxRuntimeBackend:
    """The contract's ops as ONNX graphs run by ONNX Runtime (CPU), on NumPy arrays of one dtype."""

    name = "onnxruntime"

    def __init__(self, *, dtype: str = "float32", device: str = "cpu") -> None:
        _import_ort()
        TensorProto = onnx.TensorProto  # noqa: N806 - onnx's name
        if device != "cpu":
            raise ValueError(f"device {device!r} is unsupported: the adapter runs ORT's CPUExecutionProvider")
        if dtype == "bfloat16":
            why = missing_kernel("MatMul", TensorProto.BFLOAT16, arity=2)
            raise ValueError(f"dtype 'bfloat16' is unsupported: {why or 'NumPy has no bfloat16 input for ORT'}")
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"dtype {dtype!r} is unsupported; expected one of {sorted(_NUMPY_DTYPES)}")
        self.dtype, self.device = dtype, device
        self.numpy_dtype = np.dtype(_NUMPY_DTYPES[dtype])
        self.elem_type = {"float64": TensorProto.DOUBLE, "float32": TensorProto.FLOAT,
                          "float16": TensorProto.FLOAT16}[dtype]
        self.angle_type = TensorProto.DOUBLE if dtype == "float64" else TensorProto.FLOAT
        self.unsupported = self.missing()
        self.supports = supports_from(self.unsupported)
        self._sessions: OrderedDict[Any, tuple[Any, dict[str, int]]] = OrderedDict()

    def missing(self) -> dict[str, Any]:
        """What ORT's CPU provider lacks at this dtype, as a ``supports_from`` table: gelu
        where it has no ``Gelu`` kernel (float64: Gelu-20 expands to Erf, which has none)."""
        if missing_kernel("Gelu", self.elem_type, approximate="none"):
            return {op: {"activation": ["relu"]} for op in GELU_OPS}
        return {}

    # -- conversion -------------------------------------------------------------------------

    def asarray(self, a: np.ndarray) -> Array:
        """Floating arrays -> ``dtype``; integer ids -> int64; bool masks kept."""
        arr = np.asarray(a)
        if arr.dtype.kind == "b":
            return arr
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64)
        return arr.astype(self.numpy_dtype)

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    # -- sessions ---------------------------------------------------------------------------

    def _run(self, op: str, static: Any, data: Mapping[str, Any], params: Mapping[str, Any],
             build: Callable[[Any, dict[str, Any]], str], *, heads: tuple[int, int] = (0, 0),
             integer_result: bool = False) -> Array:
        """Run the graph ``build(g, names)`` makes for ``op`` on ``data`` (symbolic dimensions)
        and ``params`` (concrete shapes), from the session cache. ``heads``: (num_heads,
        d_model) for the fused variant's optimizer."""
        data_feeds, param_feeds = graph.leaves(dict(data), "in"), graph.leaves(dict(params), "param")
        key = (op, static, tuple((n, a.dtype.str, a.ndim) for n, a in data_feeds.items()),
               tuple((n, a.dtype.str, a.shape) for n, a in param_feeds.items()))
        if key not in self._sessions:
            g = graph.Graph(self.elem_type)
            for name, array in data_feeds.items():
                g.input(name, array, concrete=False)
            for name, array in param_feeds.items():
                g.input(name, array, concrete=True)
            names = {**graph.names_of(dict(data), "in"), **graph.names_of(dict(params), "param")}
            model = g.model(build(g, names), onnx.TensorProto.INT64 if integer_result else None)
            self._sessions[key] = self._prepare(model, *heads)
            if len(self._sessions) > CACHE_SIZE:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(key)
        ort_session, _ = self._sessions[key]
        feeds = {**data_feeds, **param_feeds}  # the optimizer drops inputs the output does not use
        return ort_session.run(None, {i.name: feeds[i.name] for i in ort_session.get_inputs()})[0]

    def _prepare(self, model: Any, num_heads: int, d_model: int) -> tuple[Any, dict[str, int]]:
        """The session for ``model``, and the fused operators the optimizer made (none here)."""
        return session(model), {}

    def fusions(self) -> dict[str, int]:
        """Fused operators per type over the cached sessions (``onnxruntime-fused``)."""
        total: dict[str, int] = {}
        for _, fused in self._sessions.values():
            for op_type, count in fused.items():
                total[op_type] = total.get(op_type, 0) + count
        return total

    # -- elementary ops ---------------------------------------------------------------------

    def softmax(self, x: Array, axis: int = -1) -> Array:
        """``Softmax(axis)``. Shapes: any -> same."""
        return self._run("softmax", axis, {"x": x}, {}, lambda g, n: g.op("Softmax", n["x"], axis=axis))

    def positional_encoding(self, seq_len: int, d_model: int) -> Array:
        """PE[p, 2i] = sin(p / 10000^(2i/d_model)), PE[p, 2i+1] = cos(same); angles in float32
        (float64 for a float64 backend). Shapes: -> (seq_len, d_model)."""
        if d_model % 2:
            raise ValueError(f"d_model must be even for the positional encoding, got {d_model}")
        return self._run("positional_encoding", None,
                         {"seq_len": np.array(seq_len, np.int64), "d_model": np.array(d_model, np.int64)}, {},
                         lambda g, n: graph.positional_encoding(g, n["seq_len"], n["d_model"], self.angle_type))

    def embedding(self, ids: Array, table: Array) -> Array:
        """``Gather(table, ids, axis=0)``. Shapes: (B, S), (V, d) -> (B, S, d)."""
        return self._run("embedding", None, {"ids": ids, "table": table}, {},
                         lambda g, n: g.op("Gather", n["table"], n["ids"], axis=0))

    def layer_norm(self, x: Array, gamma: Array, beta: Array, eps: float) -> Array:
        """``LayerNormalization(axis=-1, epsilon=eps)``. Shapes: (..., d) -> (..., d)."""
        return self._run("layer_norm", float(eps), {"x": x, "norm": {"gamma": gamma, "beta": beta}}, {},
                         lambda g, n: graph.layer_norm(g, n["x"], n["norm"], eps))

    # -- attention --------------------------------------------------------------------------

    def attention_weights(self, q: Array, k: Array, mask: Array | None = None) -> Array:
        """softmax(Q K^T / sqrt(d_k)), masked scores -inf.
        Shapes: (..., Sq, d_k), (..., Sk, d_k) -> (..., Sq, Sk)."""
        return self._run("attention_weights", None, {"q": q, "k": k, "mask": mask}, {},
                         lambda g, n: graph.attention_weights(g, n["q"], n["k"], n["mask"], q.ndim))

    def attention(self, q: Array, k: Array, v: Array, mask: Array | None = None) -> Array:
        """softmax(Q K^T / sqrt(d_k)) V.
        Shapes: (..., Sq, d_k), (..., Sk, d_k), (..., Sk, d_v) -> (..., Sq, d_v)."""
        return self._run("attention", None, {"q": q, "k": k, "v": v, "mask": mask}, {},
                         lambda g, n: graph.attention(g, n["q"], n["k"], n["v"], n["mask"], q.ndim))

    def multi_head_attention(self, x_q: Array, x_kv: Array, p: Params, num_heads: int,
                             mask: Array | None = None) -> Array:
        """concat_h(head_h) W_o + b_o. Shapes: (B, Sq, d_model), (B, Sk, d_model) -> (B, Sq, d_model)."""
        d_model = p["w_q"].shape[0]
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        return self._run("multi_head_attention", num_heads, {"x_q": x_q, "x_kv": x_kv, "mask": mask}, {"p": p},
                         lambda g, n: graph.multi_head_attention(g, n["x_q"], n["x_kv"], n["p"], num_heads,
                                                                 d_model, n["mask"]),
                         heads=(num_heads, d_model))

    def feed_forward(self, x: Array, p: Params, activation: str = "relu") -> Array:
        """act(x W_1 + b_1) W_2 + b_2. Shapes: (..., d_model) -> (..., d_model)."""
        return self._run("feed_forward", activation, {"x": x}, {"p": p},
                         lambda g, n: graph.feed_forward(g, n["x"], n["p"], activation))

    # -- layers and stacks ------------------------------------------------------------------

    def encoder_layer(self, x: Array, p: Params, config: Config, mask: Array | None = None) -> Array:
        """Shapes: (B, S, d_model), mask -> (B, S, S) -> (B, S, d_model)."""
        c = _config(config)
        return self._run("encoder_layer", c, {"x": x, "mask": mask}, {"p": p},
                         lambda g, n: graph.encoder_layer(g, n["x"], n["p"], c, n["mask"]), heads=_heads(c))

    def decoder_layer(self, y: Array, memory: Array, p: Params, config: Config, self_mask: Array | None = None,
                      cross_mask: Array | None = None) -> Array:
        """Shapes: (B, St, d_model), (B, Ss, d_model) -> (B, St, d_model)."""
        c = _config(config)
        data = {"y": y, "memory": memory, "self_mask": self_mask, "cross_mask": cross_mask}
        return self._run("decoder_layer", c, data, {"p": p},
                         lambda g, n: graph.decoder_layer(g, n["y"], n["memory"], n["p"], c, n["self_mask"],
                                                          n["cross_mask"]), heads=_heads(c))

    def encode(self, src_ids: Array, params: Params, config: Config, src_mask: Array | None = None) -> Array:
        """Shapes: (B, Ss) -> (B, Ss, d_model)."""
        c = _config(config)
        return self._run("encode", c, {"src_ids": src_ids, "src_mask": src_mask}, {"params": params},
                         lambda g, n: graph.encode(g, n["src_ids"], n["params"], c, n["src_mask"], self.angle_type),
                         heads=_heads(c))

    def decode(self, tgt_ids: Array, memory: Array, params: Params, config: Config, src_mask: Array | None = None,
               tgt_mask: Array | None = None) -> Array:
        """Shapes: (B, St), (B, Ss, d_model) -> (B, St, d_model)."""
        c = _config(config)
        data = {"tgt_ids": tgt_ids, "memory": memory, "src_mask": src_mask, "tgt_mask": tgt_mask}
        return self._run("decode", c, data, {"params": params},
                         lambda g, n: graph.decode(g, n["tgt_ids"], n["memory"], n["params"], c, n["src_mask"],
                                                   n["tgt_mask"], self.angle_type), heads=_heads(c))

    def forward(self, src_ids: Array, tgt_ids: Array, params: Params, config: Config,
                src_mask: Array | None = None, tgt_mask: Array | None = None) -> Array:
        """logits = decode(tgt_ids, encode(src_ids)) W_gen + b_gen, one graph.
        Shapes: (B, Ss), (B, St) -> (B, St, tgt_vocab_size)."""
        c = _config(config)

        def build(g: Any, n: dict[str, Any]) -> str:
            memory = graph.encode(g, n["src_ids"], n["params"], c, n["src_mask"], self.angle_type)
            y = graph.decode(g, n["tgt_ids"], memory, n["params"], c, n["src_mask"], n["tgt_mask"], self.angle_type)
            return graph.generator(g, y, n["params"])

        data = {"src_ids": src_ids, "tgt_ids": tgt_ids, "src_mask": src_mask, "tgt_mask": tgt_mask}
        return self._run("forward", c, data, {"params": params}, build, heads=_heads(c))

    def greedy_decode(self, src_ids: Array, params: Params, config: Config, max_len: int, bos_id: int,
                      eos_id: int, src_mask: Array | None = None) -> Array:
        """Start from bos; append the argmax (lowest index on ties) of the last position's
        logits until every row has emitted eos or the length is ``max_len``; rows past their
        eos are filled with eos. The encode graph once, then one decode-step graph per token.

        Shapes: (B, Ss) -> (B, L) int64, 1 <= L <= max_len.
        """
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        c = _config(config)
        memory = self.encode(src_ids, params, config, src_mask)  # (B, Ss, d_model)
        tokens = np.full((src_ids.shape[0], 1), bos_id, dtype=np.int64)  # (B, 1)
        finished = np.zeros(src_ids.shape[0], dtype=bool)
        while tokens.shape[1] < max_len and not finished.all():
            next_id = self._run("greedy_step", c, {"tokens": tokens, "memory": memory, "src_mask": src_mask},
                                {"params": params}, lambda g, n: graph.next_token(
                                    g, graph.decode(g, n["tokens"], n["memory"], n["params"], c, n["src_mask"],
                                                    None, self.angle_type), n["params"]),
                                heads=_heads(c), integer_result=True)  # (B,)
            next_id = np.where(finished, eos_id, next_id)
            tokens = np.concatenate([tokens, next_id[:, None]], axis=1)  # (B, L + 1)
            finished |= next_id == eos_id
        return tokens


class FusedOnnxRuntimeBackend(OnnxRuntimeBackend):
    """The same graphs after ``onnxruntime.transformers.optimizer.optimize_model`` (bert)."""

    name = "onnxruntime-fused"

    def missing(self) -> dict[str, Any]:
        """The plain variant's gaps, and every op with a residual before a norm where the fused
        ``SkipLayerNormalization`` lacks the dtype (float64: its schema allows float and
        float16 only)."""
        table = super().missing()
        if missing_kernel("SkipLayerNormalization", self.elem_type, arity=3, domain="com.microsoft"):
            table.update({op: False for op in RESIDUAL_OPS})
        return table

    def _prepare(self, model: Any, num_heads: int, d_model: int) -> tuple[Any, dict[str, int]]:
        """``optimize_model(path, "bert", num_heads, hidden_size)``, then the session; the
        optimizer's count of the fused operators it made. The model goes in as a file, as users
        pass it (given a ModelProto without initializers, optimize_model 1.31.1 fails in
        ``extract_raw_data_from_model``: ``zip(*[])`` unpacked into two names)."""
        from onnxruntime.transformers.optimizer import optimize_model

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.onnx")
            onnx.save(model, path)
            try:  # the optimizer runs an ORT session of its own first
                optimized = optimize_model(path, model_type="bert", num_heads=num_heads, hidden_size=d_model,
                                           optimization_options=fusion_options())
            except ort.capi.onnxruntime_pybind11_state.NotImplemented as exc:
                raise NotImplementedError(f"onnxruntime {ort.__version__} CPU: {exc}") from None
        fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
        return typed_session(optimized.model), fused


def fusion_options() -> Any:
    """The optimizer's bert defaults without its symbolic shape inference (the command line's
    ``--disable_shape_inference``): it took 70 % of the optimizer's seconds per model, and on
    float16 graphs it fails (OverflowError), which silently skips SkipLayerNormalization."""
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_shape_inference = False
    return options


def _config(config: Config) -> Any:
    """The contract's config with its defaults, validated (reference.Config: frozen, hashable)."""
    from reference.config import as_config

    return as_config(config)


def _heads(c: Any) -> tuple[int, int]:
    return c.num_heads, c.d_model


def factory(*, dtype: str = "float32", device: str = "cpu") -> OnnxRuntimeBackend:
    """``onnxruntime``; ValueError (= unsupported) without onnxruntime, for bfloat16 when ORT's
    CPU provider has no bfloat16 MatMul, an unknown dtype or a device other than cpu."""
    return OnnxRuntimeBackend(dtype=dtype, device=device)


def fused_factory(*, dtype: str = "float32", device: str = "cpu") -> FusedOnnxRuntimeBackend:
    """``onnxruntime-fused``: the graphs through ORT's transformer optimizer first; ValueError
    (= unsupported) as ``factory``, and without torch, which the optimizer imports (1.31.1,
    ``optimize_by_onnxruntime``: ``from torch import version``)."""
    backend = FusedOnnxRuntimeBackend(dtype=dtype, device=device)
    if importlib.util.find_spec("torch") is None:
        raise ValueError("unsupported: onnxruntime.transformers.optimizer imports torch, which is not "
                         "installed; pip install 'transformer-conformance[onnxruntime]'")
    return backend
