"""boto3 clients for the collector's AWS work (queue depth, dead-letter queues), made one way everywhere.

Credentials and region follow boto3's own chain (environment, profile, instance role); an endpoint URL
points the clients at LocalStack or a moto server, as ``AWS_ENDPOINT_URL`` does for any boto3 program.
"""

from __future__ import annotations

from typing import Any

DEFAULT_REGION = "us-east-1"


def aws_client(service: str, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 client with bounded retries and timeouts, so one slow call cannot stall a poll."""
    import boto3  # noqa: PLC0415 - only commands that talk to AWS pay for the import
    from botocore.config import Config  # noqa: PLC0415

    session = boto3.session.Session()
    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
    )
    return session.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region or session.region_name or DEFAULT_REGION,
        config=config,
    )
