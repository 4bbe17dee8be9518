"""The ``hf-marian`` and ``hf-marian-sdpa`` backends: the contract's ops run by Hugging Face
``transformers.models.marian`` modules.

An adapter, not an implementation: each op builds the Marian module that does it from a
``MarianConfig`` holding the contract config (once per structure, kept in a small cache), loads
our parameters into its state dict (the ``*_state`` functions of backends/hf_marian_mapping.py; ``load_state_dict(strict=True)``
proves every weight is set), and calls it in eval mode under ``torch.no_grad()``. No hub weights
are involved. ``hf-marian`` runs ``attn_implementation="eager"`` (``eager_attention_forward``:
scores plus an additive mask, ``nn.functional.softmax``), ``hf-marian-sdpa`` runs ``"sdpa"``
(``sdpa_attention_forward``: ``F.scaled_dot_product_attention`` with a boolean mask).

| op | transformers (Marian) |
|---|---|
| softmax | ``nn.functional.softmax``, as ``eager_attention_forward`` calls it (eager only) |
| positional_encoding | ``MarianSinusoidalPositionalEmbedding`` (its ``create_weight`` table, as ``_init_weights`` loads it) |
| embedding | ``nn.Embedding``, as ``MarianEncoder.embed_tokens`` |
| layer_norm | ``nn.LayerNorm``, as Marian's layers use it |
| attention_weights | the attention function ``MarianAttention`` calls, on one head (eager only: sdpa returns no weights) |
| attention | the same, its output |
| multi_head_attention | ``MarianAttention`` |
| feed_forward | ``MarianEncoderLayer``'s ``fc1``, ``activation_fn`` (``ACT2FN``), ``fc2`` |
| encoder_layer / decoder_layer | ``MarianEncoderLayer`` / ``MarianDecoderLayer`` |
| encode / decode | ``MarianMTModel``'s ``model.encoder`` / ``model.decoder`` (``last_hidden_state``) |
| forward | ``MarianMTModel(...).logits`` (``lm_head`` = W_gen, ``final_logits_bias`` = b_gen) |
| greedy_decode | ``MarianMTModel.generate(num_beams=1, do_sample=False)`` with its key/value cache |

Choices:
- What Marian cannot express is declared through ``supports`` (never computed another way):
  its layers are post-LN only (no ``normalize_before``) and its stacks have no final norm, so
  ``norm_first`` and ``final_norm`` are False only. Its layers build ``nn.LayerNorm(d_model)``
  with torch's default eps 1e-5: a config with another ``layer_norm_eps`` raises
  NotImplementedError (the contract has no feature for eps). relu and gelu
  (``ACT2FN["gelu"]`` = exact erf), scaled and unscaled embeddings and untied source, target
  and generator weights (``share_encoder_decoder_embeddings=False``,
  ``tie_word_embeddings=False``) are all Marian's.
- Masks are converted as transformers converts them: a contract mask (True = may attend)
  becomes the ``mask_function`` of the attention implementation's own mask builder
  (``ALL_MASK_ATTENTION_FUNCTIONS``): eager's additive float mask (0, or ``finfo(dtype).min``),
  sdpa's boolean mask (True = attend). Padding masks of the stacks go in as the 2-D
  ``attention_mask`` / ``decoder_attention_mask``, from which Marian builds its own masks. A
  mask argument that is None is passed as None.
- The positional table is Marian's own ([sin | cos] halves, computed in float64 NumPy and
  stored through ``torch.FloatTensor``); its row count ``max_position_embeddings`` is a power
  of two >= 64 covering the longest sequence (rows do not depend on it).
- greedy_decode: ``decoder_start_token_id`` = bos, ``eos_token_id`` = eos, ``pad_token_id`` =
  eos (generate fills finished rows with the pad token; the contract fills them with eos),
  ``max_length`` = max_len, no forced eos, cache on. generate refuses ``max_length=1``
  (ValueError: the start token alone already has that length), so max_len 1 is not implemented.

transformers is the optional extra ``hf``; the factory raises ValueError ("unsupported")
without it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from backends._torch_common import to_numpy, to_tensor, torch_device, torch_dtype
from backends.contract import supports_from
from backends.hf_marian_mapping import (
    attention_state, check_eps, decoder_layer_state, encoder_layer_state, marian_config, module_config,
    mt_model_state, positions_for, structure)
from backends.torch_nn_mapping import linear_state, loaded, norm_state

marian: Any = None  # transformers.models.marian.modeling_marian, bound by _import_marian()
masking: Any = None  # transformers.masking_utils
hf: Any = None  # transformers

Tensor = torch.Tensor
Params = Mapping[str, Any]
Config = Mapping[str, Any]
State = dict[str, Tensor]

_POST_LN_ONLY = {"norm_first": [False]}
_STACK = {"norm_first": [False], "final_norm": [False]}
DECLARED: dict[str, Any] = {"encoder_layer": _POST_LN_ONLY, "decoder_layer": _POST_LN_ONLY, "encode": _STACK,
                            "decode": _STACK, "forward": _STACK, "greedy_decode": _STACK}


def _import_marian() -> None:
    """Bind the transformers modules; ValueError (= unsupported) if transformers is absent."""
    global marian, masking, hf
    if marian is not None:
        return
    try:
        import transformers as _hf
        import transformers.masking_utils as _masking
        import transformers.models.marian.modeling_marian as _marian
    except ImportError as exc:
        raise ValueError(f"unsupported: transformers is not installed ({exc}); "
                         "pip install 'transformer-conformance[hf]'") from None
    marian, masking, hf = _marian, _masking, _hf


# -- the backends ----------------------------------------------------------------------------------


class HFMarianBackend:
    """The contract's ops through ``transformers.models.marian`` modules, eager attention."""

    name = "hf-marian"
    attn_implementation = "eager"
    supports = staticmethod(supports_from(DECLARED))
    MODULE_CACHE_SIZE = 32

    def __init__(self, *, dtype: str = "float32", device: str = "cpu") -> None:
        self.dtype, self.device = dtype, device
        self.torch_dtype, self.torch_device = torch_dtype(dtype), torch_device(device)
        _import_marian()
        self._cache: OrderedDict[Any, nn.Module] = OrderedDict()

    def asarray(self, a: np.ndarray) -> Tensor:
        """Floating arrays -> ``dtype`` on ``device``; int64 ids and bool masks keep their kind."""
        return to_tensor(a, self.torch_dtype, self.torch_device)

    def to_numpy(self, x: Tensor) -> np.ndarray:
        """Back to NumPy on the host (bfloat16 comes back as float32)."""
        return to_numpy(x)

    def _module(self, key: Any, build: Callable[[], nn.Module]) -> Any:
        """The module ``build()`` makes (built once per key, at this dtype and device, eval mode)."""
        module = self._cache.pop(key, None)
        if module is None:
            module = build().to(device=self.torch_device, dtype=self.torch_dtype).eval()
        self._cache[key] = module  # most recently used last
        while len(self._cache) > self.MODULE_CACHE_SIZE:
            self._cache.popitem(last=False)
        return module

    def _config(self, config: Config, positions: int = 64) -> Any:
        return marian_config(config, self.attn_implementation, positions)

    # -- masks: contract (True = may attend) -> the attention implementation's own mask -----------

    def _mask(self, mask: Tensor | None, batch: int, s_q: int, s_k: int) -> Tensor | None:
        """transformers' mask for this attention implementation, from a mask broadcasting to
        ``(B, Sq, Sk)``: eager 0 / finfo.min floats, sdpa booleans.

        Shapes: mask -> (B, 1, Sq, Sk).
        """
        if mask is None:
            return None
        full = torch.broadcast_to(mask, (batch, s_q, s_k))

        def mask_function(batch_idx: Tensor, head_idx: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return full[batch_idx, q_idx, kv_idx]

        build = masking.ALL_MASK_ATTENTION_FUNCTIONS[self.attn_implementation]
        return build(batch_size=batch, q_length=s_q, kv_length=s_k, mask_function=mask_function,
                     dtype=self.torch_dtype, allow_is_causal_skip=False, device=self.torch_device)

    # -- elementary ops -----------------------------------------------------------------------------

    @torch.no_grad()
    def softmax(self, x: Tensor, axis: int = -1) -> Tensor:
        """``nn.functional.softmax`` as ``eager_attention_forward`` calls it.

        Shapes: any -> same.
        """
        return nn.functional.softmax(x, dim=axis)

    @torch.no_grad()
    def positional_encoding(self, seq_len: int, d_model: int) -> Tensor:
        """Rows 0..seq_len-1 of ``MarianSinusoidalPositionalEmbedding``'s table.

        Shapes: -> (seq_len, d_model).
        """
        positions = positions_for(seq_len)
        table = self._module(("positions", positions, d_model), lambda: _positional_table(positions, d_model))
        return table((1, seq_len))

    @torch.no_grad()
    def embedding(self, ids: Tensor, table: Tensor) -> Tensor:
        """``nn.Embedding(V, d)`` holding ``table``, as Marian's ``embed_tokens``.

        Shapes: (B, S), (V, d) -> (B, S, d).
        """
        module = self._module(("embedding", *table.shape), lambda: nn.Embedding(*table.shape))
        return loaded(module, {"weight": table})(ids)

    @torch.no_grad()
    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        """``nn.LayerNorm(d, eps)``, the module Marian's layers normalise with.

        Shapes: (..., d) -> (..., d).
        """
        d = gamma.shape[-1]
        norm = self._module(("layer_norm", d, eps), lambda: nn.LayerNorm(d, eps=eps))
        return loaded(norm, norm_state({"gamma": gamma, "beta": beta}))(x)

    @torch.no_grad()
    def feed_forward(self, x: Tensor, p: Params, activation: str = "relu") -> Tensor:
        """``fc2(activation_fn(fc1(x)))`` of a ``MarianEncoderLayer``, as its forward runs them.

        Shapes: (..., d_model) -> (..., d_ff) -> (..., d_model).
        """
        d_model, d_ff = p["w_1"].shape
        layer = self._encoder_layer(module_config(d_model, d_ff=d_ff, activation=activation))
        fc1 = loaded(layer.fc1, linear_state(p["w_1"], p["b_1"]))
        fc2 = loaded(layer.fc2, linear_state(p["w_2"], p["b_2"]))
        return fc2(layer.activation_fn(fc1(x)))

    # -- attention ----------------------------------------------------------------------------------

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The attention function ``MarianAttention`` calls (``ALL_ATTENTION_FUNCTIONS``), on one
        head, with ``MarianAttention``'s scaling; leading axes flattened into the batch.

        Shapes: (..., Sq, d_k), (..., Sk, d_k), (..., Sk, d_v) -> (..., Sq, d_v), (..., Sq, Sk) or None.
        """
        s_q, s_k, d_k = q.shape[-2], k.shape[-2], q.shape[-1]
        lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2],
                                      *(() if mask is None else (mask.shape[:-2],)))
        q4, k4, v4 = (x.expand(*lead, *x.shape[-2:]).reshape(-1, 1, *x.shape[-2:]) for x in (q, k, v))  # (N, 1, S, d)
        n = q4.shape[0]
        flat_mask = None if mask is None else torch.broadcast_to(mask, (*lead, s_q, s_k)).reshape(n, s_q, s_k)
        module = self._module(("attention", d_k), lambda: marian.MarianAttention(
            d_k, 1, config=self._config(module_config(d_k))))
        interface = marian.ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation,
                                                                 marian.eager_attention_forward)
        out, weights = interface(module, q4, k4, v4, self._mask(flat_mask, n, s_q, s_k), dropout=0.0,
                                 scaling=module.scaling)  # (N, Sq, 1, d_v), (N, 1, Sq, Sk)
        out = out.reshape(*lead, s_q, v.shape[-1])
        return out, None if weights is None else weights.reshape(*lead, s_q, s_k)

    @torch.no_grad()
    def attention_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """The weights ``eager_attention_forward`` returns.

        Shapes: (..., Sq, d_k), (..., Sk, d_k), mask -> (..., Sq, Sk) -> (..., Sq, Sk).
        """
        return self._attend(q, k, k, mask)[1]

    @torch.no_grad()
    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """The output of the attention function.

        Shapes: (..., Sq, d_k), (..., Sk, d_k), (..., Sk, d_v) -> (..., Sq, d_v).
        """
        return self._attend(q, k, v, mask)[0]

    @torch.no_grad()
    def multi_head_attention(
        self, x_q: Tensor, x_kv: Tensor, p: Params, num_heads: int, mask: Tensor | None = None
    ) -> Tensor:
        """``MarianAttention(d_model, num_heads)`` holding ``p``; ``key_value_states`` = x_kv
        unless x_q and x_kv hold the same values (self-attention).

        Shapes: (B, Sq, d_model), (B, Sk, d_model), mask -> (B, Sq, Sk) -> (B, Sq, d_model).
        """
        d_model = x_q.shape[-1]
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        attn = self._module(("mha", d_model, num_heads), lambda: marian.MarianAttention(
            d_model, num_heads, config=self._config(module_config(d_model, num_heads))))
        attn = loaded(attn, attention_state(p))
        same = x_q.shape == x_kv.shape and torch.equal(x_q, x_kv)
        out, _ = attn(x_q, key_value_states=None if same else x_kv,
                      attention_mask=self._mask(mask, x_q.shape[0], x_q.shape[-2], x_kv.shape[-2]))
        return out

    # -- layers -------------------------------------------------------------------------------------

    def _encoder_layer(self, config: Config) -> Any:
        return self._module(("encoder_layer", structure(config)), lambda: marian.MarianEncoderLayer(self._config(config)))

    @torch.no_grad()
    def encoder_layer(self, x: Tensor, p: Params, config: Config, mask: Tensor | None = None) -> Tensor:
        """``MarianEncoderLayer`` holding ``p``.

        Shapes: (B, S, d_model), mask -> (B, S, S) -> (B, S, d_model).
        """
        layer = loaded(self._encoder_layer(config), encoder_layer_state(p))
        check_eps(layer, config)
        return layer(x, attention_mask=self._mask(mask, x.shape[0], x.shape[-2], x.shape[-2]))

    @torch.no_grad()
    def decoder_layer(
        self,
        y: Tensor,
        memory: Tensor,
        p: Params,
        config: Config,
        self_mask: Tensor | None = None,
        cross_mask: Tensor | None = None,
    ) -> Tensor:
        """``MarianDecoderLayer`` holding ``p``, no cache.

        Shapes: (B, St, d_model), (B, Ss, d_model) -> (B, St, d_model).
        """
        layer = self._module(("decoder_layer", structure(config)),
                             lambda: marian.MarianDecoderLayer(self._config(config), layer_idx=0))
        layer = loaded(layer, decoder_layer_state(p))
        check_eps(layer, config)
        batch, s_t, s_s = y.shape[0], y.shape[-2], memory.shape[-2]
        return layer(y, attention_mask=self._mask(self_mask, batch, s_t, s_t), encoder_hidden_states=memory,
                     encoder_attention_mask=self._mask(cross_mask, batch, s_t, s_s), past_key_values=None,
                     use_cache=False)

    # -- the model ----------------------------------------------------------------------------------

    def _model(self, params: Params, config: Config, seq_len: int) -> Any:
        """The cached ``MarianMTModel`` for ``config`` (positions for ``seq_len``), holding ``params``
        (its own positional tables kept)."""
        positions = positions_for(seq_len)
        model = self._module(("model", structure(config), positions),
                             lambda: hf.MarianMTModel(self._config(config, positions)))
        check_eps(model, config)
        tables = {k: v for k, v in model.state_dict().items() if "embed_positions" in k}
        return loaded(model, {**mt_model_state(params), **tables})

    @torch.no_grad()
    def encode(self, src_ids: Tensor, params: Params, config: Config, src_mask: Tensor | None = None) -> Tensor:
        """``model.encoder(input_ids, attention_mask=src_mask).last_hidden_state``.

        Shapes: (B, Ss) -> (B, Ss, d_model).
        """
        encoder = self._model(params, config, src_ids.shape[-1]).model.encoder
        return encoder(input_ids=src_ids, attention_mask=src_mask).last_hidden_state

    @torch.no_grad()
    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor,
        params: Params,
        config: Config,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> Tensor:
        """``model.decoder(tgt_ids, attention_mask=tgt_mask, encoder_hidden_states=memory,
        encoder_attention_mask=src_mask, use_cache=False).last_hidden_state``.

        Shapes: (B, St), (B, Ss, d_model) -> (B, St, d_model).
        """
        decoder = self._model(params, config, tgt_ids.shape[-1]).model.decoder
        return decoder(input_ids=tgt_ids, attention_mask=tgt_mask, encoder_hidden_states=memory,
                       encoder_attention_mask=src_mask, use_cache=False).last_hidden_state

    @torch.no_grad()
    def forward(
        self,
        src_ids: Tensor,
        tgt_ids: Tensor,
        params: Params,
        config: Config,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> Tensor:
        """``MarianMTModel(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask).logits``.

        Shapes: (B, Ss), (B, St) -> (B, St, tgt_vocab_size).
        """
        model = self._model(params, config, max(src_ids.shape[-1], tgt_ids.shape[-1]))
        return model(input_ids=src_ids, attention_mask=src_mask, decoder_input_ids=tgt_ids,
                     decoder_attention_mask=tgt_mask, use_cache=False).logits

    @torch.no_grad()
    def greedy_decode(
        self,
        src_ids: Tensor,
        params: Params,
        config: Config,
        max_len: int,
        bos_id: int,
        eos_id: int,
        src_mask: Tensor | None = None,
    ) -> Tensor:
        """``MarianMTModel.generate``: greedy (one beam, no sampling), cached, start = bos,
        stop at eos (finished rows padded with eos) or ``max_length`` = max_len.

        Shapes: (B, Ss) -> (B, L) int64, 1 <= L <= max_len.
        """
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if max_len == 1:  # generate: "Input length of decoder_input_ids is 1, but `max_length` is set to 1"
            raise NotImplementedError("MarianMTModel.generate refuses max_length 1 (ValueError)")
        model = self._model(params, config, max(src_ids.shape[-1], max_len))
        generation = hf.GenerationConfig(max_length=max_len, num_beams=1, do_sample=False, use_cache=True,
                                         decoder_start_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id,
                                         forced_eos_token_id=None)
        return model.generate(input_ids=src_ids, attention_mask=src_mask, generation_config=generation)


def _positional_table(positions: int, d_model: int) -> nn.Module:
    """``MarianSinusoidalPositionalEmbedding`` with the table ``_init_weights`` gives it."""
    table = marian.MarianSinusoidalPositionalEmbedding(positions, d_model)
    with torch.no_grad():
        table.weight.copy_(table.create_weight())
    return table


class HFMarianSDPABackend(HFMarianBackend):
    """The same modules with ``attn_implementation="sdpa"``: ``F.scaled_dot_product_attention``,
    which returns no weights and calls no softmax of its own that an op could reach."""

    name = "hf-marian-sdpa"
    attn_implementation = "sdpa"
    supports = staticmethod(supports_from({**DECLARED, "softmax": False, "attention_weights": False}))

    def softmax(self, x: Tensor, axis: int = -1) -> Tensor:
        """Not reached by Marian's sdpa path."""
        raise NotImplementedError("Marian's sdpa attention calls no softmax of its own")

    def attention_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """sdpa_attention_forward returns None for the weights."""
        raise NotImplementedError("sdpa_attention_forward returns no attention weights")


def factory(*, dtype: str = "float32", device: str = "cpu") -> HFMarianBackend:
    """``hf-marian``: eager attention. ValueError (= unsupported) for an unknown dtype, an absent
    device, or no transformers."""
    return HFMarianBackend(dtype=dtype, device=device)


def sdpa_factory(*, dtype: str = "float32", device: str = "cpu") -> HFMarianSDPABackend:
    """``hf-marian-sdpa``: the same modules with sdpa attention."""
    return HFMarianSDPABackend(dtype=dtype, device=device)
