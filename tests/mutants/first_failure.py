"""pytest plugin for mutant runs: no shrinking, and examples until the first failure per test.

Loaded into the gate's pytest run through the environment (``PYTEST_PLUGINS=
tests.mutants.first_failure``, the repository root on ``PYTHONPATH``) by
tests/test_mutants_caught.py and benchmarks/mutant_score.py. It

- re-registers the suite's Hypothesis profiles without the shrink and explain phases and with
  ``report_multiple_bugs=False``: generation is unchanged (the same derandomized examples and
  budgets, so the same verdict), but a failing test stops at its first failing example
  instead of shrinking it, which on a mutant is most of the run's time and tells nothing
  about *whether* or *how soon* the test fails;
- formats failures as plain Python tracebacks (``--tb=native``): pytest's default style reads
  and prints the source of every frame (a tenth of a mutant run's time; native saves about
  6 % of it), and the verdicts and the gate's own messages (the exception's text) are the same;
- when ``$MUTANT_SCORE_FIRST_FAILURES`` names a folder, counts the calls of each Hypothesis
  test's inner function, notes the 1-based index of the first one that raised (a failure, not
  an ``assume`` or Hypothesis' own control flow), and appends ``{"nodeid", "calls",
  "first_failure"}`` to ``<folder>/<pid>.jsonl``.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis.errors import HypothesisException

from conformance.kit.pytest_plugin import PROFILES, wrap_inner_tests

FOLDER_VARIABLE = "MUTANT_SCORE_FIRST_FAILURES"
NO_SHRINK = tuple(phase for phase in Phase if phase not in (Phase.shrink, Phase.explain))

for _name in PROFILES:
    settings.register_profile(_name, parent=settings.get_profile(_name), phases=NO_SHRINK,
                              report_multiple_bugs=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

_calls = 0
_first_failure: int | None = None


def _counting(inner: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _calls, _first_failure
        _calls += 1
        try:
            return inner(*args, **kwargs)
        except HypothesisException:  # assume() and friends: not a failure
            raise
        except Exception:
            if _first_failure is None:
                _first_failure = _calls
            raise
    return wrapper


def pytest_configure(config: pytest.Config) -> None:
    config.option.tbstyle = "native"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    wrap_inner_tests(items, _counting, "_first_failure_counted")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    global _calls, _first_failure
    _calls, _first_failure = 0, None
    try:
        return (yield)
    finally:
        folder = os.environ.get(FOLDER_VARIABLE)
        if folder and getattr(getattr(item, "obj", None), "hypothesis", None) is not None:
            record = {"nodeid": item.nodeid, "calls": _calls, "first_failure": _first_failure}
            with open(Path(folder) / f"{os.getpid()}.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
