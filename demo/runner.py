"""``hopscope demo``: start moto, the collector, the five functions and the dashboard; stop them all cleanly.

Every part is a child process of this one (same session, tracked by its Popen), so Ctrl-C reaches them
all and nothing outlives the demo. They stop in order: the functions first (they flush their spans), then
the dashboard, then the collector (it drains and closes the database), then moto; whatever is still
running after its grace period is killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from hopscope.demo.function import FUNCTIONS, aws_environment

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_GRACE_S = {"function": 10.0, "dashboard": 10.0, "collector": 35.0, "moto": 10.0}


@dataclass
class _Part:
    name: str
    role: str  # function, dashboard, collector, moto
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


@dataclass
class _Parts:
    """Every child process, started with its output in its own log file."""

    log_dir: Path
    env: dict[str, str]
    parts: list[_Part] = field(default_factory=list)

    def start(self, name: str, role: str, command: list[str]) -> _Part:
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("wb")
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env
        )
        part = _Part(name, role, proc, log_path, log)
        self.parts.append(part)
        return part

    def exited(self) -> _Part | None:
        return next((part for part in self.parts if part.proc.poll() is not None), None)

    def stop(self) -> None:
        """SIGTERM each role in turn and wait for it; kill what outlives its grace period."""
        for role in ("function", "dashboard", "collector", "moto"):
            group = [part for part in self.parts if part.role == role and part.proc.poll() is None]
            for part in group:
                part.proc.terminate()
            deadline = time.monotonic() + STOP_GRACE_S[role]
            for part in group:
                try:
                    part.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    print(f"  {part.name} did not stop in time; killed", file=sys.stderr)
                    part.proc.kill()
        for part in self.parts:
            if part.proc.poll() is None:
                part.proc.kill()
            part.proc.wait()
            part.log.close()


def _port_free(port: int) -> bool:
    """Whether a server can listen on ``port`` (as the servers do, with SO_REUSEADDR: TIME_WAIT is fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _wait_for_moto(part: _Part, url: str, stop: threading.Event) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set() and part.proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2):  # noqa: S310 - our URL
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _wait_for_line(part: _Part, text: str, stop: threading.Event) -> bool:
    """Wait until the part's log holds ``text`` (the collector's "listening on" line)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set() and part.proc.poll() is None:
        if text in part.log_path.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


def _failed(part: _Part, what: str) -> int:
    tail = part.log_path.read_text(errors="replace").strip().splitlines()[-5:]
    print(f"hopscope demo: {part.name} {what}; its log ({part.log_path}) ends:", file=sys.stderr)
    for line in tail:
        print(f"  {line}", file=sys.stderr)
    return 1


@dataclass(frozen=True)
class DemoSettings:
    db: Path
    duration_s: float | None = None
    rate: float = 5.0
    dashboard: bool = True
    moto_port: int = 5000
    collector_port: int = 4318
    dashboard_port: int = 8501


def _run(settings: DemoSettings, parts: _Parts, stop: threading.Event) -> int:
    ports = {"--moto-port": settings.moto_port, "--collector-port": settings.collector_port}
    if settings.dashboard:
        ports["--dashboard-port"] = settings.dashboard_port
    for flag, port in ports.items():
        if not _port_free(port):
            print(f"hopscope demo: port {port} is in use; choose another with {flag}", file=sys.stderr)
            return 1
    python = sys.executable
    # -W: runpy warns that hopscope.cli imported hopscope.cli.main first, which is harmless here
    hopscope = [python, "-W", "ignore::RuntimeWarning:runpy", "-m", "hopscope.cli.main"]
    moto_url = f"http://{HOST}:{settings.moto_port}"
    collector_url = f"http://{HOST}:{settings.collector_port}"
    moto = parts.start(
        "moto", "moto", [python, "-m", "moto.server", "-H", HOST, "-p", str(settings.moto_port)]
    )
    if not _wait_for_moto(moto, moto_url, stop):
        return 0 if stop.is_set() else _failed(moto, "did not start")

    from hopscope.demo.aws_setup import create_resources  # noqa: PLC0415 - boto3 only once needed

    create_resources(moto_url)
    collector = parts.start(
        "collector",
        "collector",
        [
            *hopscope, "collector",
            "--db", str(settings.db), "--host", HOST, "--port", str(settings.collector_port),
            "--sqs", "--aws-endpoint-url", moto_url, "--sqs-interval", "2s",
        ],
    )  # fmt: skip
    if not _wait_for_line(collector, "listening on", stop):
        return 0 if stop.is_set() else _failed(collector, "did not start")

    for name in FUNCTIONS:
        command = [python, "-m", "hopscope.demo.function", name, "--moto", moto_url]
        parts.start(name, "function", [*command, "--collector", collector_url, "--rate", str(settings.rate)])
    if settings.dashboard:
        parts.start(
            "dashboard",
            "dashboard",
            [
                *hopscope, "dashboard",
                "--db", str(settings.db), "--host", HOST, "--port", str(settings.dashboard_port),
                "--aws-endpoint-url", moto_url, "--collector", collector_url,
            ],
        )  # fmt: skip
    _announce(settings, moto_url, collector_url, parts.log_dir)
    return _wait(settings, parts, stop)


def _announce(settings: DemoSettings, moto_url: str, collector_url: str, log_dir: Path) -> None:
    lines = [
        f"  AWS (moto server)  {moto_url}",
        f"  collector          {collector_url}  (spans into {settings.db}: kept, the next run appends)",
    ]
    if settings.dashboard:
        lines.append(f"  dashboard          http://{HOST}:{settings.dashboard_port}")
    lines += [
        f"  traffic            orders-api, {settings.rate:g} orders/s with bursts",
        "  functions          " + ", ".join(FUNCTIONS),
        f"  logs               {log_dir}",
        "Ctrl-C stops everything",
    ]
    print("hopscope demo\n" + "\n".join(lines), flush=True)


def _wait(settings: DemoSettings, parts: _Parts, stop: threading.Event) -> int:
    """Until the duration is over or a signal asks to stop; 1 if a part dies on its own."""
    deadline = None if settings.duration_s is None else time.monotonic() + settings.duration_s
    while not stop.wait(0.5):
        exited = parts.exited()
        if exited is not None:
            return _failed(exited, f"exited with {exited.proc.returncode}")
        if deadline is not None and time.monotonic() >= deadline:
            break
    return 0


def run_demo(settings: DemoSettings) -> int:
    """Run the demo until ``settings.duration_s`` is over or Ctrl-C/SIGTERM; 0 after a clean stop."""
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    log_dir = settings.db.parent / f"{settings.db.stem}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **aws_environment(f"http://{HOST}:{settings.moto_port}"), "PYTHONUNBUFFERED": "1"}
    parts = _Parts(log_dir, env)
    try:
        code = _run(settings, parts, stop)
    finally:
        if parts.parts:
            print("hopscope demo: stopping", file=sys.stderr, flush=True)
        parts.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if parts.parts:
        print(f"hopscope demo: stopped; the spans stay in {settings.db}", file=sys.stderr, flush=True)
    return code
