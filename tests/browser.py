"""Headless Chromium for page tests: Debian's chromium and chromedriver driven by Selenium.

Nothing is downloaded at run time: the driver is given by path, so Selenium Manager never looks for one.
`make test` installs both packages first (`make browser`); when they are missing the test fails and says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# What works headless as root in a container, with no traffic of the browser's own.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]


@contextmanager
def chromium(profile: Path, log: Path) -> Iterator[WebDriver]:
    """A fresh headless browser with its own profile folder; chromedriver's log goes to ``log``."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: the page test needs Debian's chromium and chromium-driver. "
                    "Run `make browser` as root, or `apt-get install chromium chromium-driver`.", pytrace=False)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER), log_output=str(log)))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, script: str, timeout: float = 20) -> object:
    """Wait until the JavaScript expression ``script`` is truthy on the page; returns its value."""
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(f"return {script}"))
