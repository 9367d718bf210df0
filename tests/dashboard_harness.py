"""Streamlit's AppTest on the real dashboard script, configured as ``hopscope dashboard`` configures it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streamlit.testing.v1 import AppTest

import hopscope.dashboard

APP = Path(hopscope.dashboard.__file__).parent / "app.py"
TIMEOUT_SECONDS = 30


@contextmanager
def dashboard_env(
    db: Path, *, read_only: bool = False, aws_endpoint_url: str | None = None, store: str | None = None
) -> Iterator[None]:
    """The variables ``hopscope dashboard`` sets for the Streamlit process, for the duration of a test."""
    values = {
        "HOPSCOPE_DASHBOARD_DB": str(db),
        "HOPSCOPE_DASHBOARD_STORE": store or "",
        "HOPSCOPE_DASHBOARD_READ_ONLY": "true" if read_only else "",
        "HOPSCOPE_DASHBOARD_AWS_ENDPOINT_URL": aws_endpoint_url or "",
        "HOPSCOPE_DASHBOARD_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    }
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
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
