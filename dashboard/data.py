"""What the pages show, from the query layer, as DataFrames: cached briefly, never the whole span table.

The store handle is a cached resource; each query result is cached for ``TTL_SECONDS`` (the time range's
end is rounded, so reruns hit the cache). Pages never see SQL or OTLP, only these frames and the query
layer's typed values (``model``).
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import streamlit as st

from hopscope.collector.model.fate import FateFilter, MessageFate
from hopscope.collector.model.flows import FlowDetail, FlowFilter, FlowSort
from hopscope.collector.model.graph import ServiceGraph
from hopscope.collector.model.logs import LogFilter
from hopscope.collector.model.queues import QueueSummary
from hopscope.collector.model.red import LatencyPoint, ServiceRed
from hopscope.collector.query.layer import LogAnswer, QueryLayer
from hopscope.collector.store.url import open_store
from hopscope.dashboard import url_state
from hopscope.dashboard.config import load_config

TTL_SECONDS = 10


@st.cache_resource(show_spinner=False)
def _query_layer(key: str) -> QueryLayer:
    return QueryLayer(open_store(key, read_only=True))


def queries() -> QueryLayer | None:
    """The query layer over the configured store, or None while a SQLite file does not exist yet."""
    config = load_config()
    if config.store is None and not config.db.exists():
        return None
    return _query_layer(db_key())


def db_key() -> str:
    """The cache key of the configured store: its URL, or the SQLite file's resolved path."""
    config = load_config()
    return config.store or str(config.db.resolve())


def _layer(db: str) -> QueryLayer:
    return _query_layer(db)


def to_datetime(unix_nano: pd.Series | int) -> pd.Series | pd.Timestamp:
    return pd.to_datetime(unix_nano, unit="ns", utc=True)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def has_data(db: str) -> bool:
    layer = _layer(db)
    return layer.has_spans() or bool(layer.queues())


SERVICE_COLUMNS = [
    "service", "rate_per_s", "error_pct", "p50_ms", "p95_ms", "p99_ms", "spans", "errors", "operations",
]  # fmt: skip


def _service_row(service: ServiceRed) -> dict[str, object]:
    return {
        "service": service.service,
        "rate_per_s": service.red.rate_per_second,
        "error_pct": 100 * service.red.error_rate,
        "p50_ms": service.red.p50_ms,
        "p95_ms": service.red.p95_ms,
        "p99_ms": service.red.p99_ms,
        "spans": service.red.span_count,
        "errors": service.red.error_count,
        "operations": service.operations,
    }


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def services_frame(db: str, since: int, until: int) -> pd.DataFrame:
    """RED per service: rate, error %, p50/p95/p99 of its entry spans."""
    rows = [_service_row(service) for service in _layer(db).services(since, until)]
    return pd.DataFrame(rows, columns=SERVICE_COLUMNS)  # type: ignore[no-any-return]


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def services_trend_frame(db: str, since: int, until: int, step_seconds: int) -> pd.DataFrame:
    """``services_frame`` with each service's p95 (ms) per step in ``p95_trend`` (0 where it had no entry
    span), from one read (a series per service read the range's rollups once per service)."""
    rows = [
        {
            **_service_row(service),
            "p95_trend": [0.0 if point.red.p95_ms is None else point.red.p95_ms for point in points],
        }
        for service, points in _layer(db).services_over_time(since, until, step_seconds)
    ]
    return pd.DataFrame(rows, columns=[*SERVICE_COLUMNS, "p95_trend"])  # type: ignore[no-any-return]


LATENCY_COLUMNS = ["time", "p50_ms", "p95_ms", "p99_ms", "rate_per_s", "spans", "errors"]


def _latency_points_frame(points: list[LatencyPoint]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            {
                "time": point.bucket_start_unix_nano,
                "p50_ms": point.red.p50_ms,
                "p95_ms": point.red.p95_ms,
                "p99_ms": point.red.p99_ms,
                "rate_per_s": point.red.rate_per_second,
                "spans": point.red.span_count,
                "errors": point.red.error_count,
            }
            for point in points
        ],
        columns=LATENCY_COLUMNS,
    )
    frame["time"] = to_datetime(frame["time"])
    return frame  # type: ignore[no-any-return]


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def latency_frames(
    db: str, service: str, since: int, until: int, step_seconds: int, *, operation: str | None = None
) -> tuple[pd.Series, pd.DataFrame, pd.DataFrame]:
    """A service's (or operation's) latency from one read: the whole range's p50/p95/p99, rate and errors;
    the same per step; the distribution over the range (bin upper bound in ms, count)."""
    whole, points, bins = _layer(db).latency_over_range(service, since, until, step_seconds, operation)
    return (
        _latency_points_frame([LatencyPoint(since, whole)]).iloc[0],
        _latency_points_frame(points),
        pd.DataFrame(bins, columns=["upper_ms", "count"]),
    )


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def graph(db: str, since: int, until: int, kinds: tuple[str, ...] | None = None) -> ServiceGraph:
    return _layer(db).graph(since, until, kinds)


