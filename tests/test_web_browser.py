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
    dashboard = shoot(browser, "dashboard")
    if not os.path.exists(DOCS_SCREENSHOT) or os.environ.get("GREENQ_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(dashboard, DOCS_SCREENSHOT)


def test_retry_delete_and_bulk_cancel_by_clicking(browser, site, r):
    live, served = site
    queue = live.queue
    browser.get(served.url + "/failed")
    row = browser.find_element(By.XPATH, f"//tr[.//a[text()='{live.failed[0]}']]")
    row.find_element(By.CSS_SELECTOR, "button.retry").click()
    assert "1 job retried" in browser.find_element(By.CSS_SELECTOR, ".done").text
    assert live.failed[0].encode() not in r.lrange(queue.keys.failed, 0, -1)
    assert r.hget(queue.keys.prefix + "job:" + live.failed[0], "state") in (b"waiting",
                                                                           b"pending")
    shoot(browser, "after_retry")

    row = browser.find_element(By.XPATH, f"//tr[.//a[text()='{live.failed[1]}']]")
    row.find_element(By.CSS_SELECTOR, "button.delete").click()
    alert = browser.switch_to.alert
    assert live.failed[1] in alert.text
    alert.accept()
    assert "1 job deleted" in browser.find_element(By.CSS_SELECTOR, ".done").text
    assert r.llen(queue.keys.failed) == 0

    browser.get(served.url + "/pending")
    browser.find_element(By.CSS_SELECTOR, "form.bulk button.cancel").click()
    question = browser.find_element(By.CSS_SELECTOR, ".question").text
    assert question.startswith("Cancel 4 pending jobs"), question
    shoot(browser, "confirm")
    assert [queue.get_job(job_id).state for job_id in live.pending] == ["pending"] * 4
    browser.find_element(By.ID, "confirm").click()
    assert "4 jobs cancelled" in browser.find_element(By.CSS_SELECTOR, ".done").text
    assert [queue.get_job(job_id).state for job_id in live.pending] == ["cancelled"] * 4
