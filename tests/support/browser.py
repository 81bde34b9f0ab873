"""Headless Chromium for the dashboard's tests, from Debian's packages
(`chromium`, `chromium-driver`, which scripts/test.sh installs), driven by
selenium through the system's chromedriver: nothing is downloaded.

`python -m tests.support.browser URL OUT.png` saves a screenshot of a page (the one
in docs/ was taken of `tierstream dev` this way)."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths: tuple[str, ...], name: str) -> str:
    found = next((p for p in paths if shutil.which(p)), None) or shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install Debian's chromium and chromium-driver "
                           "(scripts/test.sh does, with apt-get)")
    return found


@contextmanager
def chromium(width: int = 1400, height: int = 2200) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM, "chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(_first(DRIVER, "chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[dict]:  # type: ignore[no-untyped-def]
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_for(driver, script: str, timeout: float = 30.0, what: str = "the page") -> object:  # type: ignore[no-untyped-def]
    """Poll a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {script}")
        time.sleep(0.05)


if __name__ == "__main__":
    url, out = sys.argv[1], sys.argv[2]
    with chromium(1400, int(sys.argv[3]) if len(sys.argv) > 3 else 2000) as d:
        d.get(url)
        wait_for(d, "document.body.dataset.loaded === 'true'", what="the dashboard's first render")
        time.sleep(2)  # let the live feed fill
        d.save_screenshot(out)
        print("console errors:", console_errors(d))
