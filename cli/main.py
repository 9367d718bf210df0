"""``hopscope``: one command, one subcommand per job. Each subcommand imports its extra only when run."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hopscope.cli.extras import require_extra
from hopscope.collector import settings as collector_defaults

COLLECTOR_MODULES = ("starlette", "uvicorn", "google.protobuf", "google.rpc", "opentelemetry.proto")


def _duration(text: str) -> int:
    try:
        return collector_defaults.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hopscope",
        description="Trace serverless message flows (Lambda, SQS, SNS, EventBridge) end to end.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    collector = commands.add_parser(
        "collector",
        help="receive OTLP/HTTP spans and store them (needs hopscope[collector])",
        description="Receive OpenTelemetry spans over OTLP/HTTP (POST /v1/traces, protobuf or JSON, gzip) "
        "and store them durably in SQLite; serve GET /healthz and the query API under /api.",
    )
    collector.add_argument(
        "--host", default=collector_defaults.DEFAULT_HOST, help="address to bind (default: %(default)s)"
    )
    collector.add_argument(
        "--port",
        type=_port,
        default=collector_defaults.DEFAULT_PORT,
        help="port to bind (default: %(default)s)",
    )
    collector.add_argument(
        "--db",
        type=Path,
        default=collector_defaults.DEFAULT_DB,
        help="SQLite database file (default: %(default)s)",
    )
    collector.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=collector_defaults.DEFAULT_MAX_BODY_BYTES,
        help="largest request body, also after gzip inflation; larger gets 413 (default: %(default)s)",
    )
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
        help="delete spans that started longer ago than this, e.g. 7d, 12h (default: keep everything)",
    )
    collector.set_defaults(run=_run_collector)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("hopscope")
    except PackageNotFoundError:
        return "unknown"


def _run_collector(args: argparse.Namespace) -> int:
    require_extra("collector", "collector", COLLECTOR_MODULES)
    from hopscope.collector.server import run  # noqa: PLC0415
    from hopscope.collector.settings import CollectorSettings  # noqa: PLC0415
    from hopscope.collector.store.sqlite import StoreError  # noqa: PLC0415

    settings = CollectorSettings(
        host=args.host,
        port=args.port,
        db=args.db,
        max_body_bytes=args.max_body_bytes,
        auth_token=args.auth_token,
        retention_seconds=args.retention,
    )
    try:
        run(settings)
    except StoreError as exc:
        print(f"hopscope collector: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
