"""The ``torch-nn`` and ``torch-nn-slowpath`` backends: the contract's ops run by ``torch.nn`` modules.

An adapter, not an implementation: each call takes the ``torch.nn`` module that does the op
(built once per shape and kept in a small cache), loads our parameters into it (the mapping
functions below; ``load_state_dict(strict=True)`` proves every weight is set), puts it in eval
mode and calls it under ``torch.no_grad()``, the way inference code runs. That is what makes
torch take its *fast paths* (``torch._native_multi_head_attention``,
``torch._transformer_encoder_layer_fwd``, nested tensors for padded encoder input).
``torch-nn-slowpath`` runs the same modules with ``torch.backends.mha.set_fastpath_enabled(False)``
(restored after each op), so a difference between the two backends in the report is a
difference between torch's two code paths.

| op | torch.nn |
|---|---|
| layer_norm | ``nn.LayerNorm`` |
| attention_weights | ``nn.MultiheadAttention`` (1 head, identity projections), ``need_weights=True`` |
| attention | ``nn.MultiheadAttention`` (1 head, identity projections), ``need_weights=False`` |
| multi_head_attention | ``nn.MultiheadAttention(batch_first=True)``, ``need_weights=False`` |
| encoder_layer / decoder_layer | ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` |
| encode / decode / forward | ``nn.Transformer``'s ``.encoder`` / ``.decoder`` / itself, + ``nn.Linear`` generator |
| softmax, positional_encoding, embedding, feed_forward, greedy_decode | the ``torch`` backend's |

Choices:
- Masks: torch's boolean masks mean True = *not* allowed, the opposite of the contract's, so
  every mask is inverted. A contract mask of shape ``(B, 1, Sk)`` becomes ``key_padding_mask``
  (how inference code passes padding), one that broadcasts from ``(Sq, Sk)`` becomes a 2-D
  ``attn_mask``, anything else a 3-D ``attn_mask`` repeated per head ``(B * h, Sq, Sk)``.
  encode/decode pass ``src_key_padding_mask``, ``tgt_key_padding_mask``,
  ``memory_key_padding_mask`` and a boolean causal ``tgt_mask``.
- ``multi_head_attention(x, x)``: when ``x_q`` and ``x_kv`` hold the same values the module is
  called as ``mha(x, x, x)``, as self-attention is called in practice (the fast path requires
  ``query is key is value``).
- ``attention``/``attention_weights`` on raw Q, K, V: torch.nn's only module for them is
  ``nn.MultiheadAttention``; with one head and identity in/out projections (exact: x @ I = x)
  it computes exactly softmax(Q K^T / sqrt(d_k)) [V]. ``need_weights=True`` is what returns the
  weights; ``attention`` asks only for the output, as inference code does. Leading axes are
  flattened into the batch; V is fed in column blocks of width d_k (zero-padded), since the
  module's output width is its ``embed_dim`` = d_k.
- ``nn.Transformer`` always has final norms: ``final_norm`` false sets ``encoder.norm`` and
  ``decoder.norm`` to None. ``nn.TransformerEncoder``/``Decoder`` cannot run with zero layers
  (``forward`` reads ``self.layers[0]``: IndexError), so a stack of zero layers is the final
  norm alone (or the identity), as the contract defines it.
- Embeddings, the positional encoding and the greedy loop are the ``torch`` backend's
  (``nn.Transformer`` has none of them); the loop drives ``nn.Transformer``'s encoder and decoder.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar

import torch
from torch import nn

from backends.contract import with_defaults
from backends.torch_backend import TorchBackend
from backends.torch_nn_mapping import linear_state, norm_state, mha_state, encoder_layer_state, decoder_layer_state, transformer_state, loaded, layer_kwargs, transformer_module, nn_masks, causal_disallowed, key_padding

Tensor = torch.Tensor
Params = Mapping[str, Any]
Config = Mapping[str, Any]
State = dict[str, Tensor]
M = TypeVar("M", bound=nn.Module)


# -- the backends -------------------------------------------------------------------------------


Op = TypeVar("Op", bound=Callable[..., Any])


def _module_op(method: Op) -> Op:
    """Run a public op under ``torch.no_grad()`` with the backend's fast-path setting."""

    @wraps(method)
    def wrapper(self: TorchNNBackend, *args: Any, **kwargs: Any) -> Any:
        before = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(self.fastpath)
        try:
            with torch.no_grad():
                return method(self, *args, **kwargs)
        finally:
            torch.backends.mha.set_fastpath_enabled(before)

    return wrapper  # type: ignore[return-value]


