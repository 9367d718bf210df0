"""``hopscope``: one command, one subcommand per job. Each subcommand imports its extra only when run."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

from hopscope.cli.arg_types import port, positive_float, positive_int
from hopscope.cli.dlq_command import add_dlq_parser
from hopscope.cli.extras import require_extra
from hopscope.cli.options import listen_options, store_options
from hopscope.collector import settings as collector_defaults
from hopscope.collector.http import limits as http_limits
from hopscope.collector.store import limits as span_limits

COLLECTOR_MODULES = (
    "starlette",
    "uvicorn",
    "google.protobuf",
    "google.rpc",
    "opentelemetry.proto",
    "httpx",
    "rich",
)

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _duration(text: str) -> int:
    try:
        return collector_defaults.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _forward_url(text: str) -> str:
    try:
        return collector_defaults.parse_forward_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hopscope",
        description="Trace serverless message flows (Lambda, SQS, SNS, EventBridge) end to end.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_collector_parser(commands)
    _add_export_parser(commands)
    _add_import_parser(commands)
    _add_dashboard_parser(commands)
    _add_demo_parser(commands)
    add_dlq_parser(commands)
    return parser


# -- hopscope collector ------------------------------------------------------------------------------------


def _add_collector_parser(commands: Commands) -> None:
    collector = commands.add_parser(
        "collector",
        parents=[
            listen_options(collector_defaults.DEFAULT_HOST, collector_defaults.DEFAULT_PORT, grpc=True),
            store_options(
                "store spans here instead of --db: sqlite:///PATH, chdb:///PATH (ClickHouse in-process) or "
                "clickhouse://USER:PASSWORD@HOST:8123/DATABASE "
                "(the clickhouse ones need hopscope[clickhouse])"
            ),
        ],
        help="receive OTLP/HTTP spans and store them (needs hopscope[collector])",
        description="Receive OpenTelemetry spans over OTLP/HTTP (POST /v1/traces, protobuf or JSON, gzip) "
        "and, with --grpc-port, OTLP/gRPC, "
        "and store them durably in SQLite; serve GET /healthz and the query API under /api.",
    )
    collector.add_argument(
        "--no-receiver",
        action="store_true",
        help="receive no spans: only stitch flows from spans that OpenTelemetry Collectors write to --store, "
        "poll SQS with --sqs and serve the query API",
    )
    collector.add_argument(
        "--max-body-bytes",
        type=positive_int,
        default=collector_defaults.DEFAULT_MAX_BODY_BYTES,
        help="largest request body, also after gzip inflation; larger gets 413 (default: %(default)s)",
    )
    _add_span_limit_options(collector)
    collector.add_argument(
        "--auth-token",
        default=os.environ.get("HOPSCOPE_AUTH_TOKEN") or None,
        help="require 'Authorization: Bearer TOKEN' on every request "
        "(default: $HOPSCOPE_AUTH_TOKEN, else no auth)",
    )
    collector.add_argument(
        "--retention",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="delete spans that started longer ago than this, with the flows, rollups and other rows that "
        "only they kept, e.g. 7d, 12h (default: keep everything)",
    )
    collector.add_argument(
        "--stitch-in-writer",
        action="store_true",
        help="fold spans into flows on the writer thread, not in a process of its own beside it "
        "(SQLite; uses one core, so flows trail sooner under load; ClickHouse always does)",
    )
    _add_forward_options(collector)
    _add_connection_options(collector)
    _add_sqs_options(collector)
    collector.set_defaults(run=_run_collector)


def _add_span_limit_options(collector: argparse.ArgumentParser) -> None:
    """The OpenTelemetry SDK's span limits, applied by the collector to every span it receives."""
    collector.add_argument(
        "--max-span-attributes",
        type=positive_int,
        default=span_limits.DEFAULT_MAX_ATTRIBUTES,
        metavar="N",
        help="attributes kept per span, and per event and link; the rest are dropped and counted in the "
        "span's dropped counts, as the OpenTelemetry SDK does (default: %(default)s)",
    )
    collector.add_argument(
        "--max-span-events",
        type=positive_int,
        default=span_limits.DEFAULT_MAX_EVENTS,
        metavar="N",
        help="events kept per span, the rest dropped and counted (default: %(default)s)",
    )
    collector.add_argument(
        "--max-span-links",
        type=positive_int,
        default=span_limits.DEFAULT_MAX_LINKS,
        metavar="N",
        help="links kept per span, the rest dropped and counted (default: %(default)s)",
    )
    collector.add_argument(
        "--max-attribute-value-length",
        type=positive_int,
        default=span_limits.DEFAULT_MAX_VALUE_LENGTH,
        metavar="N",
        help="string values longer than N characters (bytes values, N bytes) are cut, also inside arrays "
        "and maps (default: %(default)s)",
    )


