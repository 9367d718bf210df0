"""The flow page's log lines in headless Chromium (``hopscope dashboard`` over orders whose functions logged
through the real OpenTelemetry SDK): the lines are listed under the waterfall, the error one emphasised; a
click on a span's bar shows only that span's lines, "All lines" brings the rest back, and a click on a line
highlights its span's row in the waterfall and shows the line whole, as text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Locator, Page, sync_playwright

from hopscope.dashboard.waterfall import ERROR_COLOUR, LABEL_TRACE, LOG_TRACE, SELECTED_LOG_TRACE
from tests.helpers.dashboard_harness import CHROMIUM_ARGS, running_dashboard
from tests.helpers.flow_logs import HOSTILE_BODY, LoggedShop, build_logged_database

# The page position (CSS pixels) of the middle of a span's bar, a quarter row below its centre line (off
# the critical path's thin bar), from the drawn figure.
BAR_JS = """(spanId) => {
    const plot = document.querySelector('.js-plotly-plot');
    const box = plot.getBoundingClientRect();
    const xaxis = plot._fullLayout.xaxis, yaxis = plot._fullLayout.yaxis;
    for (const trace of plot._fullData) {
        if (trace.type !== 'bar' || trace.name === 'critical path') continue;
        const index = (trace.customdata || []).indexOf(spanId);
        if (index >= 0) {
            return [box.left + xaxis._offset + xaxis.l2p(trace.base[index] + trace.x[index] / 2),
                    box.top + yaxis._offset + yaxis.l2p(trace.y[index] + 0.25)];
        }
    }
    return null;
}"""
# The figure's log markers (span ids and colours), its selected-line trace, shapes and row labels' span ids.
FIGURE_JS = """([logs, selected, labels]) => {
    const plot = document.querySelector('.js-plotly-plot');
    const named = name => plot._fullData.find(t => t.name === name);
    const markers = named(logs), ring = named(selected);
    return {
        markers: markers ? [markers.customdata, markers.marker.color] : null,
        selected: ring ? ring.y : null,
        shapes: (plot._fullLayout.shapes || []).map(s => [s.y0, s.y1]),
        rows: named(labels).customdata,
    };
}"""
# Whether the figure has a trace of this name (the ring around a chosen line's marker).
RINGED_JS = "(name) => document.querySelector('.js-plotly-plot')._fullData.some(t => t.name === name)"
# The text of every data cell the grid puts in the page (its accessible copy of the visible rows).
CELLS_JS = """() => Array.from(document.querySelectorAll(
    "[data-testid='stDataFrame'] [role='gridcell']")).map(cell => cell.textContent)"""
# Row and header height of Streamlit's data grid, CSS pixels.
GRID_ROW = 35


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> LoggedShop:
    return build_logged_database(tmp_path_factory.mktemp("logs-browser") / "logs.db")


@pytest.fixture(scope="module")
def dashboard(chromium_path: Path, logged: LoggedShop) -> Iterator[str]:
    with running_dashboard(logged.db) as url:
        yield url


def figure(page: Page) -> dict[str, Any]:
    drawn: dict[str, Any] = page.evaluate(FIGURE_JS, [LOG_TRACE, SELECTED_LOG_TRACE, LABEL_TRACE])
    return drawn


def cells(page: Page) -> list[str]:
    found: list[str] = page.evaluate(CELLS_JS)
    return found


def wait_for_cells(page: Page, shown: list[str], without: tuple[str, ...] | list[str] = ()) -> None:
    """Until the grids' cells hold every text of ``shown`` and none of ``without`` (a grid draws its rows a
    moment after the page's text arrives)."""
    page.wait_for_function(
        "([shown, without]) => { const cells = (" + CELLS_JS + ")(); "
        "return shown.every(t => cells.includes(t)) && !without.some(t => cells.includes(t)); }",
        arg=[shown, list(without)],
        timeout=30_000,
    )


