"""The ``torch-nn`` adapters' mapping (backends/torch_nn.py), shared with ``hf-marian``: our params
as torch.nn state dicts, the modules built and loaded from them, and the contract's masks as
torch.nn's.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

from backends.contract import with_defaults

Tensor = torch.Tensor
Params = Mapping[str, Any]
Config = Mapping[str, Any]
State = dict[str, Tensor]
M = TypeVar("M", bound=nn.Module)


# -- our params -> torch.nn state dicts (weights (d_in, d_out) become torch's (d_out, d_in)) ----


def linear_state(w: Tensor, b: Tensor) -> State:
    """``nn.Linear``: weight = W^T (torch computes x W^T + b)."""
    return {"weight": w.T.contiguous(), "bias": b}


def norm_state(norm: Params) -> State:
    """``nn.LayerNorm``: weight = gamma, bias = beta."""
    return {"weight": norm["gamma"], "bias": norm["beta"]}


def mha_state(p: Params) -> State:
    """``nn.MultiheadAttention``: in_proj_weight = [W_q^T; W_k^T; W_v^T] (3 d_model, d_model),
    in_proj_bias = [b_q; b_k; b_v]; out_proj = W_o^T, b_o. torch's head h is the contiguous
    block h of the projections, as in the contract."""
    return {
        "in_proj_weight": torch.cat([p["w_q"].T, p["w_k"].T, p["w_v"].T]),
        "in_proj_bias": torch.cat([p["b_q"], p["b_k"], p["b_v"]]),
        **prefixed("out_proj", linear_state(p["w_o"], p["b_o"])),
    }


def ffn_state(ffn: Params) -> State:
    """The feed-forward of ``nn.Transformer*Layer``: linear1 = (W_1, b_1), linear2 = (W_2, b_2)."""
    return {**prefixed("linear1", linear_state(ffn["w_1"], ffn["b_1"])),
            **prefixed("linear2", linear_state(ffn["w_2"], ffn["b_2"]))}


def encoder_layer_state(p: Params) -> State:
    """``nn.TransformerEncoderLayer``: self_attn, norm1, norm2, linear1, linear2."""
    return {**prefixed("self_attn", mha_state(p["self_attn"])), **prefixed("norm1", norm_state(p["norm1"])),
            **prefixed("norm2", norm_state(p["norm2"])), **ffn_state(p["ffn"])}


def decoder_layer_state(p: Params) -> State:
    """``nn.TransformerDecoderLayer``: self_attn, multihead_attn (= our cross_attn), norm1-3, FFN."""
    return {**prefixed("self_attn", mha_state(p["self_attn"])),
            **prefixed("multihead_attn", mha_state(p["cross_attn"])),
            **prefixed("norm1", norm_state(p["norm1"])), **prefixed("norm2", norm_state(p["norm2"])),
            **prefixed("norm3", norm_state(p["norm3"])), **ffn_state(p["ffn"])}


def transformer_state(params: Params, config: Config) -> State:
    """``nn.Transformer`` (with ``encoder.norm``/``decoder.norm`` iff ``final_norm``)."""
    state: State = {}
    for i, layer in enumerate(params["encoder"]):
        state.update(prefixed(f"encoder.layers.{i}", encoder_layer_state(layer)))
    for i, layer in enumerate(params["decoder"]):
        state.update(prefixed(f"decoder.layers.{i}", decoder_layer_state(layer)))
    if with_defaults(config)["final_norm"]:
        state.update(prefixed("encoder.norm", norm_state(params["encoder_norm"])))
        state.update(prefixed("decoder.norm", norm_state(params["decoder_norm"])))
    return state


def prefixed(prefix: str, state: State) -> State:
    return {f"{prefix}.{name}": value for name, value in state.items()}


# -- building modules ---------------------------------------------------------------------------


def loaded(module: M, state: State) -> M:
    """``module`` with ``state`` loaded (every parameter set, no extra key), in eval mode."""
    module.load_state_dict(state, strict=True)
    return module.eval()


def layer_kwargs(config: Config) -> dict[str, Any]:
    """The ``nn.Transformer*Layer`` arguments a contract config sets (dropout 0, batch first)."""
    return {"d_model": config["d_model"], "nhead": config["num_heads"], "dim_feedforward": config["d_ff"],
            "dropout": 0.0, "activation": config["activation"], "layer_norm_eps": config["layer_norm_eps"],
            "batch_first": True, "norm_first": config["norm_first"]}


@contextmanager
def _quiet_nested_tensor_notice() -> Iterator[None]:
    """nn.TransformerEncoder warns at construction when its nested-tensor path cannot be used
    (norm_first, odd heads): informational, not a result."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="enable_nested_tensor is True", category=UserWarning)
        yield


def transformer_module(config: Config, *, dtype: torch.dtype, device: torch.device) -> nn.Transformer:
    """An ``nn.Transformer`` shaped by ``config`` (final norms removed unless ``final_norm``),
    its weights not yet ours."""
    config = with_defaults(config)
    with _quiet_nested_tensor_notice():
        model = nn.Transformer(num_encoder_layers=config["num_encoder_layers"],
                               num_decoder_layers=config["num_decoder_layers"], device=device, dtype=dtype,
                               **layer_kwargs(config))
    if not config["final_norm"]:
        model.encoder.norm = None
        model.decoder.norm = None
    return model


def build_transformer(params: Params, config: Config, *, dtype: torch.dtype, device: torch.device) -> nn.Transformer:
    """``nn.Transformer`` holding ``params``."""
    return loaded(transformer_module(config, dtype=dtype, device=device), transformer_state(params, config))


# -- masks: contract (True = may attend) -> torch.nn (True = masked out) ------------------------


def nn_masks(
    mask: Tensor | None, batch: int, s_q: int, s_k: int, num_heads: int
) -> tuple[Tensor | None, Tensor | None]:
    """``(attn_mask, key_padding_mask)`` for torch.nn from a contract mask broadcasting to
    ``(B, Sq, Sk)``: ``(B, 1, Sk)`` -> key_padding_mask ``(B, Sk)``; ``(Sq, Sk)``-broadcastable
    -> attn_mask ``(Sq, Sk)``; otherwise attn_mask ``(B * h, Sq, Sk)``. Both inverted.
    """
    if mask is None:
        return None, None
    while mask.dim() > 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() < 3 or mask.shape[0] == 1:  # the same for every batch row
        return ~torch.broadcast_to(mask[0] if mask.dim() == 3 else mask, (s_q, s_k)), None
    if mask.shape[-2] == 1:
        return None, ~torch.broadcast_to(mask[:, 0, :], (batch, s_k))
    full = torch.broadcast_to(mask, (batch, s_q, s_k))
    return ~full.repeat_interleave(num_heads, dim=0), None  # (B * h, Sq, Sk): index b * h + head


def causal_disallowed(seq_len: int, device: torch.device) -> Tensor:
    """torch's boolean causal mask: True above the diagonal (key j > query p is masked out).

    Shapes: -> (S, S).
    """
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).triu(1)


def key_padding(pad_mask: Tensor | None) -> Tensor | None:
    """Contract padding mask (True = real token) -> torch key_padding_mask (True = ignore)."""
    return None if pad_mask is None else ~pad_mask
