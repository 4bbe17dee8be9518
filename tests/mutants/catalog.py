"""The whole mutant zoo in one place: every mutant of ``zoo.py``, ``model.py`` and ``conventions.py`` with the
contract op(s) its bug lives in and the dtype it runs at.

``ALL[name] = Mutant(factory, ops, dtype)`` (a NamedTuple: ``factory, ops = ALL[name][:2]``).
``ops`` are the lowest public ops whose results the bug changes, every one of which the gate
must fail for the mutant (tests/test_mutants_caught.py); ops built on them may fail too. The
zoo's registry carries no op information, so it is added here (``ZOO_OPS``), without
touching zoo.py. Every mutant is also an attribute of this module, so the spec
``tests.mutants.catalog:NAME`` (or ``tests/mutants/catalog.py:NAME``) loads it.
"""

from __future__ import annotations

from tests.mutants import conventions, model, zoo
from tests.mutants.model import Mutant

ATTENTION = ("attention_weights", "attention")
LAYERS = ("encoder_layer", "decoder_layer")
STACKS = ("encode", "decode")
PADDING_OPS = ("multi_head_attention", "encoder_layer", "decoder_layer", "encode", "decode", "forward",
               "greedy_decode")
"""The ops that take padding masks (key padding, for multi-head attention and the layers)."""

ZOO_OPS: dict[str, tuple[str, ...]] = {
    "softmax_wrong_axis": ("softmax",),
    "softmax_returns_log_softmax": ("softmax",),
    "softmax_without_max_subtraction": ("softmax",),
    "softmax_nan_on_all_neg_inf_rows": ("softmax",),
    "mask_inverted": ATTENTION,
    "mask_fill_finfo_min": ATTENTION,
    "attention_always_causal": ATTENTION,
    "causal_mask_includes_next": ("decode",),
    "key_padding_mask_ignored": STACKS,
    "cross_attention_unmasked": ("decoder_layer",),
    "right_padding_only": PADDING_OPS,
    "scores_query_query": ATTENTION,
    "scale_by_d_k": ATTENTION,
    "attention_softmax_over_queries": ATTENTION,
    "keys_rolled_by_one": ATTENTION,
    "split_heads_without_transpose": ("multi_head_attention",),
    "key_projection_uses_w_v": ("multi_head_attention",),
    "layer_norm_eps_outside_sqrt": ("layer_norm",),
    "layer_norm_without_centering": ("layer_norm",),
    "layer_norm_gamma_beta_swapped": ("layer_norm",),
    "norm_over_batch": LAYERS,
    "norm_over_sequence": LAYERS,
    "pe_dropout_left_on": ("positional_encoding",),
    "pe_positions_normalised": ("positional_encoding",),
    "pe_scaled_by_sqrt_d_model": ("positional_encoding",),
    "pe_concatenated_halves": ("positional_encoding",),
    "pe_sin_cos_swapped": ("positional_encoding",),
    "pe_positions_start_at_one": ("positional_encoding",),
    "no_positional_encoding": STACKS,
    "embedding_scaled": ("embedding",),
    "activation_always_gelu": ("feed_forward",),
    "greedy_drops_bos": ("greedy_decode",),
    "greedy_max_len_excludes_bos": ("greedy_decode",),
    "greedy_continues_after_eos": ("greedy_decode",),
    "greedy_uses_first_position": ("greedy_decode",),
    "greedy_samples": ("greedy_decode",),
}
"""zoo mutant -> the op(s) its bug lives in. A zoo mutant missing here gets ``ops = ()``, which
tests/test_mutants_caught.py reports as an error to fix here."""

_clash = sorted((set(zoo.MUTANTS) & set(model.MUTANTS)) | ((set(zoo.MUTANTS) | set(model.MUTANTS)) & set(conventions.MUTANTS)))
if _clash:
    raise ValueError(f"mutant names registered twice in zoo.py, model.py, conventions.py: {_clash}")

ALL: dict[str, Mutant] = {
    **{name: Mutant(factory, ZOO_OPS.get(name, ())) for name, factory in zoo.MUTANTS.items()},
    **model.MUTANTS,
    **conventions.MUTANTS,
}
"""name -> Mutant(factory, ops, dtype) of every mutant."""

globals().update({name: mutant.factory for name, mutant in ALL.items()})


def bug(name: str) -> str:
    """The mutant's one-line docstring: the bug it has."""
    return (ALL[name].factory.__doc__ or "").strip()


def spec(name: str) -> str:
    """The backend spec that loads the mutant (importable from the repository root)."""
    return f"tests.mutants.catalog:{name}"
