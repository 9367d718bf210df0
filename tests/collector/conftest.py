"""Fixtures of the collector's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hopscope.instrumentation import (
    instrument_boto3,
    uninstrument_boto3,
)


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """For the CLI run in this process: it builds its clients from boto3's default chain."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def instrumented() -> Iterator[None]:
    instrument_boto3()
    yield
    uninstrument_boto3()
