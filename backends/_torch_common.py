"""Plumbing shared by the torch-based backends: dtype names, device checks, conversions.

Nothing here computes a model op; it only maps the contract's strings and NumPy arrays onto
torch objects and back, so that every torch backend accepts and rejects the same things.
"""

from __future__ import annotations

import numpy as np
import torch

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a contract dtype name; ValueError (= unsupported) otherwise."""
    if name not in TORCH_DTYPES:
        raise ValueError(f"dtype {name!r} is unsupported; expected one of {sorted(TORCH_DTYPES)}")
    return TORCH_DTYPES[name]


def torch_device(name: str) -> torch.device:
    """The torch device for ``cpu``, ``cuda`` or ``cuda:N``; ValueError (= unsupported) when the
    string is malformed, names another device type, or names a GPU this machine lacks."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {name!r} is unsupported: {exc}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {name!r} is unsupported; expected 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} is unsupported: CUDA is not available")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} is unsupported: only {torch.cuda.device_count()} GPU(s)")
    return device


def to_tensor(a: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A copy of ``a`` on ``device``: bool stays bool, integers become int64, anything else
    (float, ml_dtypes.bfloat16) becomes ``dtype``."""
    arr = np.asarray(a)
    if arr.dtype.kind == "b":
        return torch.tensor(np.ascontiguousarray(arr), dtype=torch.bool, device=device)
    if arr.dtype.kind in "iu":
        return torch.tensor(np.ascontiguousarray(arr, dtype=np.int64), device=device)
    if dtype == torch.float16:  # torch rounds float64 -> float32 -> float16 (twice); NumPy once
        return torch.tensor(np.ascontiguousarray(arr, dtype=np.float16), device=device)
    return torch.tensor(np.ascontiguousarray(arr, dtype=np.float64), device=device).to(dtype)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """``x`` as a NumPy array on the host; bfloat16 (which NumPy lacks) comes back as float32."""
    x = x.detach().cpu()
    if x.dtype == torch.bfloat16:
        x = x.to(torch.float32)
    return x.numpy()