def _add_forward_options(collector: argparse.ArgumentParser) -> None:
    """Re-sending accepted batches upstream (collector/ingest/forward.py)."""
    collector.add_argument(
        "--forward",
        type=_forward_url,
        action="append",
        default=[],
        metavar="URL",
        help="also send every accepted batch to this OTLP/HTTP endpoint, in the background; repeatable "
        "(a URL without a path gets /v1/traces)",
    )
    collector.add_argument(
        "--forward-queue-bytes",
        type=positive_int,
        default=collector_defaults.DEFAULT_FORWARD_QUEUE_BYTES,
        metavar="N",
        help="bytes of batches held per --forward upstream while it is slow or down; past it new batches "
        "are dropped and counted (default: %(default)s)",
    )


def _add_connection_options(collector: argparse.ArgumentParser) -> None:
    """The HTTP server's limits against slow, idle and too many clients (collector/http/guard.py)."""
    connections = collector.add_argument_group("connections (slow, idle and too many clients)")
    connections.add_argument(
        "--max-connections",
        type=positive_int,
        default=http_limits.DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="connections served at once; past it requests get 503 with Retry-After (default: %(default)s)",
    )
    connections.add_argument(
        "--header-timeout",
        type=_duration,
        default=http_limits.DEFAULT_HEADER_TIMEOUT_SECONDS,
        metavar="DURATION",
        help="close a connection whose request headers are not complete this long after it opened, or "
        "after the request's first byte (default: %(default)ss)",
    )
    connections.add_argument(
        "--idle-timeout",
        type=_duration,
        default=http_limits.DEFAULT_IDLE_TIMEOUT_SECONDS,
        metavar="DURATION",
        help="close a kept-alive connection idle this long between requests (default: %(default)ss)",
    )


def _add_sqs_options(collector: argparse.ArgumentParser) -> None:
    """Polling SQS for queue depth and redrive policies (collector/aws/poller.py)."""
    sqs = collector.add_argument_group("SQS queue depth and dead-letter queues")
    sqs.add_argument(
        "--sqs",
        action="store_true",
        help="poll SQS: discover queues, record their depth and redrive policy (read-only; see README for "
        "the IAM policy)",
    )
    sqs.add_argument(
        "--aws-endpoint-url",
        metavar="URL",
        default=None,
        help="AWS endpoint for --sqs, e.g. a moto server or LocalStack (default: $AWS_ENDPOINT_URL, "
        "else AWS)",
    )
    sqs.add_argument("--region", default=None, help="AWS region for --sqs (default: boto3's, else us-east-1)")
    sqs.add_argument(
        "--sqs-queue-prefix",
        metavar="PREFIX",
        default=None,
        help="only queues whose name starts with this (default: every queue ListQueues returns, plus "
        "those seen in spans)",
    )
    sqs.add_argument(
        "--sqs-interval",
        type=_duration,
        default=collector_defaults.DEFAULT_SQS_INTERVAL_SECONDS,
        metavar="DURATION",
        help="time between polls, e.g. 15s, 1m (default: %(default)ss)",
    )


# -- hopscope export, import, dashboard, demo --------------------------------------------------------------


