"""The suite's pytest plugin: backend selection, Hypothesis profiles, the report header, and
per-test records for the gate.

Loaded by the repository's ``conftest.py`` and by the gate (``pytest -p
conformance.kit.pytest_plugin``). Options (each also an environment variable, for CI systems):

  --backend SPEC   repeatable    CONFORMANCE_BACKEND  (comma-separated)
  --dtype D        repeatable    CONFORMANCE_DTYPE    (comma-separated)
  --device DEV                   CONFORMANCE_DEVICE
  --hypothesis-profile dev|ci|thorough                HYPOTHESIS_PROFILE   (default dev)

With no backend and no dtype chosen, the tests run on every built-in backend available here
(``backends.registry.default_targets``).
"""

from __future__ import annotations

import os

# --- intra-op threads (added by the property-suite engineer; see the issue-4 report) -----------
# The suite's arrays are tiny, so intra-op threads only add synchronisation: on a 2-core machine
# torch spends ~10 ms per op waking its thread pool (a 1-layer forward: 46 ms with 2 threads, 2 ms
# with 1), and pytest-xdist already runs one worker per core. Set before torch/NumPy load (this
# plugin is imported first, by conftest.py) and inherited by xdist workers; an explicit
# OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# -----------------------------------------------------------------------------------------------

import functools  # noqa: E402
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Unsatisfiable

from backends import registry
from backends.contract import DTYPES
from backends.registry import BackendSpecError, Target, load_backend
from conformance.kit import features, record
from conformance.kit.harness import Skip, skip
from conformance.kit.verdicts import NOT_IMPLEMENTED, SKIP_KEY, UNSUPPORTED

PROFILES: dict[str, dict[str, Any]] = {
    # dev skips the explain phase: ~100 extra runs of every failing test (most of a failing
    # test's time), for a comment on which parts of the shrunk example matter
    "dev": {"max_examples": 25, "phases": tuple(p for p in Phase if p is not Phase.explain)},
    # ci skips it too: on a compiled backend (JAX) each of those runs compiles a new shape
    "ci": {"max_examples": 100, "derandomize": True, "phases": tuple(p for p in Phase if p is not Phase.explain)},
    "thorough": {"max_examples": 1000},
}
for _name, _options in PROFILES.items():
    settings.register_profile(_name, deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.filter_too_much],  # not-implemented examples
                              **_options)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "transformer conformance suite")
    group.addoption("--backend", action="append", default=[], metavar="SPEC",
                    help="backend spec to test (repeatable; env CONFORMANCE_BACKEND); default: all built-ins")
    group.addoption("--dtype", action="append", default=[], choices=DTYPES,
                    help="dtype to test (repeatable; env CONFORMANCE_DTYPE); default: all the backend supports")
    group.addoption("--device", default=None, help="device, e.g. cpu, cuda, cuda:1 (env CONFORMANCE_DEVICE)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "op(name): the contract op a conformance test checks")
    config.addinivalue_line("markers", "kind(name): property or differential")


def selected_targets(config: pytest.Config) -> list[Target]:
    """The backend x dtype (x device) combinations chosen on the command line or environment
    (``backends.registry.selected_targets``)."""
    try:
        return registry.selected_targets(config.getoption("backend"), config.getoption("dtype"),
                                         config.getoption("device"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc


def pytest_report_header(config: pytest.Config) -> list[str]:
    targets = selected_targets(config)
    profile = config.getoption("hypothesis_profile", None) or os.environ.get("HYPOTHESIS_PROFILE", "dev")
    seed = config.getoption("hypothesis_seed", None)
    derandomized = PROFILES.get(profile, {}).get("derandomize", False)
    seed_text = "derandomized" if derandomized else (seed if seed is not None else "random (see the failure's @reproduce_failure blob)")
    return [
        f"conformance backends: {', '.join(sorted({t.spec for t in targets}))}",
        f"conformance dtypes: {', '.join(sorted({t.dtype for t in targets}))}; "
        f"devices: {', '.join(sorted({t.device for t in targets}))}",
        f"conformance targets: {', '.join(t.id for t in targets)}",
        f"hypothesis profile: {profile}; seed: {seed_text}",
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        targets = selected_targets(metafunc.config)
        metafunc.parametrize("backend", targets, ids=[t.id for t in targets], indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> Any:
    """The backend under test; unsupported dtype/device skips with reason "unsupported"."""
    target: Target = request.param
    try:
        return load_backend(target.spec, dtype=target.dtype, device=target.device)
    except ValueError as exc:
        skip(UNSUPPORTED, f"{target.id}: {exc}")
    except BackendSpecError as exc:
        pytest.fail(str(exc), pytrace=False)


def _counting(inner: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        record.note_example()
        return inner(*args, **kwargs)
    return wrapper


def wrap_inner_tests(items: list[pytest.Item], wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
                     tag: str) -> None:
    """Wrap every Hypothesis test's ``inner_test`` (what runs one example; Hypothesis lets plugins
    replace it) with ``wrap``, once: ``tag`` marks a wrapped one."""
    for item in items:
        handle = getattr(getattr(item, "obj", None), "hypothesis", None)
        if handle is not None and not getattr(handle.inner_test, tag, False):
            handle.inner_test = wrap(handle.inner_test)
            setattr(handle.inner_test, tag, True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Count Hypothesis examples per test."""
    wrap_inner_tests(items, _counting, "_conformance_counted")


RECORD = pytest.StashKey[record.Record]()
"""The test's Record, for the gate plugin (which saves a failing case's inputs)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    rec = item.stash[RECORD] = record.start()
    marker = item.get_closest_marker("op")
    features.start(getattr(item, "funcargs", {}).get("backend"), marker.args[0] if marker is not None else None)
    try:
        return (yield)
    except Unsatisfiable:  # no failure, and every example drawn was rejected
        if not rec.not_implemented:
            raise
        skip(NOT_IMPLEMENTED, f"every example drawn ({rec.not_implemented}) was not implemented")
    except Exception:  # a failure the assertion helpers did not note: the last example run is it
        if not rec.failing_calls:
            rec.failing_calls = list(rec.example_calls)
        raise
    finally:
        features.stop()
        record.stop()
        item.user_properties.append(("conformance", rec.as_property()))
        if marker is not None:
            item.user_properties.append(("op", marker.args[0]))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A failure's report shows the backend calls of its (shrunk) example, readable; a skip's
    report says its kind (not implemented, unsupported) for the gate."""
    report = yield
    if call.excinfo is not None and isinstance(call.excinfo.value, Skip):
        report.user_properties.append((SKIP_KEY, call.excinfo.value.kind))
    rec = item.stash.get(RECORD, None)
    if call.when == "call" and report.failed and rec is not None and rec.inputs:
        report.sections.append(("failing example's backend calls", rec.inputs))
    return report
