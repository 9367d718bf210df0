"""``hopscope dlq``: list dead-letter queues, look inside without consuming, redrive, delete, purge.

Only the standard library is imported here; boto3, rich and the collector load when a command runs, so that
``hopscope --help`` stays fast and a missing extra is named in one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hopscope.cli.arg_types import positive_float, positive_int
from hopscope.cli.extras import require_extra
from hopscope.cli.options import store_options

DLQ_MODULES = ("boto3", "rich", "google.protobuf", "opentelemetry.proto")
DEFAULT_COLLECTOR = "http://127.0.0.1:4318"
PEEK_NOTE = (
    "note: a peek receives each message and makes it visible again; like any receive on AWS, "
    "it raises the message's ApproximateReceiveCount by one"
)
BODY_WIDTH = 60

Command = Callable[[argparse.Namespace], int]


def add_dlq_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hopscope dlq {list,show,redrive,delete,purge}`` to the main parser's subcommands."""
    aws = argparse.ArgumentParser(add_help=False)
    aws.add_argument(
        "--aws-endpoint-url",
        metavar="URL",
        default=None,
        help="SQS endpoint, e.g. LocalStack or a moto server (default: $AWS_ENDPOINT_URL, else AWS)",
    )
    aws.add_argument(
        "--region",
        default=None,
        help="AWS region (default: boto3's: $AWS_DEFAULT_REGION, your profile; else us-east-1)",
    )
    flows = store_options(
        "find flows in this store instead of --db (sqlite:///, chdb:///, clickhouse://; as the "
        "collector's --store)",
        db_help="hopscope database to find each message's flow, opened read-only; a missing file shows "
        "no flow ids (default: %(default)s)",
        url_type=str,  # checked when the store is opened, after the queue is found
    )
    common = argparse.ArgumentParser(add_help=False, parents=[aws, flows])
    dlq = commands.add_parser(
        "dlq",
        help="inspect, redrive, delete and purge dead-letter queues (needs hopscope[collector])",
        description="Dead-letter queues on SQS: list them, look at their messages without consuming them, "
        "move them back to be processed again (keeping their trace context), delete one, purge.",
    )
    actions = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)

    listing = actions.add_parser(
        "list",
        parents=[common],
        help="every dead-letter queue, its messages and its source queues",
        description="Every queue that some queue's RedrivePolicy names: visible messages, messages in "
        "flight, the source queues and their maxReceiveCount.",
    )
    listing.add_argument("--prefix", default=None, help="only queues whose name starts with this")
    listing.set_defaults(run=_command("list", _list))

    show = actions.add_parser(
        "show",
        parents=[common],
        help="the messages of a dead-letter queue, without consuming them",
        description="Receive up to --limit messages and make them visible again at once (never deletes). "
        "Each message's flow comes from its trace context or its message id in --db.",
    )
    show.add_argument("queue", metavar="QUEUE", help="queue name, URL or ARN")
    show.add_argument(
        "--limit", type=positive_int, default=10, metavar="N", help="messages to show (default: %(default)s)"
    )
    show.add_argument("--json", action="store_true", help="JSON with full bodies and every attribute")
    show.set_defaults(run=_command("show", _show))

    move = actions.add_parser(
        "redrive",
        parents=[common],
        help="move the messages back to be processed again",
        description="Move messages to --to (default: the queue's one source queue) with their body and "
        "attributes, so the retry joins the original flow. Uses SQS's message move task where the endpoint "
        "has it, else moves them itself, at least once: an interrupted redrive loses nothing.",
    )
    move.add_argument("queue", metavar="QUEUE", help="the dead-letter queue: name, URL or ARN")
    move.add_argument("--to", metavar="QUEUE", default=None, help="target queue (default: the source queue)")
    move.add_argument("--max", type=positive_int, default=None, metavar="N", help="move at most N messages")
    move.add_argument(
        "--rate", type=positive_float, default=None, metavar="R", help="at most R messages per second"
    )
    move.add_argument(
        "--visibility-timeout",
        type=positive_int,
        default=30,
        metavar="SECONDS",
        help="how long a batch in flight stays hidden in the dead-letter queue; after an interruption it "
        "reappears this late (default: %(default)s)",
    )
    move.add_argument(
        "--collector",
        metavar="URL",
        default=os.environ.get("HOPSCOPE_ENDPOINT") or DEFAULT_COLLECTOR,
        help="where the redrive spans go over OTLP/HTTP "
        f"(default: $HOPSCOPE_ENDPOINT, else {DEFAULT_COLLECTOR})",
    )
    move.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    move.set_defaults(run=_command("redrive", _redrive))

    delete = actions.add_parser(
        "delete",
        parents=[common],
        help="delete one message by its id",
        description="Find the message by paging through the queue, delete it, and make every other "
        "message seen on the way visible again.",
    )
    delete.add_argument("queue", metavar="QUEUE", help="queue name, URL or ARN")
    delete.add_argument("message_id", metavar="MESSAGE_ID", help="the SQS message id (see dlq show)")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(run=_command("delete", _delete))

    purge = actions.add_parser(
        "purge",
        parents=[common],
        help="delete every message of a queue",
        description="Delete every message of the queue (SQS PurgeQueue: once a minute per queue).",
    )
    purge.add_argument("queue", metavar="QUEUE", help="queue name, URL or ARN")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(run=_command("purge", _purge))


