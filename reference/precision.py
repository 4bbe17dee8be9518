"""Precisions the reference can be evaluated at.

The reference is float64 ground truth. The *same* functions can also be evaluated at a lower
precision, for one purpose only: the naive same-precision baseline of the tolerance model
(conformance/TOLERANCES.md). float32 and float16 are NumPy's own arithmetic; bfloat16 is
emulated by computing in float32 and rounding every stored value (each function's inputs and
outputs) to bfloat16's 8-bit mantissa, round-to-nearest-even (``ml_dtypes``).

Choices: bfloat16 rounds at function boundaries (after each matmul, softmax, norm, ...), not
after every scalar operation, which is what fused bfloat16 kernels do too.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")

_COMPUTE = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": np.float32}
_STORAGE = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def check_dtype(dtype: str) -> str:
    """Return ``dtype`` if it names a supported precision, else raise ValueError."""
    if dtype not in _COMPUTE:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return dtype


def unit_roundoff(dtype: str) -> float:
    """u = 2^-p for a p-bit significand (half the machine epsilon): the largest relative
    error of one correctly rounded operation."""
    return float(ml_dtypes.finfo(_STORAGE[check_dtype(dtype)]).eps) / 2


def rounded(x: np.ndarray, dtype: str) -> np.ndarray:
    """x held in the compute dtype of ``dtype``, every value rounded to its storage format."""
    with np.errstate(over="ignore"):  # out-of-range values become +-inf, as in the dtype
        x = np.asarray(x, dtype=_COMPUTE[dtype])
        if dtype == "bfloat16":
            return x.astype(ml_dtypes.bfloat16).astype(np.float32)
    return x


def as_float(name: str, a: object, dtype: str) -> np.ndarray:
    """Convert a real-valued input at the boundary; reject NaN (ValueError naming ``name``)."""
    arr = np.asarray(a)
    if arr.dtype == ml_dtypes.bfloat16:
        arr = arr.astype(np.float32)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real floating array, got dtype {arr.dtype}")
    arr = rounded(arr, dtype)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr
