"""The service map in headless Chromium at 1400 px: every label's rendered size, and where a click on a queue,
a service and an edge lands; then the sidebar's Find a flow opening a flow by its correlation id. The
shop's system is the demo's kind: an API, a topic fanning out to queues, functions behind them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Page, sync_playwright

from tests.helpers.dashboard_harness import CHROMIUM_ARGS, running_dashboard
from tests.helpers.servers import ShopDatabase

# The page position (in CSS pixels) of the map's point whose customdata starts with [kind, key].
POINT_JS = """([kind, key]) => {
    const plot = document.querySelector('.js-plotly-plot');
    const box = plot.getBoundingClientRect();
    const xaxis = plot._fullLayout.xaxis, yaxis = plot._fullLayout.yaxis;
    for (const trace of plot._fullData) {
        const index = (trace.customdata || []).findIndex(d => d[0] === kind && String(d[1]) === key);
        if (index >= 0) {
            return [box.left + xaxis._offset + xaxis.l2p(trace.x[index]),
                    box.top + yaxis._offset + yaxis.l2p(trace.y[index])];
        }
    }
    return null;
}"""
# Every label of the map: its text, its computed font size and the height of its rendered box.
LABELS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot .textpoint text')).map(t => [
    t.textContent, parseFloat(getComputedStyle(t).fontSize), t.getBoundingClientRect().height])"""
# customdata of every hop point: ["edge", index, source, target, kind]
HOPS_JS = """() => document.querySelector('.js-plotly-plot')._fullData
    .filter(t => t.name === 'hops').flatMap(t => t.customdata)"""


@pytest.fixture(scope="module")
def dashboard(chromium_path: Path, shop: ShopDatabase) -> Iterator[str]:
    with running_dashboard(shop.db, aws_endpoint_url=shop.moto.url) as url:
        yield url


def open_map(page: Page, url: str) -> None:
    page.goto(f"{url}/service_map?range=24h", wait_until="domcontentloaded")
    page.locator(".js-plotly-plot .textpoint text").first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)


def click_point(page: Page, kind: str, key: str) -> dict[str, list[str]]:
    """Click the map's point, wait for the page it opens; that page's path and query parameters."""
    spot = page.evaluate(POINT_JS, [kind, key])
    assert spot is not None, (kind, key)
    page.mouse.move(*spot)
    page.wait_for_timeout(200)
    page.mouse.click(*spot)
    page.wait_for_url(lambda url: "/service_map" not in url, timeout=15_000)
    page.wait_for_load_state("domcontentloaded")
    parsed = urlparse(page.url)
    return {"path": [parsed.path.rsplit("/", 1)[-1]], **parse_qs(parsed.query)}


def test_the_map_is_legible_at_1400_px_and_each_click_opens_its_page(
    dashboard: str, chromium_path: Path
) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        open_map(page, dashboard)

        labels = page.evaluate(LABELS_JS)
        names = " ".join(text for text, _, _ in labels)
        for name in ("orders-api", "order-events", "billing", "shipping", "(queue)", "(topic)", "p95"):
            assert name in names, name
        small = [(text, size, height) for text, size, height in labels if size < 10 or height < 10]
        assert small == [], small

        # a queue opens its queue page
        landed = click_point(page, "node", "aws_sqs:shipping")
        assert landed["path"] == ["queues"] and landed["queue"] == ["shipping"]
        page.get_by_text("All queues").first.wait_for(timeout=30_000)

        # a service opens its latency page, on that service
        open_map(page, dashboard)
        landed = click_point(page, "node", "service:billing")
        assert landed["path"] == ["latency"] and landed["service"] == ["billing"]
        page.get_by_text("Per async hop").first.wait_for(timeout=30_000)

        # an edge opens the flows that went through that hop
        open_map(page, dashboard)
        hops = page.evaluate(HOPS_JS)
        index = next(hop[1] for hop in hops if hop[2:] == ["aws_sqs:shipping", "service:shipping", "consume"])
        landed = click_point(page, "edge", str(index))
        assert landed["path"] == ["flows"] and landed["service"] == ["shipping"]
        assert landed["hop"] == ["aws_sqs:shipping>service:shipping"]
        page.get_by_text("the service map's hop shipping → shipping").first.wait_for(timeout=30_000)
        assert page.locator("[data-testid='stException']").count() == 0

        # one click on a row's cell opens that row's flow
        table = page.locator("[data-testid='stDataFrame']").first
        table.wait_for(timeout=30_000)
        box = table.bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + 250, box["y"] + 35 + 17)  # the first row, below the header
        page.wait_for_url(lambda url: "/flow_detail" in url, timeout=15_000)
        page.get_by_text("Waterfall").first.wait_for(timeout=30_000)

        # the sidebar's Find a flow opens an order's flow by its correlation id
        page.get_by_placeholder("flow, trace, correlation or message id").fill("o-3")
        page.get_by_role("button", name="Find").click()
        page.wait_for_url(lambda url: "/flow_detail" in url, timeout=15_000)
        assert parse_qs(urlparse(page.url).query)["flow"][0].isdigit()
        browser.close()
