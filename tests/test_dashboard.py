"""The dashboard: what it shows (plain code), who may see it, and a person using it in a real
headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium; `make test`
installs them) against a running system: create a session, watch its QR code appear and
rotate, let the simulated phone scan it, see the row turn `connected` without a reload, log
it out and see `logged_out`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from services.devstack.probes import EventTap, call, call_ok, wait_until
from services.devstack.processes import MONITOR_SERVICE
from services.devstack.scenarios import pair
from services.health_monitor import board
from services.health_monitor.view import SessionHealth

T0 = datetime(2026, 12, 6, tzinfo=UTC)
TOKEN = "test-dashboard-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Set to a path (docs/dashboard.png) to keep the screenshot the browser test takes.
SCREENSHOT_ENV = "WA_DASHBOARD_SCREENSHOT"


# -- what the board shows, without servers ------------------------------------------------
def health(sid: str, state: str, node: str | None = "n1", label: str = "") -> SessionHealth:
    return SessionHealth(session_id=sid, label=label, state=state, reason=None, node=node, since=T0,
                         owner=node, owner_alive=node is not None, last_status=None)  # fmt: skip


def test_rows_carry_queue_depths_and_the_actions_each_state_allows() -> None:
    rows = board.rows([health("a", "connected"), health("b", "created", None), health("c", "pairing")], {"a": 3})
    assert [(r.session.session_id, r.queue_depth) for r in rows] == [("a", 3), ("b", 0), ("c", 0)]
    assert rows[0].actions == ("reconnect", "logout", "delete")
    assert rows[1].actions == ("pair", "delete")
    assert rows[2].actions == ("logout", "delete")
    assert board.actions_for("logged_out") == ("pair", "delete")
    assert board.actions_for("stopped") == ("pair", "reconnect", "logout", "delete")


def test_the_filter_matches_state_node_and_text_and_counts_everything() -> None:
    rows = board.rows(
        [health("shop-b", "connected", label="Bakery"), health("shop-a", "connected", "n2"), health("x", "banned")], {}
    )
    everything = board.select(rows, board.Filters.of(None, None, None))
    assert [r.session.session_id for r in everything.shown] == ["shop-a", "shop-b", "x"]
    assert (everything.by_state["connected"], everything.by_state["banned"], everything.nodes) == (2, 1, ["n1", "n2"])
    assert [r.session.session_id for r in board.select(rows, board.Filters.of("connected", "n1", None)).shown] == ["shop-b"]
    assert [r.session.session_id for r in board.select(rows, board.Filters.of(None, None, " BAKE ")).shown] == ["shop-b"]
    # A state that does not exist filters nothing (the URL may have been typed by hand).
    assert board.Filters.of("sleepy", "", "").state == ""
    limited = board.select(rows, board.Filters(), limit=2)
    assert (len(limited.shown), limited.matching) == (2, 3)
    assert board.Filters.of("banned", "", "shop").query() == {"state": "banned", "q": "shop"}


def test_ages_read_like_a_person_would_say_them_and_qr_codes_are_svg() -> None:
    assert [board.age(s) for s in (None, 2.345, 42, 125, 7300, 200000)] == ["-", "2.3 s", "42 s", "2 min", "2 h", "2 d"]
    svg = board.qr_svg("2@abc,def,ghi")
    assert svg.startswith("<svg") and "path" in svg


# -- the real thing -----------------------------------------------------------------------
def chromium() -> webdriver.Chrome:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `make test` installs chromium and chromium-driver (apt-get)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1360,1180"):
        options.add_argument(arg)
    # The driver is named: Selenium must not try to download one (there is no network).
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def text_of(driver: webdriver.Chrome, css: str) -> str | None:
    try:
        return driver.find_element(By.CSS_SELECTOR, css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return None  # not there yet, or swapped out while we looked


def qr_markup(driver: webdriver.Chrome) -> str | None:
    try:
        return driver.find_element(By.CSS_SELECTOR, "#pairing .qr svg").get_attribute("outerHTML")
    except (NoSuchElementException, StaleElementReferenceException):
        return None


async def in_browser(driver: webdriver.Chrome, what: str, check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """Wait until `check(driver)` (run off the loop: Selenium blocks) is truthy."""
    return await wait_until(lambda: asyncio.to_thread(check, driver), timeout=timeout, interval=0.2, what=what)


@pytest.fixture
def driver():  # type: ignore[no-untyped-def]
    browser = chromium()
    yield browser
    browser.quit()


async def test_pair_in_the_browser_then_log_out_all_live(settings, nc, stack, driver, tmp_path) -> None:
    s = settings.subjects
    # Short QR rotation, so the page can be seen following it.
    stack.start_all(nodes=1, dashboard_token=TOKEN, sim_qr_first=2.0, sim_qr_next=2.0, sim_qr_codes=10)
    base = stack.procs[MONITOR_SERVICE].metrics_url.removesuffix("/metrics")
    tap = await EventTap(nc, settings).start()
    await wait_until(lambda: call(nc, s.session_list, {}, timeout=2), timeout=60, what="the session API")
    for sid, label in (("bakery", "Bakery on Main St"), ("florist", "Florist")):
        await pair(nc, settings, tap, sid, label)
    await call_ok(nc, s.send("bakery"), {"id": "hello-1", "to": "15550001111", "text": "Your bread is ready"})

    async with httpx.AsyncClient(base_url=base) as http:
        await wait_until(lambda: http.get("/healthz"), timeout=30, what="the health monitor")
        # Nothing without the token: pages send to the login form, data and actions are refused.
        page = await http.get("/")
        assert (page.status_code, page.headers["location"]) == (303, "/ui/login?next=/")
        assert (await http.get("/ui/stream/overview")).status_code == 401
        refused = await http.post("/ui/sessions/bakery/logout")
        assert (refused.status_code, refused.headers["hx-redirect"]) == (401, "/ui/login")
        assert (await http.post("/ui/login", data={"token": "wrong"})).status_code == 401
        # A login returns to a page of this site only.
        for target, landing in (("/ui/sessions/bakery", "/ui/sessions/bakery"), ("//evil.example", "/")):
            login = await http.post("/ui/login", data={"token": TOKEN, "next": target})
            assert (login.status_code, login.headers["location"]) == (303, landing)
        http.cookies.clear()
        assert (await http.get("/ui/sessions/bakery", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
        nowhere = await http.get("/no/such/page")
        assert (nowhere.status_code, nowhere.json()) == (404, {"detail": "Not Found"})
        # Pairing by code, as a script would (the bearer token instead of the cookie).
        await call_ok(nc, s.session_create, {"session_id": "by-code"})
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        coded = await http.post("/ui/sessions/by-code/pair", data={"method": "code", "phone": "15551234567"},
                                headers=bearer, timeout=40)  # fmt: skip
        assert coded.status_code == 200 and re.search(r'class="pair-code">\w{4}-\w{4}<', coded.text), coded.text
        refused = await http.post("/ui/sessions/florist/pair", data={"method": "qr"}, headers=bearer)
        assert "pair florist: conflict: session is already linked" in refused.text
        deleted = await http.post("/ui/sessions/by-code/delete", headers=bearer, timeout=40)
        assert "delete by-code: deleted" in deleted.text
        assert (await call(nc, s.session("by-code", "get"))).error.code == "not_found"
        reconnected = await http.post("/ui/sessions/florist/reconnect", headers=bearer, timeout=40)
        assert re.search(r"reconnect florist: now (connecting|connected)<", reconnected.text), reconnected.text
        unknown = await http.post("/ui/sessions/florist/explode", headers=bearer)
        assert unknown.status_code == 422  # not an action

    # The link `make run` prints logs the browser in and lands on the board.
    await asyncio.to_thread(driver.get, f"{base}/ui/login?token={TOKEN}")
    await in_browser(driver, "the board's rows", lambda d: text_of(d, "#row-florist .state") == "connected")
    driver.execute_script("window.stillTheSamePage = true")  # a reload would forget it

    # Create and pair: the QR code appears, and follows the rotation.
    form = driver.find_element(By.ID, "create")
    form.find_element(By.NAME, "session_id").send_keys("demo")
    form.find_element(By.NAME, "label").send_keys("Demo shop")
    await asyncio.to_thread(form.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
    first = await in_browser(driver, "a QR code", qr_markup)
    await in_browser(driver, "the next QR code", lambda d: qr_markup(d) not in (None, first))
    shot = tmp_path / "dashboard.png"  # the board with two numbers linked and one pairing
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copy(shot, os.environ[SCREENSHOT_ENV])

    # The phone scans it: the row turns connected, live.
    await call_ok(nc, s.sim("demo", "scan"), {})
    await in_browser(driver, "demo connected on the board", lambda d: text_of(d, "#row-demo .state") == "connected")
    await in_browser(driver, "the pairing panel", lambda d: "connected" in (text_of(d, "#pairing .live") or ""))

    # Log out from the row (a confirmation first): logged_out, live.
    await asyncio.to_thread(driver.find_element(By.CSS_SELECTOR, "#row-demo button.logout").click)
    await asyncio.to_thread(lambda: driver.switch_to.alert.accept())
    await in_browser(driver, "demo logged out", lambda d: text_of(d, "#row-demo .state") == "logged_out")
    assert "logout demo: now logged_out" in (text_of(driver, "#flash") or "")
    # The filter narrows the rows (and the live stream behind them) without a reload.
    search = driver.find_element(By.CSS_SELECTOR, "#filters input[name=q]")
    await asyncio.to_thread(search.send_keys, "flor")
    await in_browser(driver, "only florist", lambda d: text_of(d, "#row-florist .state") and not text_of(d, "#row-bakery"))
    assert driver.execute_script("return window.stillTheSamePage") is True
    assert [e["kind"] for e in tap.of("demo", "alert")] == []  # a logout asked for is no alert

    # The session's page: its status history and sends, from persistence.
    await asyncio.to_thread(driver.get, f"{base}/ui/sessions/bakery")
    await in_browser(driver, "the send in history", lambda d: "hello-1" in (text_of(d, "#history") or ""))
    assert "15550001111" in text_of(driver, "#history")  # the recipient is stored now

    # SIGTERM while the page's live stream is open: the monitor ends it and stops cleanly.
    monitor = stack.procs[MONITOR_SERVICE]
    assert await asyncio.to_thread(stack.stop, MONITOR_SERVICE) == 0
    assert "graceful shutdown exceeded" not in monitor.log_path.read_text()
    await tap.stop()

