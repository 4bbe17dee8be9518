"""The ``jax`` backend's support (backends/jax_backend.py): our params as Flax variables, and the
``jitted`` decorator that compiles an op once per shape and static arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import partial, wraps
from typing import Any, TypeVar

Array = Any
Params = Mapping[str, Any]


# -- our params -> Flax variables (Flax kernels are (d_in, d_out) like ours) ----------------------


def dense_variables(w: Array, b: Array) -> dict[str, Any]:
    """``flax.linen.Dense``: kernel = W, bias = b."""
    return {"params": {"kernel": w, "bias": b}}


def norm_variables(gamma: Array, beta: Array) -> dict[str, Any]:
    """``flax.linen.LayerNorm``: scale = gamma, bias = beta."""
    return {"params": {"scale": gamma, "bias": beta}}


def mha_variables(p: Params, num_heads: int) -> dict[str, Any]:
    """``flax.linen.MultiHeadDotProductAttention``: query/key/value kernels (d_model, h, d_k) and
    biases (h, d_k), out kernel (h, d_k, d_model): head h is column block h, as in the contract."""
    d_model = p["w_q"].shape[0]
    d_k = d_model // num_heads

    def projection(w: Array, b: Array) -> dict[str, Array]:
        return {"kernel": w.reshape(d_model, num_heads, d_k), "bias": b.reshape(num_heads, d_k)}

    return {"params": {"query": projection(p["w_q"], p["b_q"]), "key": projection(p["w_k"], p["b_k"]),
                       "value": projection(p["w_v"], p["b_v"]),
                       "out": {"kernel": p["w_o"].reshape(num_heads, d_k, d_model), "bias": p["b_o"]}}}


Op = TypeVar("Op", bound=Callable[..., Any])


def jitted(*static: str) -> Callable[[Op], Op]:
    """Run the op under ``jax.jit``, compiled once per shape and per value of the ``static``
    arguments (a config dict is keyed by its items); the other arguments are traced (array
    pytrees or None). Inside another jitted op the call is simply traced inline."""

    def decorate(method: Op) -> Op:
        signature = inspect.signature(method)

        @wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            del arguments["self"]
            fixed = {name: arguments.pop(name) for name in static}
            key = (method.__name__, tuple((name, _hashable(value)) for name, value in fixed.items()))
            if key not in self._compiled:
                import jax  # noqa: PLC0415 - the optional extra, present once the factory ran

                self._compiled[key] = jax.jit(partial(method, self, **fixed))
            return self._compiled[key](**arguments)

        return wrapper  # type: ignore[return-value]

    return decorate


def _hashable(value: Any) -> Any:
    return tuple(sorted(value.items())) if isinstance(value, Mapping) else value
