"""Collectors and moto started for tests, and the shared span sets."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hopscope.collector.app import create_app
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.moto_server import MotoServer

HOPSCOPE = str(Path(sys.executable).with_name("hopscope"))


_LISTENING = re.compile(r"listening on (http://\S+) ")


@dataclass
class CollectorProcess:
    """A collector started through the ``hopscope`` console command."""

    db: Path
    args: list[str]
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    log: list[str] = field(default_factory=list)

    def start(self) -> CollectorProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("HOPSCOPE_AUTH_TOKEN", None)
        self.proc = subprocess.Popen(
            [HOPSCOPE, "collector", "--port", str(self.port), "--db", str(self.db), *self.args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            match = _LISTENING.search(line)
            if match:
                self.url = match.group(1)
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        self.proc.kill()
        raise AssertionError("collector did not start:\n" + "".join(self.log))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def wait_for_flows(self, timeout: float = 20) -> None:
        """Until every stored span is stitched: a 200 means stored, flows follow (ingest/stitcher.py)."""
        with self.client() as http:
            deadline = time.monotonic() + timeout
            while http.get("/healthz").json()["flows_pending"]:
                assert time.monotonic() < deadline, "flows still pending"
                time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(settings: CollectorSettings, store: SQLiteStore) -> Iterator[str]:
    """The real app on a real uvicorn server in a thread (for settings the CLI does not expose)."""
    with serve_app_in_thread(create_app(settings, store)) as url:
        yield url


@contextlib.contextmanager
def serve_app_in_thread(app: Any, **config: Any) -> Iterator[str]:
    """Any ASGI app on a real uvicorn server in a thread; ``config`` goes to ``uvicorn.Config``."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@dataclass
class GlobalSpans:
    """The process's global TracerProvider, set once (OpenTelemetry allows no second), and its spans."""

    provider: TracerProvider
    exporter: InMemorySpanExporter

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]


@dataclass
class ShopDatabase:
    """The dashboard's fixture: a database the real collector filled from the shop's real SDK spans."""

    db: Path
    moto: MotoServer  # still holding the shop's queues (shipping-dlq has one dead letter)
    collector_url: str


STORE_BACKENDS = ("sqlite", "chdb")
