"""The ``jax`` backend: the contract's ops through JAX and Flax (``flax.linen``).

An adapter, not an implementation: every op with a library counterpart calls it, with our
parameters loaded as that module's variables (the ``*_variables`` functions below):

| op | JAX / Flax |
|---|---|
| softmax | ``jax.nn.softmax`` |
| embedding | ``flax.linen.Embed`` |
| layer_norm | ``flax.linen.LayerNorm`` (its defaults: ``use_fast_variance``, float32 reductions) |
| attention_weights | ``flax.linen.dot_product_attention_weights`` (one head axis added) |
| attention | ``flax.linen.dot_product_attention`` (one head axis added) |
| multi_head_attention | ``flax.linen.MultiHeadDotProductAttention`` |
| feed_forward, generator | ``flax.linen.Dense`` and ``jax.nn.relu`` / ``jax.nn.gelu(approximate=False)`` |
| positional_encoding | ``jax.numpy`` (Flax has none) |
| layers, stacks, greedy loop | composed here from the modules above (Flax ships no transformer layer) |

Choices:
- Every op up to a layer runs under ``jax.jit``, as JAX inference code does: compiled once
  per input shape and per value of its non-array arguments (``num_heads``, ``eps``, the
  layer's config, ...). Eager op-by-op execution compiles each primitive separately and was
  5-20x slower on CPU. The stacks (encode, decode, forward) and the greedy loop are Python
  over compiled pieces (the embedding stage, each layer, the generator), so that a layer is
  compiled once per shape and layer config (``_layer_config``), for every layer of a stack
  and every op built on it: a whole-model program would compile again for each model
  config, and compiling was two thirds of the gate's time. The backend declares
  ``compiles_per_shape`` (backends/CONTRACT.md), so the suite draws its sizes from a few
  values and each example's structure from a few families. Precision is the library default (``precision=None``).
- float64 needs JAX's x64 mode: the float64 factory turns on ``jax_enable_x64`` for the whole
  process (JAX cannot scope it per array); other dtypes leave the flag alone. Token ids are
  int64 under x64, int32 otherwise.
- Inputs are rounded to the dtype in NumPy (bfloat16 via float32, as ``ml_dtypes`` does);
  bfloat16 results come back as float32.
- A Flax mask is True = may attend, the contract's convention; Flax's head axis is added
  (``mask[..., None, :, :]``).
- Devices: ``cpu``, or ``cuda``/``cuda:N`` when JAX sees a GPU.

JAX and Flax are the optional extra ``jax`` (``pip install 'transformer-conformance[jax]'``);
they are imported by the factory, which raises ValueError ("unsupported") without them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from backends.contract import with_defaults
from backends.jax_support import dense_variables, jitted, mha_variables, norm_variables

jax: Any = None  # the modules, bound by _import_jax() the first time the factory runs
jnp: Any = None
linen: Any = None

Array = Any
Params = Mapping[str, Any]
Config = Mapping[str, Any]

_NUMPY_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def _import_jax() -> None:
    """Bind ``jax``, ``jax.numpy`` and ``flax.linen``; ValueError (= unsupported) if absent."""
    global jax, jnp, linen
    if linen is not None:
        return
    try:
        import flax.linen as _linen
        import jax as _jax
        import jax.numpy as _jnp
    except ImportError as exc:
        raise ValueError(f"unsupported: jax is not installed ({exc}); "
                         "pip install 'transformer-conformance[jax]'") from None
    jax, jnp, linen = _jax, _jnp, _linen
    _persistent_cache(os.environ.get("CONFORMANCE_CACHE_DIR"))


def _persistent_cache(folder: str | None) -> None:
    """Keep XLA's compiled programs in ``folder``/jax (the gate's cache directory,
    CONTRACT.md), every one however fast it compiled: the gate's workers, and later runs with
    the same report directory, then compile each (shape, config) once. A cache the user set
    (``JAX_COMPILATION_CACHE_DIR``) is left alone; without a folder nothing is cached."""
    if not folder or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", os.path.join(folder, "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


class JaxBackend:
    """The contract's ops on JAX arrays of one dtype on one device."""

    name = "jax"
    compiles_per_shape = True  # backends/CONTRACT.md: sizes from a few values, structures from a few families

    def __init__(self, *, dtype: str = "float32", device: str = "cpu") -> None:
        _import_jax()
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"dtype {dtype!r} is unsupported; expected one of {sorted(_NUMPY_DTYPES)}")
        self.dtype, self.device = dtype, device
        self.jax_device = _jax_device(device)
        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self.jax_dtype = jnp.dtype(_NUMPY_DTYPES[dtype])
        self._compiled: dict[Any, Any] = {}

    # -- conversion -------------------------------------------------------------------------

    def asarray(self, a: np.ndarray) -> Array:
        """Floating arrays -> ``dtype`` (rounded once, in NumPy); ids and masks keep their kind."""
        arr = np.asarray(a)
        if arr.dtype.kind == "b":
            host = arr
        elif arr.dtype.kind in "iu":
            host = arr.astype(np.int64 if jax.config.read("jax_enable_x64") else np.int32)
        elif self.dtype == "bfloat16":
            host = arr.astype(np.float32).astype(ml_dtypes.bfloat16)
        else:
            host = arr.astype(_NUMPY_DTYPES[self.dtype])
        return jax.device_put(host, self.jax_device)

    def to_numpy(self, x: Array) -> np.ndarray:
        """Back to NumPy on the host (bfloat16 comes back as float32)."""
        out = np.asarray(jax.device_get(x))
        return out.astype(np.float32) if out.dtype == ml_dtypes.bfloat16 else out

    # -- elementary ops ---------------------------------------------------------------------

    @jitted("axis")
    def softmax(self, x: Array, axis: int = -1) -> Array:
        """``jax.nn.softmax(x, axis)``.

        Shapes: any -> same.
        """
        return jax.nn.softmax(x, axis=axis)

    @jitted("seq_len", "d_model")
    def positional_encoding(self, seq_len: int, d_model: int) -> Array:
        """PE[p, 2i] = sin(p / 10000^(2i/d_model)), PE[p, 2i+1] = cos(same), in jax.numpy;
        computed in float32 (float64 for a float64 backend) and cast.

        Shapes: -> (seq_len, d_model).
        """
        if d_model % 2:
            raise ValueError(f"d_model must be even for the positional encoding, got {d_model}")
        compute = jnp.float64 if self.dtype == "float64" else jnp.float32
        with jax.default_device(self.jax_device):
            position = jnp.arange(seq_len, dtype=compute)[:, None]  # (seq_len, 1)
            two_i = jnp.arange(0, d_model, 2, dtype=compute)  # (d_model/2,)
            angles = position / jnp.asarray(10000.0, compute) ** (two_i / d_model)  # (seq_len, d_model/2)
            pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # (seq_len, d_model/2, 2)
            return pe.reshape(seq_len, d_model).astype(self.jax_dtype)

    @jitted()
    def embedding(self, ids: Array, table: Array) -> Array:
        """``flax.linen.Embed`` holding ``table``: one row per token id.

        Shapes: (B, S), (V, d) -> (B, S, d).
        """
        embed = linen.Embed(num_embeddings=table.shape[0], features=table.shape[1],
                            dtype=self.jax_dtype, param_dtype=self.jax_dtype)
        return embed.apply({"params": {"embedding": table}}, ids)

    @jitted("eps")
    def layer_norm(self, x: Array, gamma: Array, beta: Array, eps: float) -> Array:
        """``flax.linen.LayerNorm(epsilon=eps)`` with scale = gamma, bias = beta.

        Shapes: (..., d) -> (..., d).
        """
        norm = linen.LayerNorm(epsilon=eps, dtype=self.jax_dtype, param_dtype=self.jax_dtype)
        return norm.apply(norm_variables(gamma, beta), x)

    # -- attention --------------------------------------------------------------------------

    @jitted()
    def attention_weights(self, q: Array, k: Array, mask: Array | None = None) -> Array:
        """``flax.linen.dot_product_attention_weights`` with one head.

        Shapes: (..., Sq, d_k), (..., Sk, d_k), mask -> (..., Sq, Sk) -> (..., Sq, Sk).
        """
        lead = jnp.broadcast_shapes(q.shape[:-2], k.shape[:-2])  # Flax wants equal batch axes
        q, k = (jnp.broadcast_to(x, (*lead, *x.shape[-2:])) for x in (q, k))
        weights = linen.dot_product_attention_weights(q[..., None, :], k[..., None, :],  # (..., S, 1, d_k)
                                                      mask=self._head_mask(mask))
        return weights[..., 0, :, :]  # drop the head axis: (..., Sq, Sk)

    @jitted()
    def attention(self, q: Array, k: Array, v: Array, mask: Array | None = None) -> Array:
        """``flax.linen.dot_product_attention`` with one head.

        Shapes: (..., Sq, d_k), (..., Sk, d_k), (..., Sk, d_v) -> (..., Sq, d_v).
        """
        lead = jnp.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        q, k, v = (jnp.broadcast_to(x, (*lead, *x.shape[-2:])) for x in (q, k, v))  # Flax: equal batch axes
        out = linen.dot_product_attention(q[..., None, :], k[..., None, :], v[..., None, :],  # (..., S, 1, d)
                                          mask=self._head_mask(mask))
        return out[..., 0, :]  # (..., Sq, d_v)

    @jitted("num_heads")
    def multi_head_attention(
        self, x_q: Array, x_kv: Array, p: Params, num_heads: int, mask: Array | None = None
    ) -> Array:
        """``flax.linen.MultiHeadDotProductAttention(num_heads)`` holding ``p``.

        Shapes: (B, Sq, d_model), (B, Sk, d_model), mask -> (B, Sq, Sk) -> (B, Sq, d_model).
        """
        d_model = x_q.shape[-1]
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        mha = linen.MultiHeadDotProductAttention(num_heads=num_heads, qkv_features=d_model, out_features=d_model,
                                                 dtype=self.jax_dtype, param_dtype=self.jax_dtype,
                                                 deterministic=True)
        return mha.apply(mha_variables(p, num_heads), x_q, x_kv, x_kv, mask=self._head_mask(mask))

    def _head_mask(self, mask: Array | None) -> Array | None:
        """The same mask for every head: Flax's head axis goes before (Sq, Sk).

        Shapes: (..., Sq, Sk) -> (..., 1, Sq, Sk).
        """
        return None if mask is None else mask[..., None, :, :]

    # -- feed-forward and sub-layers --------------------------------------------------------

    @jitted("activation")
    def feed_forward(self, x: Array, p: Params, activation: str = "relu") -> Array:
        """FFN(x) = act(Dense_1(x)) -> Dense_2, act = ``jax.nn.relu`` or exact ``jax.nn.gelu``.

        Shapes: (..., d_model) -> (..., d_ff) -> (..., d_model).
        """
        hidden = self._dense(x, p["w_1"], p["b_1"])
        if activation == "relu":
            hidden = jax.nn.relu(hidden)
        elif activation == "gelu":
            hidden = jax.nn.gelu(hidden, approximate=False)
        else:
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
        return self._dense(hidden, p["w_2"], p["b_2"])

    def _dense(self, x: Array, w: Array, b: Array) -> Array:
        """``flax.linen.Dense(d_out)`` with kernel = W, bias = b.

        Shapes: (..., d_in) -> (..., d_out).
        """
        dense = linen.Dense(features=w.shape[1], dtype=self.jax_dtype, param_dtype=self.jax_dtype)
        return dense.apply(dense_variables(w, b), x)

    def _norm(self, x: Array, norm: Params, config: Config) -> Array:
        return self.layer_norm(x, norm["gamma"], norm["beta"], config["layer_norm_eps"])

    def _sublayer(self, x: Array, fn: Any, norm: Params, config: Config) -> Array:
        """Post-LN  LN(x + fn(x)),  or pre-LN  x + fn(LN(x))  (norm_first).

        Shapes: (B, S, d_model) -> (B, S, d_model).
        """
        if config["norm_first"]:
            return x + fn(self._norm(x, norm, config))
        return self._norm(x + fn(x), norm, config)

    # -- layers and stacks ------------------------------------------------------------------

    @jitted("config")
    def encoder_layer(self, x: Array, p: Params, config: Config, mask: Array | None = None) -> Array:
        """Self-attention sub-layer, then feed-forward sub-layer.

        Shapes: (B, S, d_model), mask -> (B, S, S) -> (B, S, d_model).
        """
        config = with_defaults(config)
        h = config["num_heads"]
        x = self._sublayer(x, lambda z: self.multi_head_attention(z, z, p["self_attn"], h, mask), p["norm1"], config)
        return self._sublayer(x, lambda z: self.feed_forward(z, p["ffn"], config["activation"]), p["norm2"], config)

    @jitted("config")
    def decoder_layer(
        self,
        y: Array,
        memory: Array,
        p: Params,
        config: Config,
        self_mask: Array | None = None,
        cross_mask: Array | None = None,
    ) -> Array:
        """Masked self-attention, cross-attention over ``memory``, feed-forward.

        Shapes: (B, St, d_model), (B, Ss, d_model) -> (B, St, d_model).
        """
        config = with_defaults(config)
        h = config["num_heads"]
        y = self._sublayer(y, lambda z: self.multi_head_attention(z, z, p["self_attn"], h, self_mask),
                           p["norm1"], config)
        y = self._sublayer(y, lambda z: self.multi_head_attention(z, memory, p["cross_attn"], h, cross_mask),
                           p["norm2"], config)
        return self._sublayer(y, lambda z: self.feed_forward(z, p["ffn"], config["activation"]), p["norm3"], config)

    def encode(self, src_ids: Array, params: Params, config: Config, src_mask: Array | None = None) -> Array:
        """memory = [LN_enc](EncoderLayer_N(... EncoderLayer_1(embed(src_ids)))).

        Shapes: (B, Ss) -> (B, Ss, d_model).
        """
        config = with_defaults(config)
        x = self._embed(src_ids, params["src_embedding"], config["scale_embedding"])
        mask = None if src_mask is None else src_mask[:, None, :]  # key padding: (B, 1, Ss)
        layer_config = _layer_config(config)
        for layer in params["encoder"]:
            x = self.encoder_layer(x, layer, layer_config, mask)
        return self._norm(x, params["encoder_norm"], config) if config["final_norm"] else x

    def decode(
        self,
        tgt_ids: Array,
        memory: Array,
        params: Params,
        config: Config,
        src_mask: Array | None = None,
        tgt_mask: Array | None = None,
    ) -> Array:
        """[LN_dec](DecoderLayer_N(... DecoderLayer_1(embed(tgt_ids), memory), memory)).

        Shapes: (B, St), (B, Ss, d_model) -> (B, St, d_model).
        """
        config = with_defaults(config)
        y = self._embed(tgt_ids, params["tgt_embedding"], config["scale_embedding"])
        with jax.default_device(self.jax_device):
            self_mask, cross_mask = self._decoder_masks(tgt_ids.shape[-1], tgt_mask, src_mask)
        layer_config = _layer_config(config)
        for layer in params["decoder"]:
            y = self.decoder_layer(y, memory, layer, layer_config, self_mask, cross_mask)
        return self._norm(y, params["decoder_norm"], config) if config["final_norm"] else y

    def forward(
        self,
        src_ids: Array,
        tgt_ids: Array,
        params: Params,
        config: Config,
        src_mask: Array | None = None,
        tgt_mask: Array | None = None,
    ) -> Array:
        """logits = Dense_gen(decode(tgt_ids, encode(src_ids))).

        Shapes: (B, Ss), (B, St) -> (B, St, tgt_vocab_size).
        """
        memory = self.encode(src_ids, params, config, src_mask)
        y = self.decode(tgt_ids, memory, params, config, src_mask, tgt_mask)
        return self._generator(y, params["generator"]["w"], params["generator"]["b"])

    @jitted()
    def _generator(self, y: Array, w: Array, b: Array) -> Array:
        """The generator: ``flax.linen.Dense(tgt_vocab_size)``.

        Shapes: (..., d_model) -> (..., tgt_vocab_size).
        """
        return self._dense(y, w, b)

    @jitted("s_t")
    def _decoder_masks(self, s_t: int, tgt_mask: Array | None,
                       src_mask: Array | None) -> tuple[Array, Array | None]:
        """The decoder layers' masks: causal (and target padding) self-attention, source padding
        for cross-attention.

        Shapes: (B, St), (B, Ss) -> (St, St) or (B, St, St), None or (B, 1, Ss).
        """
        self_mask = jnp.tril(jnp.ones((s_t, s_t), dtype=bool))  # causal: (St, St)
        if tgt_mask is not None:
            self_mask = self_mask & tgt_mask[:, None, :]  # (B, St, St)
        cross_mask = None if src_mask is None else src_mask[:, None, :]  # (B, 1, Ss)
        return self_mask, cross_mask

    @jitted("scale_embedding")
    def _embed(self, ids: Array, table: Array, scale_embedding: bool) -> Array:
        """Embed(ids) * sqrt(d_model) (if ``scale_embedding``) + PE[:S].

        Shapes: (B, S), (V, d_model) -> (B, S, d_model).
        """
        d_model = table.shape[1]
        x = self.embedding(ids, table)
        if scale_embedding:
            x = x * jnp.asarray(math.sqrt(d_model), self.jax_dtype)
        return x + self.positional_encoding(ids.shape[-1], d_model)

    def greedy_decode(
        self,
        src_ids: Array,
        params: Params,
        config: Config,
        max_len: int,
        bos_id: int,
        eos_id: int,
        src_mask: Array | None = None,
    ) -> Array:
        """Start from bos; append the argmax (lowest index on ties) of the last position's
        logits until every row has emitted eos or the length is ``max_len``; rows past their
        eos are filled with eos.

        Choices: as JAX decoding loops do, the tokens live in a fixed (B, max_len) buffer and
        each step decodes the whole buffer, reading the logits at the last filled position
        (by causality they depend only on the tokens so far), so the same compiled pieces (the
        decoder's, and the generator, argmax and buffer update: ``_next_tokens``) serve every
        length. The buffer starts on the device, as the step's results are, so the step never
        recompiles for a change of placement; the length is cut on the host.

        Shapes: (B, Ss) -> (B, L) int, 1 <= L <= max_len.
        """
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        config = with_defaults(config)
        memory = self.encode(src_ids, params, config, src_mask)  # (B, Ss, d_model)
        batch = src_ids.shape[0]
        tokens = jax.device_put(np.full((batch, max_len), bos_id, dtype=src_ids.dtype), self.jax_device)  # (B, max_len)
        finished = jax.device_put(np.zeros(batch, dtype=bool), self.jax_device)  # (B,)
        length = 1
        while length < max_len and not np.asarray(finished).all():
            tokens, finished = self._greedy_step(tokens, finished, memory, params, config, src_mask, length, eos_id)
            length += 1
        return jax.device_put(np.asarray(tokens)[:, :length], self.jax_device)  # (B, L)

    def _greedy_step(self, tokens: Array, finished: Array, memory: Array, params: Params, config: Config,
                     src_mask: Array | None, length: int, eos_id: int) -> tuple[Array, Array]:
        """One greedy step: decode(tokens), then ``_next_tokens``; the same compiled pieces serve
        every step (the buffer's shape does not change).

        Shapes: (B, max_len), (B,), (B, Ss, d_model) -> (B, max_len), (B,).
        """
        y = self.decode(tokens, memory, params, config, src_mask)  # (B, max_len, d_model)
        return self._next_tokens(y, params["generator"]["w"], params["generator"]["b"], tokens, finished,
                                 np.int32(length), np.int32(eos_id))

    @jitted()
    def _next_tokens(self, y: Array, w: Array, b: Array, tokens: Array, finished: Array, length: Array,
                     eos_id: Array) -> tuple[Array, Array]:
        """The argmax (first on ties) of the generator's logits at position ``length - 1``, eos for
        finished rows, written at ``length`` (both traced: one program for every step).

        Shapes: (B, max_len, d_model), (d_model, V), (V,), (B, max_len), (B,) -> (B, max_len), (B,).
        """
        y_at = jax.lax.dynamic_index_in_dim(y, length - 1, axis=1, keepdims=False)  # (B, d_model)
        logits = self._dense(y_at, w, b)  # (B, V)
        next_id = jnp.where(finished, eos_id, jnp.argmax(logits, axis=-1)).astype(tokens.dtype)  # (B,)
        return tokens.at[:, length].set(next_id), finished | (next_id == eos_id)


def _layer_config(config: Config) -> dict[str, Any]:
    """The keys of a config (with defaults) that a layer reads: the layer's compiled program is
    keyed by these, not by the model's vocabularies or depth."""
    return {k: config[k] for k in ("num_heads", "norm_first", "activation", "layer_norm_eps")}


def _jax_device(name: str) -> Any:
    """The JAX device for ``cpu``, ``cuda`` or ``cuda:N``; ValueError (= unsupported) otherwise."""
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ValueError(f"device {name!r} is unsupported; expected 'cpu', 'cuda' or 'cuda:N'")
    try:
        devices = jax.devices("gpu" if kind == "cuda" else "cpu")
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is unsupported: JAX has no {kind} backend here ({exc})") from None
    i = int(index or 0)
    if i >= len(devices):
        raise ValueError(f"device {name!r} is unsupported: JAX sees {len(devices)} {kind} device(s)")
    return devices[i]


def factory(*, dtype: str = "float32", device: str = "cpu") -> JaxBackend:
    """The ``jax`` backend; ValueError (= unsupported) when jax/flax are not installed, for an
    unknown dtype, or a device JAX does not see."""
    return JaxBackend(dtype=dtype, device=device)
