"""Dead-letter queue benchmark on a moto server it starts itself (SQS over HTTP on 127.0.0.1).

(a) Peek: ``peek()`` of 1,000 DLQ messages: seconds, and SQS API calls (counted by botocore's events).
(b) Redrive: hopscope's client-side ``redrive()`` of 2,000 messages (moto has no StartMessageMoveTask)
    against a plain boto3 loop doing the same job (receive 10 with their attributes -> SendMessageBatch
    -> DeleteMessageBatch), on the same server in the same run, alternating, best of ``--rounds``. The
    ratio hopscope / plain is the figure to watch (target >= 0.8). See bench/README.md.

    .venv/bin/python bench/dlq.py [--peek 1000] [--redrive 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.helpers
from hopscope.collector.aws.dlq import QueueRef, find_queue, peek
from hopscope.collector.aws.redrive import redrive, send_attributes
from tests.helpers.moto_server import MotoServer, start_moto_server  # tests/helpers/moto_server.py

TARGET_RATIO = 0.8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fill(sqs: Any, url: str, count: int, tag: str) -> None:
    """``count`` messages shaped like instrumented ones: a JSON body and trace context attributes."""
    for start in range(0, count, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {
                    "Id": str(n),
                    "MessageBody": json.dumps(
                        {"uid": f"{tag}-{n}", "order": {"total": n, "items": ["x"] * 5}}
                    ),
                    "MessageAttributes": {
                        "traceparent": {
                            "DataType": "String",
                            "StringValue": f"00-{n + 1:032x}-{n + 1:016x}-01",
                        },
                        "baggage": {
                            "DataType": "String",
                            "StringValue": f"hopscope.correlation_id=order-{n}",
                        },
                    },
                }
                for n in range(start, min(start + 10, count))
            ],
        )


def counting_calls(sqs: Any) -> list[str]:
    calls: list[str] = []
    sqs.meta.events.register("before-call.sqs", lambda model, **_: calls.append(model.name))
    return calls


def queue_pair(sqs: Any, name: str) -> tuple[QueueRef, QueueRef]:
    """A DLQ and its source queue (the default redrive target)."""
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
    sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": policy})
    return find_queue(sqs, f"{name}-dlq"), find_queue(sqs, name)


def visible(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def plain_move(sqs: Any, dlq: QueueRef, target: QueueRef) -> int:
    """The baseline: what anyone would write with boto3 to move messages with their attributes."""
    moved = 0
    while True:
        page = sqs.receive_message(
            QueueUrl=dlq.url, MaxNumberOfMessages=10, VisibilityTimeout=30, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not page:
            return moved
        entries = [
            {
                "Id": str(i),
                "MessageBody": m["Body"],
                "MessageAttributes": send_attributes(m.get("MessageAttributes")),
            }
            for i, m in enumerate(page)
        ]
        answer = sqs.send_message_batch(QueueUrl=target.url, Entries=entries)
        sent = {item["Id"] for item in answer.get("Successful", [])}
        sqs.delete_message_batch(
            QueueUrl=dlq.url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(page)
                if str(i) in sent
            ],
        )
        moved += len(sent)


def hopscope_move(sqs: Any, dlq: QueueRef, target: QueueRef) -> int:
    """hopscope's redrive as the CLI runs it: by name, default target, everything it checks included."""
    result = redrive(sqs, dlq.name)
    assert result.failed == 0 and result.left == 0 and not result.used_move_task, result
    return result.moved


def timed_move(
    sqs: Any, name: str, count: int, move: Callable[[Any, QueueRef, QueueRef], int]
) -> tuple[float, int]:
    """(messages/s, API calls) of one move of ``count`` fresh messages."""
    dlq, target = queue_pair(sqs, name)
    fill(sqs, dlq.url, count, name)
    calls = counting_calls(sqs)
    started = time.perf_counter()
    moved = move(sqs, dlq, target)
    elapsed = time.perf_counter() - started
    made = len(calls)
    assert moved == count and visible(sqs, target.url) == count, (moved, count)
    return count / elapsed, made


def bench(server: MotoServer, peek_count: int, redrive_count: int, rounds: int) -> bool:
    sqs = server.client("sqs")

    # (a) peek
    dlq, _ = queue_pair(sqs, "peeked")
    fill(sqs, dlq.url, peek_count, "peek")
    client = server.client("sqs")
    calls = counting_calls(client)
    started = time.perf_counter()
    letters = peek(client, "peeked-dlq", limit=peek_count)
    peek_seconds = time.perf_counter() - started
    assert len(letters) == peek_count and visible(sqs, dlq.url) == peek_count
    by_operation = {name: calls.count(name) for name in sorted(set(calls))}

    # (b) redrive vs the plain loop, alternating so that drift hits both alike
    plain: list[tuple[float, int]] = []
    ours: list[tuple[float, int]] = []
    for round_number in range(rounds):
        server.reset()
        client = server.client("sqs")
        plain.append(timed_move(client, f"plain{round_number}", redrive_count, plain_move))
        server.reset()
        client = server.client("sqs")
        ours.append(timed_move(client, f"hop{round_number}", redrive_count, hopscope_move))
    best_plain = max(plain)
    best_ours = max(ours)
    ratio = best_ours[0] / best_plain[0]

    print(f"{'measure':<44} {'value':>14}")
    print(f"{'-' * 44} {'-' * 14}")
    print(f"{f'peek {peek_count} messages: seconds':<44} {peek_seconds:>14.2f}")
    print(f"{f'peek {peek_count} messages: API calls':<44} {len(calls):>14}")
    for name, count in by_operation.items():
        print(f"{'  ' + name:<44} {count:>14}")
    print(f"{f'plain boto3 move {redrive_count}: msg/s (best)':<44} {best_plain[0]:>14.0f}")
    print(f"{f'plain boto3 move {redrive_count}: API calls':<44} {best_plain[1]:>14}")
    print(f"{f'hopscope redrive {redrive_count}: msg/s (best)':<44} {best_ours[0]:>14.0f}")
    print(f"{f'hopscope redrive {redrive_count}: API calls':<44} {best_ours[1]:>14}")
    print(f"{'ratio hopscope / plain (target >= 0.8)':<44} {ratio:>14.2f}")
    print(
        "all rounds (msg/s): plain "
        + ", ".join(f"{r[0]:.0f}" for r in plain)
        + "; hopscope "
        + ", ".join(f"{r[0]:.0f}" for r in ours)
    )
    return ratio >= TARGET_RATIO


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peek", type=int, default=1000, help="messages to peek (default: %(default)s)")
    parser.add_argument("--redrive", type=int, default=2000, help="messages to move (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default: %(default)s)")
    args = parser.parse_args(argv)
    server = start_moto_server(free_port())
    try:
        met = bench(server, args.peek, args.redrive, args.rounds)
    finally:
        server.stop()
    print("target met" if met else "target NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
