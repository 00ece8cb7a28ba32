"""A real headless Chromium (Debian's chromium and chromium-driver), driven through Selenium's WebDriver.

Selenium is given both paths, so it never runs Selenium Manager and never downloads a browser or a driver.
"""

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

# Headless as root in a container: no sandbox, GPU, QUIC, first-run or background traffic, a fresh profile.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium_paths() -> tuple[str, str] | None:
    """Debian's chromium and chromedriver, or None when either is not installed."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextmanager
def chromium(paths: tuple[str, str], width: int = 1280, height: int = 800) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a throwaway profile, quit after."""
    browser, driver = paths
    with tempfile.TemporaryDirectory(prefix="sqlprobe-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
        try:
            session.set_page_load_timeout(30)
            yield session
        finally:
            session.quit()
