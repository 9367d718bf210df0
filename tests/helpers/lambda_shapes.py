"""Lambda's side of an invocation for tests: the demo's context object and event builders, and fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hopscope.demo.lambda_runtime import (
    ACCOUNT,
    ClientContext,
    LambdaContext,
    sns_event_from_envelope,
    sqs_event,
    sqs_record,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lambda-events"

__all__ = [
    "ACCOUNT",
    "ClientContext",
    "LambdaContext",
    "fixture",
    "sns_event_from_envelope",
    "sqs_event",
    "sqs_record",
]


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())  # type: ignore[no-any-return]