FLOW_COLUMNS = [
    "flow_id", "start", "duration_ms", "entry", "services", "spans", "traces", "errors",
    "max_receive_count", "correlation_ids", "dead_lettered", "duplicate_deliveries",
]  # fmt: skip


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def flows_frame(db: str, criteria: FlowFilter, fates: frozenset[FateFilter] = frozenset()) -> pd.DataFrame:
    """Flow summaries matching ``criteria`` (and ``fates``: model/fate.py), one row each."""
    rows = [
        {
            "flow_id": flow.flow_id,
            "start": flow.start_unix_nano,
            "duration_ms": flow.duration_ms,
            "entry": f"{flow.entry_service} {flow.entry_operation}" if flow.entry_service else "",
            "services": ", ".join(flow.services),
            "spans": flow.span_count,
            "traces": flow.trace_count,
            "errors": flow.error_count,
            "max_receive_count": flow.max_receive_count,
            "correlation_ids": ", ".join(flow.correlation_ids),
            "dead_lettered": flow.dead_lettered,
            "duplicate_deliveries": flow.duplicate_deliveries,
        }
        for flow in _layer(db).search_flows(criteria, fates)
    ]
    frame = pd.DataFrame(rows, columns=FLOW_COLUMNS)
    frame["start"] = to_datetime(frame["start"])
    return frame  # type: ignore[no-any-return]


def slowest_flows(db: str, since: int, until: int, limit: int = 10) -> pd.DataFrame:
    return flows_frame(db, FlowFilter(since, until, sort=FlowSort.DURATION, limit=limit))


def failing_flows(db: str, since: int, until: int, limit: int = 10) -> pd.DataFrame:
    return flows_frame(db, FlowFilter(since, until, errors_only=True, limit=limit))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def flow_detail(db: str, flow_id: int) -> FlowDetail | None:
    return _layer(db).flow(flow_id)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def message_fates(db: str, flow_id: int) -> list[MessageFate]:
    """What became of each message of the flow (the flow detail's ``messages``)."""
    detail = flow_detail(db, flow_id)
    return [] if detail is None else _layer(db).message_fates(detail)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def duplicate_rates_frame(db: str, since: int) -> pd.DataFrame:
    """Per queue and consumer service since then: messages processed, duplicate deliveries, their rate."""
    rows = [
        {
            "queue": rate.destination,
            "consumer": rate.consumer_service,
            "messages": rate.messages,
            "duplicate_deliveries": rate.duplicate_deliveries,
            "duplicate_rate": rate.rate,
        }
        for rate in _layer(db).duplicate_rates(since)
    ]
    columns = ["queue", "consumer", "messages", "duplicate_deliveries", "duplicate_rate"]
    return pd.DataFrame(rows, columns=columns)  # type: ignore[no-any-return, unused-ignore]


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def flow_otlp_json(db: str, flow_id: int) -> str | None:
    """The flow as OTLP JSON (what ``GET /api/flows/{id}/otlp`` answers, ``truncated`` included when the read
    cap cut it), for the download button."""
    document = _layer(db).flow_otlp_json(flow_id)
    return None if document is None else json.dumps(document, indent=2)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def flow_of_trace(db: str, trace_id: str) -> int | None:
    return _layer(db).flow_of_trace(bytes.fromhex(trace_id))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def flow_logs(db: str, flow_id: int) -> LogAnswer | None:
    """Every log line of the flow's traces, oldest first (None for an unknown flow)."""
    return _layer(db).flow_logs(flow_id)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def search_logs(db: str, criteria: LogFilter) -> LogAnswer:
    """The Logs page's search (the page's time range is in ``criteria``, its end rounded: reruns hit this)."""
    return _layer(db).search_logs(criteria)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def queues(db: str) -> list[QueueSummary]:
    return _layer(db).queues()


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def queue_depth_frame(db: str, queue: str, since: int, until: int) -> pd.DataFrame:
    """A queue's visible, in-flight, delayed counts and oldest age per poll."""
    answer = _layer(db).queue_depth(queue, since, until)
    samples = answer[0] if answer is not None else []
    frame = pd.DataFrame(
        [dataclasses.asdict(sample) for sample in samples],
        columns=["polled_unix_nano", "visible", "in_flight", "delayed", "oldest_age_seconds"],
    )
    frame.insert(0, "time", to_datetime(frame.pop("polled_unix_nano")))
    return frame  # type: ignore[no-any-return]