class TorchNNBackend(TorchBackend):
    """The contract's ops through ``torch.nn`` modules built from our params."""

    name = "torch-nn"
    fastpath = True

    MODULE_CACHE_SIZE = 32

    def __init__(self, *, dtype: str = "float32", device: str = "cpu") -> None:
        super().__init__(dtype=dtype, device=device)
        self._cache: OrderedDict[Any, nn.Module] = OrderedDict()

    def _module(self, cls: type[M], *args: Any, **kwargs: Any) -> M:
        """An empty ``cls(*args, **kwargs)`` at this backend's dtype and device, for the caller to
        load weights into (every call does, strictly). Built once per arguments and reused:
        constructing torch.nn modules (random init, deep copies of layers) costs 10x loading
        a state dict."""
        key = (cls, args, tuple(sorted(kwargs.items())))
        module = self._cache.pop(key, None)
        if module is None:
            if cls is nn.Transformer:
                module = transformer_module(dict(kwargs["config"]), dtype=self.torch_dtype, device=self.torch_device)
            else:
                module = cls(*args, device=self.torch_device, dtype=self.torch_dtype, **kwargs)
        self._cache[key] = module  # most recently used last
        while len(self._cache) > self.MODULE_CACHE_SIZE:
            self._cache.popitem(last=False)
        return module

    # -- elementary ops ---------------------------------------------------------------------

    @_module_op
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        """``nn.LayerNorm(d, eps)`` with weight = gamma, bias = beta.

        Shapes: (..., d) -> (..., d).
        """
        norm = loaded(self._module(nn.LayerNorm, gamma.shape[-1], eps=eps), norm_state({"gamma": gamma, "beta": beta}))
        return norm(x)

    # -- attention --------------------------------------------------------------------------

    @_module_op
    def attention_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """The weights ``nn.MultiheadAttention(d_k, 1)`` returns with identity projections and
        ``need_weights=True``.

        Shapes: (..., Sq, d_k), (..., Sk, d_k), mask -> (..., Sq, Sk) -> (..., Sq, Sk).
        """
        lead, (q3, k3), attn_mask = self._flat_batch(q, k, mask=mask)  # (N, S, d_k), (N*1, Sq, Sk)
        _, weights = self._identity_mha(q.shape[-1])(q3, k3, k3, attn_mask=attn_mask, need_weights=True)
        return weights.reshape(*lead, q.shape[-2], k.shape[-2])

    @_module_op
    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """``nn.MultiheadAttention(d_k, 1)`` with identity projections, ``need_weights=False``;
        V goes in blocks of d_k columns (zero-padded), the output width being ``embed_dim``.

        Shapes: (..., Sq, d_k), (..., Sk, d_k), (..., Sk, d_v) -> (..., Sq, d_v).
        """
        d_k, d_v = q.shape[-1], v.shape[-1]
        lead, (q3, k3, v3), attn_mask = self._flat_batch(q, k, v, mask=mask)
        mha = self._identity_mha(d_k)
        blocks = []
        for start in range(0, d_v, d_k):
            block = v3[..., start:start + d_k]  # (N, Sk, <= d_k)
            padded = torch.nn.functional.pad(block, (0, d_k - block.shape[-1]))  # (N, Sk, d_k)
            out, _ = mha(q3, k3, padded, attn_mask=attn_mask, need_weights=False)
            blocks.append(out[..., : block.shape[-1]])
        return torch.cat(blocks, dim=-1).reshape(*lead, q.shape[-2], d_v)

    def _identity_mha(self, d_k: int) -> nn.MultiheadAttention:
        """A one-head ``nn.MultiheadAttention(d_k)`` whose projections are the identity."""
        eye = torch.eye(d_k, dtype=self.torch_dtype, device=self.torch_device)
        zero = torch.zeros(d_k, dtype=self.torch_dtype, device=self.torch_device)
        p = {"w_q": eye, "b_q": zero, "w_k": eye, "b_k": zero, "w_v": eye, "b_v": zero, "w_o": eye, "b_o": zero}
        return loaded(self._module(nn.MultiheadAttention, d_k, 1, batch_first=True), mha_state(p))

    def _flat_batch(self, *xs: Tensor, mask: Tensor | None) -> tuple[tuple[int, ...], list[Tensor], Tensor | None]:
        """The leading axes of ``xs`` broadcast and flattened into one batch axis N, and the
        mask as torch's 3-D ``attn_mask`` (N, Sq, Sk), inverted.

        Shapes: (..., S, d) -> (N, S, d); mask -> (..., Sq, Sk) -> (N, Sq, Sk).
        """
        s_q, s_k = xs[0].shape[-2], xs[1].shape[-2]
        lead = torch.broadcast_shapes(*(x.shape[:-2] for x in xs),
                                      *(() if mask is None else (mask.shape[:-2],)))
        flat = [x.expand(*lead, *x.shape[-2:]).reshape(-1, *x.shape[-2:]) for x in xs]
        if mask is None:
            return tuple(lead), flat, None
        full = torch.broadcast_to(mask, (*lead, s_q, s_k)).reshape(-1, s_q, s_k)
        return tuple(lead), flat, ~full

    @_module_op
    def multi_head_attention(
        self, x_q: Tensor, x_kv: Tensor, p: Params, num_heads: int, mask: Tensor | None = None
    ) -> Tensor:
        """``nn.MultiheadAttention(d_model, num_heads, batch_first=True)`` holding ``p``, called
        with ``need_weights=False`` (as ``nn.TransformerEncoderLayer`` calls it).

        Shapes: (B, Sq, d_model), (B, Sk, d_model), mask -> (B, Sq, Sk) -> (B, Sq, d_model).
        """
        d_model = x_q.shape[-1]
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        mha = loaded(self._module(nn.MultiheadAttention, d_model, num_heads, batch_first=True), mha_state(p))
        if x_q.shape == x_kv.shape and torch.equal(x_q, x_kv):
            x_kv = x_q  # self-attention: mha(x, x, x)
        attn_mask, key_padding_mask = nn_masks(mask, x_q.shape[0], x_q.shape[-2], x_kv.shape[-2], num_heads)
        out, _ = mha(x_q, x_kv, x_kv, key_padding_mask=key_padding_mask, attn_mask=attn_mask, need_weights=False)
        return out

    # -- layers -----------------------------------------------------------------------------

    @_module_op
    def encoder_layer(self, x: Tensor, p: Params, config: Config, mask: Tensor | None = None) -> Tensor:
        """``nn.TransformerEncoderLayer`` holding ``p``.

        Shapes: (B, S, d_model), mask -> (B, S, S) -> (B, S, d_model).
        """
        config = with_defaults(config)
        layer = loaded(self._module(nn.TransformerEncoderLayer, **layer_kwargs(config)), encoder_layer_state(p))
        src_mask, key_padding_mask = nn_masks(mask, x.shape[0], x.shape[-2], x.shape[-2], config["num_heads"])
        return layer(x, src_mask=src_mask, src_key_padding_mask=key_padding_mask)

    @_module_op
    def decoder_layer(
        self,
        y: Tensor,
        memory: Tensor,
        p: Params,
        config: Config,
        self_mask: Tensor | None = None,
        cross_mask: Tensor | None = None,
    ) -> Tensor:
        """``nn.TransformerDecoderLayer`` holding ``p``.

        Shapes: (B, St, d_model), (B, Ss, d_model) -> (B, St, d_model).
        """
        config = with_defaults(config)
        layer = loaded(self._module(nn.TransformerDecoderLayer, **layer_kwargs(config)), decoder_layer_state(p))
        batch, s_t, s_s, h = y.shape[0], y.shape[-2], memory.shape[-2], config["num_heads"]
        tgt_mask, tgt_key_padding_mask = nn_masks(self_mask, batch, s_t, s_t, h)
        memory_mask, memory_key_padding_mask = nn_masks(cross_mask, batch, s_t, s_s, h)
        return layer(y, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                     tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask)

    # -- stacks -----------------------------------------------------------------------------

    def _transformer(self, params: Params, config: Config) -> nn.Transformer:
        """The cached ``nn.Transformer`` for ``config``, holding ``params``."""
        config = with_defaults(config)
        structure = {k: config[k] for k in ("d_model", "num_heads", "d_ff", "num_encoder_layers",
                                            "num_decoder_layers", "layer_norm_eps", "norm_first", "final_norm",
                                            "activation")}
        model = self._module(nn.Transformer, config=tuple(sorted(structure.items())))
        return loaded(model, transformer_state(params, config))

    @_module_op
    def encode(self, src_ids: Tensor, params: Params, config: Config, src_mask: Tensor | None = None) -> Tensor:
        """``nn.Transformer.encoder`` on the embedded source, ``src_key_padding_mask`` = not src_mask.

        Shapes: (B, Ss) -> (B, Ss, d_model).
        """
        config = with_defaults(config)
        encoder = self._transformer(params, config).encoder
        x = self._embed(src_ids, params["src_embedding"], config)
        if not len(encoder.layers):  # nn.TransformerEncoder.forward reads layers[0]
            return x if encoder.norm is None else encoder.norm(x)
        return encoder(x, src_key_padding_mask=key_padding(src_mask))

    @_module_op
    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor,
        params: Params,
        config: Config,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> Tensor:
        """``nn.Transformer.decoder`` on the embedded target with a causal ``tgt_mask`` and the
        target and memory key padding masks.

        Shapes: (B, St), (B, Ss, d_model) -> (B, St, d_model).
        """
        config = with_defaults(config)
        decoder = self._transformer(params, config).decoder
        y = self._embed(tgt_ids, params["tgt_embedding"], config)
        if not len(decoder.layers):  # nn.TransformerDecoder.forward reads layers[0]
            return y if decoder.norm is None else decoder.norm(y)
        return decoder(y, memory, tgt_mask=causal_disallowed(tgt_ids.shape[-1], self.torch_device),
                       tgt_key_padding_mask=key_padding(tgt_mask), memory_key_padding_mask=key_padding(src_mask))

    @_module_op
    def forward(
        self,
        src_ids: Tensor,
        tgt_ids: Tensor,
        params: Params,
        config: Config,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> Tensor:
        """``nn.Transformer(src, tgt, ...)`` then an ``nn.Linear`` generator (with zero layers in
        a stack, encode and decode, which nn.Transformer cannot run).

        Shapes: (B, Ss), (B, St) -> (B, St, tgt_vocab_size).
        """
        config = with_defaults(config)
        if not (config["num_encoder_layers"] and config["num_decoder_layers"]):
            memory = self.encode(src_ids, params, config, src_mask)
            return self._generator(self.decode(tgt_ids, memory, params, config, src_mask, tgt_mask), params)
        model = self._transformer(params, config)
        src = self._embed(src_ids, params["src_embedding"], config)
        tgt = self._embed(tgt_ids, params["tgt_embedding"], config)
        y = model(src, tgt, tgt_mask=causal_disallowed(tgt_ids.shape[-1], self.torch_device),
                  src_key_padding_mask=key_padding(src_mask), tgt_key_padding_mask=key_padding(tgt_mask),
                  memory_key_padding_mask=key_padding(src_mask))
        return self._generator(y, params)

    def _generator(self, y: Tensor, params: Params) -> Tensor:
        """``nn.Linear(d_model, V_tgt)`` with weight = W_gen^T.

        Shapes: (..., d_model) -> (..., tgt_vocab_size).
        """
        w, b = params["generator"]["w"], params["generator"]["b"]
        linear = loaded(self._module(nn.Linear, w.shape[0], w.shape[1]), linear_state(w, b))
        return linear(y)


class TorchNNSlowPathBackend(TorchNNBackend):
    """The same modules with ``torch.backends.mha.set_fastpath_enabled(False)``: no native MHA,
    no fused encoder layer, no nested tensors."""

    name = "torch-nn-slowpath"
    fastpath = False


def factory(*, dtype: str = "float32", device: str = "cpu") -> TorchNNBackend:
    """``torch-nn``: torch.nn modules, fast paths allowed. ValueError (= unsupported) for an
    unknown dtype or an absent device."""
    return TorchNNBackend(dtype=dtype, device=device)


def slowpath_factory(*, dtype: str = "float32", device: str = "cpu") -> TorchNNSlowPathBackend:
    """``torch-nn-slowpath``: the same modules with torch's MHA fast path disabled."""
    return TorchNNSlowPathBackend(dtype=dtype, device=device)
