"""What invoked a Lambda function, read from the event's shape: the invocation span's name, kind,
faas.trigger and attributes, and where the caller's trace context is.

The shapes are those of the real events (API Gateway REST and HTTP APIs, Function URLs, ALB, SQS, SNS,
EventBridge, S3, DynamoDB and Kinesis streams); anything else is a direct invocation (faas.trigger=other).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from opentelemetry.trace import SpanKind

from hopscope.instrumentation.records import MessageRecord


class Trigger(enum.Enum):
    """An event source, by the shape of its event."""

    API_GATEWAY_REST = "api_gateway_rest"
    HTTP_API = "http_api"
    FUNCTION_URL = "function_url"
    ALB = "alb"
    SQS = "sqs"
    SNS = "sns"
    KINESIS = "kinesis"
    DYNAMODB = "dynamodb"
    S3 = "s3"
    EVENTBRIDGE = "eventbridge"
    SCHEDULE = "schedule"
    DIRECT = "direct"


_FAAS_TRIGGER = {
    Trigger.API_GATEWAY_REST: "http",
    Trigger.HTTP_API: "http",
    Trigger.FUNCTION_URL: "http",
    Trigger.ALB: "http",
    Trigger.SQS: "pubsub",
    Trigger.SNS: "pubsub",
    Trigger.KINESIS: "pubsub",
    Trigger.EVENTBRIDGE: "pubsub",
    Trigger.DYNAMODB: "datasource",
    Trigger.S3: "datasource",
    Trigger.SCHEDULE: "timer",
    Trigger.DIRECT: "other",
}

_RECORD_TRIGGERS = {
    "aws:sqs": Trigger.SQS,
    "aws:sns": Trigger.SNS,
    "aws:kinesis": Trigger.KINESIS,
    "aws:dynamodb": Trigger.DYNAMODB,
    "aws:s3": Trigger.S3,
}


@dataclass
class Invocation:
    """The invocation span to start for one event."""

    trigger: Trigger
    name: str
    kind: SpanKind
    attributes: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # HTTP: lower-case names
    records: list[MessageRecord] = field(default_factory=list)

    @property
    def faas_trigger(self) -> str:
        return _FAAS_TRIGGER[self.trigger]

    @property
    def is_http(self) -> bool:
        return self.faas_trigger == "http"


def _get(mapping: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _protocol_version(protocol: Any) -> str | None:
    if isinstance(protocol, str) and "/" in protocol:
        return protocol.split("/", 1)[1]
    return None


def classify(event: Any) -> Invocation:
    """The invocation that ``event`` describes; never raises."""
    if isinstance(event, Mapping):
        records = event.get("Records")
        if isinstance(records, list) and records:
            views = [view for view in map(MessageRecord.of, records) if view is not None]
            if views:
                return _records(views)
        request_context = event.get("requestContext")
        if isinstance(request_context, Mapping):
            if event.get("version") == "2.0" and isinstance(request_context.get("http"), Mapping):
                return _http_v2(event, request_context)
            if "elb" in request_context:
                return _http_v1(event, Trigger.ALB, route=None)
            if "httpMethod" in event:
                return _http_v1(event, Trigger.API_GATEWAY_REST, route=event.get("resource"))
        if "detail-type" in event and "source" in event and "detail" in event:
            return _eventbridge(event)
    return Invocation(Trigger.DIRECT, "", SpanKind.SERVER)  # the handler's name is filled in by the caller


def _http_attributes(
    method: str, path: Any, query: str, headers: Mapping[str, str], route: str | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {"http.request.method": method}
    if isinstance(path, str):
        attributes["url.path"] = path
    if query:
        attributes["url.query"] = query
    if route:
        attributes["http.route"] = route
    attributes["url.scheme"] = headers.get("x-forwarded-proto", "https")
    if headers.get("host"):
        attributes["server.address"] = headers["host"]
    if headers.get("user-agent"):
        attributes["user_agent.original"] = headers["user-agent"]
    return attributes


def _http_name(method: str, route: str | None) -> str:
    return f"{method} {route}" if route else method


def _http_v1(event: Mapping[str, Any], trigger: Trigger, route: Any) -> Invocation:
    from hopscope.instrumentation.carriers import http_carrier  # noqa: PLC0415 - cheap, avoids a cycle

    headers = http_carrier(event.get("headers"), event.get("multiValueHeaders"))
    method = str(event.get("httpMethod") or "_OTHER").upper()
    multi = event.get("multiValueQueryStringParameters")
    single = event.get("queryStringParameters")
    if isinstance(multi, Mapping) and multi:
        query = urlencode([(k, v) for k, values in multi.items() for v in (values or [])])
    elif isinstance(single, Mapping) and single:
        query = urlencode(list(single.items()))
    else:
        query = ""
    route_text = route if isinstance(route, str) and route else None
    attributes = _http_attributes(method, event.get("path"), query, headers, route_text)
    client = _get(event, "requestContext", "identity", "sourceIp")
    if isinstance(client, str):
        attributes["client.address"] = client
    version = _protocol_version(_get(event, "requestContext", "protocol"))
    if version:
        attributes["network.protocol.version"] = version
    return Invocation(trigger, _http_name(method, route_text), SpanKind.SERVER, attributes, headers)


def _http_v2(event: Mapping[str, Any], request_context: Mapping[str, Any]) -> Invocation:
    from hopscope.instrumentation.carriers import http_carrier  # noqa: PLC0415

    headers = http_carrier(event.get("headers"))
    http = request_context["http"]
    method = str(http.get("method") or "_OTHER").upper()
    route_key = event.get("routeKey") or request_context.get("routeKey")
    route = None
    if isinstance(route_key, str) and route_key != "$default":
        route = route_key.split(" ", 1)[1] if " " in route_key else route_key
    domain = str(request_context.get("domainName") or "")
    trigger = Trigger.FUNCTION_URL if ".lambda-url." in domain else Trigger.HTTP_API
    attributes = _http_attributes(
        method, event.get("rawPath"), str(event.get("rawQueryString") or ""), headers, route
    )
    if isinstance(http.get("sourceIp"), str):
        attributes["client.address"] = http["sourceIp"]
    if isinstance(http.get("userAgent"), str):
        attributes.setdefault("user_agent.original", http["userAgent"])
    version = _protocol_version(http.get("protocol"))
    if version:
        attributes["network.protocol.version"] = version
    return Invocation(trigger, _http_name(method, route), SpanKind.SERVER, attributes, headers)


def _records(views: list[MessageRecord]) -> Invocation:
    first = views[0]
    trigger = _RECORD_TRIGGERS.get(first.source, Trigger.DIRECT)
    destinations = {view.destination for view in views}
    destination = first.destination if len(destinations) == 1 else None
    attributes: dict[str, Any] = {
        "messaging.system": first.system,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.batch.message_count": len(views),
    }
    if destination:
        attributes["messaging.destination.name"] = destination
    name = f"process {destination}" if destination else "process"
    return Invocation(trigger, name, SpanKind.CONSUMER, attributes, records=views)


def _eventbridge(event: Mapping[str, Any]) -> Invocation:
    detail_type = str(event.get("detail-type") or "")
    if event.get("source") == "aws.events" and detail_type == "Scheduled Event":
        attributes: dict[str, Any] = {}
        if isinstance(event.get("time"), str):
            attributes["faas.time"] = event["time"]
        rule = next((r for r in event.get("resources") or [] if isinstance(r, str)), None)
        name = f"schedule {rule.rsplit('/', 1)[-1]}" if rule else "schedule"
        return Invocation(Trigger.SCHEDULE, name, SpanKind.SERVER, attributes)
    attributes = {
        "messaging.system": "aws.eventbridge",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
    }
    if isinstance(event.get("id"), str):
        attributes["messaging.message.id"] = event["id"]
    return Invocation(Trigger.EVENTBRIDGE, f"process {detail_type}".strip(), SpanKind.CONSUMER, attributes)
