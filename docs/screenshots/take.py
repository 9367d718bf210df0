"""Retake the README's screenshots from a real demo run.

    .venv/bin/python docs/screenshots/take.py [--seconds 60] [--only dead_letters ...]

Runs ``hopscope demo`` (with its dashboard) into a fresh database, lets its traffic run for the given time,
then saves what headless Chromium shows on the demo's own dashboard while the demo still runs (so the
dead-letter queue's messages can be read from its moto server): the service map, the flow list, the
waterfall and critical path of an order whose billing batch it shares with other orders (``flow.png``), a
failed order's waterfall with its log lines under it (``flow_logs.png``) and the dead letters, the orders
that shipping fails for good. Chromium is found as the browser tests find it (tests/helpers/chromium.py:
``$HOPSCOPE_CHROMIUM``, ``chromium``/``chromium-browser``/``google-chrome`` on PATH, Playwright's own).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore

OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(OUT.parents[1]))  # the repository, for its tests' Chromium finder
from tests.helpers.chromium import CHROMIUM_ARGS, MISSING, find_chromium  # noqa: E402

HOPSCOPE = str(Path(sys.executable).with_name("hopscope"))
PICTURES = ("service_map", "flows", "flow", "flow_logs", "dead_letters")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} within {seconds:.0f} s")
        time.sleep(0.5)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok"
    except httpx.HTTPError:
        return False


def shared_flow(db: Path) -> int | None:
    """An order's flow that shares a billing batch with other orders, and reached every function."""
    store = SQLiteStore(db, read_only=True)
    try:
        layer = QueryLayer(store)
        for summary in layer.search_flows(FlowFilter(service="notifier", limit=500)):
            detail = layer.flow(summary.flow_id)
            if detail is not None and detail.shared_traces and summary.error_count == 0:
                return summary.flow_id
    finally:
        store.close()
    return None


@dataclass(frozen=True)
class Shot:
    """One picture: its page, a text it shows once drawn, an element to wait for, the window's height, and
    the heading to scroll to the top (the flow's waterfall and critical path, below its header)."""

    path: str
    ready: str
    selector: str | None = None
    height: int = 1000
    start: str | None = None


def failing_flow_with_logs(db: Path) -> int | None:
    """An order's flow with an error that logged an error line too."""
    store = SQLiteStore(db, read_only=True)
    try:
        layer = QueryLayer(store)
        for summary in layer.search_flows(FlowFilter(errors_only=True, limit=200)):
            answer = layer.flow_logs(summary.flow_id)
            if answer is not None and any(line.is_error for line in answer.lines):
                return summary.flow_id
    finally:
        store.close()
    return None


def shoot(page: Page, url: str, shot: Shot, path: Path) -> None:
    page.set_viewport_size({"width": 1400, "height": shot.height})
    page.goto(f"{url}/{shot.path}", wait_until="domcontentloaded")
    page.get_by_text(shot.ready, exact=False).first.wait_for(timeout=60_000)
    if shot.selector is not None:
        page.locator(shot.selector).first.wait_for(timeout=60_000)
    page.wait_for_timeout(2500)  # charts finish drawing
    if shot.start is not None:
        heading = page.get_by_role("heading", name=shot.start, exact=True).first
        heading.evaluate("element => element.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=int, default=60, help="how long the traffic runs first (default: 60)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=PICTURES, default=list(PICTURES), help="retake only these pictures"
    )
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit(MISSING)
    work = Path(tempfile.mkdtemp(prefix="hopscope-shots-"))
    db = work / "demo.db"
    port = free_port()
    ports = [
        "--moto-port",
        str(free_port()),
        "--collector-port",
        str(free_port()),
        "--dashboard-port",
        str(port),
    ]
    # Longer than the pictures take: once they are saved, the demo gets SIGINT (its Ctrl-C, a clean stop).
    command = [HOPSCOPE, "demo", "--duration", str(args.seconds + 600), "--db", str(db), *ports]
    demo = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(url), 120, "the demo's dashboard did not answer")
        time.sleep(args.seconds)
        flow_id = shared_flow(db)
        if flow_id is None and "flow" in args.only:
            raise SystemExit("no flow of the run shares a batch: run the demo longer")
        failed_id = failing_flow_with_logs(db)
        if failed_id is None and "flow_logs" in args.only:
            raise SystemExit("no failed flow of the run logged an error: run the demo longer")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            shots = {
                "service_map": Shot("service_map?range=1h", "Service map", height=1300),
                "flows": Shot("flows?range=1h", "Flows"),
                "flow": Shot(f"flow_detail?flow={flow_id}", "Critical path", height=1400, start="Waterfall"),
                "flow_logs": Shot(
                    f"flow_detail?flow={failed_id}", "Critical path", height=1500, start="Waterfall"
                ),
                "dead_letters": Shot("dead_letters?range=1h", "shipping-dlq", "[data-testid='stDataFrame']"),
            }
            for name in args.only:
                shoot(page, url, shots[name], OUT / f"{name}.png")
            browser.close()
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(90)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
