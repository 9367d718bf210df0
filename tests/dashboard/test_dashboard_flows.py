"""The service map, the flow search and the flow page, with Streamlit's AppTest on the real dashboard against
the shop's database; every number is compared with what the real query API answers for the same data.

What AppTest cannot do: click a row of ``st.dataframe`` (the selection is written into the table's session
state instead, which is what the browser sends), render the Graphviz or plotly chart (the DOT text and the
figure's JSON are read from the element instead), or fetch a download (the bytes are read from the media
storage the run filled).
"""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from streamlit.runtime.media_file_storage import MediaFileStorageError
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.model.graph import GraphEdge, GraphNode, ServiceGraph
from hopscope.collector.model.red import RedStats
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.dashboard.plain_text import LABEL_CHARS, markdown_label
from hopscope.dashboard.service_map_dot import NODE_TYPE_LABELS, service_map_dot
from tests.helpers.dashboard_harness import dashboard_env, run_page
from tests.helpers.flow_chains import Services, consume_batch, order_chain, post, publish_order
from tests.helpers.servers import ShopDatabase

DAY_NS = 86_400 * 1_000_000_000
SHAPES = {
    "service": "box",
    "queue": "cylinder",
    "topic": "hexagon",
    "bus": "parallelogram",
    "external": "ellipse",
}
RED = "#c62828"
_NODE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" \[(.*)\];$')
_EDGE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)" \[(.*)\];$')
_ATTRIBUTE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_LABEL = re.compile(r"^([\d.]+)/(s|min|h) · p95 ([\d.]+) (ms|s)\\n([\d.]+)% err")
_WAIT = re.compile(r"wait p95 ([\d.]+) (ms|s)")


@pytest.fixture(scope="module")
def o3_flow(api: httpx.Client) -> int:
    flows = api.get("/api/flows", params={"correlation_id": "o-3"}).json()["flows"]
    assert len(flows) == 1
    return int(flows[0]["flow_id"])


def _dot_graph(dot: str) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str, str], dict[str, str]]]:
    """Nodes by id and edges by (source, target, kind) of the page's DOT text (kind: the tooltip's start)."""
    nodes, edges = {}, {}
    for line in dot.splitlines():
        if match := _EDGE.match(line):
            attributes = dict(_ATTRIBUTE.findall(match[3]))
            kind = attributes["tooltip"].split(":", 1)[0]
            edges[(match[1], match[2], kind)] = attributes
        elif match := _NODE.match(line):
            nodes[match[1]] = dict(_ATTRIBUTE.findall(match[2]))
    return nodes, edges


def _close(shown: str, unit: str, exact: float) -> bool:
    """The label rounds: the exact value (ms, %, per second) must round to what it shows in its unit."""
    scale = {"ms": 1.0, "s": 1000.0, "%": 1.0, "/s": 1.0, "/min": 1 / 60, "/h": 1 / 3600}[unit]
    decimals = len(shown.partition(".")[2])
    return abs(float(shown) - exact / scale) <= 0.5 * 10**-decimals + 1e-9


def _page_map(app: AppTest) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str, str], dict[str, str]]]:
    """Nodes by id and edges by (source, target, kind) of the page's Plotly map, read as ``_dot_graph``
    reads DOT: labels with ``\\n`` line breaks, a node's ``shape`` from its kind, an edge's ``color``."""
    charts = app.get("plotly_chart")
    assert len(charts) == 1
    figure = json.loads(charts[0].proto.spec)
    traces = {trace.get("name"): trace for trace in figure["data"]}
    kinds = {label: kind for kind, label in NODE_TYPE_LABELS.items()}
    nodes = {}
    drawn = traces["nodes"]
    shapes = figure["layout"]["shapes"]
    for (what, node_id), text, hover, shape in zip(
        drawn["customdata"], drawn["text"], drawn["hovertext"], shapes, strict=True
    ):
        assert what == "node"
        kind = next(kinds[label] for label in sorted(kinds, key=len, reverse=True) if hover.startswith(label))
        dashed = shape["line"].get("dash") == "dash"
        nodes[node_id] = {
            "label": html.unescape(text).replace("<br>", "\\n"),
            "shape": SHAPES[kind],
            "style": "dashed" if dashed else "",
        }
    hops = traces["hops"]
    edges = {
        (source, target, kind): {"label": html.unescape(text).replace("<br>", "\\n"), "color": colour}
        for (_, _, source, target, kind), text, colour in zip(
            hops["customdata"], hops["text"], hops["marker"]["color"], strict=True
        )
    }
    return nodes, edges


