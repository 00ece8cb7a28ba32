"""Fixtures of the end-to-end tests."""

import pytest

from tests.helpers import missing
from tests.prometheus import prometheus_binary


@pytest.fixture(scope="session")
def prometheus() -> str:
    """Debian's prometheus; without it these tests fail under CI and skip elsewhere."""
    binary = prometheus_binary()
    if binary is None:
        missing("prometheus is not installed: apt-get install prometheus")
    return binary
