"""Slow, idle and too many clients cannot hold the collector down (collector/http/guard.py).

The collector runs as the ``hopscope collector`` command, or (for limits the command does not expose) as
the real app on uvicorn with the collector's own protocol class, in a thread; clients are raw sockets so
that they can be exactly as slow or as idle as an attacker would be.
"""

from __future__ import annotations

import contextlib
import re
import resource
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from hopscope.collector.app import create_app
from hopscope.collector.http.guard import ConnectionStats, protocol_class
from hopscope.collector.http.limits import HttpLimits
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import full_request
from tests.helpers.servers import HOPSCOPE, CollectorProcess, serve_app_in_thread

IDLE_CLIENTS = 600
SLOW_CLIENTS = 100
HEADER_TIMEOUT = 4  # seconds: --header-timeout 4s (the default is 10 s; shorter keeps the test quick)


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> None:
    """700 client sockets here (and as many in the collector, which inherits the limit and raises it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer (head and Content-Length body) from a socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed inside the body"
        body += chunk
    return head + b"\r\n\r\n" + body


def _healthz_seconds(url: str) -> float:
    """Seconds one ``GET /healthz`` takes on a new connection (asserting that it answers 200)."""
    started = time.monotonic()
    response = httpx.get(f"{url}/healthz", timeout=5)
    assert response.status_code == 200, response.text
    return time.monotonic() - started


class _Dripper:
    """Sends one byte per socket every half second, from one thread, until stopped."""

    def __init__(self, sockets: dict[socket.socket, bytes]) -> None:
        self._pending = dict(sockets)
        self._stop = threading.Event()
        self.failed: set[socket.socket] = set()  # closed by the server while still sending
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for sock, rest in list(self._pending.items()):
                if not rest:
                    continue
                try:
                    sock.send(rest[:1])
                except OSError:
                    self.failed.add(sock)
                    del self._pending[sock]
                    continue
                self._pending[sock] = rest[1:]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed the socket: reading gives end of file or a reset, never waits."""
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_idle_and_slowly_sending_clients_cannot_hold_the_collector(
    start_collector: Callable[..., CollectorProcess],
) -> None:
    # GIVEN a collector with a 4 s header timeout
    collector = start_collector("--header-timeout", f"{HEADER_TIMEOUT}s")
    port = int(collector.url.rsplit(":", 1)[1])
    # WHEN 600 clients connect and send nothing, and 100 send slowly: 50 drip their headers a byte at a
    # time (slowloris), 50 send headers and then drip a body a byte at a time
    opened = time.monotonic()
    idle = [_connect(port) for _ in range(IDLE_CLIENTS)]
    slow_headers = {
        _connect(port): b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 100
        for _ in range(SLOW_CLIENTS // 2)
    }
    slow_bodies: dict[socket.socket, bytes] = {}
    for _ in range(SLOW_CLIENTS // 2):
        sock = _connect(port)
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        slow_bodies[sock] = b"\x0a" * 100_000
    dripper = _Dripper({**slow_headers, **slow_bodies})
    # THEN /healthz answers within 1 s throughout, on new connections, while they are all held
    closed_at: dict[socket.socket, float] = {}
    selector = selectors.DefaultSelector()
    for sock in idle:
        selector.register(sock, selectors.EVENT_READ)
    slowest = 0.0
    try:
        while time.monotonic() - opened < HEADER_TIMEOUT + 2.5:
            slowest = max(slowest, _healthz_seconds(collector.url))
            for key, _ in selector.select(timeout=0.2):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                if _closed_by_server(ready):
                    closed_at[ready] = time.monotonic() - opened
                    selector.unregister(ready)
        assert slowest < 1.0, f"/healthz took {slowest:.2f} s"
        # AND every idle connection was closed by the server, at the header timeout and not before
        assert len(closed_at) == IDLE_CLIENTS
        assert min(closed_at.values()) >= HEADER_TIMEOUT - 0.5
        assert max(closed_at.values()) <= HEADER_TIMEOUT + 2.0
        # AND so was every client still dripping its headers; those dripping a body are still served
        assert all(_closed_by_server(sock) or sock in dripper.failed for sock in slow_headers)
        assert not any(_closed_by_server(sock) for sock in slow_bodies)
        health = httpx.get(f"{collector.url}/healthz").json()
        assert health["connections"]["closed_idle"] >= IDLE_CLIENTS + SLOW_CLIENTS // 2
        assert health["connections"]["refused_busy"] == 0
    finally:
        dripper.stop()
        selector.close()
        for sock in [*idle, *slow_headers, *slow_bodies]:
            sock.close()
    # AND the collector still takes spans
    with collector.client() as http:
        body = full_request().SerializeToString()
        response = http.post("/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"})
        assert response.status_code == 200


def test_past_the_connection_limit_requests_get_503_with_retry_after(
    start_collector: Callable[..., CollectorProcess],
) -> None:
    # GIVEN a collector that serves 50 connections, all held by idle clients
    collector = start_collector("--max-connections", "50")
    port = int(collector.url.rsplit(":", 1)[1])
    held = [_connect(port) for _ in range(50)]
    try:
        time.sleep(0.2)  # accepted by the server
        # WHEN one more client asks (over JSON and over protobuf)
        with httpx.Client(base_url=collector.url) as http:
            refused = http.get("/healthz")
        with httpx.Client(base_url=collector.url) as http:
            body = full_request().SerializeToString()
            refused_post = http.post(
                "/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"}
            )
    finally:
        for sock in held:
            sock.close()
    # THEN it gets 503 with Retry-After and a google.rpc.Status body in its own encoding, and is closed
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["connection"] == "close"
    assert refused.json()["code"] == 14  # UNAVAILABLE
    assert "50 connections" in refused.json()["message"]
    assert refused_post.status_code == 503
    assert refused_post.headers["content-type"] == "application/x-protobuf"
    # AND once the idle clients are gone it serves again, and says how many it refused
    time.sleep(0.2)
    health = httpx.get(f"{collector.url}/healthz")
    assert health.status_code == 200
    assert health.json()["connections"]["refused_busy"] == 2
    assert health.json()["connections"]["limit"] == 50
    assert sum("connections are open" in line for line in collector.log) == 1  # logged once a minute


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(
    start_collector: Callable[..., CollectorProcess],
) -> None:
    # GIVEN a collector with a 1 s idle timeout and a 10 s header timeout
    collector = start_collector("--idle-timeout", "1s", "--header-timeout", "10s")
    port = int(collector.url.rsplit(":", 1)[1])
    sock = _connect(port)
    # WHEN a client makes a request and then keeps the connection without a next one
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert _read_answer(sock).startswith(b"HTTP/1.1 200")
    answered = time.monotonic()
    # THEN the server closes it after about 1 s (long before the header timeout)
    sock.settimeout(5)
    assert sock.recv(4096) == b""
    assert 0.8 <= time.monotonic() - answered <= 3.0
    sock.close()


