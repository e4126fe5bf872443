"""Drives Cairn's web UI in real headless Chromium (Debian's chromium and
chromium-driver) with Selenium, the way an operator uses it: overview, job
page with its graph, checkpoints tab growing, trigger a savepoint, stop with
a savepoint, restore from it through `cairn dashboard`, see the new job run.

Run by crates/cairn-cli/tests/ui_browser.rs, which starts the job and the
dashboard and checks the files and jobs afterwards. Prints one JSON line
with what it saw. Every wait has a deadline.
"""

import argparse
import json
import os
import re
import sys
import tempfile

os.environ.setdefault("SE_OFFLINE", "true")  # never download a driver or browser

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

p = argparse.ArgumentParser()
p.add_argument("--dashboard", required=True, help="the dashboard's address with #token=...")
p.add_argument("--job-url", required=True, help="the job's own REST server")
p.add_argument("--jid", required=True)
p.add_argument("--savepoint-dir", required=True)
p.add_argument("--shots", required=True, help="directory for screenshots")
p.add_argument("--chromium", default="/usr/bin/chromium")
p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
a = p.parse_args()

os.makedirs(a.shots, exist_ok=True)
profile = tempfile.mkdtemp(prefix="cairn-chromium-")
opts = webdriver.ChromeOptions()
opts.binary_location = a.chromium
for arg in [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--user-data-dir=" + profile,
    "--window-size=1400,1050",
]:
    opts.add_argument(arg)
drv = webdriver.Chrome(service=Service(a.chromedriver), options=opts)
drv.set_page_load_timeout(60)
seen = {}


def wait(what, fn, timeout=60):
    try:
        # The page redraws itself every second: an element found a moment
        # ago may be gone; just look again.
        return WebDriverWait(
            drv, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
        ).until(lambda d: fn())
    except Exception as e:
        shot("failure-" + re.sub(r"\W+", "-", what))
        raise SystemExit(f"timed out waiting for {what}: {e}\npage: {drv.find_element(By.TAG_NAME, 'body').text[:3000]}")


def shot(name):
    drv.save_screenshot(os.path.join(a.shots, name + ".png"))


def css(sel):
    return drv.find_elements(By.CSS_SELECTOR, sel)


def act(what, sel, fn):
    """Finds `sel` and does `fn(element)`, looking again if a redraw
    replaced the element in between."""
    def attempt():
        els = css(sel)
        if not els:
            return False
        fn(els[0])
        return True
    wait(what, attempt)


def click(what, sel):
    act(what, sel, lambda el: el.click())


def type_into(what, sel, value):
    def fill(el):
        el.click()  # focused fields are not redrawn
        el.clear()
        el.send_keys(value)
    act(what, sel, fill)


def num(sel):
    try:
        return int(text(sel))
    except ValueError:
        return -1


def text(sel):
    try:
        els = css(sel)
        return els[0].text if els else ""
    except StaleElementReferenceException:
        return ""


