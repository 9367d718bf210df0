"""The collector's HTTP shell: header limits before authentication, the Host check on loopback, the bearer
token as RFC 7235 says, google.rpc.Status bodies on every error, and health without the token."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from google.rpc import code_pb2, status_pb2

from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import full_request
from tests.helpers.servers import CollectorProcess, serve_in_thread

TOKEN = "s3crét-ключ-🔑"  # not ASCII: sent as UTF-8
BEARER = b"Bearer " + TOKEN.encode("utf-8")
PROTOBUF = {"Content-Type": "application/x-protobuf"}
PROTOBUF_BYTES = {b"Content-Type": b"application/x-protobuf"}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    db = tmp_path_factory.mktemp("shell") / "hopscope.db"
    collector = CollectorProcess(db=db, args=["--auth-token", TOKEN]).start()
    yield collector
    assert collector.stop() == 0


def _port(collector: CollectorProcess) -> int:
    return int(collector.url.rsplit(":", 1)[1])


def _status(response: httpx.Response) -> status_pb2.Status:
    """The google.rpc.Status body of an error answer, in JSON or protobuf as its content type says."""
    if response.headers["content-type"] == "application/json":
        body = response.json()
        assert set(body) <= {"code", "message", "details"}, body
        return status_pb2.Status(code=body["code"], message=body["message"])
    assert response.headers["content-type"] == "application/x-protobuf"
    return status_pb2.Status.FromString(response.content)


def _raw_request(port: int, request: bytes) -> bytes:
    """Send bytes as they are and return everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # closed while we were still sending: the answer may still be there to read
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


