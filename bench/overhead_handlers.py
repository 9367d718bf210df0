"""The handlers that bench/overhead.py times: one body, three functions, so that each wrapper gets its own.

opentelemetry-instrumentation-aws-lambda wraps the function that ``_HANDLER`` names, in place; the bare
and hopscope functions stay separate objects.
"""

from __future__ import annotations

from typing import Any

RESPONSE = {"statusCode": 200, "body": '{"ok": true}'}


def bare(event: Any, context: Any) -> dict[str, Any]:
    return RESPONSE


def for_opentelemetry(event: Any, context: Any) -> dict[str, Any]:
    return RESPONSE


def for_hopscope(event: Any, context: Any) -> dict[str, Any]:
    return RESPONSE
