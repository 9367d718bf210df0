"""Shared safely: a password gates every page behind a login form; without one, an address other than
loopback makes the dashboard read-only and says why; dead-letter actions only for a viewer who may act; no
Streamlit developer chrome. The logic on AppTest, then the real ``hopscope dashboard`` on 0.0.0.0 in headless
Chromium (one browser for the file).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright
from streamlit.testing.v1 import AppTest

from hopscope.collector.loopback import is_loopback_host
from hopscope.dashboard.access import WRONG_PASSWORD_DELAY_SECONDS
from hopscope.dashboard.config import PASSWORD_ENV
from tests.helpers.dashboard_harness import CHROMIUM_ARGS, dashboard_env, run_page, running_dashboard
from tests.helpers.servers import HOPSCOPE, ShopDatabase, free_port

PASSWORD = "correct horse battery staple ✓"  # not ASCII: compared as bytes
EVERY_INTERFACE = "0.0.0.0"  # every interface: not loopback
READ_ONLY = f"Read-only: listening on {EVERY_INTERFACE} without a password; dead-letter actions are off."
# What the shop's data shows on its pages: none of it may reach a viewer who has not logged in.
SHOP_WORDS = ("orders-api", "billing", "shipping", "o-3", "flow(s)", "POST")
ACTION_BUTTON = re.compile("Redrive|Delete", re.IGNORECASE)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        (EVERY_INTERFACE, False),
        ("::", False),
        ("", False),  # Streamlit with no address listens on every interface
        (None, False),
        ("192.0.2.10", False),
        ("dashboard.example.com", False),
        ("localhost.example.com", False),
        ("127.0.0.1.nip.io", False),
    ],
)
def test_only_loopback_addresses_count_as_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def all_text(app: AppTest) -> str:
    kinds = ("title", "caption", "markdown", "subheader", "header", "error", "info", "warning", "success")
    values = [str(element.value) for kind in kinds for element in getattr(app, kind)]
    values += [str(element.label) for element in (*app.button, *app.text_input, *app.metric)]
    return "\n".join(values)


def test_a_non_loopback_address_without_a_password_is_read_only_and_says_why(shop: ShopDatabase) -> None:
    with dashboard_env(shop.db, aws_endpoint_url=shop.moto.url, host=EVERY_INTERFACE):
        overview = run_page()
        dead_letters = run_page("dead_letters")
    for app in (overview, dead_letters):
        assert not app.exception
        assert [caption.value for caption in app.sidebar.caption if "Read-only" in caption.value] == [
            f":material/lock: {READ_ONLY}"
        ]
    # the data is there, the actions are not (absent, not disabled), and the page says why
    assert len(dead_letters.dataframe[0].value) == 1
    assert not [button.label for button in dead_letters.button if ACTION_BUTTON.search(button.label)]
    assert not [button.key for button in dead_letters.button if "shipping-dlq" in (button.key or "")]
    assert any(READ_ONLY in caption.value for caption in dead_letters.main.caption)


def test_with_a_password_nothing_but_the_login_until_it_is_given_then_all_of_it(shop: ShopDatabase) -> None:
    with dashboard_env(shop.db, aws_endpoint_url=shop.moto.url, host=EVERY_INTERFACE, password=PASSWORD):
        # GIVEN a deep link to the dead letters, opened by a session that has not logged in
        app = run_page("dead_letters")
        assert not app.exception
        # THEN the login form and nothing else: no queue, no table, no count, no action
        assert [field.label for field in app.text_input] == ["Password"]
        assert not app.dataframe and not app.metric and not app.subheader
        assert [button.label for button in app.button] == ["Log in"]
        assert not [word for word in SHOP_WORDS if word in all_text(app)]

        # WHEN a wrong password is given: said so, after the delay, and still nothing shown
        app.text_input(key="access_password").input("correct horse battery staple")
        started = time.monotonic()
        app.button[0].click().run()
        assert time.monotonic() - started >= WRONG_PASSWORD_DELAY_SECONDS
        assert [error.value for error in app.error] == ["Wrong password."]
        assert not app.dataframe and not app.subheader

        # WHEN the password is given: the page it was opened on, with the actions (0.0.0.0 with a password)
        app.text_input(key="access_password").input(PASSWORD)
        app.button[0].click().run()
        assert not app.exception
        assert app.subheader[0].value == "shipping-dlq"
        assert len(app.dataframe[0].value) == 1
        keys = {button.key for button in app.button}
        assert {"redrive_shipping-dlq", "delete_shipping-dlq", "access_log_out"} <= keys
        assert not [caption for caption in app.sidebar.caption if "Read-only" in caption.value]

        # WHEN the viewer logs out: the login form again
        app.button(key="access_log_out").click().run()
        assert [field.label for field in app.text_input] == ["Password"]
        assert not app.dataframe and not app.subheader


def test_a_loopback_address_with_a_password_still_asks_for_it(shop: ShopDatabase) -> None:
    with dashboard_env(shop.db, host="127.0.0.1", password=PASSWORD):
        app = run_page()
    assert not app.exception
    assert [field.label for field in app.text_input] == ["Password"]
    assert not app.dataframe and not app.metric


@pytest.mark.parametrize(("content", "problem"), [(None, "cannot read --password-file"), ("\n", "is empty")])
def test_an_unreadable_or_empty_password_file_stops_the_command(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    password_file = tmp_path / "password"
    if content is not None:
        password_file.write_text(content)
    done = subprocess.run(
        [HOPSCOPE, "dashboard", "--db", str(tmp_path / "x.db"), "--password-file", str(password_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert problem in done.stderr


def test_the_command_says_when_it_serves_every_interface_read_only(tmp_path: Path) -> None:
    port = str(free_port())
    proc = subprocess.Popen(
        [HOPSCOPE, "dashboard", "--db", str(tmp_path / "x.db"), "--host", EVERY_INTERFACE, "--port", port],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={key: value for key, value in os.environ.items() if key != PASSWORD_ENV},
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(30)
    assert first.startswith(f"hopscope dashboard: listening on {EVERY_INTERFACE} without a password: ")
    assert "read-only, no dead-letter actions" in first


def visit(page: Page, url: str, ready: str) -> str:
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text(ready, exact=False).first.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)  # late elements arrive
    assert page.locator("[data-testid='stException']").count() == 0, f"an exception on {url}"
    return page.inner_text("body")


def command_lines() -> list[bytes]:
    """Every process's arguments, as ``ps`` shows them to any user."""
    lines = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(entry.read_bytes())
        except OSError:  # gone meanwhile
            continue
    return lines