def _peak_rss(pid: int) -> int:
    """The kernel's high-water mark of the process's resident memory (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


# -- header limits, before authentication --------------------------------------------------------------


def _huge_headers(size: int, fields: int) -> bytes:
    """A POST without a token whose headers are ``size`` bytes in ``fields`` fields."""
    value = b"a" * (size // fields)
    head = b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
    return head + b"".join(b"X-Big-%d: %s\r\n" % (i, value) for i in range(fields)) + b"\r\n"


def test_32_mib_of_headers_alone_or_four_at_once_get_431_and_little_memory(
    start_collector: Callable[..., CollectorProcess],
) -> None:
    # GIVEN a collector that requires a token
    collector = start_collector("--auth-token", TOKEN)
    pid = collector.proc.pid  # type: ignore[union-attr]
    rss_before = psutil.Process(pid).memory_info().rss
    # WHEN a client without the token sends 32 MiB of headers in one field
    alone = _raw_request(_port(collector), _huge_headers(32 * MIB, 1))
    # AND four clients at once send 32 MiB each in 8 kB fields
    answers: list[bytes] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(_raw_request(_port(collector), _huge_headers(32 * MIB, 4096)))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # THEN each is answered 431 (not 401: the limit comes before authentication), with a rpc.Status body
    assert alone.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), alone[:200]
    assert b'"message": "request headers are over the limit of 32768 bytes"' in alone
    assert len(answers) == 4
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    # AND the collector's memory grew by less than 100 MB at its peak, and holds nothing afterwards
    assert _peak_rss(pid) - rss_before < 100 * MIB
    assert psutil.Process(pid).memory_info().rss - rss_before < 20 * MIB
    # AND it still serves
    with collector.client(headers={b"Authorization": BEARER}) as http:
        ok = http.post("/v1/traces", content=full_request().SerializeToString(), headers=PROTOBUF)
    assert ok.status_code == 200


def test_headers_are_served_up_to_the_limit_and_refused_past_it(collector: CollectorProcess) -> None:
    # GIVEN requests whose headers (in one read, or over 100 fields) are just under or over the limits
    def get(extra: bytes) -> bytes:
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra + b"\r\n"
        return _raw_request(_port(collector), request)

    under = get(b"X-Pad: " + b"a" * 30_000 + b"\r\n")
    over = get(b"X-Pad: " + b"a" * 33_000 + b"\r\n")
    long_url = _raw_request(
        _port(collector), b"GET /healthz?" + b"q" * 40_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    many = get(b"".join(b"X-F%d: 1\r\n" % i for i in range(100)))
    # THEN up to 32 KiB of request line and headers is served, more is 431, and so are 101 fields
    assert under.startswith(b"HTTP/1.1 200 ")
    assert over.startswith(b"HTTP/1.1 431 ")
    assert long_url.startswith(b"HTTP/1.1 431 ")
    assert many.startswith(b"HTTP/1.1 431 ")
    assert b'{"code": 3, "message": "more than 100 request header fields"}' in many


def test_a_request_the_parser_refuses_gets_400_with_a_status_body(collector: CollectorProcess) -> None:
    answer = _raw_request(_port(collector), b"NOT HTTP AT ALL\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json" in head
    assert json.loads(body) == {
        "code": code_pb2.INVALID_ARGUMENT,
        "message": "Invalid HTTP request received.",
    }


# -- Host (DNS rebinding) ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:4318", "localhost", "LOCALHOST:8080", "[::1]", "[::1]:80"]
)
def test_a_loopback_collector_serves_loopback_host_names(collector: CollectorProcess, host: str) -> None:
    response = httpx.get(f"{collector.url}/healthz", headers={"Host": host})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:4318", "127.0.0.1.nip.io", "localhost.evil.example", ""]
)
def test_a_loopback_collector_refuses_other_host_names_with_421(
    collector: CollectorProcess, host: str
) -> None:
    # WHEN a page that rebound its own name to 127.0.0.1 sends spans, with the token even
    body = full_request().SerializeToString()
    response = httpx.post(
        f"{collector.url}/v1/traces",
        content=body,
        headers={**PROTOBUF_BYTES, b"Host": host.encode(), b"Authorization": BEARER},
    )
    # THEN it is refused with 421 and a google.rpc.Status body, and nothing is stored
    assert response.status_code == 421
    assert _status(response).code == code_pb2.PERMISSION_DENIED
    assert "loopback" in _status(response).message


def test_bound_to_another_address_any_host_name_is_served(tmp_path: Path) -> None:
    # GIVEN the app configured for --host 0.0.0.0 (served on 127.0.0.1 here)
    store = SQLiteStore(tmp_path / "hopscope.db")
    settings = CollectorSettings(host="0.0.0.0", db=tmp_path / "hopscope.db")
    with serve_in_thread(settings, store) as url:
        # WHEN a request names the machine by its DNS name THEN it is served
        assert httpx.get(f"{url}/healthz", headers={"Host": "collector.internal:4318"}).status_code == 200
    store.close()


# -- the bearer token (RFC 7235) ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [b"Bearer", b"bearer", b"BEARER", b"bEaReR"])
def test_the_bearer_scheme_is_case_insensitive_and_the_token_is_utf8(
    collector: CollectorProcess, scheme: bytes
) -> None:
    body = full_request(spans=1).SerializeToString()
    authorization = scheme + b"  " + TOKEN.encode("utf-8")  # any case, and more than one space
    response = httpx.post(
        f"{collector.url}/v1/traces",
        content=body,
        headers={**PROTOBUF_BYTES, b"Authorization": authorization},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer " + TOKEN.encode("latin-1", "replace"),  # the token in another encoding
        b"Basic " + TOKEN.encode("utf-8"),  # the right token, another scheme
        b"Bearer" + TOKEN.encode("utf-8"),  # no space
        b"Bearer " + TOKEN.encode("utf-8")[:-1],  # one byte short
        b"",
    ],
)
def test_anything_but_the_token_is_401(collector: CollectorProcess, authorization: bytes) -> None:
    body = full_request(spans=1).SerializeToString()
    response = httpx.post(
        f"{collector.url}/v1/traces",
        content=body,
        headers={**PROTOBUF_BYTES, b"Authorization": authorization},
    )
    assert response.status_code == 401
    assert _status(response).code == code_pb2.UNAUTHENTICATED


def test_health_answers_without_the_token_with_the_status_only(collector: CollectorProcess) -> None:
    # WHEN a load balancer probes without the token
    health = httpx.get(f"{collector.url}/healthz")
    ready = httpx.get(f"{collector.url}/readyz")
    # THEN it gets the status and nothing else
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
    # AND with the token, the details
    detailed = httpx.get(f"{collector.url}/healthz", headers={b"Authorization": BEARER}).json()
    assert {"pending_spans", "flows_pending", "spans_skipped", "write_error", "forwarding"} <= set(detailed)
    assert httpx.get(f"{collector.url}/readyz", headers={b"Authorization": BEARER}).json() == {
        "status": "ok",
        "accepting_spans": True,
        "reasons": [],
    }
    # AND every other path still needs the token
    assert httpx.get(f"{collector.url}/api/flows").status_code == 401


# -- every error is a google.rpc.Status --------------------------------------------------------------------


def test_unknown_paths_and_wrong_methods_get_status_bodies(collector: CollectorProcess) -> None:
    with collector.client(headers={b"Authorization": BEARER}) as http:
        unknown = http.post("/v1/profiles", content=b"", headers={"Content-Type": "application/json"})
        unknown_protobuf = http.post("/v1/metrics", content=b"", headers=PROTOBUF)
        get = http.get("/v1/traces")
        put = http.put("/healthz")
    assert unknown.status_code == 404
    assert _status(unknown) == status_pb2.Status(
        code=code_pb2.NOT_FOUND, message="no such endpoint: /v1/profiles"
    )
    assert unknown_protobuf.status_code == 404
    assert _status(unknown_protobuf).code == code_pb2.NOT_FOUND
    assert get.status_code == 405
    assert get.headers["allow"] == "POST"
    assert _status(get) == status_pb2.Status(
        code=code_pb2.UNIMPLEMENTED, message="GET is not allowed on /v1/traces"
    )
    assert put.status_code == 405
    assert _status(put).code == code_pb2.UNIMPLEMENTED


# -- a client that goes away -------------------------------------------------------------------------------


def test_a_client_that_disconnects_mid_body_is_one_log_line(collector: CollectorProcess) -> None:
    # GIVEN what the collector logged so far
    logged = len(collector.log)
    # WHEN a client sends headers and part of a body, then goes away
    body = full_request().SerializeToString()
    with socket.create_connection(("127.0.0.1", _port(collector))) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
            b"Authorization: "
            + BEARER
            + b"\r\n"
            + f"Content-Length: {len(body) * 10}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.3)  # the receiver is reading the body
    # THEN the collector logs one line about it, without a traceback
    deadline = time.monotonic() + 5
    while len(collector.log) == logged and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # anything more would have arrived by now
    new = collector.log[logged:]
    assert len(new) == 1, new
    assert "disconnected" in new[0]
    assert "Traceback" not in "".join(new)
