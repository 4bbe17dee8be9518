"""Golden vectors: seeded cases of every contract op, written as ``.npz`` files plus a
``manifest.json``, for implementations that are not Python; and the check of the outputs such an
implementation wrote. The format is documented for other languages in conformance/GOLDEN.md.

``export(dir)`` writes the cases; ``check(dir, outputs)`` compares ``outputs/<case>.npy`` with
the expected values under the tolerance model of conformance/tolerances.py (the tolerances are
computed at export and stored per dtype); ``run_backend(dir, outputs, backend)`` writes a Python
backend's outputs in that layout (an example producer, and the round-trip test).

Every file is read with ``allow_pickle=False``. Names in the manifest are plain file names: a
name with a path separator, ``..``, or one that resolves outside its directory is rejected, so
nothing outside ``DIR`` (and ``OUT_DIR``) is ever read. Problems with the golden directory are
``GoldenError`` (the CLI exits 2); problems with an output file fail that case.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ml_dtypes
import numpy as np

import reference
from backends.contract import CONTRACT_VERSION, DTYPES, OPS
from conformance import report, tolerances
from conformance.assertions import assert_close, assert_equal
from conformance.harness import INTEGER_OPS, to_native

FORMAT = "transformer-conformance golden vectors"
FORMAT_VERSION = 1
DEFAULT_SEED = 20240611
MANIFEST = "manifest.json"
NPY_MAGIC = b"\x93NUMPY"
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
SMALLEST_NORMAL_FLOAT16 = 2.0**-14
NEAR_TIE_SAFETY = 1.0
"""greedy_decode cases are kept only if every step's top-2 logit margin exceeds this multiple of
the near-tie tolerance (tolerances.margin_tolerance) at every dtype: a correct backend then has
no legitimate reason to pick another token (the differential suite's rule), so tokens are exact."""


class GoldenError(Exception):
    """A golden directory (or file in it) that cannot be used; the message names the file."""


# --- the cases ---------------------------------------------------------------------------------

@dataclass
class Case:
    """One call of one op: named arguments in contract order (arrays, nested params, or plain
    JSON values) and which output positions are compared."""

    name: str
    op: str
    description: str
    arguments: dict[str, Any]
    compare: np.ndarray | None = None  # bool, broadcast to the output; None: every element
    axis: int = -1  # the output's row axis for the tolerance (the softmax axis)


def portable(x: np.ndarray) -> np.ndarray:
    """float64 values exactly representable in float16 and bfloat16 (hence in every dtype):
    rounded to bfloat16, and magnitudes below float16's smallest normal (2^-14) set to 0. Every
    implementation then holds exactly the same inputs, and the expected output is one array."""
    x = np.asarray(x, dtype=np.float64).astype(ml_dtypes.bfloat16).astype(np.float64)
    x = np.where(np.abs(x) < SMALLEST_NORMAL_FLOAT16, 0.0, x)
    if not np.array_equal(x.astype(np.float16).astype(np.float64), x, equal_nan=True):
        raise AssertionError("portable(): a value outside float16's range")  # inputs here are N(0, <= 10)
    return x


def _normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return portable(rng.normal(0.0, scale, shape))


def _params(config: dict[str, Any], seed: int) -> dict[str, Any]:
    return tolerances.map_floats(portable, reference.init_params(config, seed))


def _part(rng: np.random.Generator, config: dict[str, Any], *path: str | int) -> Any:
    """One part of a fresh parameter set, e.g. ``_part(rng, config, "encoder", 0, "ffn")``."""
    tree = _params(config, int(rng.integers(2**31)))
    for key in path:
        tree = tree[key]
    return tree


def _padding(rng: np.random.Generator, batch: int, seq_len: int) -> np.ndarray:
    """(B, S) right padding, True = real token; row 0 full, the others at least one real token."""
    lengths = np.concatenate([[seq_len], rng.integers(1, seq_len + 1, batch - 1)])
    return np.arange(seq_len)[None, :] < lengths[:, None]


# Every key spelled out (defaults included), so that a reader of the manifest needs no defaults.
CONFIG_POST = reference.as_config({"d_model": 16, "num_heads": 4, "d_ff": 32, "num_encoder_layers": 2,
                                   "num_decoder_layers": 2, "src_vocab_size": 13, "tgt_vocab_size": 11}).to_dict()
CONFIG_PRE = reference.as_config({"d_model": 32, "num_heads": 2, "d_ff": 24, "num_encoder_layers": 1,
                                  "num_decoder_layers": 3, "src_vocab_size": 20, "tgt_vocab_size": 9,
                                  "norm_first": True, "scale_embedding": False, "activation": "gelu",
                                  "layer_norm_eps": 1e-6}).to_dict()


def build_cases(seed: int = DEFAULT_SEED) -> list[Case]:
    """Every contract op, several configurations and sizes; deterministic in ``seed``."""
    cases: list[Case] = []

    def add(op: str, description: str, make: Callable[[np.random.Generator], dict[str, Any]],
            **extra: Any) -> None:
        rng = np.random.default_rng([seed, len(cases)])
        cases.append(Case(f"{op}-{sum(c.op == op for c in cases)}", op, description, make(rng), **extra))

    add("softmax", "(2, 5), last axis", lambda r: {"x": _normal(r, (2, 5)), "axis": -1})
    add("softmax", "(3, 4, 7), axis 1, large logits", lambda r: {"x": _normal(r, (3, 4, 7), 10.0), "axis": 1}, axis=1)

    def softmax_inf(r: np.random.Generator) -> dict[str, Any]:
        x = _normal(r, (4, 6))
        x[1, [0, 3]] = -np.inf
        x[2, :] = -np.inf  # an all -inf row gives zeros
        return {"x": x, "axis": -1}
    add("softmax", "(4, 6) with -inf entries and an all -inf row", softmax_inf)

    add("positional_encoding", "seq_len 16, d_model 32", lambda r: {"seq_len": 16, "d_model": 32})
    add("positional_encoding", "seq_len 200, d_model 64", lambda r: {"seq_len": 200, "d_model": 64})

    add("embedding", "(2, 5) ids, (11, 8) table",
        lambda r: {"ids": r.integers(0, 11, (2, 5)), "table": _normal(r, (11, 8))})
    add("embedding", "(1, 7) ids, (50, 32) table",
        lambda r: {"ids": r.integers(0, 50, (1, 7)), "table": _normal(r, (50, 32), 10.0)})

    add("layer_norm", "(2, 4, 16), unit gamma, zero beta, eps 1e-5",
        lambda r: {"x": _normal(r, (2, 4, 16)), "gamma": np.ones(16), "beta": np.zeros(16), "eps": 1e-5})
    add("layer_norm", "(3, 64), scale 10, random gamma/beta, eps 1e-6",
        lambda r: {"x": _normal(r, (3, 64), 10.0), "gamma": _normal(r, (64,)), "beta": _normal(r, (64,)),
                   "eps": 1e-6})

    def attention_args(r: np.random.Generator, batch: tuple[int, ...], sq: int, sk: int, dk: int, dv: int,
                       masked: bool, with_v: bool = True) -> dict[str, Any]:
        args = {"q": _normal(r, (*batch, sq, dk)), "k": _normal(r, (*batch, sk, dk))}
        if with_v:
            args["v"] = _normal(r, (*batch, sk, dv))
        if masked:
            mask = r.random((*batch, sq, sk)) < 0.7
            mask[(0,) * len(batch) + (0,)] = False  # one query row with every key masked: zeros
            args["mask"] = mask
        else:
            args["mask"] = None
        return args

    add("attention", "(2, 5, 8) x (2, 7, 8) x (2, 7, 4), no mask", lambda r: attention_args(r, (2,), 5, 7, 8, 4, False))
    add("attention", "(2, 3, 4, 6, 16) heads, boolean mask with a fully masked row",
        lambda r: attention_args(r, (2, 3), 4, 6, 16, 16, True))
    add("attention_weights", "(2, 5, 8) x (2, 7, 8), no mask",
        lambda r: attention_args(r, (2,), 5, 7, 8, 0, False, with_v=False))
    add("attention_weights", "(3, 6, 4) x (3, 9, 4), boolean mask with a fully masked row",
        lambda r: attention_args(r, (3,), 6, 9, 4, 0, True, with_v=False))

    wide_post = {**CONFIG_POST, "d_model": 32}
    add("multi_head_attention", "self-attention, d_model 16, 4 heads, no mask",
        lambda r: {"x_q": (x := _normal(r, (2, 5, 16))), "x_kv": x,
                   "p": _part(r, CONFIG_POST, "encoder", 0, "self_attn"), "num_heads": 4, "mask": None})
    add("multi_head_attention", "cross-attention, d_model 32, 2 heads, key padding mask (B, 1, Sk)",
        lambda r: {"x_q": _normal(r, (2, 3, 32)), "x_kv": _normal(r, (2, 6, 32)),
                   "p": _part(r, wide_post, "encoder", 0, "self_attn"), "num_heads": 2,
                   "mask": _padding(r, 2, 6)[:, None, :]})

    add("feed_forward", "d_model 16, d_ff 32, relu",
        lambda r: {"x": _normal(r, (2, 5, 16)), "p": _part(r, CONFIG_POST, "encoder", 0, "ffn"), "activation": "relu"})
    add("feed_forward", "d_model 32, d_ff 24, gelu (exact erf)",
        lambda r: {"x": _normal(r, (3, 32)), "p": _part(r, CONFIG_PRE, "encoder", 0, "ffn"), "activation": "gelu"})

    add("encoder_layer", "post-LN, relu, key padding mask (B, 1, S)",
        lambda r: {"x": _normal(r, (2, 6, 16)), "p": _part(r, CONFIG_POST, "encoder", 0), "config": CONFIG_POST,
                   "mask": _padding(r, 2, 6)[:, None, :]})
    add("encoder_layer", "pre-LN, gelu, no mask",
        lambda r: {"x": _normal(r, (1, 4, 32)), "p": _part(r, CONFIG_PRE, "encoder", 0), "config": CONFIG_PRE,
                   "mask": None})
    add("decoder_layer", "post-LN, causal self mask, cross padding mask",
        lambda r: {"y": _normal(r, (2, 5, 16)), "memory": _normal(r, (2, 7, 16)),
                   "p": _part(r, CONFIG_POST, "decoder", 0), "config": CONFIG_POST,
                   "self_mask": reference.causal_mask(5)[None], "cross_mask": _padding(r, 2, 7)[:, None, :]})
    add("decoder_layer", "pre-LN, gelu, no masks",
        lambda r: {"y": _normal(r, (1, 3, 32)), "memory": _normal(r, (1, 4, 32)),
                   "p": _part(r, CONFIG_PRE, "decoder", 0), "config": CONFIG_PRE, "self_mask": None,
                   "cross_mask": None})

    def model_args(r: np.random.Generator, config: dict[str, Any], op: str, batch: int, ss: int, st: int,
                   padded: bool) -> dict[str, Any]:
        params = _params(config, int(r.integers(2**31)))
        src = r.integers(0, config["src_vocab_size"], (batch, ss))
        src_mask = _padding(r, batch, ss) if padded else None
        tgt = r.integers(0, config["tgt_vocab_size"], (batch, st))
        tgt_mask = _padding(r, batch, st) if padded else None
        if op == "encode":
            return {"src_ids": src, "params": params, "config": config, "src_mask": src_mask}
        if op == "decode":
            memory = _normal(r, (batch, ss, config["d_model"]))
            return {"tgt_ids": tgt, "memory": memory, "params": params, "config": config, "src_mask": src_mask,
                    "tgt_mask": tgt_mask}
        return {"src_ids": src, "tgt_ids": tgt, "params": params, "config": config, "src_mask": src_mask,
                "tgt_mask": tgt_mask}

    for op, query_mask in (("encode", "src_mask"), ("decode", "tgt_mask"), ("forward", "tgt_mask")):
        rng = np.random.default_rng([seed, len(cases)])
        args = model_args(rng, CONFIG_POST, op, 3, 6, 5, True)
        cases.append(Case(f"{op}-0", op, "post-LN, 2+2 layers, padded source and target", args,
                          compare=tolerances.query_positions(args[query_mask])))
        rng = np.random.default_rng([seed, len(cases)])
        cases.append(Case(f"{op}-1", op, "pre-LN with final norm, gelu, unscaled embeddings, no masks",
                          model_args(rng, CONFIG_PRE, op, 2, 5, 4, False)))

    cases.append(_greedy_case(seed, len(cases), "greedy_decode-0", CONFIG_POST, batch=2, ss=6, max_len=7, padded=True))
    cases.append(_greedy_case(seed, len(cases), "greedy_decode-1", CONFIG_PRE, batch=2, ss=5, max_len=6, padded=False))
    return cases


EXACT_TOKEN_DTYPES = ("float64", "float32")
"""Where greedy_decode cases are exact: their logits' margins clear the near-tie tolerance. At
float16 and bfloat16 the tolerance of a multi-layer model's logits is of the order of their
spread (conformance/TOLERANCES.md, "Greedy decoding"): a correct engine may diverge at any step,
so the golden set does not check greedy tokens there."""


def _greedy_case(seed: int, index: int, name: str, config: dict[str, Any], *, batch: int, ss: int, max_len: int,
                 padded: bool) -> Case:
    """A greedy decoding case with no near-tie at any step at EXACT_TOKEN_DTYPES (tokens are exact)."""
    for attempt in range(200):
        rng = np.random.default_rng([seed, index, attempt])
        args = {"src_ids": rng.integers(0, config["src_vocab_size"], (batch, ss)),
                "params": _params(config, int(rng.integers(2**31))), "config": config, "max_len": max_len,
                "bos_id": 1, "eos_id": 2, "src_mask": _padding(rng, batch, ss) if padded else None}
        if _clear_margins(args):
            layout = "post-LN" if not config.get("norm_first") else "pre-LN, gelu"
            return Case(name, "greedy_decode", f"{layout}, max_len {max_len}, bos 1, eos 2"
                        + (", padded source" if padded else ""), args)
    raise AssertionError(f"no greedy_decode case without near-ties in 200 attempts ({name})")


def _clear_margins(args: dict[str, Any]) -> bool:
    """Whether every step of the reference's greedy decoding picks its token by a margin above
    NEAR_TIE_SAFETY x the near-tie tolerance at every dtype of EXACT_TOKEN_DTYPES."""
    tokens = reference.greedy_decode(**args)
    if tokens.shape[1] < 2:
        return True
    a = args
    live = np.cumsum(tokens == a["eos_id"], axis=1)[:, :-1] == 0          # (B, L-1): step t+1 still decoding
    for dtype in reversed(EXACT_TOKEN_DTYPES):  # the loosest tolerance first: most rejections need one evaluation
        logits = tolerances.expected("forward", [a["src_ids"], tokens[:, :-1], a["params"], a["config"]],
                                     {"src_mask": a["src_mask"]}, dtype=dtype)
        top2 = np.sort(logits.value, axis=-1)[..., -2:]                      # (B, L-1, 2)
        margin = top2[..., 1] - top2[..., 0]
        allowed = np.apply_along_axis(tolerances.margin_tolerance, -1, logits.tol)  # (B, L-1)
        if np.any(live & (margin <= NEAR_TIE_SAFETY * allowed)):
            return False
    return True


# --- export ------------------------------------------------------------------------------------

def flatten(arguments: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """(npz arrays, manifest "arguments"): arrays under their argument name, nested params
    under ``name.key.0.key`` (list items by index), everything else as a JSON value; the
    arguments in the contract's order."""
    arrays: dict[str, np.ndarray] = {}
    described: list[dict[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, np.ndarray):
            arrays[prefix] = value
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        else:
            raise TypeError(f"{prefix}: {type(value).__name__} inside params")

    for name, value in arguments.items():
        if isinstance(value, np.ndarray):
            arrays[name] = value
            described.append({"name": name, "array": name})
        elif isinstance(value, Mapping) and name in ("p", "params"):
            walk(name, value)
            described.append({"name": name, "params": name})
        else:
            described.append({"name": name, "value": value})
    return {k: _storage(v) for k, v in arrays.items()}, described


def _storage(a: np.ndarray) -> np.ndarray:
    """float64 / int64 / bool: the three array types of the format."""
    if a.dtype == np.bool_:
        return a
    return a.astype(np.int64) if np.issubdtype(a.dtype, np.integer) else a.astype(np.float64)


def unflatten(arrays: Mapping[str, np.ndarray], described: list[dict[str, Any]]) -> dict[str, Any]:
    """The inverse of ``flatten``: the call's arguments by name, in the contract's order."""
    arguments: dict[str, Any] = {}
    for how in described:
        name = how["name"]
        if "array" in how:
            arguments[name] = arrays[how["array"]]
        elif "params" in how:
            prefix = how["params"] + "."
            tree: dict[str, Any] = {}
            for key, value in arrays.items():
                if key.startswith(prefix):
                    node = tree
                    parts = key[len(prefix):].split(".")
                    for part in parts[:-1]:
                        node = node.setdefault(part, {})
                    node[parts[-1]] = value
            arguments[name] = _lists(tree)
        else:
            arguments[name] = how["value"]
    return arguments


def _lists(tree: Any) -> Any:
    """Dicts whose keys are 0..n-1 become lists (the encoder/decoder layer stacks)."""
    if not isinstance(tree, dict):
        return tree
    if tree and all(k.isdigit() for k in tree):
        return [_lists(tree[str(i)]) for i in range(len(tree))]
    return {k: _lists(v) for k, v in tree.items()}


def _expected(case: Case) -> dict[str, np.ndarray]:
    """The expected npz content: ``expected``, ``compare`` and (float ops) ``tol_<dtype>``."""
    if case.op in INTEGER_OPS:
        value = getattr(reference, case.op)(**case.arguments)
        return {"expected": value.astype(np.int64), "compare": np.ones(value.shape, dtype=bool)}
    content: dict[str, np.ndarray] = {}
    for dtype in DTYPES:
        want = tolerances.expected(case.op, [], case.arguments, dtype=dtype)
        if "expected" in content and not np.array_equal(content["expected"], want.value, equal_nan=True):
            raise AssertionError(f"{case.name}: the reference differs between dtypes: inputs not portable")
        content["expected"] = want.value
        content[f"tol_{dtype}"] = np.ascontiguousarray(want.tol, dtype=np.float64)
    compare = np.ones(content["expected"].shape, dtype=bool)
    if case.compare is not None:
        compare = np.ascontiguousarray(np.broadcast_to(case.compare, compare.shape))
    content["compare"] = compare
    return content


def _shape_entry(a: np.ndarray) -> dict[str, Any]:
    return {"shape": list(a.shape), "dtype": a.dtype.name}


def export(directory: str | Path, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Write every case and the manifest into ``directory``; returns the manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in [directory / MANIFEST, *directory.glob("*.inputs.npz"), *directory.glob("*.expected.npz")]:
        old.unlink(missing_ok=True)  # a previous export's cases
    entries = []
    for case in build_cases(seed):
        arrays, described = flatten(case.arguments)
        expected = _expected(case)
        inputs_file, expected_file = f"{case.name}.inputs.npz", f"{case.name}.expected.npz"
        np.savez_compressed(directory / inputs_file, **arrays)
        np.savez_compressed(directory / expected_file, **expected)
        floating = case.op not in INTEGER_OPS
        entries.append({
            "name": case.name,
            "op": case.op,
            "description": case.description,
            "arguments": described,
            "inputs": {"file": inputs_file, "arrays": {k: _shape_entry(v) for k, v in arrays.items()}},
            "expected": {"file": expected_file, "arrays": {k: _shape_entry(v) for k, v in expected.items()}},
            "output": {"file": f"{case.name}.npy", "shape": list(expected["expected"].shape),
                       "dtype": "float" if floating else "int64"},
            "tolerance": ({"class": "elementwise", "compare": "compare",
                           "arrays": {d: f"tol_{d}" for d in DTYPES}} if floating
                          else {"class": "exact", "compare": "compare"}),
        })
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "contract_version": CONTRACT_VERSION,
        "seed": seed,
        "generator": {"name": "transformer-conformance", "version": _version(), "numpy": np.__version__},
        "tolerance_model": tolerances.describe(),
        "dtypes": list(DTYPES),
        "cases": entries,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("transformer-conformance")
    except metadata.PackageNotFoundError:
        return None


# --- reading, safely ---------------------------------------------------------------------------

def safe_path(directory: Path, name: Any, what: str) -> Path:
    """``directory / name`` for a plain file name that stays inside ``directory``."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise GoldenError(f"{directory / MANIFEST}: {what} file name {name!r} is not a plain file name "
                          "(letters, digits, '_', '.', '-'; no path separators or '..')")
    path = directory / name
    if path.resolve().parent != directory.resolve():
        raise GoldenError(f"{path}: {what} file resolves outside {directory} (a link?); refused")
    return path


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
    if manifest.get("format_version") != FORMAT_VERSION:
        raise GoldenError(f"{path}: format_version {manifest.get('format_version')!r}; this tool reads "
                          f"version {FORMAT_VERSION}")
    cases = manifest.get("cases")
    if not isinstance(cases, list) or not cases:
        raise GoldenError(f"{path}: 'cases' must be a non-empty list")
    for i, case in enumerate(cases):
        try:
            if case["op"] not in OPS:
                raise GoldenError(f"{path}: case #{i}: unknown op {case['op']!r}")
            for part in ("inputs", "expected", "output"):
                safe_path(directory, case[part]["file"], f"case {case['name']!r} {part}")
            safe_path(directory, case["name"], "case")
            keys = case["inputs"]["arrays"]
            for argument in case["arguments"]:
                if ("array" in argument and argument["array"] not in keys) or (
                        "params" in argument and not any(k.startswith(argument["params"] + ".") for k in keys)):
                    raise GoldenError(f"{path}: case {case['name']!r}: argument {argument['name']!r} names no "
                                      "array of its inputs file")
        except (KeyError, TypeError) as exc:
            raise GoldenError(f"{path}: case #{i} is missing a field: {exc}") from exc
    return manifest


def load_npz(path: Path, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Every array of an .npz file, checked against the manifest's names, shapes and dtypes."""
    try:
        with np.load(path, allow_pickle=False) as content:
            if not isinstance(content, np.lib.npyio.NpzFile):
                raise GoldenError(f"{path}: not an .npz archive")
            loaded = {key: content[key] for key in content.files}
    except GoldenError:
        raise
    except FileNotFoundError as exc:
        raise GoldenError(f"{path}: missing") from exc
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise GoldenError(f"{path}: cannot be read without pickling ({type(exc).__name__}: {exc})") from exc
    if set(loaded) != set(arrays):
        raise GoldenError(f"{path}: holds arrays {sorted(loaded)}, the manifest lists {sorted(arrays)}")
    for key, entry in arrays.items():
        a = loaded[key]
        if list(a.shape) != list(entry["shape"]) or a.dtype.name != entry["dtype"]:
            raise GoldenError(f"{path}: array {key!r} is {a.dtype.name}{list(a.shape)}, the manifest says "
                              f"{entry['dtype']}{list(entry['shape'])}")
    return loaded


def load_output(path: Path) -> np.ndarray:
    """One output array (.npy), read without pickling; ValueError with the reason otherwise."""
    if path.exists() and not path.is_file():  # opening a pipe would block
        raise ValueError(f"{path}: cannot be read: not a regular file (a directory, a pipe or a device)")
    try:
        with open(path, "rb") as f:  # FileNotFoundError: not implemented
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


# --- check -------------------------------------------------------------------------------------

OUTPUT_DTYPES = ("float64", "float32", "float16")  # what .npy holds; bfloat16 is written as float32


@dataclass
class Outcome:
    """The result of ``check``: one TestResult per case."""

    dtype: str | None
    tests: list[report.TestResult] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    directory: str = ""
    outputs: str = ""

    @property
    def failures(self) -> list[report.TestResult]:
        return [t for t in self.tests if t.failed]

    def op_results(self) -> list[report.OpResult]:
        run = report.Run(targets=self.targets(), tests=self.tests)
        return report.aggregate(run)

    def targets(self) -> list[dict[str, str]]:
        ids = dict.fromkeys(t.target for t in self.tests if t.target)
        return [{"id": i, "spec": "golden", "dtype": i.removeprefix("golden-"), "device": "-"} for i in ids]

    def document(self, *, argv: list[str], environment: dict[str, Any]) -> dict[str, Any]:
        results = self.op_results()
        failing = [r for r in results if r.status in report.FAILING]
        implemented = [t for t in self.tests if t.outcome != "skipped"]
        errors = [] if implemented else [f"no output files in {self.outputs}: nothing was checked"]
        verdict, code = ("error", 2) if errors else ("fail", 1) if failing else ("pass", 0)
        reasons = [f"{len(failing)} op result(s) failed: " + ", ".join(f"{r.op} ({r.status})" for r in failing)] \
            if failing else []
        return report.document(
            kind="golden", command=argv, environment=environment,
            settings={"golden_dir": self.directory, "outputs": self.outputs, "dtype": self.dtype,
                      "format_version": self.manifest.get("format_version"), "seed": self.manifest.get("seed"),
                      "tolerance_model": self.manifest.get("tolerance_model")},
            targets=[{**t, "status": "tested"} for t in self.targets()], results=results, tests=self.tests,
            errors=errors, reasons=reasons + errors, verdict=verdict, code=code)


def check(directory: str | Path, outputs: str | Path, *, dtype: str | None = None) -> Outcome:
    """Compare ``outputs/<case>.npy`` with every case of the golden ``directory``.

    ``dtype``: the precision the outputs were computed in, which chooses the tolerance; by
    default the floating outputs' own dtype (float64, float32 or float16, the same for all;
    bfloat16 results must be written as float32 and checked with ``dtype="bfloat16"``). A
    missing output file means the op is not implemented; a file that cannot be read, or has the
    wrong shape or dtype, fails its case. GoldenError for a problem with the golden directory
    itself, or outputs of several float dtypes without ``dtype``.
    """
    directory, outputs = Path(directory), Path(outputs)
    if not outputs.is_dir():
        raise GoldenError(f"{outputs}: no such outputs directory")
    manifest = load_manifest(directory)
    loaded: dict[str, np.ndarray | str | None] = {}
    for case in manifest["cases"]:
        path = safe_path(outputs, case["output"]["file"], "output")
        try:
            loaded[case["name"]] = load_output(path)
        except FileNotFoundError:
            loaded[case["name"]] = None
        except ValueError as exc:
            loaded[case["name"]] = str(exc)
    dtype = dtype or _output_dtype(outputs, loaded)
    outcome = Outcome(dtype=dtype, manifest=manifest, directory=str(directory), outputs=str(outputs))
    for case in manifest["cases"]:
        expected = load_npz(safe_path(directory, case["expected"]["file"], "expected"), case["expected"]["arrays"])
        path = safe_path(outputs, case["output"]["file"], "output")
        outcome.tests.append(_check_case(case, expected, path, loaded[case["name"]], dtype))
    return outcome


def _output_dtype(outputs: Path, loaded: Mapping[str, Any]) -> str | None:
    """The one float dtype of the outputs (None if there are no float outputs)."""
    found = sorted({a.dtype.name for a in loaded.values()
                    if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)})
    if len(found) > 1:
        raise GoldenError(f"{outputs}: outputs of several dtypes ({', '.join(found)}); pass --dtype to say "
                          "which precision they were computed in")
    if found and found[0] not in OUTPUT_DTYPES:
        raise GoldenError(f"{outputs}: outputs of dtype {found[0]}; expected one of {', '.join(OUTPUT_DTYPES)} "
                          "(or float32 with --dtype bfloat16)")
    return found[0] if found else None


def _check_case(case: dict[str, Any], expected: dict[str, np.ndarray], path: Path, out: np.ndarray | str | None,
                dtype: str | None) -> report.TestResult:
    op, exact = case["op"], case["tolerance"]["class"] == "exact"
    target = f"golden-{dtype or 'exact'}"
    result = report.TestResult(nodeid=f"golden/{case['name']}[{target}]", test=f"golden/{case['name']}", op=op,
                               kind="golden", target=target, outcome="passed", examples=1)
    if out is None:
        result.outcome, result.skip_reason = "skipped", f"not implemented: no output file {path}"
        return result
    if exact and dtype not in (None, *EXACT_TOKEN_DTYPES):
        result.outcome, result.skip_reason = "skipped", (f"unsupported: greedy tokens are exact at "
                                                         f"{', '.join(EXACT_TOKEN_DTYPES)} only, not at {dtype}")
        return result
    if isinstance(out, str):
        return _failed(result, out)
    want = expected["expected"]
    if out.shape != want.shape:
        return _failed(result, f"{path}: shape {out.shape}, expected {want.shape} [{op}: {case['description']}]")
    who = SimpleNamespace(name=f"golden:{path.name}", dtype=dtype or "-", device="-")
    try:
        if exact:
            if not np.issubdtype(out.dtype, np.integer):
                return _failed(result, f"{path}: dtype {out.dtype}, expected integer token ids")
            assert_equal(out, want, backend=who, op=op, what=case["description"], where=expected["compare"])
            result.worst_ratio = 0.0
        else:
            if not np.issubdtype(out.dtype, np.floating):
                return _failed(result, f"{path}: dtype {out.dtype}, expected floating point "
                                       "(write bfloat16 results as float32 and pass --dtype bfloat16)")
            tol = expected[case["tolerance"]["arrays"][dtype]]
            result.worst_ratio = assert_close(out, want, tol=tol, backend=who, op=op, what=case["description"],
                                              where=expected["compare"])
    except AssertionError as exc:
        return _failed(result, str(exc))
    return result


def _failed(result: report.TestResult, message: str) -> report.TestResult:
    result.outcome, result.message, result.failure = "failed", message, message
    return result


# --- a Python producer -------------------------------------------------------------------------

def read_case(directory: Path, case: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of one case, from its inputs file."""
    arrays = load_npz(safe_path(directory, case["inputs"]["file"], "inputs"), case["inputs"]["arrays"])
    return unflatten(arrays, case["arguments"])


def run_backend(directory: str | Path, outputs: str | Path, backend: Any) -> int:
    """Write ``backend``'s output of every case to ``outputs/<case>.npy`` (skipping ops it does
    not implement); returns how many were written. bfloat16 results are written as float32."""
    directory, outputs = Path(directory), Path(outputs)
    outputs.mkdir(parents=True, exist_ok=True)
    written = 0
    for case in load_manifest(directory)["cases"]:
        fn = getattr(backend, case["op"], None)
        if not callable(fn):
            continue
        args = to_native(backend, list(read_case(directory, case).values()))
        try:
            out = np.asarray(backend.to_numpy(fn(*args)))
        except NotImplementedError:
            continue
        if out.dtype == ml_dtypes.bfloat16:
            out = out.astype(np.float32)
        np.save(safe_path(outputs, case["output"]["file"], "output"), out, allow_pickle=False)
        written += 1
    return written
