"""OTLP/HTTP bodies in and out: protobuf and OTLP JSON, gzip with a hard size limit.

OTLP JSON is the proto3 JSON mapping with two exceptions that the specification spells out: trace and span
ids are hex strings (not base64) and enums are integers. Everything else (int64 as strings or numbers,
lowerCamelCase keys, unknown fields ignored) is what ``google.protobuf.json_format`` already does.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
import zlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogsData
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData


class Encoding(enum.Enum):
    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"

    @classmethod
    def from_content_type(cls, content_type: str | None) -> Encoding | None:
        """The encoding named by a Content-Type header (parameters such as charset ignored)."""
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        for encoding in cls:
            if encoding.value == media_type:
                return encoding
        return None


class OtlpDecodeError(ValueError):
    """The body is not a valid OTLP request; answered with 400."""


class BodyTooLargeError(ValueError):
    """The body, or what it inflates to, is over the limit; answered with 413."""


# The key of an OTLP JSON document served by the query API that says whether its spans were cut.
TRUNCATED_KEY = "truncated"
_SPAN_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
_LINK_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id")
_LOG_ID_KEYS = _LINK_ID_KEYS
_HEX = re.compile(r"[0-9a-fA-F]*")


def inflate_gzip(data: bytes, limit: int) -> bytes:
    """Inflate a gzip body, stopping as soon as the output passes ``limit`` (a gzip bomb never inflates)."""
    out = bytearray()
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, limit - len(out) + 1)
        except zlib.error as exc:
            raise OtlpDecodeError(f"body is not valid gzip: {exc}") from exc
        if len(out) > limit or inflater.unconsumed_tail:
            raise BodyTooLargeError(f"body inflates to more than {limit} bytes")
        if not inflater.eof:
            raise OtlpDecodeError("gzip body is truncated")
        data = inflater.unused_data  # a gzip stream may hold several members
        if not data:
            return bytes(out)


def decode_request(body: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    """Parse an ExportTraceServiceRequest; OtlpDecodeError says what is wrong with it."""
    return _decode(ExportTraceServiceRequest(), body, encoding)


def decode_logs_request(body: bytes, encoding: Encoding) -> ExportLogsServiceRequest:
    """Parse an ExportLogsServiceRequest; OtlpDecodeError says what is wrong with it."""
    return _decode(ExportLogsServiceRequest(), body, encoding)


_Request = TypeVar("_Request", bound=Message)  # an OTLP request or data message


def _decode(request: _Request, body: bytes, encoding: Encoding) -> _Request:
    if encoding is Encoding.PROTOBUF:
        name = request.DESCRIPTOR.name
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise OtlpDecodeError(f"body is not a valid {name} protobuf: {exc}") from exc
        return request
    _parse_otlp_json(parse_json(body), request, "body")
    return request


def parse_json(body: bytes | str) -> Any:
    """JSON text as Python values; OtlpDecodeError for anything Python's parser refuses.

    That includes what ``json.JSONDecodeError`` does not cover: integers over Python's 4,300-digit
    conversion limit (ValueError) and nesting too deep for the parser (RecursionError).
    """
    try:
        return json.loads(body)
    except RecursionError:
        raise OtlpDecodeError("body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the int digit limit
        raise OtlpDecodeError(f"body is not valid JSON: {_cut(str(exc))}") from None


def _parse_otlp_json(document: object, message: Message, what: str) -> None:
    """Fill ``message`` from an OTLP JSON document (hex ids); OtlpDecodeError says what is wrong."""
    if not isinstance(document, dict):
        raise OtlpDecodeError(f"{what} is not a JSON object, as OTLP JSON must be")
    name = message.DESCRIPTOR.name
    try:
        _convert_ids(document, _hex_to_base64)
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except OtlpDecodeError:
        raise
    except RecursionError:
        raise OtlpDecodeError(f"{what} is not a valid OTLP JSON {name}: nested too deeply") from None
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise OtlpDecodeError(f"{what} is not a valid OTLP JSON {name}: {_cut(str(exc))}") from None


def _cut(message: str, limit: int = 400) -> str:
    """A parser's message as an error answer quotes it: protobuf's name every level of a deep document."""
    return message if len(message) <= limit else message[:limit] + "..."


def encode_response(rejected_spans: int, error_message: str, encoding: Encoding) -> bytes:
    """ExportTraceServiceResponse, with partial_success only when something was rejected."""
    response = ExportTraceServiceResponse()
    if rejected_spans or error_message:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = error_message
    return _encode(response, encoding)


def encode_logs_response(rejected_records: int, error_message: str, encoding: Encoding) -> bytes:
    """ExportLogsServiceResponse, with partial_success only when something was rejected."""
    response = ExportLogsServiceResponse()
    if rejected_records or error_message:
        response.partial_success.rejected_log_records = rejected_records
        response.partial_success.error_message = error_message
    return _encode(response, encoding)


def encode_status(code: int, message: str, encoding: Encoding) -> bytes:
    """A google.rpc.Status body, as OTLP/HTTP requires for every failed request."""
    return _encode(status_pb2.Status(code=code, message=message), encoding)


STATUS_INVALID_ARGUMENT = code_pb2.INVALID_ARGUMENT
STATUS_UNAUTHENTICATED = code_pb2.UNAUTHENTICATED
STATUS_RESOURCE_EXHAUSTED = code_pb2.RESOURCE_EXHAUSTED
STATUS_UNAVAILABLE = code_pb2.UNAVAILABLE
STATUS_UNIMPLEMENTED = code_pb2.UNIMPLEMENTED


def traces_to_json(traces: TracesData, *, truncated: bool = False) -> dict[str, Any]:
    """OTLP JSON of stored traces: hex ids, integer enums, lowerCamelCase keys.

    ``truncated`` adds the top-level key ``"truncated": true``: the spans were cut at the query API's read
    cap. Only then, so that an uncut document is exactly OTLP JSON; OTLP JSON receivers ignore unknown keys
    (the specification requires it), so a cut one stays importable anywhere too.
    """
    return _to_json(traces, truncated)


def traces_from_json(document: dict[str, Any]) -> TracesData:
    """The inverse of :func:`traces_to_json`, for clients of the query API (tests, export).

    OtlpDecodeError for a document that is not OTLP JSON TracesData (a hopscope ``truncated`` key, like
    any unknown key, is ignored).
    """
    return _from_json(document, TracesData())


def logs_to_json(logs: LogsData, *, truncated: bool = False) -> dict[str, Any]:
    """OTLP JSON of stored log records (hex ids, integer enums), as :func:`traces_to_json` for spans."""
    return _to_json(logs, truncated)


def logs_from_json(document: dict[str, Any]) -> LogsData:
    """The inverse of :func:`logs_to_json`; OtlpDecodeError for a document that is not OTLP JSON LogsData."""
    return _from_json(document, LogsData())


def _to_json(message: Message, truncated: bool) -> dict[str, Any]:
    document = json_format.MessageToDict(message, use_integers_for_enums=True)
    _convert_ids(document, _base64_to_hex)
    if truncated:
        document[TRUNCATED_KEY] = True
    return document


def _from_json(document: dict[str, Any], message: _Request) -> _Request:
    try:
        copied = json.loads(json.dumps(document))  # never modify the caller's object
    except RecursionError:
        raise OtlpDecodeError("document is not valid OTLP JSON: nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise OtlpDecodeError(f"document is not valid OTLP JSON: {_cut(str(exc))}") from None
    _parse_otlp_json(copied, message, "document")
    return message


def _encode(message: Message, encoding: Encoding) -> bytes:
    if encoding is Encoding.PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None, use_integers_for_enums=True).encode()


def _convert_ids(document: dict[str, Any], convert: Callable[[str, str], str]) -> None:
    for resource_logs in _objects(document, "resourceLogs", "resource_logs"):
        for scope_logs in _objects(resource_logs, "scopeLogs", "scope_logs"):
            for record in _objects(scope_logs, "logRecords", "log_records"):
                _convert_keys(record, _LOG_ID_KEYS, convert)
    for resource_spans in _objects(document, "resourceSpans", "resource_spans"):
        for scope_spans in _objects(resource_spans, "scopeSpans", "scope_spans"):
            for span in _objects(scope_spans, "spans"):
                _convert_keys(span, _SPAN_ID_KEYS, convert)
                for link in _objects(span, "links"):
                    _convert_keys(link, _LINK_ID_KEYS, convert)


def _objects(parent: dict[str, Any], *keys: str) -> Iterator[dict[str, Any]]:
    for key in keys:
        items = parent.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise OtlpDecodeError(f"{key!r} must be an array")
        for item in items:
            if not isinstance(item, dict):
                raise OtlpDecodeError(f"each item of {key!r} must be an object")
            yield item


def _convert_keys(obj: dict[str, Any], keys: tuple[str, ...], convert: Callable[[str, str], str]) -> None:
    for key in keys:
        value = obj.get(key)
        if value is not None:
            obj[key] = convert(key, value)


def _hex_to_base64(key: str, value: object) -> str:
    if not isinstance(value, str) or len(value) % 2 or not _HEX.fullmatch(value):
        raise OtlpDecodeError(
            f"{key} must be a hex string in OTLP JSON (not base64 as in plain proto3 JSON), got {value!r}"
        )
    return base64.b64encode(bytes.fromhex(value)).decode()


def _base64_to_hex(key: str, value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).hex()
    except binascii.Error as exc:  # pragma: no cover - json_format always writes valid base64
        raise ValueError(f"{key}: {exc}") from exc
