"""Registering a correct implementation: its factory, the ops it computes differently, its dtypes.

``register(name, changes=..., dtypes=...)`` decorates a backend class (constructed as
``cls(dtype=..., device=...)``) and records ``MEMBERS[name] = Member(factory, changes, dtypes)``.
The factory names its backends ``correct:<name>``, defaults to the first supported dtype and
raises ValueError (the gate reports *unsupported*) for any other dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from backends.contract import DTYPES, OPS


class Member(NamedTuple):
    """A correct implementation: its factory, the contract ops whose algorithm it changes, and
    the dtypes it supports."""

    factory: Callable[..., Any]
    changes: tuple[str, ...]
    dtypes: tuple[str, ...]


MEMBERS: dict[str, Member] = {}
"""name -> Member of every registered correct implementation."""


def member_factory(cls: type, name: str, dtypes: tuple[str, ...]) -> Callable[..., Any]:
    """The factory ``name(dtype=..., device=...)`` of ``cls``, refusing dtypes outside ``dtypes``;
    its docstring is the class's (the algorithm it uses)."""

    def factory(*, dtype: str = dtypes[0], device: str = "cpu") -> Any:
        if dtype not in dtypes:
            raise ValueError(f"dtype {dtype!r} is unsupported by correct:{name}; it supports {', '.join(dtypes)}")
        backend = cls(dtype=dtype, device=device)
        backend.name = f"correct:{name}"
        return backend

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = cls.__doc__
    return factory


def register(name: str, *, changes: tuple[str, ...], dtypes: tuple[str, ...]) -> Callable[[type], type]:
    """Class decorator: record ``cls`` as the correct implementation ``name``."""
    if not changes or not set(changes) <= set(OPS):
        raise ValueError(f"correct:{name} must name the contract ops it changes, got {changes}")
    if not dtypes or not set(dtypes) <= set(DTYPES):
        raise ValueError(f"correct:{name} must name the contract dtypes it supports, got {dtypes}")

    def decorate(cls: type) -> type:
        if name in MEMBERS:
            raise ValueError(f"correct:{name} is registered twice")
        MEMBERS[name] = Member(member_factory(cls, name, dtypes), tuple(changes), tuple(dtypes))
        return cls

    return decorate


ATTENTION = ("attention_weights", "attention", "multi_head_attention")
"""The ops built on the attention scores (multi-head attention calls attention)."""
MATMULS = (*ATTENTION, "feed_forward")
"""The lowest ops that contain a matrix product (the stacks' generator is one too)."""
