"""The waterfall's structure and critical path on a hand-built flow (issue 17, item 2): real OpenTelemetry SDK
spans with set times, written into a real SQLite store, read back through the query layer and shown by the
real flow page (AppTest).

The flow, in milliseconds after its start (each trace its own line; ``<-`` a link from a consumer to the
producer that sent its message):

    orders-api  POST /orders [0, 30]: validate [2, 8], publish order [10, 14], publish gift [16, 20],
                charge [22, 29] > POST /payments [23, 27]
    shipping    orders process [40, 75] <- publish order, publish gift (one batch of both messages):
                DynamoDB.PutItem [45, 70], notify publish [72, 74]
    notifier    notify process [80, 90] <- notify publish (receive #1, fails)
    notifier    notify process [130, 150] <- notify publish (receive #2): smtp send [135, 148]

Hand-computed: the batch trace hangs under ``publish gift`` (of its two producers, the one that ended last),
both receives of the retried message under ``notify publish``; the critical path runs through the second
receive, the one that ended the flow.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.trace import SpanKind

from hopscope.collector.model.critical_path import critical_path, flow_tree
from hopscope.collector.model.flows import FlowDetail, FlowFilter
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.dashboard.waterfall import CRITICAL_PATH_TRACE, LABEL_TRACE, span_of_selection, waterfall_figure
from tests.helpers.dashboard_harness import dashboard_env, run_page
from tests.helpers.flow_chains import Services, post

MS = 1_000_000

# (name, depth, parent name) in display order: parents before children, siblings by start
TREE = [
    ("POST /orders", 0, None),
    ("validate", 1, "POST /orders"),
    ("publish order", 1, "POST /orders"),
    ("publish gift", 1, "POST /orders"),
    ("orders process", 2, "publish gift"),
    ("DynamoDB.PutItem", 3, "orders process"),
    ("notify publish", 3, "orders process"),
    ("notify process #1", 4, "notify publish"),
    ("notify process #2", 4, "notify publish"),
    ("smtp send", 5, "notify process #2"),
    ("charge", 1, "POST /orders"),
    ("POST /payments", 2, "charge"),
]
# (span name or "wait <consumer name>", start ms, end ms)
CRITICAL_PATH = [
    ("POST /orders", 0, 2),
    ("validate", 2, 8),
    ("POST /orders", 8, 10),
    ("publish order", 10, 14),
    ("POST /orders", 14, 16),
    ("publish gift", 16, 20),
    ("wait orders process", 20, 40),
    ("orders process", 40, 45),
    ("DynamoDB.PutItem", 45, 70),
    ("orders process", 70, 72),
    ("notify publish", 72, 74),
    ("wait notify process #2", 74, 130),
    ("notify process #2", 130, 135),
    ("smtp send", 135, 148),
    ("notify process #2", 148, 150),
]


@dataclass(frozen=True)
class HandBuilt:
    db: Path
    flow_id: int
    origin: int  # the flow's start, ns
    ids: dict[str, str]  # test name -> span id (the two receives share a span name)


@pytest.fixture(scope="module")
def hand_built(tmp_path_factory: pytest.TempPathFactory) -> HandBuilt:
    services = Services()
    origin = (time.time_ns() // MS - 60_000) * MS
    ids: dict[str, str] = {}

    def span(
        service: str,
        name: str,
        start: int,
        end: int,
        parent: trace.Span | None = None,
        *,
        key: str | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        links: tuple[trace.Span, ...] = (),
        attributes: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> trace.Span:
        parent_context = trace.set_span_in_context(parent) if parent else context.Context()
        made = services.tracer(service).start_span(
            name,
            context=parent_context,
            kind=kind,
            links=[trace.Link(link.get_span_context()) for link in links],
            attributes=attributes,
            start_time=origin + start * MS,
        )
        if error:
            made.set_status(trace.Status(trace.StatusCode.ERROR, error))
        made.end(end_time=origin + end * MS)
        ids[key or name] = format(made.get_span_context().span_id, "016x")
        return made

    def messaging(
        destination: str, message_id: str | None = None, more: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        found = {"messaging.system": "aws_sqs", "messaging.destination.name": destination, **(more or {})}
        return found | ({"messaging.message.id": message_id} if message_id else {})

    api = span("orders-api", "POST /orders", 0, 30, kind=SpanKind.SERVER)
    span("orders-api", "validate", 2, 8, api)
    order = span(
        "orders-api",
        "publish order",
        10,
        14,
        api,
        kind=SpanKind.PRODUCER,
        attributes=messaging("orders", "m-1"),
    )
    gift = span(
        "orders-api",
        "publish gift",
        16,
        20,
        api,
        kind=SpanKind.PRODUCER,
        attributes=messaging("orders", "m-2"),
    )
    charge = span("orders-api", "charge", 22, 29, api)
    span("orders-api", "POST /payments", 23, 27, charge, kind=SpanKind.CLIENT)
    batch = span(
        "shipping",
        "orders process",
        40,
        75,
        kind=SpanKind.CONSUMER,
        links=(order, gift),
        attributes=messaging("orders", more={"messaging.batch.message_count": 2}),
    )
    span("shipping", "DynamoDB.PutItem", 45, 70, batch, kind=SpanKind.CLIENT)
    notify = span(
        "shipping",
        "notify publish",
        72,
        74,
        batch,
        kind=SpanKind.PRODUCER,
        attributes=messaging("notify", "n-1"),
    )
    for attempt, (start, end) in enumerate([(80, 90), (130, 150)], start=1):
        receive = span(
            "notifier",
            "notify process",
            start,
            end,
            key=f"notify process #{attempt}",
            kind=SpanKind.CONSUMER,
            links=(notify,),
            attributes=messaging("notify", "n-1", {"hopscope.receive_count": attempt}),
            error="smtp down" if attempt == 1 else None,
        )
        if attempt == 2:
            span("notifier", "smtp send", 135, 148, receive, kind=SpanKind.CLIENT)

    db = tmp_path_factory.mktemp("waterfall") / "waterfall.db"
    store = SQLiteStore(db)
    post(store, services.spans())
    (flow,) = QueryLayer(store).search_flows(FlowFilter())
    store.close()
    return HandBuilt(db, flow.flow_id, origin, ids)


def _detail(built: HandBuilt) -> FlowDetail:
    store = SQLiteStore(built.db, read_only=True)
    detail = QueryLayer(store).flow(built.flow_id)
    store.close()
    assert detail is not None and len(detail.spans) == len(TREE)
    return detail


def test_the_flow_nests_its_spans_hangs_consumers_under_producers_and_finds_the_critical_path(
    hand_built: HandBuilt,
) -> None:
    detail = _detail(hand_built)
    names = {span_id: name for name, span_id in hand_built.ids.items()}
    rows = flow_tree(detail.spans, detail.hops)
    assert [
        (names[row.key[1]], row.depth, names[row.parent[1]] if row.parent else None) for row in rows
    ] == TREE
    placed = {names[row.key[1]]: row.hop for row in rows if row.hop is not None}
    assert set(placed) == {"orders process", "notify process #1", "notify process #2"}
    assert placed["orders process"]["producer"]["span_id"] == hand_built.ids["publish gift"]
    assert placed["orders process"]["queue_wait_ms"] == pytest.approx(20.0)
    assert placed["notify process #2"]["queue_wait_ms"] == pytest.approx(56.0)

    path = critical_path(detail.spans, detail.hops)
    named = [
        (("wait " if segment.kind == "wait" else "") + names[segment.span[1]], *_ms(hand_built, segment))
        for segment in path
        if segment.span is not None
    ]
    assert named == CRITICAL_PATH and len(path) == len(CRITICAL_PATH)  # no gaps either

    # the figure: rows in tree order, indented by depth, the critical path's bars on their spans' rows
    figure = json.loads(waterfall_figure(detail).to_json())
    labels = next(trace for trace in figure["data"] if trace["name"] == LABEL_TRACE)
    assert [names[span_id] for span_id in labels["customdata"]] == [name for name, _, _ in TREE]
    assert [_depth(label) for label in labels["text"]] == [depth for _, depth, _ in TREE]
    overlay = next(trace for trace in figure["data"] if trace["name"] == CRITICAL_PATH_TRACE)
    drawn = [
        (names[span_id], row, round(base, 3), round(base + length, 3))
        for span_id, row, base, length in zip(
            overlay["customdata"], overlay["y"], overlay["base"], overlay["x"], strict=True
        )
    ]
    order = [name for name, _, _ in TREE]
    assert drawn == [
        (name.removeprefix("wait "), order.index(name.removeprefix("wait ")), start, end)
        for name, start, end in CRITICAL_PATH
    ]


def test_collapsed_spans_hide_their_subtree_and_carry_its_critical_path_and_a_click_names_a_span(
    hand_built: HandBuilt,
) -> None:
    detail = _detail(hand_built)
    names = {span_id: name for name, span_id in hand_built.ids.items()}
    batch = next(span for span in detail.spans if span["span_id"] == hand_built.ids["orders process"])
    # GIVEN the batch's consumer span collapsed
    figure = json.loads(waterfall_figure(detail, {(batch["trace_id"], batch["span_id"])}).to_json())
    labels = next(trace for trace in figure["data"] if trace["name"] == LABEL_TRACE)
    rows = [names[span_id] for span_id in labels["customdata"]]
    # THEN its descendants have no rows, and the critical path below it is drawn on its row
    assert rows == [
        "POST /orders",
        "validate",
        "publish order",
        "publish gift",
        "orders process",
        "charge",
        "POST /payments",
    ]
    overlay = next(trace for trace in figure["data"] if trace["name"] == CRITICAL_PATH_TRACE)
    below = {"orders process", "DynamoDB.PutItem", "notify publish", "notify process #2", "smtp send"}
    assert {
        row
        for span_id, row in zip(overlay["customdata"], overlay["y"], strict=True)
        if names[span_id] in below
    } == {4}
    # a click's selection names the span of the first point that has one (a queue wait's pair names none)
    assert span_of_selection([{"customdata": ["a", "b"]}, {"customdata": "c"}]) == "c"
    assert span_of_selection([{"customdata": ["a", "b"]}, {"x": 1}]) is None


def _ms(built: HandBuilt, segment: Any) -> tuple[int, int]:
    return (
        (segment.start_unix_nano - built.origin) // MS,
        (segment.end_unix_nano - built.origin) // MS,
    )


def _depth(label: str) -> int:
    return len(re.match(r"^\u2003*", label)[0])  # type: ignore[index]


SERVICES = {
    "shipping": ("orders process", "DynamoDB.PutItem", "notify publish"),
    "notifier": ("notify process #1", "notify process #2", "smtp send"),
}
FOLDED = {"DynamoDB.PutItem", "notify publish", "notify process #1", "notify process #2", "smtp send"}


def _segment_text(name: str) -> str:
    """What the page's critical-path list says for a segment of ``CRITICAL_PATH``."""
    if name.startswith("wait "):
        return "queue wait orders" if name == "wait orders process" else "queue wait notify"
    service = next((service for service, names in SERVICES.items() if name in names), "orders-api")
    return f"{service} · {name.split(' #', maxsplit=1)[0]}"


