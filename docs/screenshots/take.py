"""Retake the README's screenshots from a real demo run.

    .venv/bin/python docs/screenshots/take.py [--seconds 60]

Runs ``hopscope demo`` (no dashboard) for the given time into a fresh database, then ``hopscope dashboard`` on
it, and saves what headless Chromium (/usr/bin/chromium, through Playwright) shows: the service map, the flow
list, and the flow of an order whose billing batch it shares with other orders (``flow.png``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore

OUT = Path(__file__).resolve().parent
HOPSCOPE = str(Path(sys.executable).with_name("hopscope"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_demo(db: Path, seconds: int) -> None:
    ports = ["--moto-port", str(free_port()), "--collector-port", str(free_port())]
    command = [HOPSCOPE, "demo", "--duration", str(seconds), "--no-dashboard", "--db", str(db), *ports]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def shared_flow(db: Path) -> int:
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
    raise SystemExit("no flow of the run shares a batch: run the demo longer")


def shoot(page: Page, url: str, text: str, path: Path, *, full_page: bool = False) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text(text, exact=False).first.wait_for(timeout=60_000)
    page.wait_for_timeout(2500)  # charts finish drawing
    page.screenshot(path=str(path), full_page=full_page)
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long the demo runs (default: 60)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hopscope-shots-"))
    db = work / "demo.db"
    try:
        run_demo(db, args.seconds)
        flow_id = shared_flow(db)
        port = free_port()
        dashboard = subprocess.Popen(
            [HOPSCOPE, "dashboard", "--db", str(db), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("hopscope dashboard did not answer within 60 s")
                time.sleep(0.3)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                shoot(page, f"{url}/service_map?range=1h", "Service map", OUT / "service_map.png")
                shoot(page, f"{url}/flows?range=1h", "Flows", OUT / "flows.png")
                shoot(
                    page,
                    f"{url}/flow_detail?flow={flow_id}",
                    "shared: processed in one batch",
                    OUT / "flow.png",
                )
                browser.close()
        finally:
            dashboard.terminate()
            dashboard.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
