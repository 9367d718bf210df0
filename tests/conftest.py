"""Real parts for the tests: the ``hopscope`` command as a subprocess, uvicorn in a thread, SQLite files."""

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from moto_server import MotoServer, start_moto_server
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hopscope.collector.app import create_app
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore

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


@pytest.fixture
def start_collector(tmp_path: Path) -> Iterator[Callable[..., CollectorProcess]]:
    """Start collectors as subprocesses; every one still running is stopped after the test."""
    started: list[CollectorProcess] = []

    def start(*args: str, db: Path | None = None, port: int = 0) -> CollectorProcess:
        collector = CollectorProcess(db=db or tmp_path / "hopscope.db", args=list(args), port=port).start()
        started.append(collector)
        return collector

    yield start
    for collector in started:
        if collector.proc is not None and collector.proc.poll() is None:
            collector.proc.kill()
            collector.proc.wait()


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


@pytest.fixture(scope="session")
def moto_session_server() -> Iterator[MotoServer]:
    server = start_moto_server(free_port())
    yield server
    server.stop()


@pytest.fixture
def moto(moto_session_server: MotoServer) -> MotoServer:
    """The session's moto server, emptied before each test."""
    moto_session_server.reset()
    return moto_session_server


@dataclass
class GlobalSpans:
    """The process's global TracerProvider, set once (OpenTelemetry allows no second), and its spans."""

    provider: TracerProvider
    exporter: InMemorySpanExporter

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]


@pytest.fixture(scope="session")
def global_spans_session() -> GlobalSpans:
    provider = TracerProvider(resource=Resource.create({"service.name": "tests"}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return GlobalSpans(provider, exporter)


@pytest.fixture
def spans(global_spans_session: GlobalSpans) -> GlobalSpans:
    """Spans recorded by the real SDK through the global provider, emptied before each test."""
    global_spans_session.exporter.clear()
    return global_spans_session


@dataclass
class ShopDatabase:
    """The dashboard's fixture: a database the real collector filled from the shop's real SDK spans."""

    db: Path
    moto: MotoServer  # still holding the shop's queues (shipping-dlq has one dead letter)
    collector_url: str


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopDatabase]:
    from dashboard_fixture import build_shop_database

    server = start_moto_server(free_port())  # its own server: other tests reset the shared one
    collector = build_shop_database(tmp_path_factory.mktemp("shop") / "hopscope.db", server)
    collector.stop()
    yield ShopDatabase(collector.db, server, collector.url)
    server.stop()


@pytest.fixture(scope="module")
def api(shop: ShopDatabase) -> Iterator[httpx.Client]:
    """The real query API over the shop's database, served by uvicorn in a thread."""
    store = SQLiteStore(shop.db)
    with serve_in_thread(CollectorSettings(db=shop.db), store) as url, httpx.Client(base_url=url) as client:
        yield client
    store.close()


# -- ClickHouse through chdb ------------------------------------------------------------------------------
# chdb runs one ClickHouse data path per process, so the whole test session shares one; each test gets a
# database of its own in it.

_chdb_databases = iter(range(1, 1_000_000))


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb") / "data"


@pytest.fixture
def chdb_url(chdb_path: Path) -> str:
    """A ``chdb://`` store URL for a fresh database in the session's chdb data path."""
    return f"chdb://{chdb_path}?database=test_{next(_chdb_databases)}"


STORE_BACKENDS = ("sqlite", "chdb")


@pytest.fixture(params=STORE_BACKENDS)
def new_store(
    request: pytest.FixtureRequest, tmp_path: Path, chdb_path: Path
) -> Iterator[Callable[..., Any]]:
    """Opens fresh stores of one backend: the shared store suite runs every test that takes this on each."""
    from hopscope.collector.store.url import open_store

    opened: list[Any] = []

    def make(name: str = "store") -> Any:
        if request.param == "sqlite":
            store = SQLiteStore(tmp_path / f"{name}.db")
        else:
            store = open_store(f"chdb://{chdb_path}?database=test_{next(_chdb_databases)}")
        opened.append(store)
        return store

    yield make
    for store in opened:
        with contextlib.suppress(Exception):
            store.close()
