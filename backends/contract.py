"""Backend contract v1 in code: the names the suite relies on, and ``supports_from`` for the
optional feature declaration. The prose is CONTRACT.md."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import numpy as np

from backends.ops import RECORDS

CONTRACT_VERSION = 1

DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")

OPS: tuple[str, ...] = tuple(RECORDS)
"""The contract's ops, in order: softmax, positional_encoding, embedding, layer_norm, attention,
attention_weights, multi_head_attention, feed_forward, encoder_layer, decoder_layer, encode,
decode, forward, greedy_decode (one record each in backends/ops.py)."""


CONFIG_DEFAULTS: dict[str, Any] = {
    "layer_norm_eps": 1e-5,
    "norm_first": False,
    "scale_embedding": True,
    "activation": "relu",
}
"""The optional config keys' defaults (CONTRACT.md, "Config"); ``final_norm`` absent or None
means ``norm_first``."""


def with_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config dict with the contract's defaults filled in (``final_norm``: ``norm_first``)."""
    full = {**CONFIG_DEFAULTS, **config}
    if full.get("final_norm") is None:
        full["final_norm"] = full["norm_first"]
    return full


class Backend(Protocol):
    """What the suite expects of a backend (the ops are looked up by name, see OPS)."""

    name: str
    dtype: str
    device: str

    def asarray(self, a: np.ndarray) -> Any:
        """Floating arrays cast to ``dtype``; int64 ids and bool masks kept."""

    def to_numpy(self, x: Any) -> np.ndarray:
        """A result as a NumPy array (bfloat16 may come back as float32)."""


Factory = Callable[..., Backend]


def supports_from(declared: Mapping[str, Mapping[str, Iterable[Any]] | bool]) -> Callable[..., bool]:
    """A backend's optional ``supports(op, **features)`` (CONTRACT.md, "Declaring what a backend
    supports") from a table: op -> False (not implemented at all), or op -> {feature: the
    values supported}. Ops and features not in the table are supported.

        supports = staticmethod(supports_from({"decoder_layer": {"norm_first": [False]},
                                               "attention_weights": False}))
    """
    table = {op: entry if isinstance(entry, bool) else {f: list(v) for f, v in entry.items()}
             for op, entry in declared.items()}

    def supports(op: str, **features: Any) -> bool:
        entry = table.get(op, True)
        if isinstance(entry, bool):
            return entry
        return all(value in entry[name] for name, value in features.items() if name in entry)

    return supports