# -- live SQS (dead-letter queues) --------------------------------------------------------------------------

# Each peek raises the messages' ApproximateReceiveCount: a page shown again within this reuses the last one.
PEEK_TTL_SECONDS = 30
DEAD_LETTER_QUEUE_COLUMNS = ["name", "url", "arn", "visible", "in_flight", "sources"]
DEAD_LETTER_COLUMNS = [
    "message_id", "flow_id", "flow", "receive_count", "age_seconds", "sent_at", "body",
    "message_attributes", "attributes", "trace_id",
]  # fmt: skip


@st.cache_resource(show_spinner=False)
def sqs_client(endpoint_url: str | None, region: str | None) -> object:
    """One boto3 SQS client per endpoint and region (boto3 clients are thread-safe)."""
    from hopscope.collector.aws.clients import aws_client  # noqa: PLC0415 - boto3 only for the pages that use AWS

    return aws_client("sqs", endpoint_url, region)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def dead_letter_queues_frame(endpoint_url: str | None, region: str | None) -> tuple[pd.DataFrame, str | None]:
    """The dead-letter queues SQS knows now (ListQueues + attributes), with their counts and sources.

    Never raises: a failure (no credentials, endpoint unreachable) comes back as one line of text, and is
    cached like an answer, so that an unreachable endpoint is not waited for again on every rerun.
    """
    from hopscope.collector.aws.dlq import dead_letter_queues  # noqa: PLC0415

    try:
        queues = dead_letter_queues(sqs_client(endpoint_url, region))
    except Exception as exc:  # botocore's errors share no base class worth naming
        return pd.DataFrame(columns=DEAD_LETTER_QUEUE_COLUMNS), str(exc) or type(exc).__name__
    rows = [
        {
            "name": dlq.queue.name,
            "url": dlq.queue.url,
            "arn": dlq.queue.arn,
            "visible": dlq.visible,
            "in_flight": dlq.in_flight,
            "sources": [source.name for source in dlq.sources],
        }
        for dlq in queues
    ]
    return pd.DataFrame(rows, columns=DEAD_LETTER_QUEUE_COLUMNS), None


@st.cache_data(ttl=PEEK_TTL_SECONDS, show_spinner=False)
def dead_letters_frame(
    db: str, endpoint_url: str | None, region: str | None, queue_url: str, limit: int
) -> pd.DataFrame:
    """Up to ``limit`` messages of a queue, peeked (left in it), each with its flow from the stored spans."""
    from hopscope.collector.aws.dlq import peek  # noqa: PLC0415

    letters = peek(sqs_client(endpoint_url, region), queue_url, limit, flows=_layer(db))
    frame = pd.DataFrame(
        [
            {
                "message_id": letter.message_id,
                "flow_id": letter.flow_id,
                "flow": None if letter.flow_id is None else url_state.flow_link(letter.flow_id),
                "receive_count": letter.receive_count,
                "age_seconds": letter.age_seconds(),
                "sent_at": letter.sent_at,
                "body": letter.body,
                "message_attributes": json.dumps(letter.to_json()["message_attributes"], sort_keys=True),
                "attributes": json.dumps(dict(letter.attributes), sort_keys=True),
                "trace_id": letter.trace_id,
            }
            for letter in letters
        ],
        columns=DEAD_LETTER_COLUMNS,
    )
    frame["flow_id"] = frame["flow_id"].astype("Int64")
    frame["receive_count"] = frame["receive_count"].astype("Int64")
    return frame  # type: ignore[no-any-return]


def clear_dead_letter_cache() -> None:
    """After a redrive or a delete: the next look asks SQS again instead of showing what was there."""
    dead_letter_queues_frame.clear()
    dead_letters_frame.clear()
