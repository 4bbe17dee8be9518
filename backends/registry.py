"""Naming backends: built-in names, ``module:attr`` and ``file.py:attr`` factories, entry points.

A spec is resolved to a *factory*; ``load_backend`` calls it with ``dtype`` and ``device``.
Set-up errors (unknown name, import error, missing attribute) raise ``BackendSpecError`` (the
gate exits 2); a factory's ``ValueError`` means "unsupported" and is passed through.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from backends.contract import DTYPES, Backend, Factory

ENTRY_POINT_GROUP = "transformer_conformance.backends"

BUILTINS: dict[str, str] = {
    "reference": "backends.numpy_backend:reference_factory",
    "numpy": "backends.numpy_backend:factory",
    "torch": "backends.torch_backend:factory",
    "torch-sdpa": "backends.torch_sdpa:factory",
    "torch-nn": "backends.torch_nn:factory",
    "torch-nn-slowpath": "backends.torch_nn:slowpath_factory",
    "jax": "backends.jax_backend:factory",
    "hf-marian": "backends.hf_marian:factory",
    "hf-marian-sdpa": "backends.hf_marian:sdpa_factory",
    "onnxruntime": "backends.onnxruntime_backend:factory",
    "onnxruntime-fused": "backends.onnxruntime_backend:fused_factory",
}

#: The distributions whose code each built-in backend runs; the gate reports their versions.
BUILTIN_LIBRARIES: dict[str, tuple[str, ...]] = {
    "reference": ("numpy", "scipy", "ml_dtypes"),
    "numpy": ("numpy", "ml_dtypes"),
    "torch": ("torch",),
    "torch-sdpa": ("torch",),
    "torch-nn": ("torch",),
    "torch-nn-slowpath": ("torch",),
    "jax": ("jax", "jaxlib", "flax"),
    "hf-marian": ("transformers", "torch"),
    "hf-marian-sdpa": ("transformers", "torch"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "onnxruntime-fused": ("onnxruntime", "onnx"),
}


class BackendSpecError(Exception):
    """A spec that names no loadable factory (a usage or set-up error, not a failure)."""


@dataclass(frozen=True)
class Target:
    """One backend configuration under test."""

    spec: str
    dtype: str
    device: str = "cpu"

    @property
    def id(self) -> str:
        """The pytest id: ``torch-float32``, ``torch-float32-cuda``; see ``short_name``."""
        return "-".join([short_name(self.spec), self.dtype] + ([] if self.device == "cpu" else [self.device]))


FACTORY = "factory"
"""The conventional attribute name of a backend module's factory (the built-ins', CONTRACT.md)."""


def short_name(spec: str) -> str:
    """The name a target id gives the spec: a built-in or entry-point name as it is; for
    ``where:attribute`` the attribute, or, when it is the conventional ``factory``, the module
    or file it lives in (``path/my_backend.py:factory`` -> ``my_backend``)."""
    if ":" not in spec:
        return spec
    where, attribute = spec.rsplit(":", 1)
    if attribute != FACTORY:
        return attribute
    return Path(where).stem if where.endswith(".py") else where.rsplit(".", 1)[-1]


def known_backends() -> dict[str, str]:
    """Built-in names and installed entry points, each with where its factory lives."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **BUILTINS}


def resolve(spec: str) -> Factory:
    """The factory a spec names (see backends/CONTRACT.md, "Naming a backend")."""
    if spec in BUILTINS:
        return _load_attribute(spec, *BUILTINS[spec].split(":"))
    plugins = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if spec in plugins:
        return _guard(spec, plugins[spec].load)
    if ":" not in spec:
        raise BackendSpecError(
            f"unknown backend {spec!r}; known backends: {', '.join(sorted(known_backends()))}; "
            "or give a factory as package.module:attribute or path/to/file.py:attribute")
    where, attribute = spec.rsplit(":", 1)
    return _load_attribute(spec, where, attribute)


def load_backend(spec: str, *, dtype: str, device: str = "cpu") -> Backend:
    """Resolve ``spec`` and call its factory; ValueError from the factory means unsupported."""
    factory = resolve(spec)
    return factory(dtype=dtype, device=device)


def _load_attribute(spec: str, where: str, attribute: str) -> Factory:
    if where.endswith(".py"):
        module = _guard(spec, lambda: _import_file(Path(where)))
    else:
        module = _guard(spec, lambda: importlib.import_module(where))
    if not hasattr(module, attribute):
        raise BackendSpecError(f"backend {spec!r}: {where} has no attribute {attribute!r}")
    return getattr(module, attribute)


def _import_file(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    name = f"_conformance_backend_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def _guard(spec: str, load):  # noqa: ANN001, ANN202 - tiny wrapper
    """Run ``load``; any exception becomes a BackendSpecError naming the spec and the cause."""
    try:
        return load()
    except BackendSpecError:
        raise
    except BaseException as exc:  # noqa: BLE001 - an import may fail in any way, even SystemExit
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise BackendSpecError(f"backend {spec!r} could not be loaded: {type(exc).__name__}: {exc}") from exc


def available(target: Target) -> bool:
    """Whether the target's factory loads and accepts its dtype/device on this machine."""
    try:
        load_backend(target.spec, dtype=target.dtype, device=target.device)
    except (BackendSpecError, ValueError):
        return False
    return True


def default_targets() -> list[Target]:
    """Every built-in backend configuration: reference; numpy float32 and float16; torch cpu
    float64/float32/bfloat16; and torch cuda float32/bfloat16 when a GPU is present (a missing
    torch is not hidden: its targets stay and fail to load with a clear message)."""
    cpu = [Target("reference", "float64"), Target("numpy", "float32"), Target("numpy", "float16"),
           Target("torch", "float64"), Target("torch", "float32"), Target("torch", "bfloat16")]
    cuda = [Target("torch", "float32", "cuda"), Target("torch", "bfloat16", "cuda")]
    return cpu + [t for t in cuda if available(t)]


def selected_targets(specs: Sequence[str] = (), dtypes: Sequence[str] = (), device: str | None = None) -> list[Target]:
    """The targets of a selection, for the gate and the pytest plugin alike: every spec (all
    built-ins when none) x every dtype (all when none) on ``device`` (cpu). Each part falls back
    to its environment variable (CONFORMANCE_BACKEND, CONFORMANCE_DTYPE: comma-separated;
    CONFORMANCE_DEVICE); nothing selected at all: ``default_targets()``. ValueError for an
    unknown dtype."""
    specs = list(specs) or _from_env("CONFORMANCE_BACKEND")
    dtypes = list(dtypes) or _from_env("CONFORMANCE_DTYPE")
    device = device or os.environ.get("CONFORMANCE_DEVICE") or None
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise ValueError(f"unknown dtype {bad[0]!r}; choose from {DTYPES}")
    if not specs and not dtypes and device is None:
        return default_targets()
    return [Target(s, d, device or "cpu") for s in (specs or list(BUILTINS)) for d in (dtypes or DTYPES)]


def _from_env(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]
