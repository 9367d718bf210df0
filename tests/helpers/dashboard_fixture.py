"""The dashboard's fixture database: built through a real collector (with --sqs) from real SDK spans of the
shop in tests/helpers/shop.py, each function in its own process, against a real moto server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.moto_server import MotoServer
from tests.helpers.servers import CollectorProcess

SHOP = Path(__file__).parent / "shop.py"


def build_shop_database(db: Path, moto: MotoServer) -> CollectorProcess:
    """Run the shop once into ``db``; returns the collector, still running (stop it when done)."""
    collector = CollectorProcess(
        db=db, args=["--sqs", "--aws-endpoint-url", moto.url, "--sqs-interval", "1s"]
    )
    env = {
        **os.environ,
        "HOPSCOPE_ENDPOINT": "",
        "AWS_ENDPOINT_URL": moto.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(
        {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    )
    collector.start()
    env["HOPSCOPE_ENDPOINT"] = collector.url
    for role in ("setup", "orders-api", "billing", "shipping"):
        subprocess.run([sys.executable, str(SHOP), role], env=env, check=True, timeout=120)
    with collector.client() as http:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            healthy = http.get("/healthz").json()
            queues = {q["name"]: q for q in http.get("/api/queues").json()["queues"]}
            polled = queues.get("shipping-dlq", {}).get("visible") == 1
            if not healthy["flows_pending"] and healthy["pending_spans"] == 0 and polled:
                return collector
            time.sleep(0.3)
    raise AssertionError("the shop's spans or the DLQ's depth did not arrive in 30 s")
