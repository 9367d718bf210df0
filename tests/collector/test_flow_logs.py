"""Issue 18's end-to-end acceptance: an API function and a queue consumer, each in its own process, log
through Python ``logging`` and a Powertools ``Logger`` behind ``@traced_handler`` with log export on; spans
and log records go through the real OTLP/HTTP exporters to a real collector, AWS calls to a moto server
(API -> SNS -> SQS -> consumer). Every record arrives once, with its trace, span, correlation id, level,
fields and exception, and the flow's logs endpoint tells each order's story in order.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.collector.test_vanilla_flows import _api_event, _by_order, _receive
from tests.helpers.dead_letters import wait_for_flows
from tests.helpers.lambda_shapes import sqs_event
from tests.helpers.logging_lambda import start_logging_function
from tests.helpers.moto_server import MotoServer
from tests.helpers.servers import CollectorProcess
from tests.helpers.vanilla_lambda import FunctionProcess, FunctionRun, RecordedSpan, wait_until_stored

ORDERS = ("L-1", "L-9")  # L-9 cannot be shipped
API, CONSUMER = "log-orders-api", "log-shipping"


def _story(order_id: str) -> list[tuple[str, str, str, str]]:
    """What each order's flow must tell, in order: (service, logger, severity, body)."""
    lines = [
        (API, "orders", "INFO", f"order {order_id} received"),
        (API, API, "INFO", "publishing the order"),
        (CONSUMER, "orders", "INFO", f"shipping {order_id}"),
        (CONSUMER, CONSUMER, "WARN", "carrier is slow"),
    ]
    if order_id.endswith("9"):
        lines.append((CONSUMER, "orders", "ERROR", f"cannot ship {order_id}"))
    return lines


def _spans_of(run: FunctionRun, kind: str, order_id: str) -> list[RecordedSpan]:
    return [s for s in run.spans_of(kind) if s.attributes.get("hopscope.correlation_id") == order_id]


def _wait_for_logs(http: Any, order_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        logs: list[dict[str, Any]] = http.get("/api/logs", params={"correlation_id": order_id}).json()["logs"]
        if len(logs) >= count:
            return logs
        assert time.monotonic() < deadline, f"{order_id}: {len(logs)} of {count} log records arrived"
        time.sleep(0.1)


def test_every_log_line_of_an_order_arrives_once_in_its_span_and_the_flow_tells_the_story(
    moto: MotoServer, start_collector: Any
) -> None:
    sqs, sns = moto.client("sqs"), moto.client("sns")
    topic = sns.create_topic(Name="log-orders")["TopicArn"]
    url = sqs.create_queue(QueueName=CONSUMER)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    collector: CollectorProcess = start_collector()
    started: list[FunctionProcess] = []
    try:
        # WHEN the API function takes two orders (two invocations) in its own process
        api = start_logging_function(
            "producer", API, [_api_event(o) for o in ORDERS], moto_url=moto.url,
            collector_url=collector.url, ORDER_TOPIC_ARN=topic,
        )  # fmt: skip
        started.append(api)
        api_run = api.result()
        # and the consumer gets both orders in ONE batch, as Lambda's poller hands them over
        messages = _by_order(_receive(sqs, url, len(ORDERS)))
        consumer = start_logging_function(
            "consumer", CONSUMER, [sqs_event([messages[o] for o in ORDERS], arn)], moto_url=moto.url,
            collector_url=collector.url,
        )  # fmt: skip
        started.append(consumer)
        consumer_run = consumer.result()
    finally:
        for process in started:
            process.kill()
    [batch_result] = consumer_run.results
    assert batch_result == {"batchItemFailures": [{"itemIdentifier": messages["L-9"]["MessageId"]}]}

    with collector.client() as http:
        wait_until_stored(http, [*api_run.spans, *consumer_run.spans])
        wait_for_flows(collector)
        for number, order_id in enumerate(ORDERS):
            story = _story(order_id)
            # THEN every record of the order arrives once (the search by correlation id finds each once)
            logs = _wait_for_logs(http, order_id, len(story))
            time.sleep(0.3)  # nothing more arrives: each record came once
            again = http.get("/api/logs", params={"correlation_id": order_id, "order": "oldest"}).json()[
                "logs"
            ]
            assert [(r["service"], r["scope"], r["severity"], r["body"]) for r in again] == story
            assert len(logs) == len(story)
            # in its span: the API's records in the invocation's SERVER span, the consumer's in the span
            # process_batch made for the record
            [invocation] = [
                s
                for s in api_run.spans_of("SERVER")
                if s.attributes.get("hopscope.correlation_id") == order_id
            ]
            [record_span] = [
                s
                for s in consumer_run.spans_of("CONSUMER")
                if s.attributes.get("hopscope.correlation_id") == order_id
            ]
            where = [(r["trace_id"], r["span_id"]) for r in again]
            assert where == [invocation.ref] * 2 + [record_span.ref] * (len(story) - 2)
            # with its fields: structured keys of logging's extra and of Powertools, the logger's level
            assert again[0]["attributes"]["order.total"] == 42
            assert again[1]["attributes"]["topic"] == "orders"
            assert again[3]["attributes"]["carrier"] == "demo-express"
            assert all(r["correlation_id"] == order_id for r in again)
            if order_id.endswith("9"):
                error = again[-1]
                assert error["severity_number"] == 17
                assert error["attributes"]["exception.type"].endswith("CannotShipError")
                assert error["attributes"]["exception.message"] == "no carrier for L-9"
                assert "raise CannotShipError" in error["attributes"]["exception.stacktrace"]
            # AND the flow's logs endpoint tells the same story, in order, across the API -> SNS -> SQS ->
            # consumer chain (the batch's other order's lines are not this flow's)
            [flow] = http.get("/api/flows", params={"correlation_id": order_id}).json()["flows"]
            answer = http.get(f"/api/flows/{flow['flow_id']}/logs").json()
            assert answer["truncated"] is False
            told = [(r["service"], r["scope"], r["severity"], r["body"]) for r in answer["logs"]]
            assert told == story, (number, json.dumps(answer["logs"], indent=1)[:2000])
            times = [r["time_unix_nano"] for r in answer["logs"]]
            assert times == sorted(times)
            # and its OTLP export carries the records too (the batch trace whole, as the spans' export does)
            exported = http.get(f"/api/flows/{flow['flow_id']}/logs/otlp").json()
            bodies = [
                record["body"].get("stringValue")
                for resource in exported["resourceLogs"]
                for scope in resource["scopeLogs"]
                for record in scope["logRecords"]
            ]
            assert {body for *_, body in story} <= set(bodies)
