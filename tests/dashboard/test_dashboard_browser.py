"""The whole dashboard in a real browser: ``hopscope dashboard`` on the shop's database, every page visited in
headless Chromium (wherever it is: the ``chromium_path`` fixture; .ci/run installs Debian's), a key element
checked on each, and
a PNG of each page saved (HOPSCOPE_SCREENSHOTS=DIR keeps them; the README's pictures come from a demo run,
docs/screenshots/take.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.dashboard_harness import CHROMIUM_ARGS, running_dashboard
from tests.helpers.servers import ShopDatabase

# path -> text that only that page shows once it has rendered its data
PAGES = {
    "": "Dead letters waiting",
    "service_map": "Service map",
    "flows": "Flows",
    "logs": "No log lines",  # the shop's functions do not export logs
    "latency": "Latency",
    "queues": "shipping-dlq",
    "dead_letters": "shipping-dlq",
}


@pytest.fixture
def dashboard(chromium_path: Path, shop: ShopDatabase) -> Iterator[str]:
    with running_dashboard(shop.db, aws_endpoint_url=shop.moto.url) as url:
        yield url


def visit(page: Page, url: str, text: str, screenshot: Path) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text(text, exact=False).first.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)  # let charts finish drawing before the picture
    assert page.locator("[data-testid='stException']").count() == 0, f"an exception on {url}"
    page.screenshot(path=str(screenshot), full_page=True)


def test_every_page_renders_in_headless_chromium(
    chromium_path: Path, dashboard: str, shop: ShopDatabase, tmp_path: Path
) -> None:
    out = Path(os.environ.get("HOPSCOPE_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(shop.db, read_only=True)
    (o3,) = QueryLayer(store).search_flows(FlowFilter(correlation_id="o-3"))
    store.close()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        for path, text in PAGES.items():
            visit(page, f"{dashboard}/{path}?range=24h", text, out / f"{path or 'overview'}.png")
        visit(page, f"{dashboard}/flows?range=24h&correlation_id=o-3", "o-3", out / "flows-o-3.png")
        visit(page, f"{dashboard}/flow_detail?flow={o3.flow_id}", "Critical path", out / "flow.png")
        # a click on a span's bar selects it: its id goes into the URL
        bars = page.locator(".js-plotly-plot .barlayer .trace").first.locator(".point")
        bars.first.scroll_into_view_if_needed()
        box = max(
            (bars.nth(i).bounding_box() for i in range(bars.count())), key=lambda b: b["width"] if b else 0
        )
        assert box is not None
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function("() => /[?&]span=[0-9a-f]{16}/.test(location.search)", timeout=30_000)
        browser.close()
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == sorted([f"{p or 'overview'}.png" for p in PAGES] + ["flows-o-3.png", "flow.png"])
    assert all((out / name).stat().st_size > 10_000 for name in pictures)
