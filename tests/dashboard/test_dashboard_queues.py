"""The latency, queues and dead-letters pages with Streamlit's AppTest, against the shop's real database
(filled by a real collector) and real moto servers: what each page shows equals what the query API answers,
and a redrive or a delete goes through its typed confirmation and really moves (or deletes) the message."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.dashboard_harness import dashboard_env, run_page
from tests.helpers.moto_server import MotoServer
from tests.helpers.servers import ShopDatabase, free_port

PAGES = ["latency", "queues", "dead_letters"]
DAY_SECONDS = 86400


def expand(value: Any) -> Any:
    """A plotly spec with its base64 typed arrays (``{"dtype", "bdata"}``) as plain lists."""
    if isinstance(value, list):
        return [expand(item) for item in value]
    if not isinstance(value, dict):
        return value
    if isinstance(value.get("bdata"), str) and set(value) <= {"bdata", "dtype", "shape"}:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return [None if isinstance(x, float) and np.isnan(x) else x for x in array.tolist()]
    return {key: expand(item) for key, item in value.items()}


def figures(node: Any) -> list[dict[str, Any]]:
    """Every plotly chart under ``node`` (the app or a block), as its figure dict."""
    return [expand(json.loads(chart.proto.spec)) for chart in node.get("plotly_chart")]


def trace(figure: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item for item in figure["data"] if item["name"] == name)


def unix_nano(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 1_000_000_000


def column_of(app: AppTest, subheader: str) -> Any:
    return next(column for column in app.columns if any(h.value == subheader for h in column.subheader))


def test_each_page_shows_where_to_send_spans_on_an_empty_database(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    SQLiteStore(db).close()
    with dashboard_env(db):
        for page in PAGES:
            app = run_page(page)
            assert not app.exception, page
            assert any("No data yet" in info.value for info in app.info), page


def test_each_page_runs_on_the_shop_database_with_its_defaults(shop: ShopDatabase) -> None:
    with dashboard_env(shop.db, aws_endpoint_url=shop.moto.url):
        for page in PAGES:
            app = run_page(page)
            assert not app.exception, page
            assert not app.error, page
            assert not any("No data yet" in info.value for info in app.info), page


def test_latency_shows_the_query_apis_percentiles_histogram_and_hop(
    shop: ShopDatabase, api: httpx.Client
) -> None:
    edges = api.get("/api/graph", params={"since": "0"}).json()["edges"]
    hop = next(e for e in edges if e["kind"] == "consume" and e["target"] == "service:shipping")
    with dashboard_env(shop.db):
        app = run_page("latency", {"range": "24h", "service": "shipping"})
    assert not app.exception
    # the hop shown by default is the one the chosen service consumes, and the URL now says so
    assert app.query_params["hop"] == f"{hop['source']}>{hop['target']}"
    over_time, histogram, hop_bars = figures(app)

    # The series: the same buckets as GET /api/latency over the page's range (its first point is `since`).
    p95 = trace(over_time, "p95")
    since = unix_nano(p95["x"][0])
    answer = api.get(
        "/api/latency",
        params={
            "service": "shipping",
            "since": str(since),
            "until": str(since + DAY_SECONDS * 1_000_000_000),
            "step": str(DAY_SECONDS // 60),
        },
    ).json()
    expected = [point["red"]["p95_ms"] for point in answer["points"]]
    assert p95["y"] == expected
    assert any(value is not None for value in expected)

    # The metrics: the whole range as one bucket; the histogram holds every span of the selection.
    whole = api.get(
        "/api/latency",
        params={
            "service": "shipping",
            "since": str(since),
            "until": str(since + DAY_SECONDS * 1_000_000_000),
            "step": str(DAY_SECONDS),
        },
    ).json()["points"][0]["red"]
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["p95 over the range"] == f"{whole['p95_ms']:,.1f} ms"
    assert metrics["Spans"] == str(whole["span_count"])
    assert sum(histogram["data"][0]["y"]) == whole["span_count"]
    # Its bins' upper bounds agree with the API's p95: the bin where 95% of the spans are reached holds it.
    store = SQLiteStore(shop.db, read_only=True)
    bins = QueryLayer(store).latency_histogram("shipping", since, since + DAY_SECONDS * 1_000_000_000)
    store.close()
    assert [count for _, count in bins] == histogram["data"][0]["y"]
    uppers = [upper for upper, _ in bins]
    assert uppers == sorted(uppers)
    reached = next(
        i
        for i in range(len(bins))
        if sum(c for _, c in bins[: i + 1]) >= 0.95 * sum(histogram["data"][0]["y"])
    )
    assert (uppers[reached - 1] if reached else 0) < whole["p95_ms"] <= uppers[reached]

    # The hop: queue wait and processing percentiles equal the graph API's consume edge.
    assert trace(hop_bars, "queue wait")["y"] == [
        hop["queue_wait_p50_ms"],
        hop["queue_wait_p95_ms"],
        hop["queue_wait_p99_ms"],
    ]
    assert trace(hop_bars, "processing")["y"][1] == hop["red"]["p95_ms"]
    assert metrics["Queue wait p95"] == f"{hop['queue_wait_p95_ms']:,.1f} ms"


def test_latency_of_one_operation_equals_the_api(shop: ShopDatabase, api: httpx.Client) -> None:
    services = api.get("/api/services", params={"since": "0"}).json()["services"]
    operation = next(s for s in services if s["service"] == "orders-api")["operations"][0]
    with dashboard_env(shop.db):
        app = run_page("latency", {"range": "24h", "service": "orders-api", "operation": operation})
    assert not app.exception
    assert app.selectbox(key="latency_operation").value == operation
    p95 = trace(figures(app)[0], "p95")
    since = unix_nano(p95["x"][0])
    answer = api.get(
        "/api/latency",
        params={
            "service": "orders-api",
            "operation": operation,
            "since": str(since),
            "until": str(since + DAY_SECONDS * 1_000_000_000),
            "step": str(DAY_SECONDS // 60),
        },
    ).json()
    assert p95["y"] == [point["red"]["p95_ms"] for point in answer["points"]]

    # Another service: the operation of the first is no longer a choice, and leaves the URL.
    with dashboard_env(shop.db):
        app.selectbox(key="latency_service").select("billing").run()
    assert not app.exception
    assert app.query_params["service"] == "billing"
    assert "operation" not in app.query_params
    assert app.selectbox(key="latency_operation").value == ""


@pytest.mark.parametrize("chosen", ["shipping", "shipping-dlq"])
def test_queues_show_the_latest_counts_and_depth_with_the_dlq_beside_its_source(
    shop: ShopDatabase, api: httpx.Client, chosen: str
) -> None:
    with dashboard_env(shop.db):
        app = run_page("queues", {"range": "24h", "queue": chosen})
    assert not app.exception
    assert not app.warning  # no poll of the shop's queues failed
    queues = {q["name"]: q for q in api.get("/api/queues").json()["queues"]}
    panels = [column for column in app.columns if column.subheader]
    assert [panel.subheader[0].value for panel in panels] == ["shipping", "shipping-dlq"]  # source | DLQ
    for name in ("shipping", "shipping-dlq"):
        panel = column_of(app, name)
        metrics = {metric.label: metric.value for metric in panel.metric}
        assert metrics["Visible"] == str(queues[name]["visible"])
        assert metrics["In flight"] == str(queues[name]["in_flight"])
        assert metrics["Delayed"] == str(queues[name]["delayed"])
        samples = api.get(f"/api/queues/{name}/depth", params={"since": "0"}).json()["samples"]
        messages = figures(panel)[0]
        assert len(trace(messages, "visible")["x"]) == len(samples) > 0
        assert trace(messages, "visible")["y"] == [sample["visible"] for sample in samples]
    assert column_of(app, "shipping-dlq").metric[0].value == "1"


def test_dead_letters_lists_o3_with_its_flow_and_the_actions_only_when_writable(
    shop: ShopDatabase, api: httpx.Client
) -> None:
    flows = api.get("/api/flows", params={"correlation_id": "o-3"}).json()["flows"]
    assert len(flows) == 1
    with dashboard_env(shop.db, aws_endpoint_url=shop.moto.url):
        app = run_page("dead_letters")
    assert not app.exception
    assert not app.error
    assert any("ApproximateReceiveCount" in caption.value for caption in app.caption)
    table = app.dataframe[0].value
    assert len(table) == 1
    assert table["flow"].iloc[0] == f"flow_detail?flow={flows[0]['flow_id']}"
    assert json.loads(table["body"].iloc[0])["order_id"] == "o-3"
    assert table["receive_count"].iloc[0] >= 2  # moved after 2 receives; each peek adds one
    keys = {button.key for button in app.button}
    assert {"redrive_shipping-dlq", "delete_shipping-dlq"} <= keys
    assert app.button(key="redrive_shipping-dlq").label == "Redrive all to shipping"

    with dashboard_env(shop.db, read_only=True, aws_endpoint_url=shop.moto.url):
        read_only = run_page("dead_letters")
    assert not read_only.exception
    assert len(read_only.dataframe[0].value) == 1  # still shown
    assert not [button.key for button in read_only.button if "shipping-dlq" in (button.key or "")]
    assert not read_only.main.button  # absent, not disabled (the sidebar holds Find a flow)


@pytest.fixture
def dead_letter_pair(moto: MotoServer) -> tuple[Any, str, str]:
    """On the (emptied) shared moto server, never the shop's: a source queue and its DLQ holding two."""
    sqs = moto.client("sqs")
    dlq = sqs.create_queue(QueueName="returns-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})
    source = sqs.create_queue(QueueName="returns", Attributes={"RedrivePolicy": policy})["QueueUrl"]
    for body in ("keep", "drop"):
        sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"return": body}))
    return sqs, dlq, source


