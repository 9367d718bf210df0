"""The read-only HTTP query API (``/api/...``): JSON over the query layer, described by ``/openapi.json``."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from google.rpc import code_pb2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from hopscope.collector.model.logs import LogLine
from hopscope.collector.model.queues import DepthSample, QueueSummary
from hopscope.collector.otlp.codec import traces_to_json
from hopscope.collector.query.layer import LogAnswer, QueryLayer
from hopscope.collector.query.openapi import OPENAPI
from hopscope.collector.query.params import (
    ParamError,
    parse_fate_filters,
    parse_flow_filter,
    parse_flow_id,
    parse_latency_query,
    parse_log_filter,
    parse_queue_depth_query,
    parse_services_query,
    shown,
)

_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")

Endpoint = Callable[[Request], Awaitable[JSONResponse]]


# google.rpc.Code of each error status of the query API (google.rpc's HTTP mapping).
_CODES = {400: code_pb2.INVALID_ARGUMENT, 404: code_pb2.NOT_FOUND}


def error_response(status: int, message: str) -> JSONResponse:
    """A google.rpc.Status (proto3 JSON), as every error answer of the collector is."""
    return JSONResponse(
        {"code": _CODES.get(status, code_pb2.UNKNOWN), "message": message}, status_code=status
    )


def _answers_bad_parameters(endpoint: Endpoint) -> Endpoint:
    async def wrapped(request: Request) -> JSONResponse:
        try:
            return await endpoint(request)
        except ParamError as exc:
            return error_response(400, str(exc))

    return wrapped


class QueryApi:
    """Each endpoint parses its parameters, asks the query layer (in a worker thread) and answers JSON."""

    def __init__(self, queries: QueryLayer) -> None:
        self._queries = queries
        self.get_trace = _answers_bad_parameters(self._get_trace)
        self.get_flows = _answers_bad_parameters(self._get_flows)
        self.get_flow = _answers_bad_parameters(self._get_flow)
        self.get_flow_otlp = _answers_bad_parameters(self._get_flow_otlp)
        self.get_services = _answers_bad_parameters(self._get_services)
        self.get_latency = _answers_bad_parameters(self._get_latency)
        self.get_graph = _answers_bad_parameters(self._get_graph)
        self.get_queue_depth = _answers_bad_parameters(self._get_queue_depth)
        self.get_logs = _answers_bad_parameters(self._get_logs)
        self.get_flow_logs = _answers_bad_parameters(self._get_flow_logs)
        self.get_flow_logs_otlp = _answers_bad_parameters(self._get_flow_logs_otlp)

    async def openapi(self, request: Request) -> JSONResponse:
        return JSONResponse(OPENAPI)

    async def _get_trace(self, request: Request) -> JSONResponse:
        """One stored trace as OTLP JSON (a ``TracesData`` document, plus ``truncated``)."""
        trace_id = request.path_params["trace_id"]
        if not _TRACE_ID.fullmatch(trace_id) or trace_id.strip("0") == "":
            raise ParamError("trace_id", f"must be 32 hex characters, not all zero, got {shown(trace_id)!r}")
        answer = await run_in_threadpool(self._queries.trace, bytes.fromhex(trace_id))
        if answer is None:
            return error_response(404, f"no trace {trace_id.lower()} is stored")
        return JSONResponse(traces_to_json(answer.traces, truncated=answer.truncated))

    async def _get_flows(self, request: Request) -> JSONResponse:
        criteria = parse_flow_filter(request.query_params, request.query_params.getlist("attr"))
        fates = parse_fate_filters(request.query_params)
        flows = await run_in_threadpool(self._queries.search_flows, criteria, fates)
        return JSONResponse(
            {
                "flows": [dataclasses.asdict(flow) for flow in flows],
                "limit": criteria.limit,
                "offset": criteria.offset,
            }
        )

    async def _get_flow(self, request: Request) -> JSONResponse:
        flow_id = parse_flow_id(request.path_params["flow_id"])
        detail = await run_in_threadpool(self._queries.flow, flow_id)
        if detail is None:
            return error_response(404, _no_flow(flow_id))
        body = dataclasses.asdict(detail)
        body["messages"] = await run_in_threadpool(self._queries.message_fates, detail)
        return JSONResponse(body)

    async def _get_flow_otlp(self, request: Request) -> JSONResponse:
        flow_id = parse_flow_id(request.path_params["flow_id"])
        document = await run_in_threadpool(self._queries.flow_otlp_json, flow_id)
        if document is None:
            return error_response(404, _no_flow(flow_id))
        return JSONResponse(document)

    async def _get_logs(self, request: Request) -> JSONResponse:
        """Log records matching the filter, newest first unless ``order=oldest``."""
        criteria = parse_log_filter(request.query_params)
        answer = await run_in_threadpool(self._queries.search_logs, criteria)
        return JSONResponse(_logs_json(answer, criteria.limit))

    async def _get_flow_logs(self, request: Request) -> JSONResponse:
        """Every log record of the flow's traces, oldest first, each naming its trace and span."""
        flow_id = parse_flow_id(request.path_params["flow_id"])
        criteria = parse_log_filter(request.query_params, flow=True)
        answer = await run_in_threadpool(self._queries.flow_logs, flow_id, criteria)
        if answer is None:
            return error_response(404, _no_flow(flow_id))
        return JSONResponse({"flow_id": flow_id, **_logs_json(answer, criteria.limit)})

    async def _get_flow_logs_otlp(self, request: Request) -> JSONResponse:
        flow_id = parse_flow_id(request.path_params["flow_id"])
        document = await run_in_threadpool(self._queries.flow_logs_otlp_json, flow_id)
        if document is None:
            return error_response(404, _no_flow(flow_id))
        return JSONResponse(document)

    async def _get_services(self, request: Request) -> JSONResponse:
        since, until = parse_services_query(request.query_params, now_unix_nano=time.time_ns())
        services = await run_in_threadpool(self._queries.services, since, until)
        return JSONResponse(
            {
                "since_unix_nano": since,
                "until_unix_nano": until,
                "services": [dataclasses.asdict(service) for service in services],
            }
        )

    async def _get_latency(self, request: Request) -> JSONResponse:
        query = parse_latency_query(request.query_params, now_unix_nano=time.time_ns())
        points = await run_in_threadpool(
            self._queries.latency,
            query.service,
            query.since_unix_nano,
            query.until_unix_nano,
            query.step_seconds,
            query.operation,
        )
        return JSONResponse(
            {
                "service": query.service,
                "operation": query.operation,
                "step_seconds": query.step_seconds,
                "points": [dataclasses.asdict(point) for point in points],
            }
        )

    async def _get_graph(self, request: Request) -> JSONResponse:
        since, until = parse_services_query(request.query_params, now_unix_nano=time.time_ns())
        graph = await run_in_threadpool(self._queries.graph, since, until)
        return JSONResponse({"since_unix_nano": since, "until_unix_nano": until, **dataclasses.asdict(graph)})

    async def get_queues(self, request: Request) -> JSONResponse:
        queues = await run_in_threadpool(self._queries.queues)
        return JSONResponse({"queues": [_queue_json(queue) for queue in queues]})

    async def _get_queue_depth(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        since, until = parse_queue_depth_query(request.query_params, now_unix_nano=time.time_ns())
        answer = await run_in_threadpool(self._queries.queue_depth, name, since, until)
        if answer is None:
            return error_response(
                404, f"no queue {name!r} has been polled (is the collector running with --sqs?)"
            )
        samples, truncated = answer
        return JSONResponse(
            {
                "queue": name,
                "since_unix_nano": since,
                "until_unix_nano": until,
                "truncated": truncated,
                "samples": [_sample_json(sample) for sample in samples],
            }
        )


def _no_flow(flow_id: int) -> str:
    return (
        f"no flow {flow_id} is stored: no such flow, or it has expired with its spans (the collector's "
        "--retention deletes a flow once its last span is older)"
    )


def log_json(line: LogLine) -> dict[str, Any]:
    """One log record of an answer: its fields, and its severity's range name."""
    return {**dataclasses.asdict(line), "severity": line.severity}


def _logs_json(answer: LogAnswer, limit: int) -> dict[str, Any]:
    return {"logs": [log_json(line) for line in answer.lines], "limit": limit, "truncated": answer.truncated}


def _sample_json(sample: DepthSample) -> dict[str, Any]:
    body = dataclasses.asdict(sample)
    del body["queue_name"]
    return body


def _queue_json(queue: QueueSummary) -> dict[str, Any]:
    latest = queue.latest
    return {
        "name": queue.name,
        "url": queue.url,
        "arn": queue.arn,
        "dead_letter_queue": queue.dlq_name,
        "max_receive_count": queue.max_receive_count,
        "sources": queue.sources,
        "is_dead_letter_queue": queue.is_dead_letter_queue,
        "visible": latest.visible if latest else None,
        "in_flight": latest.in_flight if latest else None,
        "delayed": latest.delayed if latest else None,
        "oldest_age_seconds": latest.oldest_age_seconds if latest else None,
        "age_source": latest.age_source if latest else None,
        "sampled_unix_nano": latest.polled_unix_nano if latest else None,
        "last_polled_unix_nano": queue.last_polled_unix_nano,
        "last_error": queue.last_error,
        "last_error_unix_nano": queue.last_error_unix_nano,
    }
