"""Background threads log each distinct failure once, with its traceback, and once when it works again.

Real failing parts: a forwarding upstream on 127.0.0.1 that refuses connections, then comes up; a moto
server that is stopped under a polling QueuePoller, then started again on the same port. (The writer
thread's rule is shown on a full SQLite database in test_poison_spans.py.)
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from hopscope.collector.aws.poller import QueuePoller
from hopscope.collector.ingest.forward import Forwarder
from hopscope.collector.settings import SqsSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.moto_server import REGION, start_moto_server
from tests.helpers.otlp_samples import full_request
from tests.helpers.servers import free_port


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def _messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if text in record.getMessage()]


class _Accepting(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_unreachable_upstream_is_logged_once_with_its_traceback_while_it_stays_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a forwarder retrying fast against a port on 127.0.0.1 that is bound but not listening
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{reserved.getsockname()[1]}/v1/traces"
    forwarder = Forwarder([url], max_queue_bytes=1 << 20, initial_backoff=0.01, max_backoff=0.02)
    server: ThreadingHTTPServer | None = None
    with caplog.at_level(logging.INFO, logger="hopscope.collector.ingest.forward"):
        forwarder.start()
        try:
            # WHEN a batch is offered and the upstream refuses it many times over
            forwarder.offer(full_request(spans=2).SerializeToString(), 2)
            _wait_for(lambda: forwarder.stats()[0]["consecutive_failures"] >= 20)

            # THEN the failure was logged once, with the connection error's traceback
            [failure] = _messages(caplog, "failed, retrying with backoff")
            assert failure.levelno == logging.WARNING
            assert failure.exc_info is not None and failure.exc_info[0] is httpx.ConnectError
            assert "ConnectError" in failure.getMessage()

            # WHEN the upstream comes up on that port
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Accepting, bind_and_activate=False)
            server.socket.close()
            server.socket, server.server_address = reserved, reserved.getsockname()
            server.server_activate()
            threading.Thread(target=server.serve_forever, daemon=True).start()
            _wait_for(lambda: forwarder.stats()[0]["forwarded_spans"] == 2)
        finally:
            forwarder.close(5)
            if server is not None:
                server.shutdown()
            reserved.close()
    # THEN it says once that forwarding works again, and the failure was never logged a second time
    assert len(_messages(caplog, "works again")) == 1
    assert len(_messages(caplog, "failed, retrying with backoff")) == 1


def test_a_stopped_moto_server_is_logged_once_with_its_traceback_while_it_stays_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    moto = start_moto_server(port)
    moto.client("sqs").create_queue(QueueName="orders")
    list_calls: list[float] = []

    def clients(service: str, endpoint_url: str | None, region: str | None) -> Any:
        """Real clients without retries (a refused call fails at once), counting ListQueues calls."""
        client = boto3.session.Session().client(
            service,
            endpoint_url=endpoint_url,
            region_name=region or REGION,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2),
        )
        client.meta.events.register(
            "before-call.sqs.ListQueues", lambda **_: list_calls.append(time.monotonic())
        )
        return client

    store = SQLiteStore(tmp_path / "hopscope.db")
    # GIVEN a poller polling a moto server every 50 ms
    poller = QueuePoller(
        store, SqsSettings(endpoint_url=moto.url, interval_seconds=0.05), client_factory=clients
    )
    with caplog.at_level(logging.INFO, logger="hopscope.collector.sqs"):
        poller.start()
        try:
            _wait_for(lambda: len(list_calls) >= 2)
            # WHEN the server stops and the poller keeps polling it for many rounds
            moto.stop()
            stopped = len(list_calls)
            _wait_for(lambda: len(list_calls) >= stopped + 15)

            # THEN ListQueues' failure was logged once, with botocore's traceback
            [failure] = _messages(caplog, "SQS ListQueues failed (EndpointConnectionError)")
            assert failure.levelno == logging.WARNING
            assert failure.exc_info is not None and failure.exc_info[0] is EndpointConnectionError
            assert not _messages(caplog, "works again")

            # WHEN the server is back on the same port
            moto = start_moto_server(port)
            _wait_for(lambda: bool(_messages(caplog, "SQS ListQueues works again")))
            back = len(list_calls)
            _wait_for(lambda: len(list_calls) >= back + 3)
        finally:
            poller.stop()
            moto.stop()
            store.close()
    # THEN it said so once, and the failure was never logged a second time
    assert len(_messages(caplog, "SQS ListQueues works again")) == 1
    assert len(_messages(caplog, "SQS ListQueues failed")) == 1
    assert not _messages(caplog, "SQS poll failed")