@pytest.mark.parametrize("page", ["service_map", "flows", "flow_detail"])
def test_each_page_shows_the_hint_on_an_empty_database(tmp_path: Path, page: str) -> None:
    for db in (tmp_path / "missing.db", tmp_path / "empty.db"):
        if db.name == "empty.db":
            SQLiteStore(db).close()
        with dashboard_env(db):
            app = run_page(page, {"flow": "1"})
        assert not app.exception
        assert any("No data yet" in info.value for info in app.info), (page, db.name)
        assert not app.get("graphviz_chart") and not app.get("plotly_chart") and not app.dataframe


def test_the_service_map_draws_the_graph_apis_nodes_and_numbers(
    shop: ShopDatabase, api: httpx.Client
) -> None:
    with dashboard_env(shop.db):
        app = run_page("service_map", {"range": "24h"})
    assert not app.exception
    until = time.time_ns()
    graph = api.get("/api/graph", params={"since": str(until - DAY_NS), "until": str(until)}).json()
    nodes, edges = _page_map(app)

    assert set(nodes) == {node["id"] for node in graph["nodes"]}
    for node in graph["nodes"]:
        assert nodes[node["id"]]["shape"] == SHAPES[node["type"]], node
        assert nodes[node["id"]]["label"].startswith(node["name"])
        if node["type"] == "external":
            assert "dashed" in nodes[node["id"]]["style"]
    assert {node["type"] for node in graph["nodes"]} >= {"service", "queue", "topic"}
    # the shop's one AWS call besides messaging (SNS CreateTopic at start-up) names its topic: drawn on the
    # topic's node as an external (AWS API) edge, not as an external:SNS node
    assert ("service:orders-api", "aws.sns:order-events", "external") in edges

    assert set(edges) == {(edge["source"], edge["target"], edge["kind"]) for edge in graph["edges"]}
    for edge in graph["edges"]:
        attributes = edges[(edge["source"], edge["target"], edge["kind"])]
        match = _LABEL.match(attributes["label"])
        assert match, attributes["label"]
        rate, rate_unit, p95, p95_unit, error_pct = match.groups()
        assert _close(rate, f"/{rate_unit}", edge["red"]["rate_per_second"]), edge
        assert _close(p95, p95_unit, edge["red"]["p95_ms"]), edge
        assert _close(error_pct, "%", 100 * edge["red"]["error_rate"]), edge
        assert (attributes["color"] == RED) == (edge["red"]["error_rate"] >= 0.05), edge
        wait = _WAIT.search(attributes["label"])
        if edge["kind"] in ("consume", "subscription"):
            assert wait, attributes["label"]
            assert _close(wait[1], wait[2], edge["queue_wait_p95_ms"]), edge
        else:
            assert wait is None, attributes["label"]
    shipping = edges[("aws_sqs:shipping", "service:shipping", "consume")]
    assert shipping["color"] == RED and "max receives 2" in shipping["label"]  # o-3 failed twice


def test_the_service_filter_shows_a_services_neighbourhood_and_stays_in_the_url(shop: ShopDatabase) -> None:
    with dashboard_env(shop.db):
        app = run_page("service_map", {"range": "24h", "service": "billing"})
        assert not app.exception
        assert app.multiselect[0].value == ["billing"]
        nodes, _ = _page_map(app)
        # billing's queue, the topic feeding it and the service publishing there; not shipping's side
        assert set(nodes) == {
            "service:billing",
            "aws_sqs:billing",
            "aws.sns:order-events",
            "service:orders-api",
        }
        app.multiselect[0].select("shipping").run()
        assert not app.exception
        assert app.query_params["service"] == ["billing", "shipping"]
        nodes, _ = _page_map(app)
        assert {"service:shipping", "aws_sqs:shipping"} <= set(nodes)