try:
    # The job's own server serves the same UI.
    drv.get(a.job_url + "/#/job/" + a.jid)
    wait("the job's own UI", lambda: len(css("#job-graph g.vertex")) >= 2)
    shot("job-server-ui")

    # Dashboard: the overview lists the job.
    drv.get(a.dashboard)
    wait("the job in the overview", lambda: css(f'#jobs-table tr[data-jid="{a.jid}"]'))
    wait("records counted in the overview", lambda: text(f'#jobs-table tr[data-jid="{a.jid}"] .records-in') not in ("", "–", "0"))
    seen["overview_parallelism"] = text(f'#jobs-table tr[data-jid="{a.jid}"] .parallelism')
    shot("overview")

    # The job page: graph with chains, edges and live rates.
    click("the job's row", f'#jobs-table tr[data-jid="{a.jid}"] a')
    wait("the job graph", lambda: len(css("#job-graph g.vertex")) >= 2 and len(css("#job-graph g.edge")) >= 1)
    wait("rates on the graph", lambda: re.search(r"in [1-9]", text("#job-graph")) is not None)
    seen["edges"] = [e.text for e in css("#job-graph g.edge text")]
    seen["operators"] = [r.get_attribute("data-uid") for r in css("#operators-table tr[data-uid]")]
    shot("job")

    # Checkpoints tab: the count grows by itself.
    click("the checkpoints tab", "#tab-checkpoints")
    wait("checkpoint statistics", lambda: num('[data-count="completed"] b') >= 0)
    first = num('[data-count="completed"] b')
    second = wait("a new checkpoint", lambda: (lambda n: n if n > first else False)(num('[data-count="completed"] b')))
    wait("the history table", lambda: len(css("#cp-history tr[data-checkpoint]")) >= 1)
    seen["checkpoints_grew"] = [first, second]
    # Read in one script each: the page redraws itself every second.
    seen["checkpoint_types"] = wait("the checkpoint types", lambda: drv.execute_script(
        "return [...new Set([...document.querySelectorAll('#cp-history td[data-type]')].map((t) => t.dataset.type))].sort();") or False)
    seen["in_flight_column"] = "In-flight data" in wait("the history header", lambda: drv.execute_script(
        "const t = document.querySelector('#cp-history thead'); return t ? t.textContent : null;"))
    seen["config_unaligned"] = wait("the unaligned setting", lambda: drv.execute_script(
        "for (const r of document.querySelectorAll('#cp-config tr')) {"
        " const th = r.querySelector('th'); if (th && th.textContent === 'Unaligned checkpoints') return r.querySelector('td').textContent; }"
        " return null;"))
    shot("checkpoints")

    # Trigger a savepoint into a directory of our choosing (the dashboard
    # talks to the job over its trusted socket: any directory is fine).
    click("the overview tab", "#tab-overview")
    type_into("the savepoint directory", "#sp-dir", a.savepoint_dir)
    click("the savepoint button", "#btn-savepoint")
    done = wait("the savepoint result", lambda: (css("#savepoint-result.ok") or [None])[0], timeout=120)
    seen["savepoint"] = done.text.split("Savepoint completed: ", 1)[1].strip()
    shot("savepoint")

    # Stop with a savepoint.
    click("the stop button", "#btn-stop")
    done = wait("the stop result", lambda: (css("#stop-result.ok") or [None])[0], timeout=180)
    seen["stop_savepoint"] = done.text.split("Stopped with savepoint: ", 1)[1].strip()
    wait("the job to end", lambda: "FINISHED" in text("h1"), timeout=120)
    shot("stopped")

    # Restore from the stop's savepoint through the dashboard, with another
    # parallelism, as `cairn run -s` does.
    drv.get(a.dashboard.split("#")[0] + "#/")
    sp = seen["stop_savepoint"]
    wait("the savepoint offered for restore", lambda: any(o.get_attribute("value") == sp for o in css("#restore-snapshot option")))
    type_into("the parallelism", "#restore-parallelism", "3")
    act("the snapshot choice", "#restore-snapshot", lambda el: Select(el).select_by_value(sp))
    click("the start button", "#btn-restore")
    wait("the restored job", lambda: text("#restored-job") != "", timeout=120)
    seen["restored_jid"] = text("#restored-job").strip()
    shot("restore")
    click("the restored job's link", "#restored-job")
    wait("the restored job running", lambda: "RUNNING" in text("h1"), timeout=60)
    wait("its restore source", lambda: text("#restored-from") == sp)
    wait("its graph", lambda: len(css("#job-graph g.vertex")) >= 2)
    wait("records flowing again", lambda: re.search(r"in [1-9]", text("#job-graph")) is not None)
    shot("restored-job")
    click("the checkpoints tab", "#tab-checkpoints")
    wait("the restore in the checkpoints tab", lambda: text('[data-count="restored"] b') == "1")
    shot("restored-checkpoints")
    print(json.dumps(seen))
finally:
    drv.quit()
