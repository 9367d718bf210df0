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

import httpx
import pytest
import uvicorn

from hopscope.collector.app import create_app
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite import SQLiteStore

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
    port = free_port()
    config = uvicorn.Config(create_app(settings, store), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
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
