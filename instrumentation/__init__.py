"""Traced Lambda handlers and boto3 publishers (the light part that ships inside Lambda packages).

Depends on opentelemetry-api, -sdk and the OTLP/HTTP exporter only; never on the collector or dashboard.
"""

__all__: list[str] = []
