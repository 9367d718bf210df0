"""Span data reaches the page as text: ``hopscope dashboard`` in headless Chromium on a database whose every
name, attribute, event, link, status, scope, queue name, poll error and log line (body, logger, attribute)
carries Markdown, HTML, LaTeX, emoji, directive and Graphviz DOT payloads, and on a (moto) dead-letter queue
whose message carries them in its body. Every URL in them points at a local tracking server: it must get no
request, no link or image may come from span data, the page may ask nothing of any host but the
dashboard's, and the payloads must be readable as text (so that the test fails when they are rendered, or
hidden).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import Page, Request, WebSocket, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.dashboard_harness import CHROMIUM_ARGS, running_dashboard
from tests.helpers.flow_logs import span_log_request
from tests.helpers.hostile_spans import (
    MARKERS,
    HostileNames,
    Tracker,
    build_hostile_database,
    hostile,
    tracking_server,
)
from tests.helpers.moto_server import MotoServer

# Every element that can make the browser fetch or follow a URL, and the attribute that holds it.
URL_ATTRIBUTES = """els => els.flatMap(e =>
    ['href', 'src', 'xlink:href', 'srcset', 'action', 'data', 'poster']
        .map(name => e.getAttribute(name)).filter(value => value !== null))"""
URL_ELEMENTS = "a, area, img, image, iframe, frame, embed, object, source, video, audio, form, link, use"


@dataclass
class Hostile:
    db: Path
    tracker: Tracker
    names: HostileNames
    flow_id: int
    consumer_span_id: str
    correlation_id: str
    moto_url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def hostile_setup(tmp_path: Path, moto: MotoServer) -> Iterator[Hostile]:
    with tracking_server() as tracker:
        names = build_hostile_database(tmp_path / "hostile.db", tracker.url)
        store = SQLiteStore(tmp_path / "hostile.db", read_only=True)
        layer = QueryLayer(store)
        (flow,) = layer.search_flows(FlowFilter())
        detail = layer.flow(flow.flow_id)
        store.close()
        assert detail is not None
        consumer = next(span for span in detail.spans if span["kind"] == "CONSUMER")
        # a log line of the consumer span whose body, logger and attributes carry the payloads too
        store = SQLiteStore(tmp_path / "hostile.db")
        store.write_logs(
            [
                span_log_request(
                    consumer,
                    hostile("log-body", tracker.url),
                    logger=hostile("logger", tracker.url),
                    attributes={
                        "hopscope.correlation_id": flow.correlation_ids[0],
                        hostile("log-key", tracker.url): hostile("log-value", tracker.url),
                    },
                )
            ]
        )
        store.close()
        # a dead-letter queue (SQS names are plain) holding one message whose body and attributes are hostile
        sqs = moto.client("sqs")
        dlq = sqs.create_queue(QueueName="hostile-dlq")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 2})
        sqs.create_queue(QueueName="hostile-source", Attributes={"RedrivePolicy": policy})
        sqs.send_message(
            QueueUrl=dlq,
            MessageBody=hostile("body", tracker.url),
            MessageAttributes={"note": {"DataType": "String", "StringValue": hostile("note", tracker.url)}},
        )
        yield Hostile(
            tmp_path / "hostile.db",
            tracker,
            names,
            flow.flow_id,
            consumer["span_id"],
            flow.correlation_ids[0],
            moto.url,
        )


def links_and_sources(page: Page) -> list[str]:
    """Every URL an element of the page (or of an SVG in it) would fetch or follow."""
    values: list[str] = page.eval_on_selector_all(URL_ELEMENTS, URL_ATTRIBUTES)
    return values


def from_span_data(value: str, tracker: str) -> bool:
    """A URL, or an in-page anchor, made from the payloads (they all name the tracker, example.com, ...)."""
    lowered = value.lower()
    return any(
        mark in lowered
        for mark in (urlsplit(tracker).netloc, "example.com", "mailto:", "reset-your-password", "127-0-0-1")
    )


def visit(page: Page, url: str, ready: str, wait_for: str | None = None) -> str:
    """Open ``url``, wait for ``ready`` text (and the ``wait_for`` selector: a chart drawn), return the page's
    text with the invisible word joiners the escaping puts into shortcodes and bare URLs taken out."""
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text(ready, exact=False).first.wait_for(timeout=30_000)
    if wait_for is not None:
        page.locator(wait_for).first.wait_for(timeout=30_000)
    page.wait_for_timeout(800)  # charts finish drawing, late elements arrive
    assert page.locator("[data-testid='stException']").count() == 0, f"an exception on {url}"
    return page.inner_text("body").replace("\u2060", "")


def test_hostile_span_data_is_shown_as_text_and_nothing_is_fetched(
    chromium_path: Path, hostile_setup: Hostile, tmp_path: Path
) -> None:
    # GIVEN the hostile database and dead-letter queue, and the real dashboard over them
    setup = hostile_setup
    tracker = setup.tracker.url
    flow = f"flow_detail?flow={setup.flow_id}"
    pages = [
        # (path, text shown once the page has its data, selector of a chart to wait for, markers shown)
        ("?range=24h", "Dead letters waiting", None, ()),
        (
            "service_map?range=24h",
            "Boxes are services",
            ".js-plotly-plot .textpoint",
            ("![px](",),
        ),
        (
            f"flows?range=24h&correlation_id={quote(setup.correlation_id, safe='')}",
            "1 flow(s)",
            None,
            ("![px](",),
        ),
        (f"{flow}&range=24h", "Waterfall", ".js-plotly-plot .textpoint", MARKERS),
        (
            f"{flow}&range=24h&span={setup.consumer_span_id}",
            "Waterfall",
            ".js-plotly-plot .textpoint",
            ("![px](",),
        ),
        # the Logs page, searching the flow's (hostile) correlation id: said back as text
        (
            f"logs?range=24h&correlation_id={quote(setup.correlation_id, safe='')}",
            "newest first",
            "[data-testid='stDataFrame']",
            ("![px](",),
        ),
        ("latency?range=24h", "Per async hop", ".js-plotly-plot", ("![px](",)),
        ("queues?range=24h", "All queues", ".js-plotly-plot", ("![px](",)),
        # the queue whose last poll failed: its error, whole
        (
            f"queues?range=24h&queue={quote(hostile('failing-queue', tracker), safe='')}",
            "All queues",
            None,
            MARKERS,
        ),
        ("dead_letters?range=24h", "hostile-dlq", "[data-testid='stDataFrame']", ("![px](",)),
    ]
    websockets: list[str] = []
    with running_dashboard(setup.db, aws_endpoint_url=setup.moto_url) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})

        def record_request(request: Request) -> None:
            setup.requests.append(request.url)

        def record_websocket(socket: WebSocket) -> None:
            websockets.append(socket.url)

        page.on("request", record_request)
        page.on("websocket", record_websocket)

        # WHEN every page is visited, the flow page twice (the failing root span, then the linked consumer)
        for path, ready, chart, markers in pages:
            text = visit(page, f"{url}/{path}", ready, chart)
            # THEN no link or image comes from span data ...
            made = [value for value in links_and_sources(page) if from_span_data(value, tracker)]
            assert made == [], (path, made)
            # ... and the payloads can be read, as the characters they are
            for marker in markers:
                assert marker in text, (path, marker)
        # a help tooltip renders Markdown: the heading's holds the whole (long) entry name
        page.goto(f"{url}/{flow}&range=24h", wait_until="domcontentloaded")
        page.get_by_text("Waterfall").first.wait_for(timeout=30_000)
        tooltip = page.locator("[data-testid='stTooltipContent']").first
        target = page.locator("[data-testid='stHeading'] [data-testid='stTooltipHoverTarget']").first
        for _ in range(
            10
        ):  # a rerun that redraws the heading under the pointer closes the tooltip: hover again
            target.hover()
            try:
                tooltip.wait_for(timeout=3_000)
                break
            except PlaywrightTimeoutError:
                page.mouse.move(0, 0)
        tooltip.wait_for(timeout=3_000)
        assert "![px](" in tooltip.inner_text()
        assert [value for value in links_and_sources(page) if from_span_data(value, tracker)] == []
        # the consumer's log line, chosen in the list under the waterfall, shown whole: its service, logger,
        # body and attributes as the characters they hold
        page.goto(
            f"{url}/{flow}&range=24h&span={setup.consumer_span_id}&lines=span", wait_until="domcontentloaded"
        )
        page.get_by_text("1 of 1 lines").first.wait_for(timeout=30_000)
        page.get_by_text("1 of 1 lines").first.scroll_into_view_if_needed()  # the grid draws once in view
        grid = page.locator("[data-testid='stDataFrame']").filter(has_text="+ms").first
        grid.wait_for(timeout=30_000)
        grid.scroll_into_view_if_needed()
        box = grid.bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + 300, box["y"] + 35 + 17)  # the first line, below the header
        page.locator("[data-testid='stCode']").filter(has_text="log-body").first.wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        text = page.inner_text("body").replace("\u2060", "")
        for marker in MARKERS:
            assert text.count(marker) >= 3, marker  # the body (code), the service and the logger at least
        assert [value for value in links_and_sources(page) if from_span_data(value, tracker)] == []
        assert page.locator("[data-testid='stException']").count() == 0
        if os.environ.get("HOPSCOPE_SCREENSHOTS"):
            page.mouse.move(0, 0)  # the tooltip closes
            page.set_viewport_size({"width": 1400, "height": 2600})
            page.screenshot(path=str(Path(os.environ["HOPSCOPE_SCREENSHOTS"]) / "hostile-flow.png"))
        page.wait_for_timeout(500)
        browser.close()

    # THEN the tracking server got nothing, and the browser asked only the dashboard (no font host either)
    assert setup.tracker.paths == []
    own = urlsplit(url).netloc
    elsewhere = [
        r for r in setup.requests if urlsplit(r).scheme not in ("data", "blob") and urlsplit(r).netloc != own
    ]
    assert elsewhere == []
    assert setup.requests, "the recording saw the page's own requests"
    assert websockets and all(urlsplit(socket).netloc == own for socket in websockets)