def _add_export_parser(commands: Commands) -> None:
    # Which flow or trace: a parent too, so that --help keeps showing it before --db and --store.
    which = argparse.ArgumentParser(add_help=False)
    one = which.add_mutually_exclusive_group(required=True)
    one.add_argument("--flow", type=positive_int, metavar="ID", help="the flow to export")
    one.add_argument("--trace", metavar="TRACE_ID", help="the trace to export (32 hex characters)")
    export = commands.add_parser(
        "export",
        parents=[which, store_options("export from this store instead")],
        help="write a flow or a trace as OTLP JSON (needs hopscope[collector])",
        description="Write one flow (every span of every trace in it) or one trace from the database as "
        "OTLP JSON, importable into any OTLP backend or into another hopscope database.",
    )
    export.add_argument("--out", type=Path, help="file to write (default: standard output)")
    export.add_argument(
        "--logs",
        action="store_true",
        help="write the log records of the flow or trace instead (OTLP JSON LogsData)",
    )
    export.set_defaults(run=_run_export)


def _add_import_parser(commands: Commands) -> None:
    load = commands.add_parser(
        "import",
        parents=[store_options("load into this store instead")],
        help="load OTLP JSON or protobuf files into a database (needs hopscope[collector])",
        description="Load OTLP files (JSON or protobuf, ExportTraceServiceRequest or TracesData, optionally "
        "gzipped; log records as OTLP JSON LogsData or ExportLogsServiceRequest) into the database, as the "
        "collector would: invalid spans are counted and skipped, spans "
        "already stored are kept once, and flows are stitched.",
    )
    load.add_argument("files", type=Path, nargs="+", metavar="FILE", help="OTLP files to load")
    load.set_defaults(run=_run_import)


def _add_dashboard_parser(commands: Commands) -> None:
    dashboard = commands.add_parser(
        "dashboard",
        parents=[
            store_options(
                "read this store instead of --db: sqlite:///PATH, chdb:///PATH or "
                "clickhouse://USER:PASSWORD@HOST:8123/DB"
            ),
            listen_options("127.0.0.1", 8501),
        ],
        help="browse flows, the service map, latency, queues and dead letters (needs hopscope[dashboard])",
        description="Serve the Streamlit dashboard over a hopscope database (read-only access to it).",
    )
    dashboard.add_argument(
        "--read-only",
        action="store_true",
        help="no redrive or delete buttons on the dead-letter page (viewing only)",
    )
    dashboard.add_argument(
        "--password-file",
        type=Path,
        metavar="PATH",
        default=None,
        help="every viewer logs in with the password in this file (default: $HOPSCOPE_DASHBOARD_PASSWORD, "
        "else none: full access on a loopback --host, read-only on any other)",
    )
    dashboard.add_argument(
        "--collector",
        metavar="URL",
        default=None,
        help="the collector's address, shown where to send spans (default: $HOPSCOPE_ENDPOINT, else "
        "http://127.0.0.1:4318)",
    )
    dashboard.add_argument(
        "--aws-endpoint-url",
        metavar="URL",
        default=None,
        help="AWS endpoint for the dead-letter page (default: $AWS_ENDPOINT_URL, else AWS)",
    )
    dashboard.add_argument("--region", default=None, help="AWS region for the dead-letter page")
    dashboard.set_defaults(run=_run_dashboard)