def test_buses_and_odd_names_are_drawn_too() -> None:
    """The shop has no event bus: the builder gets one here, with a name that needs quoting."""
    red = RedStats(4, 4 / 3600, 1, 0.25, 12.0, 80.0, 95.0)
    graph = ServiceGraph(
        nodes=[
            GraphNode("service:a", "service", "a"),
            GraphNode('aws.eventbridge:ev"bus', "bus", 'ev"bus'),
            GraphNode("service:b", "service", "b"),
        ],
        edges=[
            GraphEdge("service:a", 'aws.eventbridge:ev"bus', "publish", red, None, None, None, 0),
            GraphEdge('aws.eventbridge:ev"bus', "service:b", "consume", red, 5.0, 30.0, 40.0, 1),
        ],
    )
    nodes, edges = _dot_graph(service_map_dot(graph, None))
    assert nodes['aws.eventbridge:ev\\"bus']["shape"] == "parallelogram"
    consume = edges[('aws.eventbridge:ev\\"bus', "service:b", "consume")]
    assert consume["label"] == "4.00/h · p95 80.0 ms\\n25.0% err\\nwait p95 30.0 ms"
    assert consume["color"] == RED
    assert set(_dot_graph(service_map_dot(graph, {"b"}))[0]) == set(nodes)  # b's upstream reaches a


def _shown_flow_ids(app: AppTest) -> list[int]:
    table = app.dataframe[0].value
    return [int(link.rpartition("=")[2]) for link in table["link"]]


