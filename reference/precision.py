"""Precisions the reference can be evaluated at.

The reference is float64 ground truth. The *same* functions can also be evaluated at a lower
precision, for one purpose only: the built-in ``numpy`` backend, the naive equations at that
precision (backends/numpy_backend.py). float32 and float16 are NumPy's own arithmetic; bfloat16 is
emulated by computing in float32 and rounding every stored value (each function's inputs and
outputs) to bfloat16's 8-bit mantissa, round-to-nearest-even (``ml_dtypes``).

Choices: bfloat16 rounds at function boundaries (after each matmul, softmax, norm, ...), not
after every scalar operation, which is what fused bfloat16 kernels do too. At float16 and
bfloat16 the positional encoding's angles, which every library computes in float32 (positions
above 256 are not even representable in bfloat16), are held at ``arithmetic(dtype)`` = float32
and only the table is stored in half precision (backends/CONTRACT.md).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")

_COMPUTE = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": np.float32}
_STORAGE = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def check_dtype(dtype: str) -> str:
    """Return ``dtype`` if it names a supported precision, else raise ValueError."""
    if not isinstance(dtype, str) or dtype not in _COMPUTE:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return dtype


def arithmetic(dtype: str) -> str:
    """The precision a correct implementation at ``dtype`` computes and accumulates in:
    float32 for the half precisions (which store in half), the dtype itself otherwise."""
    return "float32" if check_dtype(dtype) in ("float16", "bfloat16") else dtype


def unit_roundoff(dtype: str) -> float:
    """u = 2^-p for a p-bit significand (half the machine epsilon): the largest relative
    error of one correctly rounded operation."""
    return float(ml_dtypes.finfo(_STORAGE[check_dtype(dtype)]).eps) / 2


def smallest_normal(dtype: str) -> float:
    """The smallest positive normal number of ``dtype`` (below it values are subnormal, or
    flushed to zero)."""
    return float(ml_dtypes.finfo(_STORAGE[check_dtype(dtype)]).tiny)


def rounded(x: np.ndarray, dtype: str) -> np.ndarray:
    """x held in the compute dtype of ``dtype``, every value rounded to its storage format."""
    with np.errstate(over="ignore"):  # out-of-range values become +-inf, as in the dtype
        x = np.asarray(x, dtype=_COMPUTE[dtype])
        if dtype == "bfloat16":
            return x.astype(ml_dtypes.bfloat16).astype(np.float32)
    return x


def as_float(name: str, a: object, dtype: str, *, neg_inf: bool = False) -> np.ndarray:
    """Convert a real-valued input at the boundary; reject NaN and infinities (-inf is allowed
    with ``neg_inf``: softmax's masked entries) with a ValueError naming ``name``."""
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:  # e.g. a ragged nested list
        raise ValueError(f"{name} is not an array: {exc}") from None
    if arr.dtype == ml_dtypes.bfloat16:
        arr = arr.astype(np.float32)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real floating array, got dtype {arr.dtype}")
    if np.isposinf(arr).any() or (not neg_inf and np.isneginf(arr).any()):  # before rounding: the input's own
        raise ValueError(f"{name} contains {'+inf' if np.isposinf(arr).any() else '-inf'}")
    arr = rounded(arr, dtype)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr
