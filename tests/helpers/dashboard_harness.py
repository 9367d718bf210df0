"""Streamlit's AppTest on the real dashboard script, configured as ``hopscope dashboard`` configures it; and
the real ``hopscope dashboard`` command for tests that drive it in headless Chromium."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

import hopscope.dashboard
from tests.helpers.chromium import CHROMIUM_ARGS
from tests.helpers.servers import HOPSCOPE, free_port

__all__ = ["CHROMIUM_ARGS", "dashboard_env", "run_page", "running_dashboard"]

APP = Path(hopscope.dashboard.__file__).parent / "app.py"
TIMEOUT_SECONDS = 30


@contextmanager
def dashboard_env(
    db: Path,
    *,
    read_only: bool = False,
    aws_endpoint_url: str | None = None,
    store: str | None = None,
    host: str = "127.0.0.1",
    password: str | None = None,
) -> Iterator[None]:
    """The variables ``hopscope dashboard`` sets for the Streamlit process, and the address it passes as
    ``--server.address`` (what dashboard/access.py judges), for the duration of a test."""
    values = {
        "HOPSCOPE_DASHBOARD_DB": str(db),
        "HOPSCOPE_DASHBOARD_STORE": store or "",
        "HOPSCOPE_DASHBOARD_READ_ONLY": "true" if read_only else "",
        "HOPSCOPE_DASHBOARD_AWS_ENDPOINT_URL": aws_endpoint_url or "",
        "HOPSCOPE_DASHBOARD_REGION": "us-east-1",
        "HOPSCOPE_DASHBOARD_PASSWORD": password or "",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    }
    saved = {key: os.environ.get(key) for key in values}
    saved_host = streamlit_config.get_option("server.address")
    os.environ.update(values)
    streamlit_config.set_option("server.address", host)
    try:
        yield
    finally:
        streamlit_config.set_option("server.address", saved_host)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_page(page: str | None = None, query: dict[str, str] | None = None) -> AppTest:
    """Run the app (inside ``dashboard_env``) and, when given, switch to ``views/<page>.py``."""
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_SECONDS)
    app.query_params.update(query or {})
    app.run()
    if page is not None:
        app.switch_page(f"views/{page}.py")
        app.run()
    return app


@contextmanager
def running_dashboard(
    db: Path,
    *,
    aws_endpoint_url: str | None = None,
    host: str = "127.0.0.1",
    password_file: Path | None = None,
) -> Iterator[str]:
    """``hopscope dashboard --db db`` on a free port of ``host``, until it answers; yields its URL (through
    127.0.0.1 when ``host`` is every interface, 0.0.0.0)."""
    port = free_port()
    aws = ["--aws-endpoint-url", aws_endpoint_url, "--region", "us-east-1"] if aws_endpoint_url else []
    password = ["--password-file", str(password_file)] if password_file is not None else []
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    env.pop("HOPSCOPE_DASHBOARD_PASSWORD", None)  # only the test's own
    proc = subprocess.Popen(
        [HOPSCOPE, "dashboard", "--db", str(db), "--host", host, "--port", str(port), *aws, *password],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(url):
            assert time.monotonic() < deadline, "hopscope dashboard did not answer within 60 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok"
    except httpx.HTTPError:
        return False