def test_a_correlation_id_in_the_url_finds_the_flow_and_a_row_opens_it(
    shop: ShopDatabase, o3_flow: int
) -> None:
    """o3_flow is the one flow ``GET /api/flows?correlation_id=o-3`` answers."""
    with dashboard_env(shop.db):
        app = run_page("flows", {"range": "24h", "correlation_id": "o-3"})
        assert not app.exception
        assert _shown_flow_ids(app) == [o3_flow]
        assert any("with correlation id o-3" in caption.value for caption in app.caption)
        assert "o-3" in [field.value for field in app.text_input]  # the form shows the search

        # AppTest cannot click a dataframe row; the selection goes into the table's state, as a click would
        app.session_state["flows_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
        app.run()
    assert not app.exception
    assert app.query_params["flow"] == str(o3_flow)
    assert app.query_params["range"] == "24h"
    assert [title.value for title in app.title if title.value != "hopscope"] == ["Flow"]  # not the sidebar's
    assert {metric.label: metric.value for metric in app.metric}["Max receive count"] == "2"


def test_the_search_form_writes_the_filter_to_the_url_and_matches_the_api(
    shop: ShopDatabase, api: httpx.Client
) -> None:
    all_flows = api.get("/api/flows").json()["flows"]
    failing = api.get("/api/flows", params={"status": "error"}).json()["flows"]
    o2 = api.get("/api/flows", params={"correlation_id": "o-2"}).json()["flows"]
    with dashboard_env(shop.db):
        app = run_page("flows", {"range": "24h"})
        assert not app.exception
        assert sorted(_shown_flow_ids(app)) == sorted(flow["flow_id"] for flow in all_flows)

        next(toggle for toggle in app.toggle if toggle.label == "Errors only").set_value(True)
        next(b for b in app.button if b.label == "Search").click().run()
        assert not app.exception
        assert app.query_params["status"] == "error"
        assert sorted(_shown_flow_ids(app)) == sorted(flow["flow_id"] for flow in failing)

        next(toggle for toggle in app.toggle if toggle.label == "Errors only").set_value(False)
        next(field for field in app.text_input if field.label == "Correlation id").set_value("o-2")
        next(b for b in app.button if b.label == "Search").click().run()
    assert not app.exception
    assert app.query_params["correlation_id"] == "o-2" and "status" not in app.query_params
    assert _shown_flow_ids(app) == [flow["flow_id"] for flow in o2]


@pytest.mark.parametrize(
    "bad",
    [
        {"min_duration_ms": "-5"},
        {"min_duration_ms": "nan"},
        {"min_duration_ms": "1e400"},
        {"limit": "0"},
        {"limit": "2.5"},
        {"sort": "fastest", "status": "ok"},
        {"attr": ":no-key", "offset": "1", "bogus": "1"},
    ],
)
def test_a_hand_edited_url_searches_with_what_the_api_would_accept(
    shop: ShopDatabase, o3_flow: int, bad: dict[str, str]
) -> None:
    """The page parses its URL with the query API's flow-filter parser, leaving out what a 400 would refuse
    (a link is never an error page); the rest of the search stands."""
    with dashboard_env(shop.db):
        app = run_page("flows", {"range": "24h", "correlation_id": "o-3", **bad})
    assert not app.exception
    assert _shown_flow_ids(app) == [o3_flow]
    assert next(field for field in app.number_input if field.label == "Limit").value == 50
    assert next(field for field in app.number_input if field.label == "Min duration (ms)").value is None
    assert not next(toggle for toggle in app.toggle if toggle.label == "Errors only").value


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[MemoryMediaFileStorage]:
    """The media storages AppTest's runs create (the real ones), to read a download button's bytes."""
    created: list[MemoryMediaFileStorage] = []
    original = MemoryMediaFileStorage.__init__

    def recording_init(self: MemoryMediaFileStorage, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(MemoryMediaFileStorage, "__init__", recording_init)
    return created


def test_the_flow_page_shows_every_span_the_queue_waits_errors_retries_and_the_otlp_download(
    shop: ShopDatabase, api: httpx.Client, o3_flow: int, downloads: list[MemoryMediaFileStorage]
) -> None:
    detail = api.get(f"/api/flows/{o3_flow}").json()
    otlp = api.get(f"/api/flows/{o3_flow}/otlp").json()
    spans = {span["span_id"]: span for span in detail["spans"]}
    failed = {span_id for span_id, span in spans.items() if span["status"]["code"] == "ERROR"}
    retried = {
        span_id for span_id, span in spans.items() if span["attributes"].get("hopscope.receive_count", 0) > 1
    }
    assert failed and retried and detail["hops"]  # o-3 fails in shipping twice

    with dashboard_env(shop.db):
        app = run_page("flow_detail", {"flow": str(o3_flow)})
    assert not app.exception

    table = next(frame.value for frame in app.dataframe if "span_id" in frame.value.columns)
    assert dict(zip(table["span_id"], table["name"], strict=True)) == {
        span_id: span["name"] for span_id, span in spans.items()
    }

    charts = app.get("plotly_chart")
    assert len(charts) == 1
    figure = json.loads(charts[0].proto.spec)
    bars = [
        trace
        for trace in figure["data"]
        if trace["type"] == "bar" and trace["name"] not in ("queue wait", "critical path")
    ]
    shown = [span_id for bar in bars for span_id in bar["customdata"]]
    assert sorted(shown) == sorted(spans)  # one bar per span
    assert {bar["name"] for bar in bars} == {span["service"] for span in spans.values()}
    for bar in bars:
        for index, span_id in enumerate(bar["customdata"]):
            outlined = (
                bar["marker"]["line"]["color"][index] == RED and bar["marker"]["line"]["width"][index] > 0
            )
            assert outlined == (span_id in failed), span_id
            assert ("retry" in bar["text"][index]) == (span_id in retried), span_id
            assert bar["x"][index] == pytest.approx(spans[span_id]["duration_ms"])
    crosses = next(trace for trace in figure["data"] if trace["name"] == "error")
    assert sorted(crosses["customdata"]) == sorted(failed)

    waits = next(trace for trace in figure["data"] if trace["name"] == "queue wait")
    segments = sorted(zip(map(tuple, waits["customdata"]), waits["x"], waits["text"], strict=True))
    hops = sorted(
        (
            (h["producer"]["span_id"], h["consumer"]["span_id"]),
            h["queue_wait_ms"],
            f"queue wait {h['destination']}",
        )
        for h in detail["hops"]
    )
    assert len(segments) == len(hops)  # a segment per hop
    for (pair, length, text), (hop_pair, wait_ms, hop_text) in zip(segments, hops, strict=True):
        assert (pair, text) == (hop_pair, hop_text)
        assert length == pytest.approx(wait_ms)

    [button] = app.download_button
    file_name = button.proto.url.rpartition("/")[2]
    contents = [storage.get_file(file_name).content for storage in downloads if _has(storage, file_name)]
    assert contents, "the download's bytes are in the run's media storage"
    assert json.loads(contents[-1]) == otlp


def _has(storage: MemoryMediaFileStorage, file_name: str) -> bool:
    try:
        storage.get_file(file_name)
    except MediaFileStorageError:
        return False
    return True


def test_choosing_a_span_shows_its_attributes_and_events_and_keeps_it_in_the_url(
    shop: ShopDatabase, api: httpx.Client, o3_flow: int
) -> None:
    detail = api.get(f"/api/flows/{o3_flow}").json()
    failed = next(span for span in detail["spans"] if span["events"])
    with dashboard_env(shop.db):
        app = run_page("flow_detail", {"flow": str(o3_flow)})
        app.selectbox[0].set_value(failed["span_id"]).run()
    assert not app.exception
    assert app.query_params["span"] == failed["span_id"]
    assert any(failed["status"]["message"] in error.value for error in app.error)
    tables = [frame.value for frame in app.dataframe if list(frame.value.columns) == ["key", "value"]]
    assert set(tables[0]["key"]) == set(failed["attributes"])
    assert any("exception.type" in set(frame["key"]) for frame in tables)  # the exception event
    # the consumer's link is to the producer of this very flow: named, no button to another flow
    assert any("in this flow" in markdown.value for markdown in app.markdown)
    assert not [button for button in app.button if button.label.startswith("Open flow")]


def test_without_a_flow_id_the_page_points_to_the_find_a_flow_box(shop: ShopDatabase) -> None:
    with dashboard_env(shop.db):
        app = run_page("flow_detail")
    assert not app.exception
    assert not app.get("plotly_chart")
    assert not [field for field in app.number_input if field.label == "Flow id"]
    assert any("Find a flow" in info.value and "Flows page" in info.value for info in app.info)


def test_the_flow_page_says_when_its_entry_was_called_with_a_trace_context_from_outside(
    tmp_path: Path,
) -> None:
    # GIVEN a flow whose API was called with a traceparent from outside (its name odd Markdown), and one not
    services = Services()
    api = services.tracer("orders-api")
    outside = TraceContextTextMapPropagator().extract(
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    )
    name = "POST /orders **now** [x](http://evil)"
    with api.start_as_current_span(name, context=outside, kind=SpanKind.SERVER):
        with api.start_as_current_span("validate"):
            pass
    order_chain(services, "o-1")
    store = SQLiteStore(tmp_path / "outside.db")
    post(store, services.spans())
    flows = {
        summary.correlation_ids[0] if summary.correlation_ids else "outside": summary
        for summary in QueryLayer(store).search_flows(FlowFilter())
    }
    store.close()
    assert set(flows) == {"outside", "o-1"}
    assert flows["outside"].entry_operation == name
    # WHEN the page shows each flow
    shown = {}
    for key, summary in flows.items():
        with dashboard_env(tmp_path / "outside.db"):
            app = run_page("flow_detail", {"flow": str(summary.flow_id)})
        assert not app.exception
        shown[key] = (app.subheader[0].value, [caption.value for caption in app.caption])
    # THEN the entry is named as text (views/flow_detail.py HEADING_CHARS), and only the flow called from
    # outside says so
    heading_chars = 2 * LABEL_CHARS
    heading, captions = shown["outside"]
    assert heading == markdown_label(f"orders-api · {name}", heading_chars)
    assert "**" not in heading.replace("\\*\\*", "")
    assert "called with a trace context from outside" in captions
    heading, captions = shown["o-1"]
    assert heading == markdown_label("orders-api · POST /orders", heading_chars)
    assert "called with a trace context from outside" not in captions


def test_a_batch_shared_by_two_flows_is_marked_in_each_and_opens_the_other(tmp_path: Path) -> None:
    # GIVEN two orders processed in one batch (one consumer span linking to both producers)
    services = Services()
    first, second = publish_order(services, "b-1"), publish_order(services, "b-2")
    consume_batch(services, [first, second], orders=["b-1", "b-2"])
    db = tmp_path / "batch.db"
    store = SQLiteStore(db)
    post(store, services.spans())
    flows = {
        summary.correlation_ids[0]: summary.flow_id
        for summary in QueryLayer(store).search_flows(FlowFilter())
    }
    store.close()
    assert set(flows) == {"b-1", "b-2"}
    with dashboard_env(db):
        # WHEN the flow list and the first order's flow page are shown
        listed = run_page("flows")
        app = run_page("flow_detail", {"flow": str(flows["b-1"])})
        assert not listed.exception and not app.exception
        # THEN the list holds the two orders only, not the batch
        assert sorted(_shown_flow_ids(listed)) == sorted(flows.values())
        # ... the flow page says the batch is shared, and how many other messages it processed
        notices = [
            markdown.value for markdown in app.markdown if "shared: processed in one batch" in markdown.value
        ]
        assert len(notices) == 1 and "with 1 other message (1 other flow)" in notices[0]
        # ... and its button opens the other order's flow
        app.button(key=f"shared_{_batch_trace(services)}_{flows['b-2']}").click().run()
        assert app.query_params["flow"] == str(flows["b-2"])


def _batch_trace(services: Services) -> str:
    (batch,) = {format(s.context.trace_id, "032x") for s in services.spans() if s.name.startswith("process ")}
    return batch
