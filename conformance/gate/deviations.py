"""Known deviations: failures a team accepts, so that they do not fail the gate.

The file is TOML, one ``[[deviation]]`` table per accepted failure::

    [[deviation]]
    backend = "torch"                 # the spec as given to --backend, or the name in the target id
    dtype = "bfloat16"                # float64, float32, float16, bfloat16, or "*" for every dtype
    device = "cuda"                   # optional; default: any device
    op = "greedy_decode"              # exactly one of op (every test of the op) ...
    # test = "properties/test_softmax.py::test_rows_sum_to_one"   # ... or test (one test;
    #                                 # its function name alone also matches)
    reason = "argmax ties resolved by the last index in the fused kernel"   # required
    reference = "https://github.com/org/repo/issues/12"                      # optional
    version = "2.13"                  # optional: the backend version it was seen with (informational)
    variant = "mask-finfo-min"        # optional: the convention (reference/variants.py) that explains it

An entry that cites a ``variant`` covers a failure only while the gate's diagnosis
(conformance/tolerance/diagnosis.py) still finds that variant explains it: a differential failure
diagnosed otherwise is no longer "known" (it fails, and a note says why); a failure the
diagnosis cannot look at (a property test) is covered unless the op's differential failures
on the same target were diagnosed and none of them is explained by the variant (when the
differential tests passed, as when their draws missed the hazard a property test found,
nothing contradicts the entry). With ``CONFORMANCE_DIAGNOSIS=off`` the variant is not checked.

A failing test covered by an entry is reported as "known deviation" and does not fail the
gate. An entry that applies to a target and an op (or test) that ran in this run, and covered
no failure, is **stale**: the gate reports it so that the list cannot rot (``--strict-deviations``
makes a stale entry fail the gate). Errors in the file (TOML syntax, unknown keys, missing or
invalid values) raise ``DeviationsError`` naming the file and the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package (pyproject: tomli on < 3.11)
    import tomli as tomllib

from backends.contract import DTYPES, OPS
from backends.registry import short_name
from conformance.tolerance.diagnosis import enabled as diagnosis_enabled
from reference.variants import CATALOGUE

KEYS = {"backend", "dtype", "device", "op", "test", "reason", "reference", "version", "variant"}
ANY_DTYPE = "*"
HEADER_RE = re.compile(r"^\s*\[\[\s*deviation\s*\]\]")
TOML_POSITION_RE = re.compile(r"\(at line (\d+), column (\d+)\)")


class DeviationsError(Exception):
    """A known-deviations file that cannot be used (the message names the file and line)."""


@dataclass(frozen=True)
class Deviation:
    """One accepted failure (see the module docstring for the fields)."""

    backend: str
    dtype: str
    reason: str
    op: str | None = None
    test: str | None = None
    device: str | None = None
    reference: str | None = None
    version: str | None = None
    variant: str | None = None
    file: str = ""
    line: int = 0

    def applies_to(self, target: dict[str, str]) -> bool:
        """Whether the entry is about this target (``{id, spec, dtype, device}``)."""
        spec = target.get("spec") or ""
        return (self.backend in (spec, spec.rsplit(":", 1)[-1], short_name(spec))
                and self.dtype in (ANY_DTYPE, target.get("dtype"))
                and self.device in (None, target.get("device")))

    def covers(self, target: dict[str, str], op: str | None, test: str) -> bool:
        """Whether the entry accepts a failure of ``test`` (of ``op``) on ``target``."""
        if not self.applies_to(target):
            return False
        if self.op is not None:
            return self.op == op
        return self.test == test or test.endswith(f"::{self.test}")

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def load(path: str | Path) -> list[Deviation]:
    """The entries of a known-deviations file; DeviationsError on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeviationsError(f"known-deviations file {path}: cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DeviationsError(f"known-deviations file {path}: not UTF-8 text ({exc.reason})") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = TOML_POSITION_RE.search(str(exc))
        where = f"{path}:{match.group(1)}:{match.group(2)}" if match else str(path)
        message = TOML_POSITION_RE.sub("", str(exc)).strip()
        raise DeviationsError(f"{where}: TOML syntax error: {message}") from exc
    unknown = set(document) - {"deviation"}
    if unknown:
        raise DeviationsError(f"{path}: unknown top-level key(s) {sorted(unknown)}; "
                              "write each entry as a [[deviation]] table")
    entries = document.get("deviation", [])
    if not isinstance(entries, list):
        raise DeviationsError(f"{path}: 'deviation' must be an array of tables: write [[deviation]]")
    header_lines = [n for n, line in enumerate(text.splitlines(), 1) if HEADER_RE.match(line)]
    return [_entry(raw, path, header_lines[i] if i < len(header_lines) else 0, i)
            for i, raw in enumerate(entries)]


def _entry(raw: dict[str, Any], path: Path, line: int, index: int) -> Deviation:
    where = f"{path}:{line}: deviation #{index + 1}" if line else f"{path}: deviation #{index + 1}"

    def fail(message: str) -> DeviationsError:
        return DeviationsError(f"{where}: {message}")

    if not isinstance(raw, dict):
        raise fail(f"must be a table (write [[deviation]] and key = \"value\" lines), got {raw!r}")
    unknown = set(raw) - KEYS
    if unknown:
        raise fail(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(KEYS)}")
    for key, value in raw.items():
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{key} must be a non-empty string, got {value!r}")
    for key in ("backend", "dtype", "reason"):
        if key not in raw:
            raise fail(f"missing required key {key!r}")
    if raw["dtype"] not in (*DTYPES, ANY_DTYPE):
        raise fail(f"unknown dtype {raw['dtype']!r}; choose from {', '.join(DTYPES)} or '*'")
    if ("op" in raw) == ("test" in raw):
        raise fail("give exactly one of 'op' (every test of an op) or 'test' (one test)")
    if "op" in raw and raw["op"] not in OPS:
        raise fail(f"unknown op {raw['op']!r}; contract ops: {', '.join(OPS)}")
    if "variant" in raw and raw["variant"] not in CATALOGUE:
        raise fail(f"unknown variant {raw['variant']!r}; the catalogue (conformance/tolerance/VARIANTS.md): {', '.join(CATALOGUE)}")
    return Deviation(**raw, file=str(path), line=line)


def apply(deviations: list[Deviation], tests: list[Any], targets: dict[str, dict[str, str]]) -> None:
    """Set ``test.deviation`` on each failing test an entry covers (the first such entry).
    ``tests`` are tally.TestResult; ``targets`` maps target id -> {id, spec, dtype, device}."""
    diagnosed = [t for t in tests if t.failed and t.diagnosis is not None]
    explained = {(t.target, t.op, v) for t in diagnosed for v in (*t.diagnosis.variants, *t.diagnosis.alike)}
    explained |= {(t.target, t.op, None) for t in diagnosed}
    for test in tests:
        target = targets.get(test.target or "")
        if test.failed and target is not None:
            matching = [d for d in deviations if d.covers(target, test.op, test.test)]
            test.deviation = next((d for d in matching if _still_explained(d, test, explained)), None)
            if test.deviation is None and matching:
                d = matching[0]
                test.notes.append(f"known deviation {d.file}:{d.line} cites variant `{d.variant}`, but the diagnosis "
                                  f"says: {test.diagnosis.text if test.diagnosis else 'no differential failure of this op is explained by it'}; "
                                  "the failure changed, so it is not accepted")


def _still_explained(d: Deviation, test: Any, explained: set[tuple[Any, Any, str]]) -> bool:
    """An entry without a variant covers what it matches; with one, the test's diagnosis must
    name it. An undiagnosed test is covered unless the op's failures on the target were
    diagnosed (``(target, op, None)`` in ``explained``) and none names the variant."""
    if d.variant is None or not diagnosis_enabled():  # CONFORMANCE_DIAGNOSIS=off: nothing to check it with
        return True
    if test.diagnosis is not None:
        return test.diagnosis.explains(d.variant)
    return (test.target, test.op, None) not in explained or (test.target, test.op, d.variant) in explained


def stale(deviations: list[Deviation], tests: list[Any], targets: dict[str, dict[str, str]]) -> list[Deviation]:
    """Entries that apply to a test that ran in this run (passed or failed) and covered no failure."""
    found = []
    for d in deviations:
        ran = [t for t in tests if t.outcome != "skipped" and (target := targets.get(t.target or ""))
               and d.covers(target, t.op, t.test)]
        if ran and not any(t.deviation is d for t in ran):
            found.append(d)
    return found
