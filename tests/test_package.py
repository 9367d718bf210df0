"""The distribution's shape: the hopscope namespace only, a light instrumentation, typed packages."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest


@pytest.mark.parametrize("package", ["cli", "collector", "dashboard", "demo", "instrumentation"])
def test_every_package_is_typed_and_exports_what_it_names(package: str) -> None:
    module = importlib.import_module(f"hopscope.{package}")
    assert (Path(module.__file__).parent / "py.typed").exists()  # type: ignore[arg-type]
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_importing_the_instrumentation_pulls_no_collector_dashboard_or_database_driver() -> None:
    # Nor the logs SDK: configure(logs=True) imports it; a Powertools Logger hooked with logs off does not.
    script = (
        "import sys, hopscope.instrumentation; "
        "from aws_lambda_powertools import Logger; "
        "hopscope.instrumentation.instrument_powertools_logger(Logger(service='s')); "
        "heavy = [m for m in ('starlette', 'uvicorn', 'streamlit', 'pandas', 'sqlite3', 'hopscope.collector',"
        " 'hopscope.dashboard', 'opentelemetry.sdk._logs', 'opentelemetry._logs',"
        " 'opentelemetry.exporter.otlp.proto.http') if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_bare_install_requires_only_opentelemetry_and_jmespath() -> None:
    requires = distribution("hopscope").requires or []
    bare = [r for r in requires if "extra ==" not in r]
    assert sorted(r.split(">")[0] for r in bare) == [
        "jmespath",
        "opentelemetry-api",
        "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-instrumentation-botocore",
        "opentelemetry-propagator-aws-xray",
        "opentelemetry-sdk",
    ]


def test_no_generic_top_level_module_is_installed(tmp_path: Path) -> None:
    # Run from an empty folder so that the repository's own folders are not on sys.path.
    for name in ("collector", "dashboard", "instrumentation", "cli"):
        result = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True)
        assert result.returncode != 0, f"'import {name}' should fail outside the repository"
