"""The model configuration: a frozen, validated view of the contract's plain config dict."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from reference._checks import check_even_width, check_heads, check_int, check_positive

ACTIVATIONS: tuple[str, ...] = ("relu", "gelu")


@dataclass(frozen=True)
class Config:
    """Hyper-parameters of the encoder-decoder transformer (Vaswani et al., 2017, sec. 3).

    Choices: ``final_norm`` defaults to ``norm_first`` (pre-LN stacks end with a norm, as in
    torch.nn.Transformer); ``layer_norm_eps`` is added to the variance inside the square root.
    """

    d_model: int
    num_heads: int
    d_ff: int
    num_encoder_layers: int
    num_decoder_layers: int
    src_vocab_size: int
    tgt_vocab_size: int
    layer_norm_eps: float = 1e-5
    norm_first: bool = False
    final_norm: bool | None = None
    scale_embedding: bool = True
    activation: str = "relu"

    def __post_init__(self) -> None:
        for name in ("d_model", "num_heads", "d_ff", "src_vocab_size", "tgt_vocab_size"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("num_encoder_layers", "num_decoder_layers"):
            check_int(name, getattr(self, name), minimum=0)
        check_heads(self.d_model, self.num_heads)
        check_even_width(self.d_model)
        check_positive("layer_norm_eps", self.layer_norm_eps)
        for name in ("norm_first", "scale_embedding") + (("final_norm",) if self.final_norm is not None else ()):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.final_norm is None:
            object.__setattr__(self, "final_norm", self.norm_first)

    @property
    def d_k(self) -> int:
        """Width of one head: d_k = d_v = d_model / num_heads."""
        return self.d_model // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        """The contract's plain, JSON-serialisable config dict."""
        return dataclasses.asdict(self)


def as_config(config: Mapping[str, Any] | Config) -> Config:
    """Validate a config dict (or pass a Config through); unknown keys are a ValueError."""
    if isinstance(config, Config):
        return config
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(config) - known, key=repr)
    if unknown:
        raise ValueError(f"config has unknown keys {unknown}; known keys are {sorted(known)}")
    try:
        return Config(**config)
    except TypeError as exc:  # a required key is missing
        raise ValueError(f"config is incomplete: {exc}") from None

