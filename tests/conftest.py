"""Shared test configuration.

Tests marked ``slow`` (simulation-based calibration, coverage studies) run by default, in CI too;
set ENGINE_SKIP_SLOW=1 to skip them during quick local iterations. Tests marked ``long`` (statistical
checks of several minutes on two cores, each with a faster sibling in CI) run only with ENGINE_LONG=1.
"""

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_collection_modifyitems(config, items):
    skip_slow = os.environ.get("ENGINE_SKIP_SLOW") == "1"
    run_long = os.environ.get("ENGINE_LONG") == "1"
    for item in items:
        # markers, not keywords: a parameter id such as "long" is a keyword too
        if item.get_closest_marker("long") is not None and not run_long:
            item.add_marker(pytest.mark.skip(reason="a long check: set ENGINE_LONG=1"))
        elif item.get_closest_marker("slow") is not None and skip_slow:
            item.add_marker(pytest.mark.skip(reason="ENGINE_SKIP_SLOW=1"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
