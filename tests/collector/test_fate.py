"""A message's fate in its flow, end to end (issue 15, item 6): a real moto server over HTTP, a real collector
polling it (``--sqs``), spans of hopscope's own instrumentation (``@traced_handler`` + ``process_batch``,
``instrument_boto3``) sent through the real OTLP exporter, and ``hopscope dlq redrive`` run as a user runs it,
answering its confirmation on a terminal.

THEN a message that exhausts maxReceiveCount shows as dead-lettered in its flow (the detail's messages, the
summary's count, the flow list's filter), then as redriven with the retry's spans in the flow; a message whose
visibility timeout ran out while its first (successful) processing still ran is processed twice and shows as a
duplicate delivery, on the flow and in the consumer's duplicate rate.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import streamlit as st
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from hopscope.collector.aws.poller import QueuePoller
from hopscope.collector.model.fate import DeadLetterPeek
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.settings import SqsSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.instrumentation import process_batch, set_correlation_id, traced_handler
from tests.helpers.dashboard_harness import dashboard_env, run_page
from tests.helpers.dead_letters import Orders, aws_env, dlq_cli, export_and_settle, flow_of_order
from tests.helpers.lambda_shapes import LambdaContext, sqs_event
from tests.helpers.moto_server import MotoServer
from tests.helpers.servers import CollectorProcess, GlobalSpans


def eventually(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 30) -> Any:
    """``read()`` again until ``done`` holds (the poller runs every second), its last value returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r}"
        time.sleep(0.3)


def flow_page_text(collector: CollectorProcess, flow_id: int) -> str:
    """The dashboard's flow page (Streamlit's AppTest on the collector's database): its Markdown and
    captions as one text, fresh (no cached answers of an earlier run)."""
    st.cache_data.clear()
    with dashboard_env(collector.db):
        page = run_page("flow_detail", {"flow": str(flow_id)})
    assert not page.exception
    return "\n".join([m.value for m in page.markdown] + [c.value for c in page.caption])


def polling_collector(start_collector: Callable[..., CollectorProcess], moto: MotoServer) -> CollectorProcess:
    return start_collector("--sqs", "--aws-endpoint-url", moto.url, "--sqs-interval", "1s")


