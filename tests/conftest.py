"""Fixtures shared by the suite's own tests."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from conformance import golden


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory):
    """A fresh golden export (default layout) per test module."""
    directory = tmp_path_factory.mktemp("golden")
    golden.export(directory)
    return directory


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded by the test's name: each test its own repeatable numbers."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))
