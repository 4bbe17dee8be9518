"""``golden export``: the expected outputs and their tolerances (from conformance/tolerance/model.py,
computed here and stored per dtype), written with the manifest in either layout."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

import reference
from backends.contract import CONTRACT_VERSION, DTYPES
from conformance.tolerance import model
from conformance.golden.cases import DEFAULT_SEED, Case
from conformance.golden.catalog import build_cases
from conformance.golden.layout import CASE_LIST, FORMAT, LAYOUTS, MANIFEST, flatten, write_part, written_files
from conformance.kit.harness import INTEGER_OPS


def expected_arrays(case: Case) -> dict[str, np.ndarray]:
    """``expected``, ``compare`` and (float ops) ``tol_<dtype>`` of one case."""
    if case.op in INTEGER_OPS:
        value = getattr(reference, case.op)(**case.arguments)
        return {"expected": value.astype(np.int64), "compare": np.ones(value.shape, dtype=bool)}
    content: dict[str, np.ndarray] = {}
    for dtype in DTYPES:
        # The tolerance model (conformance/tolerance/model.py), at every dtype, stored with the case.
        want = model.expected(case.op, [], case.arguments, dtype=dtype)
        if "expected" in content and not np.array_equal(content["expected"], want.value, equal_nan=True):
            raise AssertionError(f"{case.name}: the reference differs between dtypes: inputs not portable")
        if not np.all(np.isfinite(want.tol)):
            raise AssertionError(f"{case.name}: the {dtype} tolerance is not finite somewhere: a case that "
                                 "accepts anything at that dtype is no test")
        content["expected"] = want.value
        content[f"tol_{dtype}"] = np.ascontiguousarray(want.tol, dtype=np.float64)
    compare = np.ones(content["expected"].shape, dtype=bool)
    if case.compare is not None:
        compare = np.ascontiguousarray(np.broadcast_to(case.compare, compare.shape))
    content["compare"] = compare
    return content


def export(directory: str | Path, seed: int = DEFAULT_SEED, *, layout: str = "npy",
           cases: Iterable[Case] | None = None) -> dict[str, Any]:
    """Write every case (or ``cases``) and the manifest into ``directory`` in ``layout``
    (``npy``: format version 2, one ``.npy`` per array; ``npz``: version 1); returns the manifest."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in written_files(directory):
        old.unlink(missing_ok=True)  # a previous export's cases
    entries = [_write_case(directory, layout, case) for case in (build_cases(seed) if cases is None else cases)]
    manifest = {
        "format": FORMAT,
        "format_version": LAYOUTS[layout],
        "contract_version": CONTRACT_VERSION,
        "seed": seed,
        "generator": {"name": "transformer-conformance", "version": _version(), "numpy": np.__version__},
        "tolerance_model": model.describe(),
        "dtypes": list(DTYPES),
        "cases": entries,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    if layout == "npy":
        (directory / CASE_LIST).write_text("".join(f"{e['name']} {e['op']}\n" for e in entries), encoding="ascii")
    return manifest


def _write_case(directory: Path, layout: str, case: Case) -> dict[str, Any]:
    arrays, described = flatten(case.arguments, scalars=layout == "npy")
    expected = expected_arrays(case)
    floating = case.op not in INTEGER_OPS
    return {
        "name": case.name,
        "op": case.op,
        "description": case.description,
        "arguments": described,
        "inputs": write_part(directory, layout, case.name, "inputs", arrays),
        "expected": write_part(directory, layout, case.name, "expected", expected),
        "output": {"file": f"{case.name}.npy", "shape": list(expected["expected"].shape),
                   "dtype": "float" if floating else "int64"},
        "tolerance": ({"class": "elementwise", "compare": "compare",
                       "arrays": {d: f"tol_{d}" for d in DTYPES}} if floating
                      else {"class": "exact", "compare": "compare"}),
    }


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("transformer-conformance")
    except metadata.PackageNotFoundError:
        return None
