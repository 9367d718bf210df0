"""One SQS poll cycle over many queues: API calls and wall time, against a plain boto3 loop in the same run.

A moto server on 127.0.0.1 holds ``--queues`` queues (every fourth with a redrive policy to a DLQ, most
with messages). The poller's cycle (ListQueues, GetQueueAttributes per queue, CloudWatch, the age
estimates, and the store write) is timed against the least any poller must do: one GetQueueAttributes
per queue in a boto3 loop. Each figure is the median of ``--rounds`` cycles.

    .venv/bin/python bench/sqs_poll.py [--queues 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.helpers
from hopscope.collector.aws.poller import QueuePoller
from hopscope.collector.settings import SqsSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.moto_server import start_moto_server


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(name, value)
    server = start_moto_server(free_port())
    try:
        sqs = server.client("sqs")
        urls = []
        for index in range(args.queues):
            if index % 4 == 0:
                dlq = sqs.create_queue(QueueName=f"q{index:04d}-dlq")["QueueUrl"]
                arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
                    "QueueArn"
                ]
                policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})
                url = sqs.create_queue(QueueName=f"q{index:04d}", Attributes={"RedrivePolicy": policy})[
                    "QueueUrl"
                ]
                urls += [dlq, url]
                sqs.send_message(QueueUrl=dlq, MessageBody="dead")
            else:
                url = sqs.create_queue(QueueName=f"q{index:04d}")["QueueUrl"]
                urls.append(url)
            for _ in range(index % 3):
                sqs.send_message(QueueUrl=url, MessageBody="work")
        with tempfile.TemporaryDirectory(prefix="hopscope-bench-") as directory:
            store = SQLiteStore(Path(directory) / "hopscope.db")
            poller = QueuePoller(store, SqsSettings(endpoint_url=server.url))
            poller.poll_once()  # warm up: connections, the first ListQueues
            ours, plain, calls = [], [], 0
            for _ in range(args.rounds):
                start = time.perf_counter()
                result = poller.poll_once()
                ours.append(time.perf_counter() - start)
                calls = result.api_calls
                start = time.perf_counter()
                for url in urls:
                    sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
                plain.append(time.perf_counter() - start)
            store.close()
    finally:
        server.stop()
    queues = len(result.queues)
    estimated = sum(1 for s in result.samples if s.age_source == "estimate")
    ratio = statistics.median(ours) / statistics.median(plain)
    print(f"queues polled:               {queues} ({sum(1 for q in result.queues if q.error)} with errors)")
    print(f"API calls per poll:          {calls} ({calls / queues:.2f} per queue; {estimated} age estimates)")
    print(f"poll cycle (median):         {statistics.median(ours) * 1000:.0f} ms")
    print(f"plain GetQueueAttributes loop: {statistics.median(plain) * 1000:.0f} ms for {len(urls)} queues")
    print(f"ratio poll / plain loop:     {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