# -- running -----------------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


def _command(action: str, body: Command) -> Command:
    """``body`` with every expected failure turned into one line on stderr and a non-zero exit."""

    def run(args: argparse.Namespace) -> int:
        require_extra(f"dlq {action}", "collector", DLQ_MODULES)
        return _guarded(action, body, args)

    return run


def _guarded(action: str, body: Command, args: argparse.Namespace) -> int:
    import sqlite3  # noqa: PLC0415

    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    from hopscope.collector.aws.dlq import DLQError  # noqa: PLC0415
    from hopscope.collector.aws.errors import classify  # noqa: PLC0415
    from hopscope.collector.store.errors import StoreError  # noqa: PLC0415

    def fail(message: object, code: int = 1) -> int:
        print(f"hopscope dlq {action}: {_one_line(message)}", file=sys.stderr)
        return code

    try:
        return body(args)
    except DLQError as exc:
        return fail(exc)
    except (ClientError, BotoCoreError) as exc:  # AWS's answer, or no credentials, no endpoint...
        return fail(classify(exc).describe())
    except (StoreError, sqlite3.Error) as exc:
        return fail(f"{args.db}: {exc}")
    except KeyboardInterrupt:
        return fail("interrupted", 130)


def _client(args: argparse.Namespace) -> Any:
    from hopscope.collector.aws.clients import aws_client  # noqa: PLC0415
    from hopscope.collector.aws.dlq import DLQError  # noqa: PLC0415

    try:
        return aws_client("sqs", args.aws_endpoint_url, args.region)
    except ValueError as exc:  # botocore's answer to a malformed endpoint URL
        raise DLQError(f"--aws-endpoint-url {args.aws_endpoint_url!r}: {exc}") from None


def _flows(args: argparse.Namespace) -> Any:
    """The read-only store for flow ids; None (flow ids shown as '-') when the file is missing."""
    from hopscope.collector.store.url import open_store  # noqa: PLC0415

    if args.store:
        return open_store(args.store, read_only=True)
    db: Path = args.db
    if not db.exists():
        return None
    return open_store(db, read_only=True)


def _refused(args: argparse.Namespace, action: str, what: str) -> bool:
    """A destructive command without --yes outside a terminal: refuse before touching anything."""
    if args.yes or sys.stdin.isatty():
        return False
    print(
        f"hopscope dlq {action}: refusing to {what} without --yes (stdin is not a terminal)", file=sys.stderr
    )
    return True


