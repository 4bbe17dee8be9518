"""Building ONNX graphs with ``onnx.helper``: a small builder and the contract's ops as
sub-graphs of standard ONNX operators, for the ``onnxruntime`` backends.

Every function here only *wires* operators (MatMul, Softmax, LayerNormalization, Gelu, Where,
Gather, ...); the numbers are computed by whatever runtime executes the graph. A function takes
the ``Graph`` and the names of its input values and returns the name of its output value;
parameter trees (``p``, ``params``) hold value names in the contract's nesting
(``names_of``), so ``p["w_q"]`` is the graph input that carries W_q.

Choices (each the contract's, spelled in ONNX):
- Masked scores: ``Where(mask, scores, -inf)`` on the contract's boolean mask (True = may
  attend), then ``Softmax(axis=-1)``; what a row that is all -inf becomes is the runtime's.
- The score scale 1/sqrt(d_k) is ``Div(Q K^T, Sqrt(d_k))`` with d_k read off Q's shape in the
  graph (``Shape(start=-1)``), so one graph serves every head width.
- GELU is ONNX ``Gelu`` (opset 20, ``approximate="none"``: the exact erf form); layer norm is
  ``LayerNormalization`` (opset 17, axis -1, ``epsilon``): biased variance, eps inside the root.
- The positional encoding's angles are computed in ``angle_type`` (float32, or float64 for a
  float64 graph) and cast to the graph's type, as the contract's precision paragraph asks.
- Heads: ``Reshape`` to (B, S, h, d_k) then ``Transpose`` to (B, h, S, d_k): head h is the
  contiguous column block h, as in the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 20
"""ONNX opset of every graph: LayerNormalization needs 17, Gelu 20."""

Names = Any  # a nested dict/list whose leaves are value names


@dataclass
class Graph:
    """An ONNX graph under construction; ``elem_type`` is the float type of its tensors."""

    elem_type: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)

    def input(self, name: str, array: np.ndarray, *, concrete: bool) -> str:
        """Declare a graph input like ``array``: its element type, and its shape (``concrete``)
        or only its rank (one symbolic dimension per axis)."""
        dims = list(array.shape) if concrete else [f"{name}:{i}" for i in range(array.ndim)]
        elem = helper.np_dtype_to_tensor_dtype(array.dtype)
        self.inputs.append(helper.make_tensor_value_info(name, elem, dims))
        return name

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        """Append one node; returns the name of its (single) output."""
        output = f"{op_type.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output

    def const(self, value: Any, dtype: Any = None) -> str:
        """An initializer holding ``value`` (the graph's float type unless ``dtype`` is given)."""
        dtype = helper.tensor_dtype_to_np_dtype(self.elem_type) if dtype is None else dtype
        name = f"const_{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def model(self, output: str, elem_type: int | None = None) -> onnx.ModelProto:
        """The model computing ``output``, of the graph's float type unless ``elem_type`` says."""
        elem = self.elem_type if elem_type is None else elem_type
        graph = helper.make_graph(self.nodes, "contract_op", self.inputs,
                                  [helper.make_tensor_value_info(output, elem, None)], self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 10
        return model


def names_of(tree: Any, prefix: str) -> Names:
    """The value names of a tree's array leaves, in the tree's nesting: ``prefix.key.0.w_q``
    (None for a None leaf: an absent optional input)."""
    if tree is None:
        return None
    if isinstance(tree, Mapping):
        return {k: names_of(v, f"{prefix}.{k}") for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [names_of(v, f"{prefix}.{i}") for i, v in enumerate(tree)]
    return prefix


def leaves(tree: Any, prefix: str) -> dict[str, np.ndarray]:
    """The array leaves of a tree by their value name (``names_of``); None leaves are absent."""
    if isinstance(tree, Mapping):
        return {n: a for k, v in tree.items() for n, a in leaves(v, f"{prefix}.{k}").items()}
    if isinstance(tree, (list, tuple)):
        return {n: a for i, v in enumerate(tree) for n, a in leaves(v, f"{prefix}.{i}").items()}
    return {} if tree is None else {prefix: tree}


# -- elementary ops -------------------------------------------------------------------------------


def positional_encoding(g: Graph, seq_len: str, d_model: str, angle_type: int) -> str:
    """PE[p, 2i] = sin(p / 10000^(2i/d_model)), PE[p, 2i+1] = cos(same); ``seq_len`` and
    ``d_model`` are int64 scalars.

    Shapes: -> (seq_len, d_model).
    """
    pos = g.op("Cast", g.op("Range", g.const(0, np.int64), seq_len, g.const(1, np.int64)), to=angle_type)  # (S,)
    two_i = g.op("Cast", g.op("Range", g.const(0, np.int64), d_model, g.const(2, np.int64)), to=angle_type)
    width = g.op("Cast", d_model, to=angle_type)
    ten_k = g.const(10000.0, helper.tensor_dtype_to_np_dtype(angle_type))
    denominator = g.op("Pow", ten_k, g.op("Div", two_i, width))  # (d_model/2,)
    angle = g.op("Div", g.op("Unsqueeze", pos, g.const([1], np.int64)),
                 g.op("Unsqueeze", denominator, g.const([0], np.int64)))  # (S, d_model/2)
    last = g.const([2], np.int64)
    pairs = g.op("Concat", g.op("Unsqueeze", g.op("Sin", angle), last),
                 g.op("Unsqueeze", g.op("Cos", angle), last), axis=2)  # (S, d_model/2, 2): sin, cos
    shape = g.op("Concat", *(g.op("Unsqueeze", n, g.const([0], np.int64)) for n in (seq_len, d_model)), axis=0)
    return g.op("Cast", g.op("Reshape", pairs, shape), to=g.elem_type)  # interleaved: (S, d_model)


def layer_norm(g: Graph, x: str, norm: Names, eps: float) -> str:
    """``LayerNormalization(x, gamma, beta, axis=-1, epsilon=eps)``.

    Shapes: (..., d) -> (..., d).
    """
    return g.op("LayerNormalization", x, norm["gamma"], norm["beta"], axis=-1, epsilon=float(eps))


def linear(g: Graph, x: str, w: str, b: str) -> str:
    """x W + b (``MatMul`` then ``Add``).

    Shapes: (..., d_in) -> (..., d_out).
    """
    return g.op("Add", g.op("MatMul", x, w), b)


def feed_forward(g: Graph, x: str, p: Names, activation: str) -> str:
    """act(x W_1 + b_1) W_2 + b_2, act = ``Relu`` or ``Gelu(approximate="none")``.

    Shapes: (..., d_model) -> (..., d_ff) -> (..., d_model).
    """
    if activation not in ("relu", "gelu"):
        raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
    hidden = linear(g, x, p["w_1"], p["b_1"])
    hidden = g.op("Relu", hidden) if activation == "relu" else g.op("Gelu", hidden, approximate="none")
    return linear(g, hidden, p["w_2"], p["b_2"])


# -- attention ------------------------------------------------------------------------------------


def swap_last_two(rank: int) -> list[int]:
    """The permutation that transposes the last two axes of a tensor of ``rank``."""
    return [*range(rank - 2), rank - 1, rank - 2]


def attention_weights(g: Graph, q: str, k: str, mask: str | None, rank: int) -> str:
    """softmax(Q K^T / sqrt(d_k)) with masked scores -inf (``Where``), ``Softmax(axis=-1)``.

    Shapes: (..., Sq, d_k), (..., Sk, d_k), mask -> (..., Sq, Sk) -> (..., Sq, Sk).
    """
    d_k = g.op("Cast", g.op("Shape", q, start=-1), to=g.elem_type)  # (1,)
    scores = g.op("Div", g.op("MatMul", q, g.op("Transpose", k, perm=swap_last_two(rank))), g.op("Sqrt", d_k))
    if mask is not None:
        scores = g.op("Where", mask, scores, g.const(-np.inf))
    return g.op("Softmax", scores, axis=-1)


def attention(g: Graph, q: str, k: str, v: str, mask: str | None, rank: int) -> str:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V.

    Shapes: (..., Sq, d_k), (..., Sk, d_k), (..., Sk, d_v) -> (..., Sq, d_v).
    """
    return g.op("MatMul", attention_weights(g, q, k, mask, rank), v)


def split_heads(g: Graph, x: str, num_heads: int, d_k: int) -> str:
    """Shapes: (B, S, d_model) -> (B, S, h, d_k) -> (B, h, S, d_k)."""
    return g.op("Transpose", g.op("Reshape", x, g.const([0, 0, num_heads, d_k], np.int64)), perm=[0, 2, 1, 3])


def merge_heads(g: Graph, x: str, d_model: int) -> str:
    """Shapes: (B, h, S, d_k) -> (B, S, h, d_k) -> (B, S, d_model)."""
    return g.op("Reshape", g.op("Transpose", x, perm=[0, 2, 1, 3]), g.const([0, 0, d_model], np.int64))


def multi_head_attention(g: Graph, x_q: str, x_kv: str, p: Names, num_heads: int, d_model: int,
                         mask: str | None) -> str:
    """concat_h(Attention(x_q W_q^h, x_kv W_k^h, x_kv W_v^h)) W_o + b_o, the same mask for every
    head (``Unsqueeze`` a head axis).

    Shapes: (B, Sq, d_model), (B, Sk, d_model), mask -> (B, Sq, Sk) -> (B, Sq, d_model).
    """
    d_k = d_model // num_heads
    q, k, v = (split_heads(g, linear(g, x, p[f"w_{n}"], p[f"b_{n}"]), num_heads, d_k)
               for x, n in ((x_q, "q"), (x_kv, "k"), (x_kv, "v")))  # (B, h, S, d_k)
    head_mask = None if mask is None else g.op("Unsqueeze", mask, g.const([-3], np.int64))  # (.., 1, Sq, Sk)
    heads = attention(g, q, k, v, head_mask, rank=4)  # (B, h, Sq, d_k)
    return linear(g, merge_heads(g, heads, d_model), p["w_o"], p["b_o"])


# -- layers and stacks ----------------------------------------------------------------------------


def sublayer(g: Graph, x: str, fn: Any, norm: Names, config: Any) -> str:
    """Post-LN  LN(x + fn(x)),  or pre-LN  x + fn(LN(x))  (``norm_first``).

    Shapes: (B, S, d_model) -> (B, S, d_model).
    """
    if config.norm_first:
        return g.op("Add", x, fn(layer_norm(g, x, norm, config.layer_norm_eps)))
    return layer_norm(g, g.op("Add", x, fn(x)), norm, config.layer_norm_eps)


def encoder_layer(g: Graph, x: str, p: Names, config: Any, mask: str | None) -> str:
    """Self-attention sub-layer, then feed-forward sub-layer (``config``: reference.Config).

    Shapes: (B, S, d_model), mask -> (B, S, S) -> (B, S, d_model).
    """
    h, d = config.num_heads, config.d_model
    x = sublayer(g, x, lambda z: multi_head_attention(g, z, z, p["self_attn"], h, d, mask), p["norm1"], config)
    return sublayer(g, x, lambda z: feed_forward(g, z, p["ffn"], config.activation), p["norm2"], config)


def decoder_layer(g: Graph, y: str, memory: str, p: Names, config: Any, self_mask: str | None,
                  cross_mask: str | None) -> str:
    """Masked self-attention, cross-attention over ``memory``, feed-forward.

    Shapes: (B, St, d_model), (B, Ss, d_model) -> (B, St, d_model).
    """
    h, d = config.num_heads, config.d_model
    y = sublayer(g, y, lambda z: multi_head_attention(g, z, z, p["self_attn"], h, d, self_mask), p["norm1"], config)
    y = sublayer(g, y, lambda z: multi_head_attention(g, z, memory, p["cross_attn"], h, d, cross_mask),
                 p["norm2"], config)
    return sublayer(g, y, lambda z: feed_forward(g, z, p["ffn"], config.activation), p["norm3"], config)


def embed(g: Graph, ids: str, table: str, config: Any, angle_type: int) -> str:
    """Gather(table, ids) [* sqrt(d_model)] + PE[:S].

    Shapes: (B, S) -> (B, S, d_model).
    """
    x = g.op("Gather", table, ids, axis=0)  # (B, S, d_model)
    if config.scale_embedding:
        x = g.op("Mul", x, g.op("Sqrt", g.const(config.d_model)))
    seq_len = g.op("Squeeze", g.op("Shape", ids, start=1, end=2), g.const([0], np.int64))  # scalar S
    return g.op("Add", x, positional_encoding(g, seq_len, g.const(config.d_model, np.int64), angle_type))


def key_padding(g: Graph, pad_mask: str | None) -> str | None:
    """A padding mask as an attention mask over keys. Shapes: (B, S) -> (B, 1, S)."""
    return None if pad_mask is None else g.op("Unsqueeze", pad_mask, g.const([1], np.int64))


def encode(g: Graph, src_ids: str, params: Names, config: Any, src_mask: str | None, angle_type: int) -> str:
    """memory = [LN_enc](EncoderLayer_N(... EncoderLayer_1(embed(src_ids)))).

    Shapes: (B, Ss) -> (B, Ss, d_model).
    """
    x = embed(g, src_ids, params["src_embedding"], config, angle_type)
    mask = key_padding(g, src_mask)
    for layer in params["encoder"]:
        x = encoder_layer(g, x, layer, config, mask)
    return layer_norm(g, x, params["encoder_norm"], config.layer_norm_eps) if config.final_norm else x


def causal(g: Graph, ids: str) -> str:
    """The causal mask key <= query (``LessOrEqual`` of two ``Range``s).

    Shapes: (B, S) -> (S, S).
    """
    seq_len = g.op("Squeeze", g.op("Shape", ids, start=1, end=2), g.const([0], np.int64))
    position = g.op("Range", g.const(0, np.int64), seq_len, g.const(1, np.int64))  # (S,)
    return g.op("LessOrEqual", g.op("Unsqueeze", position, g.const([0], np.int64)),
                g.op("Unsqueeze", position, g.const([1], np.int64)))  # [query, key]


def decode(g: Graph, tgt_ids: str, memory: str, params: Names, config: Any, src_mask: str | None,
           tgt_mask: str | None, angle_type: int) -> str:
    """[LN_dec](DecoderLayer_N(... DecoderLayer_1(embed(tgt_ids), memory), memory)), self mask =
    causal AND tgt_mask[:, None, :], cross mask = src_mask[:, None, :].

    Shapes: (B, St), (B, Ss, d_model) -> (B, St, d_model).
    """
    y = embed(g, tgt_ids, params["tgt_embedding"], config, angle_type)
    self_mask = causal(g, tgt_ids)  # (St, St)
    if tgt_mask is not None:
        self_mask = g.op("And", self_mask, key_padding(g, tgt_mask))  # (B, St, St)
    cross_mask = key_padding(g, src_mask)
    for layer in params["decoder"]:
        y = decoder_layer(g, y, memory, layer, config, self_mask, cross_mask)
    return layer_norm(g, y, params["decoder_norm"], config.layer_norm_eps) if config.final_norm else y


def generator(g: Graph, y: str, params: Names) -> str:
    """logits = y W_gen + b_gen. Shapes: (..., d_model) -> (..., tgt_vocab_size)."""
    return linear(g, y, params["generator"]["w"], params["generator"]["b"])


def next_token(g: Graph, y: str, params: Names) -> str:
    """The argmax (``ArgMax``, lowest index on ties) of the logits at the last position.

    Shapes: (B, L, d_model) -> (B, d_model) -> (B,) int64.
    """
    last = g.op("Gather", y, g.const(-1, np.int64), axis=1)  # (B, d_model)
    return g.op("ArgMax", generator(g, last, params), axis=-1, keepdims=0, select_last_index=0)
