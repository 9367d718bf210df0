"""Rows in the OpenTelemetry Collector ClickHouse exporter's otel_traces layout, written as SQL text."""

from __future__ import annotations

import time

NOW = time.time_ns()
T0 = NOW - 5 * 60 * 1_000_000_000  # five minutes ago: inside every default range, past the external grace
MS = 1_000_000


def _map(pairs: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in pairs.items()) + "}"


def otel_row(
    start_ms: int, trace: str, span: str, parent: str, name: str, kind: str, service: str,
    attributes: dict[str, str], duration_ms: int, status: str = "Unset",
    links: tuple[tuple[str, str], ...] = (),
) -> str:  # fmt: skip
    start = T0 + start_ms * MS
    link_traces = "[" + ", ".join(f"'{t}'" for t, _ in links) + "]"
    link_spans = "[" + ", ".join(f"'{s}'" for _, s in links) + "]"
    link_states = "[" + ", ".join("''" for _ in links) + "]"
    link_attrs = "[" + ", ".join("map()" for _ in links) + "]"
    resource = _map({"service.name": service, "cloud.provider": "aws", "faas.name": service})
    return (
        f"(fromUnixTimestamp64Nano({start}), '{trace}', '{span}', '{parent}', '', '{name}', '{kind}', "
        f"'{service}', {resource}, 'opentelemetry.instrumentation.aws_lambda', '0.48b0', {_map(attributes)}, "
        f"{duration_ms * MS}, '{status}', '', [], [], [], {link_traces}, {link_spans}, {link_states}, "
        f"{link_attrs})"
    )


COLUMNS = (
    "Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName, "
    "ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage, "
    "Events.Timestamp, Events.Name, Events.Attributes, "
    "Links.TraceId, Links.SpanId, Links.TraceState, Links.Attributes"
)
