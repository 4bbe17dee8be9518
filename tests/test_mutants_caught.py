"""The gate catches every mutant of the zoo (tests/mutants/catalog.py).

For each mutant, ``python -m conformance run`` (``conformance.gate.cli.main``, in process) runs the
property and differential suites on it in the ``ci`` profile, restricted with ``--ops`` to the
op(s) its bug lives in, and must exit 1 with each of those ops failing on the mutant's target
in report.json. To keep CI to a few minutes:

- mutants with the same ops and dtype share one gate run (several ``--backend``s; the exit
  status is the group's, and each mutant is judged by its own target's op results, any one of
  which alone makes a gate exit 1); under pytest-xdist the workers share each group's report
  through a lock file instead of running it twice;
- the gate's pytest loads tests/mutants/first_failure.py (``PYTEST_PLUGINS``), which turns
  Hypothesis' shrinking off: the examples generated, hence the verdict, are the ``ci``
  profile's, but a failing test stops at its first failure instead of spending most of the
  run shrinking it.

Which suite catches which mutant, over all ops and without ``--ops``, and how soon, is measured
by benchmarks/mutant_score.py (tests/mutants/SCORE.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from backends.contract import OPS  # noqa: E402
from backends.registry import load_backend  # noqa: E402
from backends.torch_backend import TorchBackend  # noqa: E402
from conformance.kit.harness import to_native  # noqa: E402
from conformance.kit.verdicts import FAILING  # noqa: E402
from tests import gate_runs  # noqa: E402
from tests.mutants import catalog, model, zoo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIN_MUTANTS = 35
GROUP_TIMEOUT_S = 900

KNOWN_GAPS: dict[str, str] = {}
"""mutant -> why the suite misses it at the ``ci`` profile (a finding for the suites' owners):
the test is an expected failure, strict, so it turns red once the suite catches the mutant."""


def group_of(name: str) -> tuple[tuple[str, ...], str]:
    """(ops, dtype): the mutants of one group share a gate run."""
    mutant = catalog.ALL[name]
    return mutant.ops, mutant.dtype


def group_id(group: tuple[tuple[str, ...], str]) -> str:
    ops, dtype = group
    return f"{'+'.join(ops) or 'no-ops'}-{dtype}"


MUTANTS_BY_GROUP = sorted(catalog.ALL, key=lambda name: (group_id(group_of(name)), name))
"""Every mutant, those of one group next to each other (xdist hands out neighbours together)."""


def run_gate(group: tuple[tuple[str, ...], str], folder: Path) -> tuple[int, dict[str, Any]]:
    """The gate on every mutant of ``group``, restricted to the group's ops: (exit status,
    report.json). Under xdist the first worker to ask runs it; the others read its report."""
    ops, dtype = group
    names = [n for n in MUTANTS_BY_GROUP if group_of(n) == group]
    argv = [*(a for n in names for a in ("--backend", catalog.spec(n))), "--dtype", dtype,
            "--profile", "ci", "--ops", ",".join(ops), "-n", "0"]
    return gate_runs.run_gate(argv, folder=folder / group_id(group))


@pytest.fixture(scope="session")
def gate_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder all xdist workers of this run share (the parent of each worker's base temp)."""
    return gate_runs.shared_folder(tmp_path_factory, "mutant-gates")


def _cases() -> list[Any]:
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[name]))
            if name in KNOWN_GAPS else name for name in MUTANTS_BY_GROUP]


@pytest.mark.timeout(GROUP_TIMEOUT_S)
@pytest.mark.parametrize("name", _cases())
def test_gate_catches_mutant(name: str, gate_folder: Path) -> None:
    """The gate exits 1 and report.json names every op the mutant's bug lives in as failing."""
    mutant = catalog.ALL[name]
    assert mutant.ops, f"mutant {name!r} names no op: add it to tests/mutants/catalog.py ZOO_OPS"
    code, report = run_gate(group_of(name), gate_folder)
    assert not report["errors"], f"the gate had set-up errors (exit {code}): {report['errors']}"
    target = f"{name}-{mutant.dtype}"
    statuses = {r["op"]: r["status"] for r in report["results"] if r["target"] == target}
    missed = {op: statuses.get(op, "not run") for op in mutant.ops if statuses.get(op) not in FAILING}
    assert code == 1 and not missed, (
        f"mutant {name!r} ({catalog.bug(name)}) was not caught on {', '.join(missed)}: {missed}; "
        f"gate exit {code}, all statuses of {target}: {statuses}")


def test_zoo_is_large_and_names_its_ops():
    """At least 35 mutants; each zoo mutant has its ops in catalog.ZOO_OPS (none stale), every op
    named is a contract op, and every contract op has a mutant."""
    unnamed = sorted(set(zoo.MUTANTS) - set(catalog.ZOO_OPS))
    stale = sorted(set(catalog.ZOO_OPS) - set(zoo.MUTANTS))
    unknown = {n: m.ops for n, m in catalog.ALL.items() if not set(m.ops) <= set(OPS)}
    uncovered = sorted(set(OPS) - {op for m in catalog.ALL.values() for op in m.ops})
    assert len(catalog.ALL) >= MIN_MUTANTS, f"only {len(catalog.ALL)} mutants"
    assert not (unnamed or stale or unknown or uncovered), (
        f"zoo mutants without ops: {unnamed}; stale ZOO_OPS entries: {stale}; unknown ops: {unknown}; "
        f"contract ops without a mutant: {uncovered}")


@pytest.mark.parametrize("name", sorted(model.MUTANTS))
def test_mutant_has_a_one_line_docstring_and_loads_from_both_spec_forms(name: str):
    """Each mutant of model.py names its bug in one line and loads as ``tests.mutants.model:NAME``,
    ``tests/mutants/model.py:NAME`` and ``tests.mutants.catalog:NAME``, at its dtype by default."""
    mutant = model.MUTANTS[name]
    doc = (mutant.factory.__doc__ or "").strip()
    assert doc and "\n" not in doc, f"mutant {name} needs a one-line docstring naming its bug, got {doc!r}"
    assert isinstance(mutant.factory(), TorchBackend)
    for spec in (f"tests.mutants.model:{name}", f"{ROOT / 'tests' / 'mutants' / 'model.py'}:{name}",
                 catalog.spec(name)):
        backend = load_backend(spec, dtype=mutant.dtype)
        assert (backend.name, backend.dtype) == (f"mutant:{name}", mutant.dtype)


def test_greedy_hooks_unchanged_decode_like_the_torch_backend():
    """The greedy mutants' base loop, with no hook overridden, returns exactly what
    ``TorchBackend.greedy_decode`` returns (so each greedy mutant differs by its one hook)."""
    import reference

    config = {"d_model": 8, "num_heads": 2, "d_ff": 8, "num_encoder_layers": 1, "num_decoder_layers": 1,
              "src_vocab_size": 7, "tgt_vocab_size": 5}
    rng = np.random.default_rng(0)
    src, src_mask = rng.integers(0, 7, (3, 4)), np.arange(4) < np.array([[4], [2], [3]])
    outputs = []
    for backend in (TorchBackend(dtype="float64"), model._GreedyHooks(dtype="float64")):
        args = to_native(backend, [src, reference.init_params(config, 0), config, 6, 1, 2])
        outputs.append(backend.to_numpy(backend.greedy_decode(*args, src_mask=backend.asarray(src_mask))))
    np.testing.assert_array_equal(outputs[1], outputs[0])
