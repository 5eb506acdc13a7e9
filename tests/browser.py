"""A real headless Chromium driven by selenium, for tests of the status page.

Debian's `chromium` and `chromium-driver` packages (`/usr/bin/chromium`, `/usr/bin/chromedriver`); a missing one
fails the test under CI (`CI=true`) and skips it elsewhere, with the apt-get command that fixes it. Each browser
gets a fresh profile in the test's temporary directory and no network beyond what the page itself asks for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.servers import require_binary

__all__ = ["ARTIFACTS", "chrome", "save_screenshot"]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Screenshots and page sources of browser tests (gitignored); the path is printed by each test.
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[WebDriver]:
    """A selenium WebDriver on headless Chromium, phone-sized (412 x 915 CSS pixels), quit after the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = require_binary(CHROMIUM, "chromium")
    driver_path = require_binary(CHROMEDRIVER, "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=412,915")
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def save_screenshot(driver: WebDriver, name: str) -> Path:
    """Save a full-page screenshot under tests/artifacts/ and print where it is."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # The page's whole height, so the screenshot shows everything a technician would scroll through.
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(412, min(max(height + 120, 915), 16000))
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path
