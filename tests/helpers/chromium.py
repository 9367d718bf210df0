"""Where Chromium is, for the browser tests and docs/screenshots/take.py: wherever the machine has one.

Looked for in this order: ``$HOPSCOPE_CHROMIUM`` (a path), ``chromium``, ``chromium-browser`` and
``google-chrome`` on ``PATH``, then the Chromium that ``playwright install chromium`` downloads. No imports
of hopscope or pytest here, so that a script can use it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM_ENV = "HOPSCOPE_CHROMIUM"
REQUIRE_ENV = "HOPSCOPE_REQUIRE_BROWSER"  # "1": a missing Chromium fails the browser tests (.ci/run)
NAMES = ("chromium", "chromium-browser", "google-chrome")
MISSING = (
    "no Chromium found: set HOPSCOPE_CHROMIUM=/path/to/chromium, put chromium, chromium-browser or "
    "google-chrome on PATH, or install one (apt-get install chromium, or .venv/bin/playwright install "
    "chromium); HOPSCOPE_REQUIRE_BROWSER=1 makes this a failure"
)
# The flags for Chromium in a container or CI: no sandbox as root, and no background network calls.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class ChromiumNotFound(Exception):
    """``$HOPSCOPE_CHROMIUM`` names no file: a mistake to report, never a reason to skip."""


def find_chromium() -> Path | None:
    """The Chromium executable to drive, or None when this machine has none."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise ChromiumNotFound(f"{CHROMIUM_ENV}={configured} is not a file")
        return path
    for name in NAMES:
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    return _playwright_chromium()


def _playwright_chromium() -> Path | None:
    """The Chromium of ``playwright install chromium``, when it has been downloaded."""
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            path = Path(playwright.chromium.executable_path)
    except Exception:  # no playwright, or its driver cannot start: no browser either
        return None
    return path if path.is_file() else None


def require_browser() -> bool:
    return os.environ.get(REQUIRE_ENV, "").lower() in ("1", "true", "yes")
