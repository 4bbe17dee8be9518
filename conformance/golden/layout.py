"""The golden directory on disk: the manifest, the two layouts of the arrays, and reading any
file safely (conformance/golden/GOLDEN.md is the specification for other languages).

- Layout ``npy`` (format version 2, the default): one ``.npy`` file per array, scalars as 0-d
  arrays, named ``<case>.in.<key>.npy`` (inputs), ``<case>.expected.npy``, ``<case>.compare.npy``
  and ``<case>.tol.<dtype>.npy``; ``cases.txt`` lists ``<case> <op>`` per line.
- Layout ``npz`` (format version 1): ``<case>.inputs.npz`` and ``<case>.expected.npz`` (zip
  archives of ``.npy`` members), scalars only in the manifest. Still read; written on request.

Every file is read with ``allow_pickle=False``. Names in the manifest are plain file names: a
name with a path separator, ``..``, or one that resolves outside its directory is rejected, so
nothing outside ``DIR`` (and ``OUT_DIR``) is ever read. Problems with the golden directory are
``GoldenError`` (the CLI exits 2); problems with an output file fail that case.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from backends.contract import OPS

FORMAT = "transformer-conformance golden vectors"
LAYOUTS = {"npz": 1, "npy": 2}
"""layout -> format_version; a reader refuses a version it does not know."""
FORMAT_VERSION = LAYOUTS["npy"]
MANIFEST = "manifest.json"
CASE_LIST = "cases.txt"
NPY_MAGIC = b"\x93NUMPY"
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class GoldenError(Exception):
    """A golden directory (or file in it) that cannot be used; the message names the file."""


def safe_path(directory: Path, name: Any, what: str) -> Path:
    """``directory / name`` for a plain file name that stays inside ``directory``."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise GoldenError(f"{directory / MANIFEST}: {what} file name {name!r} is not a plain file name "
                          "(letters, digits, '_', '.', '-'; no path separators or '..')")
    path = directory / name
    if path.resolve().parent != directory.resolve():
        raise GoldenError(f"{path}: {what} file resolves outside {directory} (a link?); refused")
    return path


# --- arguments <-> named arrays ----------------------------------------------------------------

