"""Shared test configuration.

Tests marked ``slow`` (simulation-based calibration, coverage studies) run by default, in CI too;
set ENGINE_SKIP_SLOW=1 to skip them during quick local iterations.
"""

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("ENGINE_SKIP_SLOW") != "1":
        return
    skip = pytest.mark.skip(reason="ENGINE_SKIP_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
