"""`bench view` in a real browser: headless Chromium (Debian's chromium + chromedriver, driven by Selenium;
Selenium Manager never runs, nothing is downloaded) opens the site of a small store from file://. The pages
load with no console error, typing in a table's filter box narrows its rows, a header click sorts, and a
results cell's seed link opens that run's record page. `scripts/setup.sh` installs the browser."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.view import build_site
from tests.test_frame import copy_store

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (Debian: apt-get install chromium chromium-driver; scripts/setup.sh does)",
                allow_module_level=True)
from selenium import webdriver  # noqa: E402  (the dev extra: a missing selenium is an error, not a skip)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    copy_store(results, "collapse")
    return build_site(results, tmp_path_factory.mktemp("site") / "site", ["collapse"]).parent


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1400,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(driver, path: Path) -> list[dict]:
    """Load a page from file:// and return its console entries of level SEVERE."""
    driver.get(path.as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def visible_rows(driver, table_id: str) -> int:
    return driver.execute_script(
        "return Array.from(document.getElementById(arguments[0]).tBodies[0].rows)"
        ".filter(r => r.offsetParent !== null).length", table_id)


def test_pages_load_without_console_errors(site, browser):
    for page in ("index.html", "claims.html", "suite-collapse.html", *sorted(p.relative_to(site).as_posix()
                                                                           for p in (site / "runs").glob("*.html"))[:2]):
        assert open_page(browser, site / page) == [], page
        assert browser.find_element(By.TAG_NAME, "h1").text


def test_filter_narrows_a_table(site, browser):
    assert open_page(browser, site / "suite-collapse.html") == []
    table = "results-collapse"
    before = visible_rows(browser, table)
    assert before == 11
    box = browser.find_element(By.CSS_SELECTOR, f'input.filter[data-table="{table}"]')
    box.send_keys("llminit-full")
    after = visible_rows(browser, table)
    assert after == 1  # the one llminit-full cell
    assert browser.find_element(By.ID, f"{table}-count").text == f"1 of {before} rows"
    box.clear()
    box.send_keys("random embedding_size=1024")  # every word must match
    assert visible_rows(browser, table) == 1
    box.clear()
    box.send_keys(" ")  # an input event with no term: every row again
    assert visible_rows(browser, table) == before


def test_header_click_sorts(site, browser):
    open_page(browser, site / "suite-collapse.html")
    header = browser.find_element(By.XPATH, '//table[@id="results-collapse"]/thead/tr/th[text()="ndcg@10"]')
    column = header.get_attribute("cellIndex")
    values = """return Array.from(document.getElementById('results-collapse').tBodies[0].rows)
                .map(r => parseFloat(r.cells[arguments[0]].dataset.sort));"""
    header.click()
    ascending = browser.execute_script(values, int(column))
    assert ascending == sorted(ascending) and len(set(ascending)) > 1
    header.click()
    assert browser.execute_script(values, int(column)) == sorted(ascending, reverse=True)


def test_cell_opens_its_run_record(site, browser):
    assert open_page(browser, site / "index.html") == []
    browser.find_element(By.LINK_TEXT, "collapse").click()
    WebDriverWait(browser, 30).until(lambda d: d.current_url.endswith("suite-collapse.html"))
    link = browser.find_element(By.CSS_SELECTOR, "#results-collapse tbody tr:first-child a.seed")
    run_id = link.get_attribute("href").rsplit("/", 1)[1].removesuffix(".html")
    link.click()
    WebDriverWait(browser, 30).until(lambda d: d.current_url.endswith(f"runs/{run_id}.html"))
    assert browser.find_element(By.ID, "run-id").text == run_id
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    # the embedded record, parsed and pretty-printed by the page's script
    pretty = browser.execute_script("return document.getElementById('record-pretty').textContent")
    assert f'"run_id": "{run_id}"' in pretty
    metrics = browser.find_element(By.ID, f"metrics-{run_id}").text
    assert "overall" in metrics and "ndcg@10" in metrics