@contextlib.contextmanager
def _guarded_server(tmp_path: Path, limits: HttpLimits) -> Iterator[tuple[str, ConnectionStats]]:
    """The real app behind the collector's protocol class, on uvicorn in a thread, with any limits."""
    store = SQLiteStore(tmp_path / "hopscope.db")
    stats = ConnectionStats()
    app = create_app(CollectorSettings(db=tmp_path / "hopscope.db"), store, connections=stats)
    try:
        with serve_app_in_thread(app, http=protocol_class(limits, stats)) as url:
            yield url, stats
    finally:
        store.close()


def test_a_body_that_stops_arriving_is_closed_and_the_collector_goes_on(tmp_path: Path) -> None:
    # GIVEN a collector whose bodies may stall for 1 s
    with _guarded_server(tmp_path, HttpLimits(body_idle_timeout=1)) as (url, stats):
        port = int(url.rsplit(":", 1)[1])
        sock = _connect(port)
        # WHEN a client sends headers and half a body, then nothing
        body = full_request().SerializeToString()
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        sent = time.monotonic()
        # THEN the server closes the connection after about 1 s
        sock.settimeout(5)
        assert sock.recv(4096) == b""
        assert 0.8 <= time.monotonic() - sent <= 3.0
        sock.close()
        assert stats.closed_idle == 1
        # AND a client that sends its body slowly but steadily is served
        sock = _connect(port)
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        pieces = [body[i : i + len(body) // 4 + 1] for i in range(0, len(body), len(body) // 4 + 1)]
        for piece in pieces:
            time.sleep(0.6)
            sock.sendall(piece)
        sock.settimeout(5)
        assert _read_answer(sock).startswith(b"HTTP/1.1 200")
        sock.close()


def test_the_connection_limit_fits_the_open_file_limit(tmp_path: Path) -> None:
    # GIVEN an open-file limit of 400 that the collector cannot raise (soft = hard)
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))

    proc = subprocess.Popen(
        [HOPSCOPE, "collector", "--port", "0", "--db", str(tmp_path / "hopscope.db")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=low_limit,  # noqa: PLW1509 - only sets a limit, in the child
    )
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(2)]
        # THEN it serves as many connections as fit, and says so at start
        assert "the open-file limit (400) allows 144 connections, not --max-connections 2048" in lines[0]
        url = re.search(r"listening on (http://\S+) ", lines[1])
        assert url is not None, lines
        health = httpx.get(f"{url.group(1)}/healthz").json()
        assert health["connections"]["limit"] == 144
    finally:
        proc.terminate()
        proc.wait(30)