def counts(sqs: Any, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def confirm(app: AppTest, text: str) -> None:
    app.text_input(key="dead_letters_confirm_text").input(text)
    app.button(key="dead_letters_confirm").click().run()


def test_delete_and_redrive_go_through_a_typed_confirmation(
    shop: ShopDatabase, moto: MotoServer, dead_letter_pair: tuple[Any, str, str]
) -> None:
    sqs, dlq, source = dead_letter_pair
    with dashboard_env(shop.db, aws_endpoint_url=moto.url):
        app = run_page("dead_letters")
        assert not app.exception
        table = app.dataframe[0].value
        assert sorted(table["body"]) == ['{"return": "drop"}', '{"return": "keep"}']
        # shipping-dlq is in the database but not on this endpoint: shown from the stored polls
        assert any("Not readable in SQS now" in caption.value for caption in app.caption)

        # Delete one message: asked, refused without "yes", then done.
        drop = table.loc[table["body"] == '{"return": "drop"}', "message_id"].iloc[0]
        app.selectbox(key="delete_message_returns-dlq").select(drop).run()
        app.button(key="delete_returns-dlq").click().run()
        assert "Delete message" in app.warning[0].value
        confirm(app, "no")
        assert not app.exception
        assert any('Type "yes"' in caption.value for caption in app.caption)
        assert counts(sqs, dlq) == (2, 0)  # nothing happened
        confirm(app, "yes")
        assert not app.exception
        assert app.status[0].label == f"Deleted message {drop} from returns-dlq"
        assert counts(sqs, dlq) == (1, 0)

        # Redrive the rest to its source, with progress in a status box and the result shown.
        app.button(key="redrive_returns-dlq").click().run()
        assert "back to **returns**" in app.warning[0].value
        assert counts(sqs, dlq) == (1, 0)
        confirm(app, "yes")
        assert not app.exception
        result = "Redrive of returns-dlq to returns: 1 moved, 0 failed, 0 left in returns-dlq"
        assert app.status[0].label == result
        assert app.status[0].state == "complete"
        assert app.success[0].value == result
        assert any("Empty" in success.value for success in app.success)  # the DLQ, peeked again
    assert counts(sqs, dlq) == (0, 0)
    moved = sqs.receive_message(QueueUrl=source, WaitTimeSeconds=1)["Messages"]
    assert [message["Body"] for message in moved] == ['{"return": "keep"}']


def test_an_unreachable_aws_is_one_clear_error_and_the_stored_queues_stay(shop: ShopDatabase) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with dashboard_env(shop.db, aws_endpoint_url=nowhere):
        app = run_page("dead_letters")
    assert not app.exception
    assert len(app.error) == 1
    assert f"Cannot reach SQS at {nowhere}" in app.error[0].value
    assert app.subheader[0].value == "shipping-dlq"  # from the collector's polls
    assert app.metric[0].value == "1"
    assert not app.main.button  # (the sidebar holds Find a flow's)
