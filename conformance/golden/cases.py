"""The golden cases: seeded calls of every contract op, deterministic in the seed. The ordinary
cases (sizes, scales, configurations) are here; the hazard cases, one per numerical trap of each
op, in conformance/golden/hazards.py.

Every floating input is ``portable``: exactly representable in float16 and bfloat16, so every
implementation holds the same numbers and one expected array serves every dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

import reference
from reference.params import map_floats
from conformance.tolerance import model

DEFAULT_SEED = 20240611
SMALLEST_NORMAL_FLOAT16 = 2.0**-14
NEAR_TIE_SAFETY = 1.0
"""greedy_decode cases are kept only if every step's top-2 logit margin exceeds this multiple of
the near-tie tolerance (model.margin_tolerance) at every dtype: a correct backend then has
no legitimate reason to pick another token (the differential suite's rule), so tokens are exact."""


@dataclass
class Case:
    """One call of one op: named arguments in contract order (arrays, nested params, or plain
    JSON values) and which output positions are compared."""

    name: str
    op: str
    description: str
    arguments: dict[str, Any]
    compare: np.ndarray | None = None  # bool, broadcast to the output; None: every element


class Cases(list):
    """The case list being built: ``add`` names each case ``<op>-<n>`` and seeds its generator
    with ``[seed, index]``."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def rng(self, *extra: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, len(self), *extra])

    def name(self, op: str) -> str:
        return f"{op}-{sum(c.op == op for c in self)}"

    def add(self, op: str, description: str | Callable[[dict[str, Any]], str],
            make: Callable[[np.random.Generator], dict[str, Any]], *, compare_queries: str | None = None,
            **extra: Any) -> None:
        """``description``: text, or a function of the arguments (shapes are then never stale);
        ``compare_queries``: the padding-mask argument whose padded query positions are not compared."""
        arguments = make(self.rng())
        if callable(description):
            description = description(arguments)
        if compare_queries is not None:
            extra["compare"] = model.query_positions(arguments[compare_queries])
        self.append(Case(self.name(op), op, description, arguments, **extra))


def portable(x: np.ndarray) -> np.ndarray:
    """float64 values exactly representable in float16 and bfloat16 (hence in every dtype):
    rounded to bfloat16, and magnitudes below float16's smallest normal (2^-14) set to 0. Every
    implementation then holds exactly the same inputs, and the expected output is one array."""
    x = np.asarray(x, dtype=np.float64).astype(ml_dtypes.bfloat16).astype(np.float64)
    x = np.where(np.abs(x) < SMALLEST_NORMAL_FLOAT16, 0.0, x)
    if not np.array_equal(x.astype(np.float16).astype(np.float64), x, equal_nan=True):
        raise AssertionError("portable(): a value outside float16's range")
    return x


def normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0, mean: Any = 0.0) -> np.ndarray:
    return portable(rng.normal(mean, scale, shape))


def params(config: dict[str, Any], seed: int) -> dict[str, Any]:
    return map_floats(portable, reference.init_params(config, seed))


def part(rng: np.random.Generator, config: dict[str, Any], *path: str | int) -> Any:
    """One part of a fresh parameter set, e.g. ``part(rng, config, "encoder", 0, "ffn")``."""
    tree = params(config, int(rng.integers(2**31)))
    for key in path:
        tree = tree[key]
    return tree


def padding(rng: np.random.Generator, batch: int, seq_len: int) -> np.ndarray:
    """(B, S) right padding, True = real token; row 0 full, the others at least one real token."""
    lengths = np.concatenate([[seq_len], rng.integers(1, seq_len + 1, batch - 1)])
    return np.arange(seq_len)[None, :] < lengths[:, None]


PADDING_PATTERNS = ("no padding", "right padding", "left padding", "padding in the middle", "one real token")


def padding_patterns(seq_len: int) -> np.ndarray:
    """(5, S), S >= 4, True = real token: one row of each of PADDING_PATTERNS (the one real
    token last, after left padding)."""
    positions = np.arange(seq_len)
    return np.stack([positions >= 0, positions < seq_len - 2, positions >= 2,
                     (positions == 0) | (positions >= seq_len - 1), positions == seq_len - 1])


def shapes(*names: str) -> Callable[[dict[str, Any]], str]:
    """A description listing the named array arguments' shapes, e.g. ``q (2, 5, 8), k (2, 7, 8)``."""
    return lambda args: ", ".join(f"{n} {tuple(args[n].shape)}" for n in names if args.get(n) is not None)


# Every key spelled out (defaults included), so that a reader of the manifest needs no defaults.
CONFIG_POST = reference.as_config({"d_model": 16, "num_heads": 4, "d_ff": 32, "num_encoder_layers": 2,
                                   "num_decoder_layers": 2, "src_vocab_size": 13, "tgt_vocab_size": 11}).to_dict()
CONFIG_PRE = reference.as_config({"d_model": 32, "num_heads": 2, "d_ff": 24, "num_encoder_layers": 1,
                                  "num_decoder_layers": 3, "src_vocab_size": 20, "tgt_vocab_size": 9,
                                  "norm_first": True, "scale_embedding": False, "activation": "gelu",
                                  "layer_norm_eps": 1e-6}).to_dict()


def attention_args(r: np.random.Generator, batch: tuple[int, ...], sq: int, sk: int, dk: int, dv: int,
                   masked: bool, with_v: bool = True, scale: float = 1.0) -> dict[str, Any]:
    """q, k (and v) ~ N(0, scale); ``masked``: a random mask with query row 0 fully masked."""
    args = {"q": normal(r, (*batch, sq, dk), scale), "k": normal(r, (*batch, sk, dk), scale)}
    if with_v:
        args["v"] = normal(r, (*batch, sk, dv))
    if masked:
        mask = r.random((*batch, sq, sk)) < 0.7
        mask[(0,) * len(batch) + (0,)] = False  # one query row with every key masked: zeros
        args["mask"] = mask
    else:
        args["mask"] = None
    return args


def model_args(r: np.random.Generator, config: dict[str, Any], op: str, batch: int, ss: int, st: int,
               padded: bool | str) -> dict[str, Any]:
    """Arguments of encode / decode / forward; ``padded``: random right padding (True), every
    padding pattern (``"patterns"``, batch 5) or none."""
    def mask(seq_len: int) -> np.ndarray | None:
        return padding_patterns(seq_len) if padded == "patterns" else padding(r, batch, seq_len) if padded else None

    weights = params(config, int(r.integers(2**31)))
    src = r.integers(0, config["src_vocab_size"], (batch, ss))
    src_mask = mask(ss)
    tgt = r.integers(0, config["tgt_vocab_size"], (batch, st))
    tgt_mask = mask(st)
    if op == "encode":
        return {"src_ids": src, "params": weights, "config": config, "src_mask": src_mask}
    if op == "decode":
        memory = normal(r, (batch, ss, config["d_model"]))
        return {"tgt_ids": tgt, "memory": memory, "params": weights, "config": config, "src_mask": src_mask,
                "tgt_mask": tgt_mask}
    return {"src_ids": src, "tgt_ids": tgt, "params": weights, "config": config, "src_mask": src_mask,
            "tgt_mask": tgt_mask}


QUERY_MASK = {"encode": "src_mask", "decode": "tgt_mask", "forward": "tgt_mask"}
"""The padding mask whose padded positions are the op's unspecified (not compared) outputs."""


def greedy_case(cases: Cases, config: dict[str, Any], description: str, *, batch: int, ss: int, max_len: int,
                src_mask: Callable[[np.random.Generator], np.ndarray | None], bos_id: int = 1,
                eos_id: int | None = None) -> None:
    """Add a greedy decoding case that shows the decoding loop's bugs (``telling``) with no
    near-tie at any step for any dtype (tokens are exact). ``eos_id`` None: the first of ``bos_id`` and the
    tokens the decoding emits that makes the case telling (with random weights, eos == bos is
    usually the one: a row then stops where it emits bos again)."""
    name = cases.name("greedy_decode")
    for attempt in range(200):
        rng = cases.rng(attempt)
        args = {"src_ids": rng.integers(0, config["src_vocab_size"], (batch, ss)),
                "params": params(config, int(rng.integers(2**31))), "config": config, "max_len": max_len,
                "bos_id": bos_id, "eos_id": bos_id, "src_mask": src_mask(rng)}
        tokens = reference.greedy_decode(**args)
        for eos in [eos_id] if eos_id is not None else dict.fromkeys([bos_id, *tokens[:, 1:].ravel().tolist()]):
            args["eos_id"] = eos
            if telling(reference.greedy_decode(**args), eos) and clear_margins(args):
                cases.append(Case(name, "greedy_decode", f"{description}, max_len {max_len}, bos {bos_id}, eos {eos}",
                                  args))
                return
    raise AssertionError(f"no telling greedy_decode case without near-ties in 200 attempts ({name})")


def telling(tokens: np.ndarray, eos_id: int) -> bool:
    """Whether (B, L) greedy tokens show the loop's bugs: rows differ, a row emits two different
    tokens, and some row emits eos before the last step while another goes on past it."""
    emitted = tokens[:, 1:] == eos_id
    first_eos = np.where(emitted.any(axis=1), emitted.argmax(axis=1), tokens.shape[1])  # (B,)
    return (len({tuple(row) for row in tokens}) > 1 and any(len(set(row[1:])) >= 2 for row in tokens)
            and first_eos.min() < tokens.shape[1] - 2 and first_eos.max() > first_eos.min())


EXACT_TOKEN_DTYPES = ("float64", "float32")
"""Where greedy_decode cases are exact: their logits' margins clear the near-tie tolerance. At
float16 and bfloat16 the tolerance of a multi-layer model's logits is of the order of their
spread (conformance/tolerance/TOLERANCES.md, "Greedy decoding"): a correct engine may diverge at any step,
so the golden set does not check greedy tokens there."""


def clear_margins(args: dict[str, Any]) -> bool:
    """Whether every step of the reference's greedy decoding picks its token by a margin above
    NEAR_TIE_SAFETY x the near-tie tolerance at every dtype of EXACT_TOKEN_DTYPES."""
    tokens = reference.greedy_decode(**args)
    if tokens.shape[1] < 2:
        return True
    a = args
    live = np.cumsum(tokens == a["eos_id"], axis=1)[:, :-1] == 0          # (B, L-1): step t+1 still decoding
    for dtype in reversed(EXACT_TOKEN_DTYPES):  # the loosest tolerance first: most rejections need one evaluation
        logits = model.expected("forward", [a["src_ids"], tokens[:, :-1], a["params"], a["config"]],
                                     {"src_mask": a["src_mask"]}, dtype=dtype)
        top2 = np.sort(logits.value, axis=-1)[..., -2:]                      # (B, L-1, 2)
        margin = top2[..., 1] - top2[..., 0]
        allowed = np.apply_along_axis(model.margin_tolerance, -1, logits.tol)  # (B, L-1)
        if np.any(live & (margin <= NEAR_TIE_SAFETY * allowed)):
            return False
    return True