def redrive_on_a_terminal(moto: MotoServer, collector: CollectorProcess) -> tuple[str, str]:
    """``hopscope dlq redrive orders-dlq`` with stdin a pseudo-terminal, answering "yes" at its prompt."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*dlq_cli(), "redrive", "orders-dlq", "--aws-endpoint-url", moto.url],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=aws_env(HOPSCOPE_ENDPOINT=collector.url),
        )
        os.write(controller, b"yes\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert proc.returncode == 0, err
    return out, err


@pytest.mark.usefixtures("instrumented", "aws_credentials")
def test_a_dead_lettered_message_shows_in_its_flow_then_as_redriven_with_the_retrys_spans(
    moto: MotoServer, spans: GlobalSpans, start_collector: Callable[..., CollectorProcess]
) -> None:
    # GIVEN orders (maxReceiveCount 2) and a collector polling SQS every second; order-0's consumer fails
    # twice and SQS moves the message into orders-dlq
    orders = Orders(moto, max_receive_count=2)
    collector = polling_collector(start_collector, moto)
    orders.fail_into_dlq(1)
    export_and_settle(spans, collector)
    with collector.client() as http:
        flow_id = flow_of_order(http, "order-0")

        # THEN once the poller has peeked at orders-dlq, the flow says its message is there now
        detail = eventually(
            lambda: http.get(f"/api/flows/{flow_id}").json(),
            lambda body: body["summary"]["dead_lettered"] == 1,
        )
        (message,) = detail["messages"]
        assert message["fate"] == "dead_lettered"
        assert message["summary"] == "failed 2 deliveries; in dead-letter queue orders-dlq now"
        assert (message["dead_letter_queue"], message["failed_deliveries"], message["retries"]) == (
            "orders-dlq",
            2,
            1,
        )
        assert message["consumers"] == ["tests"] and message["redrive_spans"] == []
        # and so does the dashboard's flow page, as plain text
        assert (
            f"{message['message_id']} to orders: failed 2 deliveries; in dead-letter queue orders-dlq now"
            in (flow_page_text(collector, flow_id))
        )
        # and the flow list finds it by that fate, and not as delivered twice
        listed = http.get("/api/flows", params={"dead_lettered": "true"}).json()["flows"]
        assert [flow["flow_id"] for flow in listed] == [flow_id]
        assert http.get("/api/flows", params={"duplicates": "true"}).json()["flows"] == []

        # WHEN `hopscope dlq redrive` moves it back (confirmed at its prompt) and the fixed consumer runs
        out, _ = redrive_on_a_terminal(moto, collector)
        assert "type yes to move every message of orders-dlq to orders" in out
        assert out.strip().endswith("moved 1, failed 0, left 0")  # after the prompt, on its line
        orders.consume(fail=False, until=lambda: orders.counts(orders.url) == (0, 0))
        retry_spans = {
            format(s.context.span_id, "016x")
            for s in spans.finished()
            if s.kind is SpanKind.CONSUMER and "faas.trigger" not in (s.attributes or {})
        }
        export_and_settle(spans, collector)

        # THEN the flow says it was redriven, the retry's spans are in the flow and named as the retry's,
        # and once the poller finds orders-dlq empty it is no longer counted as dead-lettered
        detail = eventually(
            lambda: http.get(f"/api/flows/{flow_id}").json(),
            lambda body: body["summary"]["dead_lettered"] == 0,
        )
        (message,) = detail["messages"]
        assert message["fate"] == "redriven", message
        assert message["summary"] == (
            "failed 2 deliveries, dead-lettered, then redriven from orders-dlq to orders; "
            "processed by tests on retry"
        )
        assert message["redriven_to"] == "orders" and message["dead_letter_queue"] == "orders-dlq"
        assert message["left_dead_letter_queue_unix_nano"] is not None
        (redrive_span,) = [s for s in detail["spans"] if s["name"] == "redrive orders-dlq"]
        assert message["redrive_spans"] == [
            {"trace_id": redrive_span["trace_id"], "span_id": redrive_span["span_id"]}
        ]
        flow_span_ids = {s["span_id"] for s in detail["spans"]}
        retried = {ref["span_id"] for ref in message["retry_spans"]}
        assert retried and retried <= flow_span_ids
        assert retried <= retry_spans | {
            s["span_id"] for s in detail["spans"] if "faas.trigger" in s["attributes"]
        }
        assert http.get("/api/flows", params={"dead_lettered": "true"}).json()["flows"] == []
        page = flow_page_text(collector, flow_id)
        assert "redriven from orders-dlq to orders; processed by tests on retry" in page
        assert all(span_id in page for span_id in retried)  # the retry's spans, named


def run_consumer(orders: Orders, message: dict[str, Any], seconds: float) -> None:
    """One Lambda invocation of ``billing`` on ``message`` that takes ``seconds``, then deletes it."""

    @traced_handler
    def handler(event: dict[str, Any], context: Any) -> Any:
        return process_batch(event, lambda record: time.sleep(seconds))

    response = handler(sqs_event([message], orders.arn), LambdaContext(function_name="billing"))
    assert response == {"batchItemFailures": []}
    orders.sqs.delete_message(QueueUrl=orders.url, ReceiptHandle=message["ReceiptHandle"])


def receive_one(orders: Orders) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = orders.sqs.receive_message(
            QueueUrl=orders.url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        if answer.get("Messages"):
            return dict(answer["Messages"][0])
    raise AssertionError("no message came")


@pytest.mark.usefixtures("instrumented", "aws_credentials")
def test_a_message_processed_twice_shows_as_a_duplicate_delivery(
    moto: MotoServer, spans: GlobalSpans, start_collector: Callable[..., CollectorProcess], tmp_path: Any
) -> None:
    # GIVEN orders with a 1 s visibility timeout, and one order sent by an instrumented checkout
    orders = Orders(moto, max_receive_count=5)
    collector = polling_collector(start_collector, moto)
    with trace.get_tracer("test").start_as_current_span("checkout"):
        set_correlation_id("order-slow")
        orders.sqs.send_message(QueueUrl=orders.url, MessageBody=json.dumps({"uid": "order-slow"}))

    # WHEN the first invocation takes 3 s: the message becomes visible again meanwhile, a second
    # invocation receives it and processes it too; both succeed
    first = receive_one(orders)
    slow = threading.Thread(target=run_consumer, args=(orders, first, 3.0))
    slow.start()
    second = receive_one(orders)
    assert second["MessageId"] == first["MessageId"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    run_consumer(orders, second, 0.0)
    slow.join()
    export_and_settle(spans, collector)

    # THEN the flow counts one duplicate delivery, tells it, and the flow list finds it by it
    with collector.client() as http:
        flow_id = flow_of_order(http, "order-slow")
        detail = http.get(f"/api/flows/{flow_id}").json()
        assert (detail["summary"]["duplicate_deliveries"], detail["summary"]["dead_lettered"]) == (1, 0)
        (message,) = detail["messages"]
        assert message["message_id"] == first["MessageId"]
        assert (message["fate"], message["duplicate_deliveries"], message["deliveries"]) == (
            "duplicate_delivery",
            1,
            2,
        )
        assert message["summary"] == "Processed successfully more than once by tests: 1 duplicate delivery"
        listed = http.get("/api/flows", params={"duplicates": "true"}).json()["flows"]
        assert [flow["flow_id"] for flow in listed] == [flow_id]
        assert listed[0]["duplicate_deliveries"] == 1
        assert http.get("/api/flows", params={"duplicates": "true", "dead_lettered": "true"}).json() == {
            "flows": [],
            "limit": 50,
            "offset": 0,
        }
    # and the consumer's duplicate rate on orders is one duplicate per message processed
    store = SQLiteStore(collector.db, read_only=True)
    try:
        (rate,) = QueryLayer(store).duplicate_rates(0)
        assert (rate.destination, rate.consumer_service, rate.messages, rate.duplicate_deliveries) == (
            "orders",
            "tests",  # the service of the tests' tracer provider
            1,
            1,
        )
    finally:
        store.close()


def test_the_fate_filters_are_checked_like_every_other_parameter(
    start_collector: Callable[..., CollectorProcess],
) -> None:
    collector = start_collector()
    with httpx.Client(base_url=collector.url) as http:
        bad = http.get("/api/flows", params={"duplicates": "yes"})
        assert bad.status_code == 400
        assert bad.json()["message"] == "parameter 'duplicates': expected 'true' or 'false', got 'yes'"
        assert http.get("/api/flows", params={"dead_lettered": "false"}).json()["flows"] == []


@pytest.mark.usefixtures("aws_credentials")
def test_the_poller_records_each_dead_letter_peek_and_judges_gone_only_after_a_complete_one(
    moto: MotoServer, tmp_path: Any
) -> None:
    # GIVEN orders-dlq holding 12 messages (more than one peek sees) and orders holding one
    orders = Orders(moto)
    for number in range(12):
        orders.sqs.send_message(QueueUrl=orders.dlq_url, MessageBody=str(number))
    orders.sqs.send_message(QueueUrl=orders.url, MessageBody="working")
    store = SQLiteStore(tmp_path / "hopscope.db")
    poller = QueuePoller(store, SqsSettings(endpoint_url=moto.url))
    try:
        # WHEN the poller polls
        (peek,) = poller.poll_once().dead_letters

        # THEN it saw 10 of them, says the peek is not complete, and stored them as present
        assert (peek.queue_name, len(peek.sightings), peek.complete) == ("orders-dlq", 10, False)
        seen = [sighting.message_id for sighting in peek.sightings]
        assert all(record.present for record in store.dead_letters_of(seen, []))
        # and never peeked at the working queue (a peek there would pass for a retry)
        (working,) = orders.sqs.receive_message(
            QueueUrl=orders.url, MessageSystemAttributeNames=["ApproximateReceiveCount"]
        )["Messages"]
        assert working["Attributes"]["ApproximateReceiveCount"] == "1"

        # WHEN the dead-letter queue is purged and polled again
        orders.sqs.purge_queue(QueueUrl=orders.dlq_url)
        (peek,) = poller.poll_once().dead_letters

        # THEN the empty queue is a complete peek of nothing, and every message it held is gone
        assert peek == DeadLetterPeek("orders-dlq", (), complete=True)
        records = store.dead_letters_of(seen, [])
        assert len(records) == 10 and not any(record.present for record in records)
    finally:
        poller.stop()
        store.close()