def flatten(arguments: Mapping[str, Any], *, scalars: bool) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """(named arrays, manifest "arguments"): arrays under their argument name, nested params
    and configs under ``name.key.0.key`` (list items by index); with ``scalars`` (layout npy)
    every int, float, bool and str also as a 0-d array, else as a JSON value only. ``None`` is
    always a JSON ``null`` and no array. The arguments in the contract's order."""
    arrays: dict[str, np.ndarray] = {}
    described: list[dict[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        else:
            arrays[prefix] = _storage(value)

    for name, value in arguments.items():
        if isinstance(value, np.ndarray):
            arrays[name] = _storage(value)
            described.append({"name": name, "array": name})
        elif isinstance(value, Mapping) and (name in ("p", "params") or scalars):
            walk(name, value)
            described.append({"name": name, "params": name, **({} if name in ("p", "params") else {"value": value})})
        elif scalars and value is not None:
            arrays[name] = _storage(value)
            described.append({"name": name, "array": name, "value": value})
        else:
            described.append({"name": name, "value": value})
    return arrays, described


def _storage(a: Any) -> np.ndarray:
    """float64, int64, bool, or (a str) a 0-d ``|S<n>`` array of its ASCII bytes: the array
    types of the format."""
    if isinstance(a, str):
        return np.array(a.encode("ascii"))
    a = np.asarray(a)
    if a.dtype == np.bool_:
        return a
    return a.astype(np.int64) if np.issubdtype(a.dtype, np.integer) else a.astype(np.float64)


def unflatten(arrays: Mapping[str, np.ndarray], described: list[dict[str, Any]]) -> dict[str, Any]:
    """The inverse of ``flatten``: the call's arguments by name, in the contract's order; a 0-d
    array is the Python scalar it stores."""
    arguments: dict[str, Any] = {}
    for how in described:
        name = how["name"]
        if "array" in how:
            arguments[name] = _scalar(arrays[how["array"]])
        elif "params" in how:
            prefix = how["params"] + "."
            tree: dict[str, Any] = {}
            for key, value in arrays.items():
                if key.startswith(prefix):
                    node = tree
                    parts = key[len(prefix):].split(".")
                    for part in parts[:-1]:
                        node = node.setdefault(part, {})
                    node[parts[-1]] = _scalar(value)
            arguments[name] = _lists(tree)
        else:
            arguments[name] = how["value"]
    return arguments


def _scalar(a: np.ndarray) -> Any:
    if a.ndim:
        return a
    return a.item().decode("ascii") if a.dtype.kind == "S" else a.item()


def _lists(tree: Any) -> Any:
    """Dicts whose keys are 0..n-1 become lists (the encoder/decoder layer stacks)."""
    if not isinstance(tree, dict):
        return tree
    if tree and all(k.isdigit() for k in tree):
        return [_lists(tree[str(i)]) for i in range(len(tree))]
    return {k: _lists(v) for k, v in tree.items()}


# --- the manifest ------------------------------------------------------------------------------

def load_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest, checked: format, version, and every case's fields and file names."""
    directory = Path(directory)
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise GoldenError(f"{path}: no manifest; is {directory} a golden directory "
                          "(written by python -m conformance golden export)?") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GoldenError(f"{path}: not a readable JSON manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GoldenError(f"{path}: not a golden manifest (format is not {FORMAT!r})")
    if manifest.get("format_version") not in LAYOUTS.values():
        raise GoldenError(f"{path}: format_version {manifest.get('format_version')!r}; this tool reads "
                          f"version{'s' * (len(LAYOUTS) > 1)} {', '.join(map(str, sorted(LAYOUTS.values())))}")
    cases = manifest.get("cases")
    if not isinstance(cases, list) or not cases:
        raise GoldenError(f"{path}: 'cases' must be a non-empty list")
    for i, case in enumerate(cases):
        try:
            _check_entry(directory, manifest["format_version"], i, case)
        except (KeyError, TypeError, AttributeError) as exc:
            raise GoldenError(f"{path}: case #{i} is missing a field: {exc}") from exc
    return manifest


def _check_entry(directory: Path, version: int, i: int, case: dict[str, Any]) -> None:
    path = directory / MANIFEST
    if case["op"] not in OPS:
        raise GoldenError(f"{path}: case #{i}: unknown op {case['op']!r}")
    safe_path(directory, case["name"], "case")
    safe_path(directory, case["output"]["file"], f"case {case['name']!r} output")
    for part in ("inputs", "expected"):
        if version == LAYOUTS["npz"]:
            safe_path(directory, case[part]["file"], f"case {case['name']!r} {part}")
        else:
            for key, entry in case[part]["arrays"].items():
                safe_path(directory, entry["file"], f"case {case['name']!r} {part} {key!r}")
    keys = case["inputs"]["arrays"]
    for argument in case["arguments"]:
        if ("array" in argument and argument["array"] not in keys) or (
                "params" in argument and not any(k.startswith(argument["params"] + ".") for k in keys)):
            raise GoldenError(f"{path}: case {case['name']!r}: argument {argument['name']!r} names no "
                              "array of its inputs")


# --- the arrays --------------------------------------------------------------------------------

def read_part(directory: Path, manifest: Mapping[str, Any], case: Mapping[str, Any], part: str
              ) -> dict[str, np.ndarray]:
    """Every array of a case's ``inputs`` or ``expected``, in either layout, checked against the
    manifest's names, shapes and dtypes."""
    entries = case[part]["arrays"]
    if manifest["format_version"] == LAYOUTS["npz"]:
        path = safe_path(directory, case[part]["file"], part)
        loaded = load_npz(path)
        if set(loaded) != set(entries):
            raise GoldenError(f"{path}: holds arrays {sorted(loaded)}, the manifest lists {sorted(entries)}")
        return {key: _checked(path, key, loaded[key], entry) for key, entry in entries.items()}
    arrays = {}
    for key, entry in entries.items():
        path = safe_path(directory, entry["file"], part)
        arrays[key] = _checked(path, key, load_npy(path), entry)
    return arrays


def _checked(path: Path, key: str, a: np.ndarray, entry: Mapping[str, Any]) -> np.ndarray:
    if list(a.shape) != list(entry["shape"]) or a.dtype.name != entry["dtype"]:
        raise GoldenError(f"{path}: array {key!r} is {a.dtype.name}{list(a.shape)}, the manifest says "
                          f"{entry['dtype']}{list(entry['shape'])}")
    return a


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file (layout npz), read without pickling."""
    try:
        with np.load(path, allow_pickle=False) as content:
            if not isinstance(content, np.lib.npyio.NpzFile):
                raise GoldenError(f"{path}: not an .npz archive")
            return {key: content[key] for key in content.files}
    except GoldenError:
        raise
    except FileNotFoundError as exc:
        raise GoldenError(f"{path}: missing") from exc
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise GoldenError(f"{path}: cannot be read without pickling ({type(exc).__name__}: {exc})") from exc


def load_npy(path: Path) -> np.ndarray:
    """One golden array (layout npy); GoldenError with the reason otherwise."""
    try:
        return load_output(path)
    except FileNotFoundError as exc:
        raise GoldenError(f"{path}: missing") from exc
    except ValueError as exc:
        raise GoldenError(str(exc)) from exc


def load_output(path: Path) -> np.ndarray:
    """One ``.npy`` array, read without pickling; FileNotFoundError if absent, ValueError with
    the reason if it is not a plain ``.npy`` array."""
    if path.exists() and not path.is_file():  # opening a pipe would block
        raise ValueError(f"{path}: cannot be read: not a regular file (a directory, a pipe or a device)")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({type(exc).__name__}: {exc.strerror or exc})") from exc
    if magic != NPY_MAGIC:
        kind = ("a pickle" if magic[:1] == b"\x80" else "a zip archive (.npz?)" if magic[:2] == b"PK"
                else "not an .npy file")
        raise ValueError(f"{path}: {kind}: it does not start with the .npy magic bytes \\x93NUMPY; "
                         "write one array in the .npy format (version 1.0-3.0, no pickled data)")
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "Object arrays" in str(exc):
            raise ValueError(f"{path}: holds an object array (pickled Python objects); refused: write numbers") from exc
        raise ValueError(f"{path}: not a readable .npy array ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy array without pickling ({type(exc).__name__}: {exc})") from exc
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{path}: an .npz archive; write one array with np.save / the .npy format")
    return a


def write_part(directory: Path, layout: str, case_name: str, part: str, arrays: Mapping[str, np.ndarray]
               ) -> dict[str, Any]:
    """Write a case's ``inputs`` or ``expected`` arrays in ``layout``; returns the manifest entry."""
    def entry(a: np.ndarray) -> dict[str, Any]:
        return {"shape": list(a.shape), "dtype": a.dtype.name}

    if layout == "npz":
        name = f"{case_name}.{part}.npz"
        np.savez_compressed(directory / name, **arrays)
        return {"file": name, "arrays": {k: entry(a) for k, a in arrays.items()}}
    described = {}
    for key, a in arrays.items():
        name = f"{case_name}.{npy_stem(part, key)}.npy"
        np.save(directory / name, np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C"), allow_pickle=False)
        described[key] = {"file": name, **entry(a)}
    return {"arrays": described}


def npy_stem(part: str, key: str) -> str:
    """``in.x``, ``expected``, ``compare``, ``tol.float32``: the name of an array of layout npy
    between ``<case>.`` and ``.npy``."""
    if part == "inputs":
        return f"in.{key}"
    return key.replace("tol_", "tol.", 1)


def written_files(directory: Path) -> list[Path]:
    """Files an export writes (of either layout), to remove before a new export."""
    return [directory / MANIFEST, directory / CASE_LIST, *directory.glob("*.inputs.npz"),
            *directory.glob("*.expected.npz"), *directory.glob("*.in.*.npy"), *directory.glob("*.expected.npy"),
            *directory.glob("*.compare.npy"), *directory.glob("*.tol.*.npy")]