def _add_demo_parser(commands: Commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a sample order system on a local AWS (moto), traced, with the dashboard "
        "(needs hopscope[demo])",
        description="Start a moto server (local AWS), the collector, five sample Lambda functions of an "
        "order system (SNS fan-out, SQS with a dead-letter queue, EventBridge), traffic with bursts and the "
        "dashboard, all on this machine; Ctrl-C stops everything.",
    )
    demo.add_argument(
        "--duration",
        type=positive_int,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--rate",
        type=positive_float,
        default=5.0,
        help="orders per second, bursts aside (default: %(default)s)",
    )
    demo.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    demo.add_argument(
        "--db",
        type=Path,
        default=Path("hopscope-demo.db"),
        help="SQLite database the collector writes; kept afterwards, a next run appends "
        "(default: %(default)s)",
    )
    demo.add_argument("--moto-port", type=port, default=5000, help="moto server port (default: %(default)s)")
    demo.add_argument(
        "--collector-port",
        type=port,
        default=collector_defaults.DEFAULT_PORT,
        help="collector port (default: %(default)s)",
    )
    demo.add_argument(
        "--dashboard-port", type=port, default=8501, help="dashboard port (default: %(default)s)"
    )
    demo.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    require_extra("demo", "demo", (*COLLECTOR_MODULES, "moto", "streamlit"))
    from hopscope.demo.runner import DemoSettings, run_demo  # noqa: PLC0415

    return run_demo(
        DemoSettings(
            db=args.db,
            duration_s=args.duration,
            rate=args.rate,
            dashboard=not args.no_dashboard,
            moto_port=args.moto_port,
            collector_port=args.collector_port,
            dashboard_port=args.dashboard_port,
        )
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("hopscope")
    except PackageNotFoundError:
        return "unknown"


def _run_collector(args: argparse.Namespace) -> int:
    grpc = args.grpc_port is not None
    extra, modules = ("grpc", (*COLLECTOR_MODULES, "grpc")) if grpc else ("collector", COLLECTOR_MODULES)
    require_extra("collector", extra, modules + (("boto3",) if args.sqs else ()))
    _require_store_driver("collector", args.store)
    from hopscope.collector.server import run  # noqa: PLC0415
    from hopscope.collector.settings import CollectorSettings  # noqa: PLC0415
    from hopscope.collector.store.errors import StoreError  # noqa: PLC0415

    settings = CollectorSettings(
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        db=args.db,
        store_url=args.store,
        receiver=not args.no_receiver,
        max_body_bytes=args.max_body_bytes,
        span_limits=span_limits.SpanLimits(
            max_attributes=args.max_span_attributes,
            max_events=args.max_span_events,
            max_links=args.max_span_links,
            max_attributes_per_event=args.max_span_attributes,
            max_attributes_per_link=args.max_span_attributes,
            max_value_length=args.max_attribute_value_length,
        ),
        auth_token=args.auth_token,
        retention_seconds=args.retention,
        stitch_process=not args.stitch_in_writer,
        forward_urls=tuple(args.forward),
        forward_queue_bytes=args.forward_queue_bytes,
        sqs=collector_defaults.SqsSettings(
            endpoint_url=args.aws_endpoint_url,
            region=args.region,
            queue_prefix=args.sqs_queue_prefix,
            interval_seconds=args.sqs_interval,
        )
        if args.sqs
        else None,
    )
    limits = http_limits.HttpLimits(
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
    )
    try:
        run(settings, limits)
    except StoreError as exc:
        print(f"hopscope collector: {exc}", file=sys.stderr)
        return 1
    return 0


DASHBOARD_MODULES = (*COLLECTOR_MODULES, "streamlit", "pandas", "plotly")


def _require_store_driver(command: str, store: str | None) -> None:
    if store is None:
        return
    from hopscope.collector.store.url import driver_module, parse_store_url  # noqa: PLC0415

    module = driver_module(parse_store_url(store))
    if module is not None:
        require_extra(command, "clickhouse", (module,))


def _run_dashboard(args: argparse.Namespace) -> int:
    """Replace this process with ``streamlit run``: Ctrl-C and SIGTERM then reach Streamlit directly."""
    require_extra("dashboard", "dashboard", DASHBOARD_MODULES)
    _require_store_driver("dashboard", args.store)
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("hopscope.dashboard")
    assert spec is not None and spec.origin is not None
    app = Path(spec.origin).with_name("app.py")
    from hopscope.collector.loopback import is_loopback_host  # noqa: PLC0415
    from hopscope.dashboard.config import PASSWORD_ENV  # noqa: PLC0415

    password = os.environ.get(PASSWORD_ENV) or None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text(encoding="utf-8").rstrip("\r\n") or None
        except (OSError, UnicodeDecodeError) as exc:
            print(f"hopscope dashboard: cannot read --password-file: {exc}", file=sys.stderr)
            return 2
        if password is None:
            print(f"hopscope dashboard: --password-file {args.password_file} is empty", file=sys.stderr)
            return 2
    if password is None and not is_loopback_host(args.host):
        print(
            f"hopscope dashboard: listening on {args.host} without a password: read-only, no dead-letter "
            f"actions (set --password-file or ${PASSWORD_ENV} to log in and act)",
            file=sys.stderr,
            flush=True,
        )
    env = {
        **os.environ,
        "HOPSCOPE_DASHBOARD_DB": str(args.db.resolve()),
        "HOPSCOPE_DASHBOARD_STORE": args.store or "",
        "HOPSCOPE_DASHBOARD_READ_ONLY": "true" if args.read_only else "",
        "HOPSCOPE_DASHBOARD_COLLECTOR_URL": args.collector or os.environ.get("HOPSCOPE_ENDPOINT", ""),
        "HOPSCOPE_DASHBOARD_AWS_ENDPOINT_URL": args.aws_endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL", ""),
        "HOPSCOPE_DASHBOARD_REGION": args.region or "",
        # in the environment, never in argv: ps shows every process's arguments to every user
        PASSWORD_ENV: password or "",
    }
    command = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", args.host,
        "--server.port", str(args.port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        # Self-contained for its viewers: no "Ask Google/ChatGPT" links made from an error's text (span data
        # can be in it), no deploy button to Streamlit's cloud.
        "--client.showErrorLinks", "false",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    print(f"hopscope dashboard: http://{args.host}:{args.port} over {args.db}", file=sys.stderr, flush=True)
    os.execve(sys.executable, command, env)  # noqa: S606 - the same interpreter, a fixed module


def _run_export(args: argparse.Namespace) -> int:
    require_extra("export", "collector", COLLECTOR_MODULES)
    from hopscope.collector.query.layer import MAX_ANSWER_SPAN_BYTES, MAX_ANSWER_SPANS  # noqa: PLC0415
    from hopscope.collector.store.errors import StoreError  # noqa: PLC0415
    from hopscope.collector.transfer import TransferError, export_otlp  # noqa: PLC0415

    try:
        exported = export_otlp(args.store or args.db, flow_id=args.flow, trace_id=args.trace, logs=args.logs)
    except (StoreError, TransferError) as exc:
        print(f"hopscope export: {exc}", file=sys.stderr)
        return 1
    if exported.truncated and args.logs:
        print(
            "hopscope export: cut at 5,000 log records, the earliest kept; the document says "
            '"truncated": true',
            file=sys.stderr,
        )
    elif exported.truncated:
        print(
            f"hopscope export: cut at {MAX_ANSWER_SPANS:,} spans or {MAX_ANSWER_SPAN_BYTES // 2**20} MiB of "
            'spans, the earliest kept; the document says "truncated": true',
            file=sys.stderr,
        )
    if args.out is None:
        print(exported.text)
        return 0
    try:
        args.out.write_text(exported.text + "\n")
    except OSError as exc:
        problem = (exc.strerror or str(exc)).lower()
        print(f"hopscope export: cannot write {args.out}: {problem}", file=sys.stderr)
        return 1
    return 0


def _run_import(args: argparse.Namespace) -> int:
    require_extra("import", "collector", COLLECTOR_MODULES)
    from hopscope.collector.store.errors import StoreError  # noqa: PLC0415
    from hopscope.collector.transfer import TransferError, import_files  # noqa: PLC0415

    try:
        result = import_files(args.store or args.db, args.files, show_progress=sys.stderr.isatty())
    except (StoreError, TransferError) as exc:
        print(f"hopscope import: {exc}", file=sys.stderr)
        return 1
    print(
        f"imported {result.spans} spans"
        + (f" and {result.log_records} log records" if result.log_records else "")
        + f" from {result.files} file(s) into {args.store or args.db}"
        + (f"; {result.rejected} invalid span(s) or record(s) skipped" if result.rejected else ""),
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
