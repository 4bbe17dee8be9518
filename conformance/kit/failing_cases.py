"""A failing example's inputs, readable and on disk: what the backend was called with.

The harness notes every backend call of the running example (``record.note_input``); when the
example fails, those calls are its *failing case*. They are shown in the failure message
(shapes, the config and other scalars, small arrays in full: ``describe``), and the gate saves
them beside its report as ``cases/<test>.npz`` with a one-line reproduction::

    python -m conformance repro reports/cases/<test>.npz

which loads the file, calls each op on the backend the file names (or ``--backend``/``--dtype``)
and compares each call with the float64 reference under the differential tolerance model,
printing the worst element per call. For a property test that compares the backend with itself
(``MHA(PX) = P MHA(X)``) each call is still compared with the reference on its own.

File layout (``numpy.savez``, readable with ``numpy.load``): ``__case__`` is a JSON string with
the target (spec, dtype, device), the test's node id, and per call the op and its argument tree
in which each array is ``{"array": KEY}`` (the npz member holding it); every other value (ints,
floats, strings, None, a config dict) is written as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Call = tuple[str, Sequence[Any], Mapping[str, Any]]
"""One backend call: the op, its positional and keyword arguments (NumPy arrays and scalars)."""

SMALL = 16
"""Arrays of at most this many elements are written out in full in messages."""

MAX_BYTES = 64 * 2**20
"""A case whose arrays exceed this is not saved (the message still describes it)."""


def describe(calls: Sequence[Call], dtype: str | None = None) -> str:
    """One line per call: ``attention(q=float32(1, 1, 2) [[[0.5, -1.0]]], ..., mask=None)``;
    floating arrays are labelled with ``dtype``, the backend's, when given (see ``array_label``)."""
    return "\n".join(f"{op}({', '.join([_value(a, dtype) for a in args] + [f'{k}={_value(v, dtype)}' for k, v in kwargs.items()])})"
                     for op, args, kwargs in calls)


def array_label(value: np.ndarray, dtype: str | None = None) -> str:
    """``float32(2, 16)``: the dtype the backend receives the array in (its ``asarray`` turns
    floating arrays, held here as float64 already rounded to ``dtype``, into ``dtype``; ids and
    masks keep theirs) and its shape."""
    held = dtype if dtype and np.issubdtype(value.dtype, np.floating) else value.dtype
    return f"{held}{value.shape}"


def _value(value: Any, dtype: str | None) -> str:
    if isinstance(value, np.ndarray):
        shape = array_label(value, dtype)
        if value.size <= SMALL:
            text = np.array2string(value, separator=", ", floatmode="unique", max_line_width=10**6)
            return f"{shape} {' '.join(text.split())}"
        return f"{shape} range [{np.min(value).item()!r}, {np.max(value).item()!r}]" if value.size else shape
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_value(v, dtype)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v, dtype) for v in value) + "]"
    return repr(value)


def save(path: Path, calls: Sequence[Call], *, target: Mapping[str, str], nodeid: str) -> Path | None:
    """Write ``calls`` to ``path`` (the layout in the module docstring); None when too large."""
    arrays: dict[str, np.ndarray] = {}
    tree = [{"op": op, "args": _encode(list(args), f"{i}/args", arrays),
             "kwargs": _encode(dict(kwargs), f"{i}/kwargs", arrays)} for i, (op, args, kwargs) in enumerate(calls)]
    if sum(a.nbytes for a in arrays.values()) > MAX_BYTES:
        return None
    meta = {"target": dict(target), "nodeid": nodeid, "calls": tree}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, __case__=np.array(json.dumps(meta)), **arrays)
    return path


def load(path: Path) -> tuple[dict[str, Any], list[Call]]:
    """The target/nodeid metadata and the calls of a saved case."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["__case__"]))
        calls = [(c["op"], _decode(c["args"], data), _decode(c["kwargs"], data)) for c in meta["calls"]]
    return meta, calls


def _encode(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"array": key}
    if isinstance(value, Mapping):
        return {"dict": {str(k): _encode(v, f"{key}/{k}", arrays) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"list": [_encode(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, np.generic):
        value = value.item()
    return {"value": value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)}


def _decode(node: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> Any:
    if "array" in node:
        return np.array(data[node["array"]])
    if "dict" in node:
        return {k: _decode(v, data) for k, v in node["dict"].items()}
    if "list" in node:
        return [_decode(v, data) for v in node["list"]]
    return node["value"]


def reproduce_command(path: Path) -> str:
    return f"python -m conformance repro {path}"


def replay(calls: Sequence[Call], backend: Any) -> tuple[bool, list[str]]:
    """Call each op on ``backend`` and compare it with the float64 reference under the
    differential tolerance model (every output position, padded ones included, which the
    differential tests leave out); token ids must be equal (a legitimate near-tie is the
    differential test's to accept, not the replay's). Returns whether every call
    conformed, and one line per call."""
    from conformance.kit.assertions import assert_close
    from conformance.kit.harness import INTEGER_OPS, call_op
    from conformance.tolerance.model import expected, reference_value

    lines, conforms = [], True
    for i, (op, args, kwargs) in enumerate(calls, 1):
        try:
            if op in INTEGER_OPS:  # token ids: equal (a near-tie is the differential test's to judge)
                value = np.asarray(reference_value(op, args, kwargs))
                got = call_op(backend, op, *args, **kwargs)
                tol = 0.0
            else:
                want = expected(op, args, kwargs, dtype=backend.dtype)
                value, tol = want.value, want.tol
                got = call_op(backend, op, *args, shape=value.shape, **kwargs)
            ratio = assert_close(got, value, tol=tol, backend=backend, op=op, what="against the reference")
            lines.append(f"call {i}: {op}: conforms (worst err/tol {ratio:.3g})")
        except AssertionError as exc:
            conforms = False
            lines.append(f"call {i}: {op}: {exc}")
        except Exception as exc:  # noqa: BLE001 - the reference refuses the input: say so, go on
            conforms = False
            lines.append(f"call {i}: {op}: could not be compared: {type(exc).__name__}: {exc}")
    return conforms, lines
