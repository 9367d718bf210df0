"""Input that Python's own parsers refuse, and query parameters out of range, are 400s that say why: from
every decode path (OTLP/HTTP JSON, ``hopscope import``, ``traces_from_json``) and every query endpoint."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from hopscope.collector.otlp.codec import OtlpDecodeError, traces_from_json, traces_to_json
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.flow_chains import Services, order_chain
from tests.helpers.otlp_samples import full_request
from tests.helpers.servers import HOPSCOPE, serve_in_thread

# JSON that json.loads refuses for reasons beyond syntax, and OTLP JSON that protobuf refuses.
_ATTRIBUTE = b'{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":%s}]}}]}'
_SPAN = b'{"resourceSpans":[{"scopeSpans":[{"spans":[%s]}]}]}'
REFUSED_JSON = {
    "an integer of 5,000 digits": b'{"resourceSpans": [], "n": ' + b"7" * 5000 + b"}",
    "arrays nested 100,000 deep": b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "objects nested 5,000 deep": b'{"a": ' * 5000 + b"{}" + b"}" * 5000,
    "an attribute nested 200 deep": _ATTRIBUTE
    % (b'{"kvlistValue":{"values":[{"key":"k","value":' * 200 + b"{}" + b"}]}}" * 200),
    "a time of 5,000 digits": _SPAN % b'{"startTimeUnixNano": "' + b"1" * 5000 + b'"}',
    "a time of 1e400": _SPAN % b'{"startTimeUnixNano": 1e400}',
    "a name that is an object": _SPAN % b'{"name": {"a": 1}}',
    "not UTF-8": b'{"resourceSpans": "\xff\xfe"}',
    "a JSON string": b'"resourceSpans"',
}


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A collector (uvicorn on 127.0.0.1) over a database holding one ordinary flow."""
    db = tmp_path_factory.mktemp("decode") / "hopscope.db"
    store = SQLiteStore(db)
    services = Services()
    order_chain(services, "o-1")
    store.write([encode_spans(services.spans())])
    with (
        serve_in_thread(CollectorSettings(db=db), store) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        yield http
    store.close()


@pytest.mark.parametrize("case", sorted(REFUSED_JSON))
def test_refused_json_is_a_400_status_and_the_collector_goes_on(collector: httpx.Client, case: str) -> None:
    # GIVEN a JSON body that Python's json module or protobuf's JSON parser refuses
    body = REFUSED_JSON[case]
    # WHEN it is posted as OTLP/HTTP JSON
    response = collector.post("/v1/traces", content=body, headers={"Content-Type": "application/json"})
    # THEN the answer is 400 with a google.rpc.Status body (INVALID_ARGUMENT) that says what is wrong
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    status = response.json()
    assert status["code"] == 3 and status["message"].startswith("body is not")
    assert len(status["message"]) < 1_000
    # AND the next valid request is stored
    valid = TracesData(resource_spans=full_request(spans=1).resource_spans)
    stored = collector.post(
        "/v1/traces",
        content=json.dumps(traces_to_json(valid)).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert stored.status_code == 200, stored.text


@pytest.mark.parametrize("case", sorted(REFUSED_JSON))
def test_refused_json_files_fail_the_import_in_one_line(tmp_path: Path, case: str) -> None:
    # GIVEN a .json file that holds such a body
    path = tmp_path / "spans.json"
    path.write_bytes(REFUSED_JSON[case])
    # WHEN it is imported
    result = subprocess.run(
        [HOPSCOPE, "import", str(path), "--db", str(tmp_path / "target.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # THEN the command fails with one line naming the file, and writes nothing
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"hopscope import: {path} is not an OTLP file: ")
    assert not (tmp_path / "target.db").exists()


def test_a_truncated_gzip_file_fails_the_import_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "spans.json.gz"
    path.write_bytes(gzip.compress(b'{"resourceSpans": []}')[:-6])
    result = subprocess.run(
        [HOPSCOPE, "import", str(path), "--db", str(tmp_path / "target.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == f"hopscope import: {path} is not an OTLP file: gzip body is truncated"


def test_traces_from_json_refuses_with_otlp_decode_error() -> None:
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(5000):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    documents: list[object] = [
        deep,
        {"resourceSpans": 3},
        {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "not hex"}]}]}]},
        {"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "-1"}]}]}]},
        ["not", "an", "object"],
    ]
    for document in documents:
        with pytest.raises(OtlpDecodeError):
            traces_from_json(document)  # type: ignore[arg-type]


OUT_OF_RANGE = [
    ("/api/flows?min_duration_ms=inf", "min_duration_ms"),
    ("/api/flows?min_duration_ms=-inf", "min_duration_ms"),
    ("/api/flows?min_duration_ms=NaN", "min_duration_ms"),
    ("/api/flows?min_duration_ms=1e30", "min_duration_ms"),
    ("/api/flows?min_duration_ms=-1", "min_duration_ms"),
    ("/api/flows?since=0001-01-01", "since"),
    ("/api/flows?until=9999-12-31T23:59:59", "until"),
    ("/api/flows?since=0001-01-01T00:00:00%2B14:00", "since"),
    ("/api/flows?since=1969-12-31T23:59:59Z", "since"),
    ("/api/flows?since=-5", "since"),
    ("/api/flows?until=" + "9" * 5000, "until"),
    ("/api/flows?offset=4611686018427387905", "offset"),
    ("/api/flows?limit=" + "1" * 5000, "limit"),
    ("/api/flows/9223372036854775808", "flow_id"),
    ("/api/flows/9223372036854775808/otlp", "flow_id"),
    ("/api/traces/00000000000000000000000000000000", "trace_id"),
    ("/api/traces/xyz", "trace_id"),
    ("/api/services?since=0001-01-01", "since"),
    ("/api/services?until=9999-12-31T23:59:59", "until"),
    ("/api/services?until=0", "until"),
    ("/api/graph?since=0001-01-01", "since"),
    ("/api/graph?until=9999-12-31T23:59:59", "until"),
    ("/api/latency?service=billing&since=0001-01-01", "since"),
    ("/api/latency?service=billing&until=9999-12-31T23:59:59", "until"),
    ("/api/latency?service=billing&step=" + "6" * 50, "step"),
    ("/api/queues/shipping/depth?since=0001-01-01", "since"),
    ("/api/queues/shipping/depth?until=9999-12-31T23:59:59", "until"),
]


@pytest.mark.parametrize(("path", "parameter"), OUT_OF_RANGE)
def test_parameters_out_of_range_are_400_naming_them(
    collector: httpx.Client, path: str, parameter: str
) -> None:
    # GIVEN a parameter that parses but is outside what the store can hold
    # WHEN it is asked for
    response = collector.get(path)
    # THEN the answer is 400, names the parameter, and does not echo a huge value back
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert message.startswith(f"parameter {parameter!r}: ") and len(message) < 300


def test_the_widest_range_the_store_holds_is_answered(collector: httpx.Client) -> None:
    # GIVEN the first and the last moment a signed 64-bit nanosecond count holds
    widest = "since=1970-01-01T00:00:00Z&until=2262-04-11T23:47:16.854775Z"
    # WHEN every range endpoint is asked about it THEN each answers 200, the flow included
    for path in ("/api/flows", "/api/services", "/api/graph", "/api/latency?service=billing&step=31622400"):
        response = collector.get(path + ("&" if "?" in path else "?") + widest)
        assert response.status_code == 200, (path, response.text)
    assert (
        len(collector.get(f"/api/flows?{widest}&min_duration_ms=0&correlation_id=o-1").json()["flows"]) == 1
    )
    assert (
        collector.get(f"/api/flows?min_duration_ms=9223372036854&until={time.time_ns()}").json()["flows"]
        == []
    )
