"""The targets of a gate run, loaded once before pytest starts (a set-up error exits 2), and what
the reports record about them and the machine: the backend's own name, the versions of the
distributions its module imported, the environment."""

from __future__ import annotations

import os
import platform
import sys
import traceback
import types
from importlib import metadata
from typing import Any

from backends.registry import BUILTIN_LIBRARIES, BUILTINS, BackendSpecError, resolve, selected_targets
from conformance.kit import features


class GateError(Exception):
    """A usage or set-up error: the gate exits 2 with this message."""


PACKAGES = ("transformer-conformance", "numpy", "scipy", "ml_dtypes", "hypothesis", "pytest", "pytest-xdist",
            "pytest-timeout", "torch")


def check_targets(specs: list[str], dtypes: list[str], device: str | None) -> list[dict[str, Any]]:
    """The targets the run will cover (as conformance.kit.pytest_plugin chooses them), each loaded
    once here so that a set-up error stops the gate with exit 2 before pytest starts: an unknown
    spec, an import error, or a factory raising anything but ValueError ("unsupported")."""
    try:
        targets = selected_targets(specs, dtypes, device)
    except ValueError as exc:
        raise GateError(str(exc)) from exc
    factories = {}
    for spec in dict.fromkeys(t.spec for t in targets):
        before = set(sys.modules)
        try:
            factories[spec] = resolve(spec)
        except BackendSpecError as exc:
            raise GateError(f"{exc}{_hint(spec)}") from exc
        IMPORTED[spec] = {name.split(".", 1)[0] for name in set(sys.modules) - before} | _imports_of(factories[spec])
    names, compiled = {}, set()
    for t in targets:
        try:
            backend = factories[t.spec](dtype=t.dtype, device=t.device)
            names[t.id] = str(getattr(backend, "name", "") or "")
            if features.compiles_per_shape(backend):
                compiled.add(t.id)
        except ValueError:
            pass  # unsupported: the tests say so, target by target
        except Exception as exc:  # noqa: BLE001 - any other exception is a broken backend set-up
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            raise GateError(f"backend {t.spec!r}: the factory raised for dtype={t.dtype!r}, device={t.device!r}: "
                            f"{last} (a factory signals an unsupported dtype/device with ValueError)") from exc
    return [{"id": t.id, "spec": t.spec, "dtype": t.dtype, "device": t.device, "name": names.get(t.id),
             "compiles_per_shape": t.id in compiled} for t in targets]


def _imports_of(factory: Any) -> set[str]:
    """The top-level packages the factory's module holds as globals (imported before us, too)."""
    module = sys.modules.get(getattr(factory, "__module__", "") or "")
    return {v.__name__.split(".", 1)[0] for v in vars(module).values() if isinstance(v, types.ModuleType)} \
        if module is not None else set()


def _hint(spec: str) -> str:
    if spec in BUILTINS and spec == "torch":
        return "; install the torch extra (pip install 'transformer-conformance[torch]') or choose --backend"
    return ""


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "executable": sys.executable, "blas": blas(), "packages": {p: _version(p) for p in PACKAGES}}


def blas() -> list[dict[str, Any]]:
    """The BLAS libraries NumPy loaded, with the kernel each picked for this CPU (OpenBLAS's
    ``architecture``, which ``OPENBLAS_CORETYPE`` forces) and its thread count: the host's part of
    a figure (the tolerance itself does not depend on them, conformance/tolerance/TOLERANCES.md)."""
    import numpy  # noqa: F401, PLC0415 - loaded, so that threadpoolctl sees its BLAS
    from threadpoolctl import threadpool_info  # noqa: PLC0415

    return [{key: lib.get(key) for key in ("internal_api", "version", "architecture", "num_threads")}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]


IMPORTED: dict[str, set[str]] = {}
"""spec -> the top-level modules that loading its factory imported (check_targets)."""


def backend_versions(spec: str) -> dict[str, str | None]:
    """Versions of the distribution(s) that provide a spec's factory module (by its top-level
    package) and of those its loading imported (a file or ``module:attr`` backend's onnxruntime,
    transformers, ...), and, for a built-in backend, of the libraries it runs; nothing new is
    imported."""
    target = BUILTINS.get(spec, spec)
    module = target.split(":", 1)[0] if ":" in target else ""
    tops = set(IMPORTED.get(spec, ()))
    if module and not module.endswith(".py"):
        tops.add(module.split(".", 1)[0])
    distributions = metadata.packages_distributions()
    dists = sorted({d for top in tops for d in distributions.get(top, [])})
    versions = {d: _version(d) for d in dists}
    versions.update({library: _version(library) for library in BUILTIN_LIBRARIES.get(spec, ())})
    return versions


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
