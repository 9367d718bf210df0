"""``hopscope export`` and ``hopscope import``: OTLP files out of and into a store."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from rich.progress import Progress

from hopscope.collector.ingest.validation import drop_invalid_log_records, drop_invalid_spans
from hopscope.collector.otlp import codec as otlp_codec
from hopscope.collector.otlp.codec import BodyTooLargeError, Encoding, OtlpDecodeError
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.url import open_store

# How an OTLP JSON document of log records starts (ExportLogsServiceRequest and LogsData alike).
_LOGS_KEY = re.compile(rb'^\s*\{\s*"resource_?[lL]ogs"')
# What a gzipped file may inflate to (protobuf's own limit on one message is 2 GiB).
MAX_INFLATED_BYTES = 1 << 31


class TransferError(RuntimeError):
    """What went wrong, in a sentence for the command line."""


@dataclass(frozen=True)
class ExportedDocument:
    """An exported OTLP JSON document, and whether its spans were cut at the read cap."""

    text: str
    truncated: bool


def export_otlp(
    db: Path | str, *, flow_id: int | None = None, trace_id: str | None = None, logs: bool = False
) -> ExportedDocument:
    """A flow or a trace of the store as OTLP JSON: what ``/api/flows/{id}/otlp`` and ``/api/traces/{id}``
    serve, cut at the same read cap (the document's ``truncated`` key says so).

    Opens the store read-only: exporting needs no write access to the database or its folder. With
    ``logs``, the log records of the flow or trace instead, as OTLP JSON LogsData.
    """
    if trace_id is not None:
        raw_id = _trace_id(trace_id)
    if logs:
        return _export_logs(db, flow_id, raw_id if trace_id is not None else None)
    store = open_store(str(db), read_only=True)
    try:
        queries = QueryLayer(store)
        if flow_id is not None:
            answer = queries.flow_otlp_answer(flow_id)
            missing = f"no flow {flow_id} in {db}"
        else:
            answer = queries.trace(raw_id)
            missing = f"no trace {trace_id} in {db}"
    finally:
        store.close()
    if answer is None:
        raise TransferError(missing)
    document = otlp_codec.traces_to_json(answer.traces, truncated=answer.truncated)
    return ExportedDocument(json.dumps(document, indent=2), answer.truncated)


def _export_logs(db: Path | str, flow_id: int | None, trace_id: bytes | None) -> ExportedDocument:
    store = open_store(str(db), read_only=True)
    try:
        if flow_id is not None:
            document = QueryLayer(store).flow_logs_otlp_json(flow_id)
            if document is None:
                raise TransferError(f"no flow {flow_id} in {db}")
        else:
            assert trace_id is not None
            document = QueryLayer(store).logs_otlp_json([trace_id])
    finally:
        store.close()
    truncated = bool(document.get(otlp_codec.TRUNCATED_KEY))
    return ExportedDocument(json.dumps(document, indent=2), truncated)


def export_otlp_json(db: Path | str, *, flow_id: int | None = None, trace_id: str | None = None) -> str:
    """The text of :func:`export_otlp`."""
    return export_otlp(db, flow_id=flow_id, trace_id=trace_id).text


def _trace_id(text: str) -> bytes:
    try:
        raw_id = bytes.fromhex(text)
    except ValueError:
        raw_id = b""
    if len(raw_id) != 16:
        raise TransferError(f"trace id must be 32 hex characters, got {text!r}")
    return raw_id


@dataclass
class ImportResult:
    files: int = 0
    spans: int = 0
    rejected: int = 0
    log_records: int = 0


def read_otlp_file(path: Path) -> ExportTraceServiceRequest | ExportLogsServiceRequest:
    """An OTLP JSON (``.json``) or protobuf file: ExportTraceServiceRequest and TracesData alike, and (JSON
    only, known by its ``resourceLogs`` key) ExportLogsServiceRequest and LogsData."""
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if body[:2] == b"\x1f\x8b":
            body = otlp_codec.inflate_gzip(body, MAX_INFLATED_BYTES)
        encoding = Encoding.JSON if body.lstrip()[:1] == b"{" else Encoding.PROTOBUF
        if encoding is Encoding.JSON and _LOGS_KEY.search(body[:4096]):
            return otlp_codec.decode_logs_request(body, encoding)
        return otlp_codec.decode_request(body, encoding)
    except BodyTooLargeError as exc:
        raise TransferError(f"{path} is too large: {exc}") from None
    except OtlpDecodeError as exc:
        raise TransferError(f"{path} is not an OTLP file: {exc}") from None


def import_files(db: Path | str, paths: Sequence[Path], *, show_progress: bool = True) -> ImportResult:
    """Load files into the store as the collector would: invalid spans counted and skipped, flows stitched."""
    requests = []
    result = ImportResult()
    for path in paths:  # read them all first: a bad file aborts before anything is written
        request = read_otlp_file(path)
        if isinstance(request, ExportLogsServiceRequest):
            result.rejected += drop_invalid_log_records(request).rejected
        else:
            result.rejected += drop_invalid_spans(request).rejected
        requests.append(request)
    store = open_store(str(db))
    try:
        with Progress(disable=not show_progress, transient=True) as progress:
            task = progress.add_task("importing", total=len(requests))
            for request in requests:
                if isinstance(request, ExportLogsServiceRequest):
                    result.log_records += store.write_logs([request])
                else:
                    result.spans += store.write([request])
                result.files += 1
                progress.advance(task)
    except (sqlite3.Error, OSError) as exc:  # disk full, a database locked for too long, ...
        raise TransferError(
            f"cannot write to {store.label} after {result.files} file(s) ({result.spans} spans): {exc}"
        ) from exc
    finally:
        store.close()
    return result
