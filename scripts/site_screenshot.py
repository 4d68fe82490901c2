"""Screenshot of the results site for the README: builds the site (`bench.view.build_site`) from a results
folder into a temporary folder, opens a page of it in headless Chromium (Debian's chromium and
chromedriver; nothing downloaded) and saves a PNG at 1400x900.

    python scripts/site_screenshot.py [--results results] [--page suite-paradigms.html] [--out results/figures/site.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def chromium_driver(user_data_dir: Path, width: int = 1400, height: int = 900):
    """A headless Chromium WebDriver on Debian's chromium + chromedriver (Selenium Manager never runs: the
    driver and browser are given), with the browser's console log kept (`goog:loggingPrefs`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--page", default="suite-paradigms.html", help="the page of the site to capture (the README's: "
                        "suite-paradigms.html)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "figures" / "site.png")
    parser.add_argument("--suite", action="append", help="only these suites (default all)")
    args = parser.parse_args(argv)
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        print(f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver", file=sys.stderr)
        return 2
    from bench.view import build_site

    with tempfile.TemporaryDirectory() as tmp:
        build_site(args.results, Path(tmp) / "site", args.suite)
        driver = chromium_driver(Path(tmp) / "profile")
        try:
            # the window size includes the browser's frame: size the viewport itself to 1400x900
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False})
            page, _, anchor = args.page.partition("#")
            driver.get((Path(tmp) / "site" / page).as_uri() + (f"#{anchor}" if anchor else ""))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
