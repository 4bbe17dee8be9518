"""Parameter shapes (one source of truth for validation and initialisation) and init_params."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from reference.config import Config, as_config

Shape = tuple[int, ...]


def map_leaves(fn: Callable[[Any], Any], tree: Any) -> Any:
    """``tree`` (nested dicts, lists and tuples: a params tree, an op's arguments) with ``fn``
    applied to every leaf; the containers are rebuilt, the input is not changed."""
    if isinstance(tree, Mapping):
        return {k: map_leaves(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(map_leaves(fn, v) for v in tree)
    return fn(tree)


def map_floats(fn: Callable[[np.ndarray], Any], tree: Any) -> Any:
    """``tree`` with ``fn`` applied to every floating array leaf; ids, masks, configs and Python
    scalars pass through unchanged."""
    return map_leaves(lambda a: fn(a) if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating) else a,
                      tree)


def leaves(tree: Any) -> Iterator[Any]:
    """Every leaf of ``tree`` (as ``map_leaves`` sees them), depth first, in order."""
    if isinstance(tree, Mapping):
        for v in tree.values():
            yield from leaves(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from leaves(v)
    else:
        yield tree


def attention_shapes(d_model: int) -> dict[str, Shape]:
    """W_q, W_k, W_v, W_o: (d_model, d_model), laid out for x @ W + b."""
    return {f"{kind}_{x}": (d_model, d_model) if kind == "w" else (d_model,)
            for x in "qkvo" for kind in "wb"}


def norm_shapes(d_model: int) -> dict[str, Shape]:
    return {"gamma": (d_model,), "beta": (d_model,)}


def ffn_shapes(d_model: int, d_ff: int) -> dict[str, Shape]:
    return {"w_1": (d_model, d_ff), "b_1": (d_ff,), "w_2": (d_ff, d_model), "b_2": (d_model,)}


def encoder_layer_shapes(c: Config) -> dict[str, Any]:
    return {"self_attn": attention_shapes(c.d_model), "norm1": norm_shapes(c.d_model),
            "ffn": ffn_shapes(c.d_model, c.d_ff), "norm2": norm_shapes(c.d_model)}


def decoder_layer_shapes(c: Config) -> dict[str, Any]:
    return {"self_attn": attention_shapes(c.d_model), "norm1": norm_shapes(c.d_model),
            "cross_attn": attention_shapes(c.d_model), "norm2": norm_shapes(c.d_model),
            "ffn": ffn_shapes(c.d_model, c.d_ff), "norm3": norm_shapes(c.d_model)}


def param_shapes(config: Mapping[str, Any] | Config) -> dict[str, Any]:
    """The nested shape tree of the whole model's params (see backends/CONTRACT.md)."""
    c = as_config(config)
    shapes: dict[str, Any] = {
        "src_embedding": (c.src_vocab_size, c.d_model),
        "tgt_embedding": (c.tgt_vocab_size, c.d_model),
        "encoder": [encoder_layer_shapes(c) for _ in range(c.num_encoder_layers)],
        "decoder": [decoder_layer_shapes(c) for _ in range(c.num_decoder_layers)],
        "generator": {"w": (c.d_model, c.tgt_vocab_size), "b": (c.tgt_vocab_size,)},
    }
    if c.final_norm:
        shapes["encoder_norm"] = norm_shapes(c.d_model)
        shapes["decoder_norm"] = norm_shapes(c.d_model)
    return shapes


def init_params(config: Mapping[str, Any] | Config, seed: int) -> dict[str, Any]:
    """A valid float64 parameter set, deterministic in ``seed``.

    Choices: weights Xavier-uniform, U(-a, a) with a = sqrt(6 / (d_in + d_out)); embeddings
    N(0, 1/d_model) so that the sqrt(d_model) scaling gives unit variance; biases, beta and
    gamma - 1 are N(0, 0.1^2), deliberately non-zero so that a backend that drops a bias or
    swaps gamma and beta is visible.
    """
    rng = np.random.default_rng(seed)
    d_model = as_config(config).d_model
    return _init(param_shapes(config), rng, d_model)


def _init(shapes: Any, rng: np.random.Generator, d_model: int, key: str = "") -> Any:
    if isinstance(shapes, dict):
        return {k: _init(v, rng, d_model, k) for k, v in shapes.items()}
    if isinstance(shapes, list):
        return [_init(s, rng, d_model) for s in shapes]
    if key.endswith("embedding"):
        return rng.normal(0.0, 1.0 / math.sqrt(d_model), shapes)
    if key.startswith("w"):
        limit = math.sqrt(6.0 / sum(shapes))
        return rng.uniform(-limit, limit, shapes)
    small = rng.normal(0.0, 0.1, shapes)
    return 1.0 + small if key == "gamma" else small
