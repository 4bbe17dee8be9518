"""The float64 NumPy reference transformer: ground truth for the conformance suite.

One function per equation of Vaswani et al. (2017), "Attention Is All You Need". Every op of
the backend contract (backends/CONTRACT.md) is here with the same name and arguments, plus a
keyword-only ``dtype`` (default float64) used only for the tolerance model's baseline.
"""

from reference.config import Config, as_config
from reference.layers import (
    attention, attention_weights, embedding, feed_forward, layer_norm, multi_head_attention,
    positional_encoding, softmax,
)
from reference.model import (
    causal_mask, decode, decoder_layer, encode, encoder_layer, forward, greedy_decode,
)
from reference.params import init_params, param_shapes
from reference.precision import DTYPES, unit_roundoff

__all__ = [
    "DTYPES", "Config", "as_config", "attention", "attention_weights", "causal_mask", "decode",
    "decoder_layer", "embedding", "encode", "encoder_layer", "feed_forward", "forward",
    "greedy_decode", "init_params", "layer_norm", "multi_head_attention", "param_shapes",
    "positional_encoding", "softmax", "unit_roundoff",
]