def log_grid(page: Page) -> Locator:
    """The data grid right under the "Log lines" heading."""
    return page.locator("[data-testid='stDataFrame']").filter(has_text="+ms").first


def test_the_flow_page_lists_its_log_lines_and_links_them_to_the_waterfall(
    dashboard: str, chromium_path: Path, logged: LoggedShop
) -> None:
    o1 = logged.orders["o-1"].span_ids
    flow = logged.flows["o-1"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.goto(f"{dashboard}/flow_detail?flow={flow}&range=24h", wait_until="domcontentloaded")
        page.locator(".js-plotly-plot .textpoint").first.wait_for(timeout=30_000)
        heading = page.get_by_role("heading", name="Log lines")
        heading.wait_for(timeout=30_000)
        page.get_by_text("6 lines, oldest first").wait_for(timeout=30_000)
        assert page.locator("[data-testid='stException']").count() == 0

        # THEN the lines are under the waterfall, each a marker on its span's row, the error's red
        chart = page.locator(".js-plotly-plot").first.bounding_box()
        title = heading.bounding_box()
        assert chart is not None and title is not None and title["y"] > chart["y"] + chart["height"]
        drawn = figure(page)
        span_ids, colours = drawn["markers"]
        assert span_ids[-1] == o1["shipping process"] and colours[-1] == ERROR_COLOUR
        assert ERROR_COLOUR not in colours[:-1]
        # ... listed oldest first, the error marked ✖ in its row (and the hostile body as its characters)
        wait_for_cells(page, ["order o-1 received", "carrier down for o-1"])
        text = cells(page)
        assert text.index("order o-1 received") < text.index("charging order o-1") < text.index(HOSTILE_BODY)
        assert "✖ ERROR" in text and text.index("✖ ERROR") < text.index("carrier down for o-1")

        # WHEN the billing consumer's bar is clicked, THEN only its line is listed
        spot = page.evaluate(BAR_JS, o1["order-events process"])
        assert spot is not None
        page.mouse.move(*spot)
        page.wait_for_timeout(200)
        page.mouse.click(*spot)
        page.wait_for_function("() => /[?&]lines=span/.test(location.search)", timeout=30_000)
        query = parse_qs(urlparse(page.url).query)
        assert query["span"] == [o1["order-events process"]]
        page.get_by_text("1 of 6 lines: those of span billing · order-events process").wait_for(
            timeout=30_000
        )
        wait_for_cells(page, ["charging order o-1"], without=["order o-1 received"])

        # ... and "All lines" lists them all again
        page.get_by_role("button", name="All lines").click()
        page.get_by_text("6 lines, oldest first").wait_for(timeout=30_000)
        assert "lines" not in parse_qs(urlparse(page.url).query)

        # WHEN the warning line (the fifth) is clicked, THEN its span's row is highlighted and ringed
        assert figure(page)["selected"] is None
        grid = log_grid(page)
        grid.scroll_into_view_if_needed()
        box = grid.bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + 420, box["y"] + GRID_ROW + 4 * GRID_ROW + GRID_ROW / 2)
        page.wait_for_function(RINGED_JS, arg=SELECTED_LOG_TRACE, timeout=30_000)
        drawn = figure(page)
        row = drawn["rows"].index(o1["shipping process"])
        assert drawn["selected"] == [row]
        assert drawn["shapes"] == [[row - 0.5, row + 0.5]]
        assert parse_qs(urlparse(page.url).query)["span"] == [o1["shipping process"]]
        # ... and the line is shown whole, as text: its body is a code block's characters, no element
        code = page.locator("[data-testid='stCode'] code").filter(has_text="alert(1)").first
        code.wait_for(timeout=30_000)
        assert code.inner_text().strip() == HOSTILE_BODY
        assert page.locator("script", has_text="alert(1)").count() == 0
        assert page.locator("a[href^='javascript']").count() == 0
        assert page.locator("[data-testid='stException']").count() == 0
        browser.close()
