"""Options several commands share, declared once: argparse parents (``add_help=False``) that a command lists
in ``parents=[...]``, in the order its ``--help`` shows them.

Each call makes a new parent, so that a command can say in its own words what ``--store`` is for.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from hopscope.cli.arg_types import port, store_url
from hopscope.collector import settings as collector_defaults

DB_HELP = "SQLite database file (default: %(default)s)"


def store_options(
    store_help: str,
    *,
    db_help: str = DB_HELP,
    url_type: Callable[[str], str] = store_url,
) -> argparse.ArgumentParser:
    """``--db FILE`` and ``--store URL``: the SQLite file, or any store by its URL instead.

    ``url_type=str`` leaves the URL to be checked when the store is opened, as ``hopscope dlq`` does.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", type=Path, default=collector_defaults.DEFAULT_DB, help=db_help)
    parent.add_argument("--store", type=url_type, default=None, metavar="URL", help=store_help)
    return parent


def listen_options(default_host: str, default_port: int, *, grpc: bool = False) -> argparse.ArgumentParser:
    """``--host`` and ``--port`` a server binds (and the collector's ``--grpc-port`` on the same host)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--host", default=default_host, help="address to bind (default: %(default)s)")
    parent.add_argument("--port", type=port, default=default_port, help="port to bind (default: %(default)s)")
    if grpc:
        parent.add_argument(
            "--grpc-port",
            type=port,
            default=None,
            metavar="PORT",
            help="also receive OTLP/gRPC on this port of --host, e.g. 4317, its standard port; 0 picks a "
            "free one (needs hopscope[grpc]; default: off)",
        )
    return parent
