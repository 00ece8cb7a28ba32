"""The browser suite's fixture: Debian's chromium and chromedriver."""

import pytest

from tests.chromium import chromium_paths
from tests.helpers import missing


@pytest.fixture(scope="session")
def chromium_binaries() -> tuple[str, str]:
    """Debian's chromium and chromedriver; without them the browser tests fail under CI and skip elsewhere."""
    paths = chromium_paths()
    if paths is None:
        missing("Chromium is not installed (no chromium / chromedriver): apt-get install chromium chromium-driver")
    return paths
