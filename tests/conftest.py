"""Real parts for the tests: the ``hopscope`` command as a subprocess, uvicorn in a thread, SQLite files."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.moto_server import MotoServer, start_moto_server
from tests.helpers.servers import (
    STORE_BACKENDS,
    CollectorProcess,
    GlobalSpans,
    ShopDatabase,
    free_port,
    serve_in_thread,
)

_chdb_databases = iter(range(1, 1_000_000))


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


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopDatabase]:
    from tests.helpers.dashboard_fixture import build_shop_database

    server = start_moto_server(free_port())  # its own server: other tests reset the shared one
    collector = build_shop_database(tmp_path_factory.mktemp("shop") / "hopscope.db", server)
    collector.stop()
    yield ShopDatabase(collector.db, server, collector.url)
    server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Every browser test skipped for want of Chromium is one line of the summary ("SKIPPED [4] ..."), not
    one per test: pytest reports a fixture's skip at each test's own line, so those are put at the finder."""
    from tests.helpers import chromium
    from tests.helpers.chromium import MISSING

    report = yield
    if report.skipped and isinstance(report.longrepr, tuple) and MISSING in str(report.longrepr[2]):
        report.longrepr = (chromium.__file__, None, str(report.longrepr[2]))
    return report


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Chromium for every browser test, wherever this machine has it (tests/helpers/chromium.py). None:
    the test is skipped with the reason in the summary, or fails with HOPSCOPE_REQUIRE_BROWSER=1 (CI)."""
    from tests.helpers.chromium import MISSING, ChromiumNotFound, find_chromium, require_browser

    try:
        path = find_chromium()
    except ChromiumNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    if path is None:
        if require_browser():
            pytest.fail(MISSING, pytrace=False)
        pytest.skip(MISSING)
    return path


@pytest.fixture(scope="module")
def api(shop: ShopDatabase) -> Iterator[httpx.Client]:
    """The real query API over the shop's database, served by uvicorn in a thread."""
    store = SQLiteStore(shop.db)
    with serve_in_thread(CollectorSettings(db=shop.db), store) as url, httpx.Client(base_url=url) as client:
        yield client
    store.close()


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb") / "data"


@pytest.fixture
def chdb_url(chdb_path: Path) -> str:
    """A ``chdb://`` store URL for a fresh database in the session's chdb data path."""
    return f"chdb://{chdb_path}?database=test_{next(_chdb_databases)}"


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