def test_the_flow_page_lists_the_critical_path_and_folds_a_span_away(hand_built: HandBuilt) -> None:
    ids = hand_built.ids
    names = {span_id: name for name, span_id in ids.items()}
    everything = [name for name, _, _ in TREE]
    with dashboard_env(hand_built.db):
        # GIVEN the flow's page, with the batch's consumer span selected (as a click on its bar does)
        app = run_page("flow_detail", {"flow": str(hand_built.flow_id), "span": ids["orders process"]})
        assert not app.exception
        # THEN the critical path is listed: what each segment is, as text, its time and its share
        table = next(frame.value for frame in app.dataframe if "what" in frame.value.columns)
        assert list(zip(table["what"], table["duration_ms"], strict=True)) == [
            (_segment_text(name), pytest.approx(end - start)) for name, start, end in CRITICAL_PATH
        ]
        assert table["share"].sum() == pytest.approx(100.0)
        # ... the chart's rows are the tree's, and the selected span is the one shown beside it
        assert [names[span_id] for span_id in _labels(app)["customdata"]] == everything
        assert app.selectbox[0].value == ids["orders process"]
        # WHEN its children are folded away, THEN its five descendants have no rows and it shows ▸
        [fold] = [button for button in app.button if button.label.startswith("Collapse the selected span's")]
        fold.click().run()
        assert not app.exception
        labels = _labels(app)
        assert [names[span_id] for span_id in labels["customdata"]] == [
            n for n in everything if n not in FOLDED
        ]
        assert "▸ " in labels["text"][everything.index("orders process")]
        # ... and "Expand all" brings them back
        next(button for button in app.button if button.label == "Expand all").click().run()
        assert not app.exception
        assert [names[span_id] for span_id in _labels(app)["customdata"]] == everything


def _labels(app: Any) -> dict[str, Any]:
    """The label trace of the page's waterfall (its text and its span ids, row by row)."""
    [chart] = app.get("plotly_chart")
    figure = json.loads(chart.proto.spec)
    labels: dict[str, Any] = next(trace for trace in figure["data"] if trace["name"] == LABEL_TRACE)
    return labels
