"""``golden run``: a Python backend as the "program" of GOLDEN.md, writing its output of every
case to ``OUT_DIR/<case>.npy`` (an example producer, and the round-trip tests' and the golden
mutation score's way to run the mutants)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from conformance.golden.layout import load_manifest, read_part, safe_path, unflatten
from conformance.kit.harness import to_native


def read_case(directory: Path, case: dict[str, Any], manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments of one case, from its input files (layout npy: scalars too)."""
    manifest = load_manifest(directory) if manifest is None else manifest
    return unflatten(read_part(directory, manifest, case, "inputs"), case["arguments"])


def run_backend(directory: str | Path, outputs: str | Path, backend: Any, *,
                on_error: Callable[[str, Exception], None] | None = None) -> int:
    """Write ``backend``'s output of every case to ``outputs/<case>.npy`` (skipping ops it does
    not implement); returns how many were written. bfloat16 results are written as float32.
    ``on_error(case name, exception)``: called for a case whose op raises (other than
    NotImplementedError), which then gets no output, as a crashing program's would; without it
    the exception propagates."""
    directory, outputs = Path(directory), Path(outputs)
    outputs.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(directory)
    written = 0
    for case in manifest["cases"]:
        fn = getattr(backend, case["op"], None)
        if not callable(fn):
            continue
        args = to_native(backend, list(read_case(directory, case, manifest).values()))
        try:
            out = np.asarray(backend.to_numpy(fn(*args)))
        except NotImplementedError:
            continue
        except Exception as exc:
            if on_error is None:
                raise
            on_error(case["name"], exc)
            continue
        if out.dtype == ml_dtypes.bfloat16:
            out = out.astype(np.float32)
        np.save(safe_path(outputs, case["output"]["file"], "output"), out, allow_pickle=False)
        written += 1
    return written
