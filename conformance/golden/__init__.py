"""Golden vectors: seeded cases of every contract op, for implementations that are not Python,
and the check of the outputs such an implementation wrote. The format is documented for other
languages in conformance/golden/GOLDEN.md.

``export(dir)`` writes the cases (conformance/golden/catalog.py) with their expected values and
tolerances (export.py; layouts and safe reading: layout.py); ``check(dir, outputs)`` compares
``outputs/<case>.npy`` with them (check.py); ``run_backend(dir, outputs, backend)`` writes a
Python backend's outputs in that layout (producer.py).
"""

from conformance.golden.cases import DEFAULT_SEED, EXACT_TOKEN_DTYPES, Case, portable
from conformance.golden.catalog import build_cases
from conformance.golden.check import ALL, OUTPUT_DTYPES, Outcome, check, console, required_ops
from conformance.golden.export import expected_arrays, export
from conformance.golden.layout import (
    CASE_LIST, FORMAT, FORMAT_VERSION, LAYOUTS, MANIFEST, GoldenError, flatten, load_manifest, load_output,
    read_part, safe_path, unflatten)
from conformance.golden.producer import read_case, run_backend

__all__ = ["ALL", "CASE_LIST", "DEFAULT_SEED", "FORMAT", "FORMAT_VERSION", "LAYOUTS", "MANIFEST", "OUTPUT_DTYPES",
           "Case", "EXACT_TOKEN_DTYPES", "GoldenError", "Outcome", "build_cases", "check", "console", "expected_arrays", "export",
           "flatten", "load_manifest", "load_output", "portable", "read_case", "read_part", "required_ops",
           "run_backend", "safe_path", "unflatten"]
