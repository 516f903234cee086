"""The system Chromium, headless, driven by Selenium through Debian's chromedriver.

No browser or driver is downloaded at run time: .ci/run installs Debian's ``chromium`` and
``chromium-driver``, and Selenium is pointed at them (its own manager never runs). Each
browser gets a fresh profile directory, and the flags keep it off the network except for
the server under test.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # The server's certificate is self-signed, as a fresh server-ext's is; devices pin it,
    # a phone behind a reverse proxy sees a real one (docs/web.md).
    "--ignore-certificate-errors",
    "--window-size=1100,1400",
)


def require_chromium() -> None:
    """In CI a missing browser is a failure (.ci/run installs it); elsewhere a skip."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    import os

    message = "Debian's chromium and chromium-driver are needed (apt-get install them)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def chromium(profile: Path, *, width: int | None = None) -> webdriver.Chrome:
    require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    if width is not None:
        options.add_argument(f"--window-size={width},900")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    return driver


def wait_for(driver: webdriver.Chrome, check: Callable[[Any], Any], timeout: float = 10) -> Any:
    """Poll ``check`` until it is true. An element missing, or replaced while it was read (a
    form post's answer loading), is "not yet", not a failure: the next poll reads again."""
    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.05,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(check)


def text_of(driver: webdriver.Chrome, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def close(driver: webdriver.Chrome, profile: Path) -> None:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


__all__ = ["chromium", "close", "require_chromium", "text_of", "wait_for"]
