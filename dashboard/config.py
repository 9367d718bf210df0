"""The dashboard's settings: ``hopscope dashboard`` passes its flags to the Streamlit process as variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DB_ENV = "HOPSCOPE_DASHBOARD_DB"
STORE_ENV = "HOPSCOPE_DASHBOARD_STORE"
READ_ONLY_ENV = "HOPSCOPE_DASHBOARD_READ_ONLY"
COLLECTOR_ENV = "HOPSCOPE_DASHBOARD_COLLECTOR_URL"
AWS_ENDPOINT_ENV = "HOPSCOPE_DASHBOARD_AWS_ENDPOINT_URL"
REGION_ENV = "HOPSCOPE_DASHBOARD_REGION"
# The shared password: set by the operator, or by ``hopscope dashboard --password-file`` (never in argv).
PASSWORD_ENV = "HOPSCOPE_DASHBOARD_PASSWORD"  # noqa: S105 - a variable's name, not a password
DEFAULT_COLLECTOR_URL = "http://127.0.0.1:4318"


@dataclass(frozen=True)
class DashboardConfig:
    db: Path
    read_only: bool
    # A --store URL (ClickHouse, or sqlite:///); when set it is read instead of ``db``.
    store: str | None
    collector_url: str
    aws_endpoint_url: str | None
    region: str | None
    # With a password every viewer logs in first (dashboard/access.py); kept out of repr and logs.
    password: str | None = field(default=None, repr=False)


def load_config() -> DashboardConfig:
    env = os.environ
    return DashboardConfig(
        db=Path(env.get(DB_ENV) or "hopscope.db"),
        read_only=env.get(READ_ONLY_ENV, "").lower() in ("1", "true", "yes"),
        store=env.get(STORE_ENV) or None,
        collector_url=env.get(COLLECTOR_ENV) or DEFAULT_COLLECTOR_URL,
        aws_endpoint_url=env.get(AWS_ENDPOINT_ENV) or None,
        region=env.get(REGION_ENV) or None,
        password=env.get(PASSWORD_ENV) or None,
    )


def store_label(config: DashboardConfig) -> str:
    """What the pages name as the data source."""
    return config.store or str(config.db)
