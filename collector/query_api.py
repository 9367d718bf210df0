"""The read-only HTTP query API (``/api/...``). The flows issue extends it; it only reads the store."""

from __future__ import annotations

import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from hopscope.collector.otlp_codec import traces_to_json
from hopscope.collector.store.base import SpanStore

_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class QueryApi:
    def __init__(self, store: SpanStore[Any]) -> None:
        self._store = store

    async def get_trace(self, request: Request) -> JSONResponse:
        """One stored trace as OTLP JSON (a ``TracesData`` document)."""
        trace_id = request.path_params["trace_id"]
        if not _TRACE_ID.fullmatch(trace_id) or trace_id.strip("0") == "":
            return error_response(400, f"trace id must be 32 hex characters, not all zero: {trace_id!r}")
        traces = await run_in_threadpool(self._store.get_trace, bytes.fromhex(trace_id))
        if traces is None:
            return error_response(404, f"no trace {trace_id.lower()} is stored")
        return JSONResponse(traces_to_json(traces))