def _confirmed(args: argparse.Namespace, what: str) -> bool:
    if args.yes:
        return True
    try:
        answer = input(f"type yes to {what}: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() == "yes":
        return True
    print("not confirmed; nothing changed", file=sys.stderr)
    return False


# -- the commands ------------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from hopscope.collector.aws.dlq import dead_letter_queues  # noqa: PLC0415

    queues = dead_letter_queues(_client(args), args.prefix)
    if not queues:
        print("no dead-letter queues" + (f" named {args.prefix}*" if args.prefix else ""))
        return 0
    table = Table("dead-letter queue", "visible", "in flight", "source queues", "maxReceiveCount")
    for dlq in queues:
        table.add_row(
            dlq.queue.name,
            _count(dlq.visible),
            _count(dlq.in_flight),
            ", ".join(source.name for source in dlq.sources),
            ", ".join(_count(source.max_receive_count) for source in dlq.sources),
        )
    Console().print(table)
    return 0


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def _show(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from hopscope.collector.aws.dlq import find_queue, peek  # noqa: PLC0415

    sqs = _client(args)
    queue = find_queue(sqs, args.queue)
    flows = _flows(args)
    try:
        letters = peek(sqs, queue, limit=args.limit, flows=flows)
    finally:
        if flows is not None:
            flows.close()
    print(PEEK_NOTE, file=sys.stderr)
    if args.json:
        document = {"queue": queue.name, "url": queue.url, "messages": [m.to_json() for m in letters]}
        print(json.dumps(document, indent=2))
        return 0
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Column, Table  # noqa: PLC0415

    table = Table(
        Column("message id", no_wrap=True, min_width=36),  # whole: `dlq delete` takes it
        Column("age", no_wrap=True),
        Column("receives", no_wrap=True),
        Column("flow", no_wrap=True),
        Column("body", no_wrap=True, overflow="ellipsis"),
        title=f"{queue.name}: {len(letters)} message(s)",
    )
    for letter in letters:
        body = _one_line(letter.body)
        table.add_row(
            letter.message_id,
            _age(letter.age_seconds()),
            _count(letter.receive_count),
            "-" if letter.flow_id is None else str(letter.flow_id),
            body if len(body) <= BODY_WIDTH else body[: BODY_WIDTH - 1] + "…",
        )
    Console().print(table)
    return 0


def _redrive(args: argparse.Namespace) -> int:
    if _refused(args, "redrive", f"move the messages of {args.queue}"):
        return 2
    from hopscope.collector.aws.dlq import find_queue  # noqa: PLC0415
    from hopscope.collector.aws.redrive import RedriveProgress, redrive, resolve_target  # noqa: PLC0415

    sqs = _client(args)
    dlq = find_queue(sqs, args.queue)
    target = resolve_target(sqs, dlq, args.to)
    how_many = "every message" if args.max is None else f"up to {args.max} messages"
    if not _confirmed(args, f"move {how_many} of {dlq.name} to {target.name}"):
        return 1
    tracer = _redrive_tracer(args.collector)
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    last = RedriveProgress(0, 0, None)
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(stderr=True),
        ) as bar:
            task = bar.add_task(f"redrive {dlq.name} → {target.name}", total=None)

            def show(progress: RedriveProgress) -> None:
                nonlocal last
                last = progress
                bar.update(task, completed=progress.moved + progress.failed, total=progress.total)

            result = redrive(
                sqs,
                dlq,
                target,
                max_messages=args.max,
                rate=args.rate,
                progress=show,
                tracer=tracer,
                visibility_timeout=args.visibility_timeout,
            )
    except KeyboardInterrupt:
        print(
            f"hopscope dlq redrive: interrupted after moving {last.moved}; every other message is still in "
            f"{dlq.name} (a batch in flight may be in both queues)",
            file=sys.stderr,
        )
        return 130
    finally:
        _flush_spans()
    if result.used_move_task:
        print(f"moved by an SQS message move task ({dlq.name} → {target.name})", file=sys.stderr)
    if result.duplicated:
        print(
            f"warning: {result.duplicated} message(s) were sent but could not be deleted from {dlq.name}; "
            "they are in both queues",
            file=sys.stderr,
        )
    if result.failure_reason:
        print(f"not moved: {result.failure_reason}", file=sys.stderr)
    print(f"moved {result.moved}, failed {result.failed}, left {result.left}")
    return 0 if result.failed == 0 else 1


def _redrive_tracer(collector: str) -> Any:
    """A tracer exporting to ``collector``; an unreachable collector costs at most the flush timeout."""
    import logging  # noqa: PLC0415

    from hopscope.instrumentation import configure  # noqa: PLC0415

    # The exporter's retry warnings would interleave with the progress bar; the outcome is reported once.
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    provider = configure(service_name="hopscope-redrive", endpoint=collector)
    return provider.get_tracer("hopscope.redrive")


def _flush_spans() -> None:
    from hopscope.instrumentation import flush  # noqa: PLC0415

    if not flush():
        print("warning: the redrive spans could not be sent to the collector", file=sys.stderr)


def _delete(args: argparse.Namespace) -> int:
    if _refused(args, "delete", f"delete message {args.message_id}"):
        return 2
    from hopscope.collector.aws.dlq import delete_message, find_queue  # noqa: PLC0415

    sqs = _client(args)
    queue = find_queue(sqs, args.queue)
    if not _confirmed(args, f"delete message {args.message_id} from {queue.name}"):
        return 1
    if not delete_message(sqs, queue, args.message_id):
        print(f"hopscope dlq delete: no visible message {args.message_id} in {queue.name}", file=sys.stderr)
        return 1
    print(f"deleted {args.message_id} from {queue.name}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    if _refused(args, "purge", f"purge {args.queue}"):
        return 2
    from hopscope.collector.aws.dlq import find_queue, purge  # noqa: PLC0415

    sqs = _client(args)
    queue = find_queue(sqs, args.queue)
    if not _confirmed(args, f"delete every message of {queue.name}"):
        return 1
    purge(sqs, queue)
    print(f"purged {queue.name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hopscope.cli.dlq_command ACTION ...``: the same commands as ``hopscope dlq``."""
    parser = argparse.ArgumentParser(prog="hopscope")
    add_dlq_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dlq", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
