"""A page in a real headless Chromium (Debian's chromium and chromium-driver, installed by
``scripts/install.sh --test``), driven with Selenium: load it, read its console, screenshot it.

    python tests/browser.py PAGE.html SHOT.png     # exit 1 if the page logged errors
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"


def chromium(width: int = 1280, height: int = 2000):
    """A headless Chromium with its console log kept; fails with the install command when missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, DRIVER):
        if not Path(path).exists() and shutil.which(Path(path).name) is None:
            raise RuntimeError(
                f"{path} is missing: run `bash scripts/install.sh cpu --test` (apt: chromium chromium-driver)"
            )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def console_errors(driver) -> list[str]:
    """The page's console messages of level SEVERE (script errors, failed loads)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def main(page: str, shot: str) -> int:
    driver = chromium(1280, 1700)  # the top of the page: the summary, the genealogy and the plots
    try:
        driver.get(Path(page).resolve().as_uri())
        errors = console_errors(driver)
        driver.save_screenshot(shot)
    finally:
        driver.quit()
    for error in errors:
        print(f"console error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
