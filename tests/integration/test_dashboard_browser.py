"""The dashboard in a real browser: `invoke dashboard` serves a bucket of real records (the
controller and sweep code on the in-memory provider, tests/support/run_records.py), and
headless Chromium (Debian's chromium and chromium-driver, through selenium) opens the run
list, follows the sweep, finds its plots drawn, reads a log and a job's history. The
screenshot of the sweep's page is kept under .mlbatch/test-artifacts/dashboard/.
"""

from __future__ import annotations

import shutil
import signal
import subprocess

import pytest

from mlbatch.core.bucket import FileBucket
from tests.conftest import ROOT
from tests.integration.helpers import INVOKE, cli_env, snapshot
from tests.support.run_records import make_records

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / ".mlbatch" / "test-artifacts" / "dashboard"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1500",
)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard")
    bucket = FileBucket(root / "bucket")
    made = make_records(bucket, root / "instances")
    return bucket, made.runs


@pytest.fixture(scope="module")
def served(records):
    """`invoke dashboard --port 0` as a user starts it; stopped with SIGTERM, as a service manager does."""
    bucket, _ = records
    before = snapshot(bucket.uri)
    proc = subprocess.Popen(
        [INVOKE, "dashboard", "--port", "0"],
        cwd=ROOT,
        env=cli_env(bucket.uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()  # blocks until the server says where it listens, or exits
    assert "at http://127.0.0.1:" in first, first + proc.stderr.read()
    url = first.split(" at ", 1)[1].split()[0]
    yield url
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "dashboard stopped (SIGTERM)" in out
    assert snapshot(bucket.uri) == before, "the dashboard wrote nothing to the bucket"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail("Debian's chromium and chromium-driver are needed: scripts/bootstrap installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    yield driver
    driver.quit()


def drawn_points(driver, name: str, group: str = "points") -> list[dict] | None:
    """The markers of a plot's group, each with its on-screen box and whether its centre lies
    inside the plot's axes (their background patch, the first path of `axes-NAME`)."""
    return driver.execute_script(
        """
        const group = document.getElementById(arguments[1] + '-' + arguments[0]);
        const axes = document.getElementById('axes-' + arguments[0]);
        if (!group || !axes) return null;
        const frame = axes.querySelector('path').getBoundingClientRect();
        return Array.from(group.querySelectorAll('use')).map(u => {
            const r = u.getBoundingClientRect();
            const cx = r.x + r.width / 2, cy = r.y + r.height / 2;
            return {x: cx, y: cy, w: r.width, h: r.height,
                    inside: cx > frame.left && cx < frame.right && cy > frame.top && cy < frame.bottom};
        });
        """,
        name,
        group,
    )


def test_the_run_list_leads_to_a_sweep_whose_plots_are_drawn(served, browser, records, capsys):
    from selenium.webdriver.common.by import By

    _, made = records
    browser.get(served)
    assert browser.title == "runs · mlbatch"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.runs tbody tr")
    assert len(rows) == 4
    sweep_row = next(r for r in rows if made["sweep"] in r.text)
    assert "tasks_failed" in sweep_row.text and "sweep of 6 tasks" in sweep_row.text
    assert "best task 4: accuracy=0.95" in sweep_row.text
    sweep_row.find_element(By.LINK_TEXT, made["sweep"]).click()  # follow the sweep

    assert browser.current_url.endswith(f"/run-{made['sweep']}.html")
    assert made["sweep"] in browser.find_element(By.TAG_NAME, "h1").text
    for param in ("n_estimators", "criterion"):
        points = drawn_points(browser, param)
        assert points is not None, f"the plot of accuracy against {param} is on the page"
        assert len(points) == 5, "one point per task with an accuracy (task 5 failed)"
        assert all(p["w"] > 0 and p["h"] > 0 and p["inside"] for p in points), f"drawn inside the plot: {points}"
        assert len({(round(p["x"]), round(p["y"])) for p in points}) >= 4, "at distinct places"
        (star,) = drawn_points(browser, param, "starred")
        assert star["inside"], "the best task is starred"
    tasks = browser.find_elements(By.CSS_SELECTOR, "table.tasks tbody tr")
    assert [t.find_element(By.CSS_SELECTOR, "td").text for t in tasks] == ["4", "3", "2", "1", "0", "5"]
    assert "tasks/4/results" in tasks[0].text and "0.95" in tasks[0].text

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "sweep.png"
    browser.save_screenshot(str(screenshot))
    with capsys.disabled():
        print(f"\n  dashboard screenshot of the sweep's page: {screenshot}")

    tasks[-1].find_element(By.LINK_TEXT, "log").click()  # the failed task's log
    section = browser.find_element(By.ID, "task-5")
    assert "out of memory" in section.text


def test_a_log_shows_control_characters_and_markup_as_text(served, browser, records):
    from selenium.webdriver.common.by import By

    _, made = records
    browser.get(f"{served}log-{made['v1.0.0']}.html")
    log = browser.find_element(By.CSS_SELECTOR, "section.log pre")
    assert "^[[31mred^[[0m <b>not bold</b>" in log.text, "ESC spelled out, the job's markup shown as text"
    assert log.find_elements(By.TAG_NAME, "b") == [], "nothing the job printed became an element"


def test_a_jobs_metric_across_releases(served, browser, records):
    from selenium.webdriver.common.by import By

    browser.get(served)
    browser.find_element(By.CSS_SELECTOR, "p.jobs a").click()
    assert browser.current_url.endswith("/job-train.html")
    points = drawn_points(browser, "release-accuracy")
    assert points is not None and len(points) == 3, "v1.0.0's run, v1.1.0's run and the sweep's best task"
    assert all(p["inside"] for p in points)
    releases = [r.text.split()[0] for r in browser.find_elements(By.CSS_SELECTOR, "table.releases tbody tr")]
    assert releases == ["v1.1.0", "v1.0.0"]