def test_shared_on_every_interface_read_only_without_a_password_and_a_login_with_one(
    chromium_path: Path, shop: ShopDatabase, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    with (
        running_dashboard(shop.db, aws_endpoint_url=shop.moto.url, host=EVERY_INTERFACE) as open_url,
        running_dashboard(
            shop.db, aws_endpoint_url=shop.moto.url, host=EVERY_INTERFACE, password_file=password_file
        ) as locked_url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)

        # GIVEN no password: the dead letters are shown, read-only, with the reason and no action
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        text = visit(page, f"{open_url}/dead_letters?range=24h", "shipping-dlq")
        page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=30_000)
        assert READ_ONLY in text
        assert page.get_by_role("button", name=ACTION_BUTTON).count() == 0
        assert 'Type "yes"' not in text
        # ... and no developer chrome: no Deploy button, only a viewer's items in the app menu
        assert page.locator("[data-testid='stAppDeployButton']").count() == 0
        assert page.get_by_role("button", name=re.compile("^Deploy")).count() == 0
        page.locator("[data-testid='stMainMenu'] button").first.click()
        page.locator("[data-testid='stMainMenuPopover']").wait_for(timeout=10_000)
        menu = page.locator("[data-testid='stMainMenuPopover']").inner_text()
        items: list[str] = page.eval_on_selector_all(
            "[data-testid^='stMainMenuItem-']", "els => els.map(e => e.getAttribute('data-testid'))"
        )
        assert items and all(
            item in ("stMainMenuItem-print", "stMainMenuItem-recordScreencast")
            or item.startswith("stMainMenuItem-theme-")
            for item in items
        ), items
        for developer_item in ("Rerun", "Settings", "Clear cache", "Deploy", "Developer", "About"):
            assert developer_item not in menu
        page.close()

        # GIVEN a password: a deep link shows the login form and none of the data
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        text = visit(page, f"{locked_url}/flows?range=24h", "Password")
        assert not [word for word in SHOP_WORDS if word in text], text
        assert page.locator("[data-testid='stDataFrame'], [data-testid='stMetric']").count() == 0
        assert page.get_by_role("button", name=ACTION_BUTTON).count() == 0
        # the password reached the dashboard through its environment, never its arguments
        assert not [line for line in command_lines() if PASSWORD.encode() in line]

        # WHEN the viewer logs in: the page of the link, with its data
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_text("flow(s)", exact=False).first.wait_for(timeout=30_000)
        page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=30_000)
        assert page.get_by_role("button", name="Log out").count() == 1
        assert "/flows" in page.url
        browser.close()
