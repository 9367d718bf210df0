"""OTLP attribute values as plain Python (and JSON) values."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

# How OTLP JSON (proto3's JSON mapping) writes the doubles that JSON has no number for.
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def attributes_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in attributes}


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as the plain Python value it holds; bytes as base64 text.

    Doubles stay floats, NaN and infinities included: see :func:`json_value` for what JSON can carry.
    """
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_dict(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def attributes_json(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    """Attributes as JSON-ready values (see :func:`json_value`)."""
    return {kv.key: json_value(kv.value) for kv in attributes}


def json_value(value: AnyValue) -> Any:
    """An AnyValue as a value strict JSON can carry: like :func:`any_value`, except that NaN and the
    infinities (valid OTLP doubles, which JSON has no number for) become the strings "NaN", "Infinity" and
    "-Infinity", as OTLP JSON writes them. Every answer of the query API is then valid JSON."""
    kind = value.WhichOneof("value")
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else _NON_FINITE.get(number, "NaN")
    if kind == "array_value":
        return [json_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_json(value.kvlist_value.values)
    return any_value(value)
