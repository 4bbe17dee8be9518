"""The correct zoo in one place: every member of ``arithmetic.py`` and ``algorithms.py``.

``ALL[name] = Member(factory, changes, dtypes)``; every member is also an attribute of this
module, so the spec ``tests.correct.catalog:NAME`` (or ``tests/correct/catalog.py:NAME``)
loads it. ``gate_ops(name)`` are the ops tests/test_correct_zoo.py checks it on.
"""

from __future__ import annotations

from tests.correct import algorithms, arithmetic  # noqa: F401 - importing registers the members
from tests.correct.registry import MEMBERS, Member

LAYERS = ("encoder_layer",)
"""The model-level op checked for the layers' parts (the decoder layer is built of the same ops)."""
STACKS = ("encode",)
"""The model-level op checked for the embedding stage (decode embeds the same way)."""
LAYER_PARTS = frozenset({"softmax", "layer_norm", "attention_weights", "attention", "multi_head_attention",
                         "feed_forward"})
"""Ops the encoder and decoder layers are built from."""
STACK_PARTS = frozenset({"positional_encoding", "embedding"})
"""Ops only the stacks (encode, decode) use."""

ALL: dict[str, Member] = dict(MEMBERS)
"""name -> Member(factory, changes, dtypes) of every correct implementation."""

globals().update({name: member.factory for name, member in ALL.items()})


def gate_ops(name: str) -> tuple[str, ...]:
    """The ops whose algorithm the member changes, plus the lowest model-level op built on them
    (``encoder_layer`` for the layers' parts, ``encode`` for the embedding stage)."""
    changes = ALL[name].changes
    users = (LAYERS if LAYER_PARTS & set(changes) else ()) + (STACKS if STACK_PARTS & set(changes) else ())
    return tuple(dict.fromkeys(changes + users))


def algorithm(name: str) -> str:
    """The member's one-line docstring: the algorithm it uses."""
    return (ALL[name].factory.__doc__ or "").strip()


def spec(name: str) -> str:
    """The backend spec that loads the member (importable from the repository root)."""
    return f"tests.correct.catalog:{name}"
