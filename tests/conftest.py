"""Fixtures shared by the suite's own tests."""

from __future__ import annotations

import pytest

from conformance import golden


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory):
    """A fresh golden export (default layout) per test module."""
    directory = tmp_path_factory.mktemp("golden")
    golden.export(directory)
    return directory
