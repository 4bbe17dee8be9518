"""The ``hf-marian`` adapters' mapping (backends/hf_marian.py): our params as the state dicts of
Marian's modules, and a contract config as a ``MarianConfig`` (NotImplementedError for what
Marian cannot express).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from backends.contract import with_defaults
from backends.torch_nn_mapping import linear_state, norm_state, prefixed

Params = Mapping[str, Any]
Config = Mapping[str, Any]
State = dict[str, torch.Tensor]


# -- our params -> Marian state dicts --------------------------------------------------------------


def attention_state(p: Params) -> State:
    """``MarianAttention``: q_proj, k_proj, v_proj, out_proj (head h = column block h, as ours)."""
    return {**prefixed("q_proj", linear_state(p["w_q"], p["b_q"])), **prefixed("k_proj", linear_state(p["w_k"], p["b_k"])),
            **prefixed("v_proj", linear_state(p["w_v"], p["b_v"])), **prefixed("out_proj", linear_state(p["w_o"], p["b_o"]))}


def ffn_state(ffn: Params) -> State:
    """The layers' fc1 = (W_1, b_1), fc2 = (W_2, b_2)."""
    return {**prefixed("fc1", linear_state(ffn["w_1"], ffn["b_1"])), **prefixed("fc2", linear_state(ffn["w_2"], ffn["b_2"]))}


def encoder_layer_state(p: Params) -> State:
    """``MarianEncoderLayer``: self_attn, self_attn_layer_norm (norm1), fc1/fc2, final_layer_norm (norm2)."""
    return {**prefixed("self_attn", attention_state(p["self_attn"])),
            **prefixed("self_attn_layer_norm", norm_state(p["norm1"])), **ffn_state(p["ffn"]),
            **prefixed("final_layer_norm", norm_state(p["norm2"]))}


def decoder_layer_state(p: Params) -> State:
    """``MarianDecoderLayer``: self_attn + norm1, encoder_attn (our cross_attn) + norm2, fc1/fc2 + norm3."""
    return {**prefixed("self_attn", attention_state(p["self_attn"])),
            **prefixed("self_attn_layer_norm", norm_state(p["norm1"])),
            **prefixed("encoder_attn", attention_state(p["cross_attn"])),
            **prefixed("encoder_attn_layer_norm", norm_state(p["norm2"])), **ffn_state(p["ffn"]),
            **prefixed("final_layer_norm", norm_state(p["norm3"]))}


def mt_model_state(params: Params) -> State:
    """``MarianMTModel`` (untied): embed_tokens of encoder and decoder, the layers, lm_head = W_gen^T,
    final_logits_bias = b_gen (1, V_tgt). The positional tables are not ours (see the caller)."""
    state: State = {"model.encoder.embed_tokens.weight": params["src_embedding"],
                    "model.decoder.embed_tokens.weight": params["tgt_embedding"],
                    "lm_head.weight": params["generator"]["w"].T.contiguous(),
                    "final_logits_bias": params["generator"]["b"][None, :]}
    for i, layer in enumerate(params["encoder"]):
        state.update(prefixed(f"model.encoder.layers.{i}", encoder_layer_state(layer)))
    for i, layer in enumerate(params["decoder"]):
        state.update(prefixed(f"model.decoder.layers.{i}", decoder_layer_state(layer)))
    return state


# -- configs ---------------------------------------------------------------------------------------


def positions_for(seq_len: int) -> int:
    """The table size for ``seq_len`` positions: a power of two >= 64 (so that few sizes are built)."""
    return max(64, 1 << max(seq_len - 1, 0).bit_length())


def marian_config(config: Config, attn_implementation: str, positions: int = 64) -> Any:
    """A ``MarianConfig`` holding a contract config (dropout 0, untied embeddings, no special
    tokens of its own); NotImplementedError for what Marian cannot express."""
    import transformers  # noqa: PLC0415 - the optional extra, present once the factory ran

    config = with_defaults(config)
    if config["norm_first"] or config["final_norm"]:
        raise NotImplementedError("Marian's layers are post-LN only and its stacks have no final norm")
    return transformers.MarianConfig(
        vocab_size=config["src_vocab_size"], decoder_vocab_size=config["tgt_vocab_size"], d_model=config["d_model"],
        encoder_layers=config["num_encoder_layers"], decoder_layers=config["num_decoder_layers"],
        encoder_ffn_dim=config["d_ff"], decoder_ffn_dim=config["d_ff"], encoder_attention_heads=config["num_heads"],
        decoder_attention_heads=config["num_heads"], activation_function=config["activation"],
        scale_embedding=config["scale_embedding"], max_position_embeddings=positions, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, share_encoder_decoder_embeddings=False,
        tie_word_embeddings=False, pad_token_id=None, eos_token_id=None, forced_eos_token_id=None,
        decoder_start_token_id=0, attn_implementation=attn_implementation)


def module_config(d_model: int, num_heads: int = 1, d_ff: int = 1, activation: str = "relu") -> dict[str, Any]:
    """A contract config for one module (no stacks): what MarianAttention and a layer read."""
    return {"d_model": d_model, "num_heads": num_heads, "d_ff": d_ff, "num_encoder_layers": 0,
            "num_decoder_layers": 0, "src_vocab_size": 1, "tgt_vocab_size": 1, "activation": activation}


def structure(config: Config) -> tuple[tuple[str, Any], ...]:
    """The config keys that shape a module (a cache key)."""
    return tuple(sorted(with_defaults(config).items()))


def check_eps(module: nn.Module, config: Config) -> None:
    """NotImplementedError unless every layer norm of ``module`` has the config's eps: Marian's
    layers build ``nn.LayerNorm(d_model)``, torch's default eps, which no config sets."""
    eps = with_defaults(config)["layer_norm_eps"]
    fixed = {m.eps for m in module.modules() if isinstance(m, nn.LayerNorm)} - {eps}
    if fixed:
        raise NotImplementedError(f"Marian's layer norms have eps {fixed.pop()}; layer_norm_eps {eps} is not expressible")
