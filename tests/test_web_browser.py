"""The dashboard in a real browser: Debian's headless Chromium driven by
selenium (tools/test installs chromium and chromium-driver). Every page
loads with live data and runs no injected script; retry, delete (through
the browser's confirm dialog) and a bulk cancel (through the confirmation
page) change Redis. Screenshots go to tests/artifacts/; the dashboard's
also to docs/dashboard.png when that file is missing or
GREENQ_UPDATE_SCREENSHOT=1 (so a test run leaves the tree clean)."""

from __future__ import annotations

import os
import shutil

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from greenq.web import make_app

import web_live
from web_live import XSS_ERROR, Served

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")
DOCS_SCREENSHOT = os.path.join(ROOT, "docs", "dashboard.png")

PAGES = ("/", "/running", "/locked", "/waiting?resource=res-a", "/pending", "/scheduled",
         "/schedules", "/processes", "/failed")


@pytest.fixture(scope="module")
def browser():
    for program in ("chromium", "chromedriver"):
        assert shutil.which(program), f"{program} is missing: apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    os.makedirs(ARTIFACTS, exist_ok=True)
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture
def site(make_queue):
    live = web_live.populate(make_queue)
    served = Served(make_app(live.queue))
    yield live, served
    served.close()
    web_live.release()


def shoot(driver, name: str) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name + ".png")
    driver.set_window_size(1280, max(800, min(3000, driver.execute_script(
        "return document.body.scrollHeight") + 40)))
    assert driver.save_screenshot(path)
    return path


def after_click(driver, selector: str, expected: str) -> str:
    """The text of `selector` once it shows `expected`, on the page a click
    leads to (a form's POST and redirect: the click returns before that
    page is there, and the page before may have a `selector` too)."""
    WebDriverWait(driver, 15).until(expected_conditions.text_to_be_present_in_element(
        (By.CSS_SELECTOR, selector), expected))
    return driver.find_element(By.CSS_SELECTOR, selector).text


def no_alert(driver) -> bool:
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_every_page_loads_in_chromium_and_runs_no_injected_script(browser, site):
    live, served = site
    for path in PAGES:
        browser.get(served.url + path)
        assert browser.find_element(By.TAG_NAME, "h1").text
        assert "Internal Server Error" not in browser.page_source
        assert no_alert(browser), f"an injected script ran on {path}"
        shoot(browser, "page" + path.replace("/", "_").replace("?", "_").replace("=", "_"))
    browser.get(f"{served.url}/jobs/{live.failed[0]}")
    assert XSS_ERROR in browser.find_element(By.CSS_SELECTOR, "pre.error").text  # shown as text
    assert no_alert(browser)
    shoot(browser, "job")
    browser.get(served.url + "/")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar.failed")
    shoot(browser, "dashboard")


def test_a_working_day_dashboard_for_the_readme(browser, make_queue):
    live = web_live.showcase(make_queue)
    served = Served(make_app(live.queue))
    try:
        browser.set_window_size(1280, 1250)
        browser.get(served.url + "/")
        assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar.succeeded")
        assert len(browser.find_elements(By.XPATH, "//a[starts-with(text(), 'album:')]")) >= 3
        assert browser.save_screenshot(os.path.join(ARTIFACTS, "readme_dashboard.png"))
    finally:
        served.close()
        web_live.release()
    if not os.path.exists(DOCS_SCREENSHOT) or os.environ.get("GREENQ_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(os.path.join(ARTIFACTS, "readme_dashboard.png"), DOCS_SCREENSHOT)


def test_retry_delete_and_bulk_cancel_by_clicking(browser, site, r):
    live, served = site
    queue = live.queue
    browser.get(served.url + "/failed")
    row = browser.find_element(By.XPATH, f"//tr[.//a[text()='{live.failed[0]}']]")
    row.find_element(By.CSS_SELECTOR, "button.retry").click()
    assert after_click(browser, ".done", "1 job retried") == "1 job retried"
    assert live.failed[0].encode() not in r.lrange(queue.keys.failed, 0, -1)
    assert r.hget(queue.keys.prefix + "job:" + live.failed[0], "state") in (b"waiting",
                                                                           b"pending")
    shoot(browser, "after_retry")

    row = browser.find_element(By.XPATH, f"//tr[.//a[text()='{live.failed[1]}']]")
    row.find_element(By.CSS_SELECTOR, "button.delete").click()
    alert = browser.switch_to.alert
    assert live.failed[1] in alert.text
    alert.accept()
    assert after_click(browser, ".done", "1 job deleted") == "1 job deleted"
    assert r.llen(queue.keys.failed) == 0

    browser.get(served.url + "/pending")
    browser.find_element(By.CSS_SELECTOR, "form.bulk button.cancel").click()
    question = after_click(browser, ".question", "pending job")
    assert question.startswith("Cancel 4 pending jobs"), question
    shoot(browser, "confirm")
    assert [queue.get_job(job_id).state for job_id in live.pending] == ["pending"] * 4
    browser.find_element(By.ID, "confirm").click()
    assert after_click(browser, ".done", "4 jobs cancelled") == "4 jobs cancelled"
    assert [queue.get_job(job_id).state for job_id in live.pending] == ["cancelled"] * 4
