"""Backends: the contract (CONTRACT.md), the registry of specs, and the built-in backends."""

from backends.contract import CONTRACT_VERSION, DTYPES, OPS, Backend
from backends.registry import BackendSpecError, Target, default_targets, load_backend, resolve

__all__ = ["CONTRACT_VERSION", "DTYPES", "OPS", "Backend", "BackendSpecError", "Target",
           "default_targets", "load_backend", "resolve"]
