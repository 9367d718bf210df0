"""The SQLite span store: one file, WAL, one writer, any number of readers in any process.

The class owns the connections, the transactions and the stitching position, and composes the parts:
``schema`` (the tables, migrated on open), ``spans`` (rows in, OTLP out, retention), ``flows``, ``red`` and
``graph`` (folded in while stitching, read by the query layer) and ``queues`` (the SQS poller's tables).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogsData
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData

from hopscope.collector.model.fate import DeadLetterPeek, DeadLetterRecord, DuplicateRate, FateFilter
from hopscope.collector.model.flows import FlowFilter, FlowSummary
from hopscope.collector.model.graph import HopRollup
from hopscope.collector.model.logs import LogFilter, LogLine
from hopscope.collector.model.queues import DepthSample, QueueState, QueueSummary
from hopscope.collector.model.red import RollupRow
from hopscope.collector.model.storage import StorageFacts
from hopscope.collector.stitch.facts import FlowFacts
from hopscope.collector.stitch.failures import Failures
from hopscope.collector.stitch.guard import (
    REASON_UNUSABLE_TIMES,
    SkippedSpans,
    drop_unjoinable_links,
    fold_isolating,
    report_failed_rows,
    usable_times,
)
from hopscope.collector.store.base import STITCH_CHUNK_SPANS, Prepared, ReadBudget, split_prepared
from hopscope.collector.store.errors import StoreError
from hopscope.collector.store.limits import SpanLimits
from hopscope.collector.store.sqlite import fate as sqlite_fate
from hopscope.collector.store.sqlite import flows as sqlite_flows
from hopscope.collector.store.sqlite import graph as sqlite_graph
from hopscope.collector.store.sqlite import logs as sqlite_logs
from hopscope.collector.store.sqlite import queues as sqlite_queues
from hopscope.collector.store.sqlite import schema as sqlite_schema
from hopscope.collector.store.sqlite import spans as sqlite_spans
from hopscope.collector.store.sqlite import storage as sqlite_storage
from hopscope.collector.store.sqlite.expiry import Expiry
from hopscope.collector.store.sqlite.flows import FlowStitcher
from hopscope.collector.store.sqlite.graph import GraphRollups, read_hop_rollups
from hopscope.collector.store.sqlite.logs import PreparedLogGroups
from hopscope.collector.store.sqlite.red import RedRollups, read_rollups
from hopscope.collector.store.sqlite.spans import PreparedScopes
from hopscope.collector.store.sqlite.windows import SpanWindows

log = logging.getLogger(__name__)


# The first bytes of every SQLite database file.
_SQLITE_HEADER = b"SQLite format 3\x00"
_SQLITE_CANTOPEN = 14  # the primary result code of "unable to open database file"
_BUSY_TIMEOUT_MS = 10_000
_CACHE_KIB = 64 * 1024
# A stitcher process's connection (ingest/stitcher.py) reads flows' indexes, not the spans': half as much.
_STITCH_ONLY_CACHE_KIB = 32 * 1024
# WAL pages go back into the database file from a background thread, not inside the writer's COMMIT.
CHECKPOINT_INTERVAL_SECONDS = 0.25
# A backstop: SQLite checkpoints inside COMMIT only if the WAL grows past this many pages (about 80 MB).
_AUTOCHECKPOINT_PAGES = 20_000
_WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024


# The receive time of the first span past the stitching position (which the fold commits in ``meta``); the
# position is a parameter, so that SQLite merges each span table's keys from it (a subquery would scan them).
_FIRST_UNSTITCHED = "SELECT received_unix_nano FROM spans WHERE span_pk > ? ORDER BY span_pk LIMIT 1"


class _PositionMovedError(StoreError):
    """Another stitcher moved the stitching position (see ``_check_position``): nothing was folded."""


class SQLiteStore:
    """Owns every connection to one SQLite file: nothing else calls ``sqlite3.connect`` on it.

    ``durable=True`` (the default) commits with ``synchronous=FULL``, so a commit survives power loss,
    not only a killed process. Readers get their own read-only connection per thread.
    """

    def __init__(
        self, path: Path | str, *, read_only: bool = False, durable: bool = True, stitch_only: bool = False
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._interned = sqlite_spans.InternedIds()
        self._windows = SpanWindows()
        self._expiry = Expiry(self._interned)
        self._writer: sqlite3.Connection | None = None
        # The SQS poller's own write connection: SQLite serialises it with the span writer's.
        self._queue_writer: sqlite3.Connection | None = None
        self._queue_writer_lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None
        self._stitched_through = 0
        self._last_span_pk = 0
        # Spans left out of flows, RED or the graph in this database (kept in meta across restarts).
        self.skipped_spans = SkippedSpans()
        if read_only:
            self._choose_read_mode()
            sqlite_schema.check_version(self._reader(), self.path)
        else:
            # stitch_only: a stitcher process beside the collector (ingest/stitcher.py), which migrated the
            # file and checkpoints it
            self._writer = self._open_writer(durable, migrate=not stitch_only)
            if not stitch_only:
                self._checkpointer = _Checkpointer(self._connect_rw())
            self._load_stitch_position()

    @property
    def label(self) -> str:
        """Where the spans are, for logs and messages."""
        return str(self.path.resolve())

    # -- connections -----------------------------------------------------------------------------------

    def _open_writer(self, durable: bool, *, migrate: bool = True) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect_rw()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {self.path} for writing: {exc}") from exc
        if mode != "wal":
            raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB if migrate else _STITCH_ONLY_CACHE_KIB}")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute(f"PRAGMA wal_autocheckpoint = {_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT_BYTES}")
        if migrate:
            self._migrate(conn)
        else:
            sqlite_schema.check_version(conn, self.path)
        return conn

    def _connect_rw(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        # freed pages are not overwritten (Debian builds SQLite with SECURE_DELETE on): dropping a window of
        # spans then writes a few pages, not all of them (store/sqlite/windows.py)
        conn.execute("PRAGMA secure_delete = FAST")
        return conn

    # How readers open the file: read-only, or immutable (see _choose_read_mode).
    _read_mode = "mode=ro"

    def _choose_read_mode(self) -> None:
        """Check that the file is a readable SQLite file, naming the real cause when it is not, and choose
        how readers open it.

        SQLite reads a WAL database with ``mode=ro`` only where it can use or create the ``-shm`` file
        beside it. In a read-only directory (a read-only mount, a backup, another user's folder) a database
        that was closed cleanly has none; it is then opened ``immutable=1``, which is safe because without a
        ``-wal`` file the database file holds every committed span, and no writer can start (it would have
        to create the ``-wal`` file in that directory).
        """
        path = self.path
        try:
            with path.open("rb") as file:
                header = file.read(len(_SQLITE_HEADER))
        except FileNotFoundError:
            raise StoreError(f"no hopscope database at {path} (no such file)") from None
        except IsADirectoryError:
            raise StoreError(f"{path} is a directory, not a hopscope database") from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {(exc.strerror or str(exc)).lower()}") from None
        if header and header != _SQLITE_HEADER:
            raise StoreError(f"{path} is not a hopscope database (not an SQLite file)")
        try:
            probe = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
            try:
                probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                probe.close()
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_CANTOPEN:
                raise StoreError(f"cannot read {path}: {exc}") from exc
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size:
            raise StoreError(
                f"cannot read {path}: its folder is read-only, and its write-ahead log {wal.name}, which may "
                f"hold spans, is read by SQLite only where it can create {path.name}-shm; open it once where "
                "the folder is writable (or copy the folder somewhere writable) first"
            )
        self._read_mode = "immutable=1"

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            uri = f"{self.path.resolve().as_uri()}?{self._read_mode}"
            try:
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.path} for reading: {exc}") from exc
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self._transaction(conn):
            sqlite_schema.migrate(conn, self.path)

    def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StoreError(f"{self.path} was opened read-only")
        return self._writer

    # -- writing ---------------------------------------------------------------------------------------

    def prepare(self, request: ExportTraceServiceRequest, limits: SpanLimits | None = None) -> PreparedScopes:
        """Turn a request into rows; pure CPU, so the receiver runs it and the writer thread only writes."""
        return sqlite_spans.prepare_spans(request, limits)

    def prepare_logs(
        self, request: ExportLogsServiceRequest, limits: SpanLimits | None = None
    ) -> PreparedLogGroups:
        """Turn a request's log records into rows; pure CPU, like :meth:`prepare`."""
        return sqlite_logs.prepare_logs(request, limits)

    def write_prepared(self, batches: Sequence[Prepared]) -> int:
        spans, logs = split_prepared(PreparedScopes, PreparedLogGroups, batches)
        conn = self._writer_conn()
        with self._transaction(conn):
            written = sqlite_spans.insert_spans(conn, spans, self._interned, self._windows) if spans else 0
            if logs:
                written += sqlite_logs.insert_logs(conn, logs, self._interned)
            last_span_pk = sqlite_spans.last_span_pk(conn) if spans else self._last_span_pk
        self._last_span_pk = last_span_pk
        return written

    def write_logs(self, requests: Sequence[ExportLogsServiceRequest]) -> int:
        return self.write_prepared([self.prepare_logs(request) for request in requests])

    def write(self, requests: Sequence[ExportTraceServiceRequest]) -> int:
        """Prepare, write and stitch: for scripts and tests that want flows to be current on return."""
        written = self.write_prepared([self.prepare(request) for request in requests])
        while self.stitch_flows(STITCH_CHUNK_SPANS):
            pass
        return written

    @property
    def flows_pending(self) -> bool:
        """True while stored spans wait for :meth:`stitch_flows`."""
        return self._stitched_through < self._last_span_pk

    @property
    def feed_poll_seconds(self) -> float | None:
        """Only this store's writer adds spans to the file: nothing to look for."""
        return None

    @property
    def stitcher_url(self) -> str | None:
        return None if self.read_only else str(self.path.resolve())

    def unstitched_since_unix_nano(self) -> int | None:
        """The receive time of the first span past the stitching position kept in ``meta`` (two key lookups
        in one read transaction, so one snapshot; cheap from any thread or process)."""
        conn = self._reader()
        conn.execute("BEGIN")  # one snapshot for both statements
        try:
            position = self._stored_position(conn)
            row = conn.execute(_FIRST_UNSTITCHED, (position,)).fetchone()
        finally:
            conn.execute("COMMIT")
        return None if row is None else int(row[0])

    def stitch_flows(self, max_spans: int) -> int:
        """Fold up to ``max_spans`` spans, the oldest not yet stitched, into their flows; returns how many.

        Stitching reads the spans back from the store, so it needs nothing kept in memory, counts a span
        that a client sent twice once, and picks up after a restart where it left off. Many spans per
        call write each flow-index page once for all of them. No span can stop it (see stitch/guard.py): a
        chunk that fails for its data's sake is bisected, and the spans that fail alone are skipped; an
        error of the environment (disk full, locked) propagates with nothing moved.
        """
        conn = self._writer_conn()
        rows = conn.execute(
            "SELECT span_pk, service_name, received_unix_nano, span FROM spans WHERE span_pk > ? "
            "ORDER BY span_pk LIMIT ?",
            (self._stitched_through, max_spans),
        ).fetchall()
        if not rows:
            self._stitched_through = max(self._stitched_through, self._last_span_pk)
            return 0
        try:
            failed = fold_isolating(rows, self._fold_chunk, is_environment_error)
        except _PositionMovedError as exc:
            log.info("%s; stitching goes on from there", exc)
            self._load_stitch_position()
            return self.stitch_flows(max_spans)
        if failed:
            report_failed_rows(
                self.skipped_spans,
                [(sqlite_spans.span_label(row[3]), exc) for row, exc in failed],
                self.label,
            )
            through = rows[-1][0]
            with self._transaction(conn):  # past the skipped spans, which may end the chunk
                self._check_position(conn)
                self._save_stitch_state(conn, through)
            self._stitched_through = through
        return len(rows)

    def _fold_chunk(self, rows: Sequence[tuple[int, str, int, bytes]]) -> None:
        """Fold consecutive rows in one transaction, the watermark moved in it: all or nothing.

        The cyclic garbage collector waits until the chunk is folded: a chunk allocates many short-lived
        containers (about a tenth of stitching's CPU went to collections that found nothing to free, since
        reference counting frees them); it runs once after, as the next allocation finds its threshold.
        """
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._fold_chunk_now(rows)
        finally:
            if collecting:
                gc.enable()

    def _fold_chunk_now(self, rows: Sequence[tuple[int, str, int, bytes]]) -> None:
        conn = self._writer_conn()
        facts = FlowFacts()
        red = RedRollups()
        graph = GraphRollups()
        unusable = 0
        # hot path: the attributes that flows, RED and the graph read are picked out once a span, of the
        # kinds whose attributes the graph reads; RED stops at a server span's invocation id, and flows'
        # own scan of the other spans is rare (a byte check first)
        decode = Span.FromString
        keys = sqlite_graph.STITCH_KEYS
        server = Span.SpanKind.SPAN_KIND_SERVER
        for _, service_name, received, blob in rows:
            span = decode(blob)
            if span.links:
                drop_unjoinable_links(span)  # stored as sent, but joins no flow (stitch/guard.py)
            attributes = (
                [(key, kv.value) for kv in span.attributes if (key := kv.key) in keys]
                if span.kind > server
                else None
            )
            if usable_times(span.start_time_unix_nano, span.end_time_unix_nano):
                facts.add(span, service_name, blob, attributes=attributes)
                red.add(span, service_name, attributes)
                graph.add(span, service_name, attributes)
            else:
                facts.add(span, service_name, blob, times=(received, received), attributes=attributes)
                unusable += 1
        through = rows[-1][0]
        with self._transaction(conn):
            self._check_position(conn)
            FlowStitcher(conn).apply(facts.traces.values())
            red.apply(conn)
            graph.apply(conn)
            sqlite_fate.record_deliveries(conn, rows)
            self._save_stitch_state(conn, through, Counter({REASON_UNUSABLE_TIMES: unusable}))
        self._stitched_through = through
        self.skipped_spans.add_unusable_times(unusable)

    def _check_position(self, conn: sqlite3.Connection) -> None:
        """In the fold's transaction: the position is still the one the chunk was read after.

        Only one process stitches a file, but a collector killed with SIGKILL leaves its stitcher to finish
        its chunk while a new collector may already have started another (ingest/stitcher.py): whichever
        commits second would fold the same spans again.
        """
        stored = self._stored_position(conn)
        if stored != self._stitched_through:
            raise _PositionMovedError(
                f"{self.path}: the stitching position moved from {self._stitched_through} to {stored} "
                "(another stitcher folded a chunk)"
            )

    @staticmethod
    def _stored_position(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'flows_through_span_pk'").fetchone()
        return int(row[0]) if row else 0

    def _save_stitch_state(
        self, conn: sqlite3.Connection, through: int, new_skips: Counter[str] | None = None
    ) -> None:
        skipped = self.skipped_spans.by_reason + (new_skips or Counter())
        rows = [("flows_through_span_pk", str(through))]
        rows.extend((f"skipped_spans:{reason}", str(count)) for reason, count in skipped.items())
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)

    def _load_stitch_position(self) -> None:
        conn = self._writer_conn()
        row = conn.execute("SELECT value FROM meta WHERE key = 'flows_through_span_pk'").fetchone()
        self._stitched_through = int(row[0]) if row else 0
        self._last_span_pk = sqlite_spans.last_span_pk(conn)
        for key, value in conn.execute("SELECT key, value FROM meta WHERE key LIKE 'skipped_spans:%'"):
            self.skipped_spans.by_reason[key.removeprefix("skipped_spans:")] = int(value)

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        """One write transaction: taken at once (IMMEDIATE), committed whole or rolled back whole."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

    def _rollback(self, conn: sqlite3.Connection) -> None:
        # Ids cached during the failed transaction may point at rows that no longer exist, and windows at
        # tables.
        self._interned.clear()
        self._windows.forget()
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def use_retention(self, retention_seconds: int | None) -> None:
        """Spans go to windows a twelfth of the retention wide (store/sqlite/windows.py); none without."""
        self._windows.use_retention(retention_seconds)

    def delete_spans_started_before(self, cutoff_unix_nano: int, limit: int) -> int:
        """Drop the earliest window that is past the cutoff whole, if one is, else delete up to ``limit``
        rows of ``spans_other``: one short transaction either way."""
        conn = self._writer_conn()
        with self._transaction(conn):
            window = self._windows.expired(conn, cutoff_unix_nano)
            if window is not None:
                return self._windows.drop(conn, window)
            return sqlite_spans.delete_other_spans_before(conn, cutoff_unix_nano, limit)

    def delete_logs_before(self, cutoff_unix_nano: int, limit: int) -> int:
        """At most ``limit`` records dated, or received, before the cutoff, in one short transaction."""
        conn = self._writer_conn()
        with self._transaction(conn):
            return sqlite_logs.delete_logs_before(conn, cutoff_unix_nano, limit)

    def expire_before(
        self, cutoff_unix_nano: int, limit: int, *, flows: bool = True, orphans: bool = True
    ) -> int:
        """One step of store/sqlite/expiry.py (flows and rollups, orphan resources and scopes), in one short
        transaction."""
        conn = self._writer_conn()
        with self._transaction(conn):
            return self._expiry.expire(conn, cutoff_unix_nano, limit, flows=flows, orphans=orphans)

    # -- reading ---------------------------------------------------------------------------------------

    def get_trace(self, trace_id: bytes, budget: ReadBudget | None = None) -> TracesData | None:
        return sqlite_spans.read_trace(self._reader(), trace_id, budget)

    def get_traces(self, trace_ids: Iterable[bytes], budget: ReadBudget | None = None) -> TracesData:
        """Several traces in one document (empty when none is stored); a budget is spent trace by trace."""
        return sqlite_spans.read_traces(self._reader(), trace_ids, budget)

    # -- flows -------------------------------------------------------------------------------------------

    def resolve_flow(self, flow_id: int) -> int | None:
        return sqlite_flows.resolve_flow(self._reader(), flow_id)

    def flow_of_trace(self, trace_id: bytes) -> int | None:
        return sqlite_flows.flow_of_trace(self._reader(), trace_id)

    def flow_of_message(self, message_id: str, destination: str | None = None) -> int | None:
        return sqlite_flows.flow_of_message(self._reader(), message_id, destination)

    def flow_trace_ids(self, flow_id: int) -> list[bytes]:
        return sqlite_flows.flow_trace_ids(self._reader(), flow_id)

    def flow_shared_traces(self, flow_id: int) -> dict[bytes, list[int]]:
        return sqlite_flows.flow_shared_traces(self._reader(), flow_id)

    def flow_summaries(self, flow_ids: list[int]) -> list[FlowSummary]:
        return sqlite_flows.flow_summaries(self._reader(), flow_ids)

    def search_flow_ids(self, criteria: FlowFilter, limit: int, offset: int) -> list[int]:
        return sqlite_flows.search_flow_ids(self._reader(), criteria, limit, offset)

    def red_rollups(
        self,
        since_unix_nano: int,
        until_unix_nano: int,
        *,
        service: str | None = None,
        operation: str | None = None,
        kinds: Sequence[int] = (),
        step_ns: int | None = None,
    ) -> list[RollupRow]:
        return read_rollups(
            self._reader(),
            since_unix_nano,
            until_unix_nano,
            service=service,
            operation=operation,
            kinds=kinds,
            step_ns=step_ns,
        )

    def hop_rollups(
        self, since_unix_nano: int, until_unix_nano: int, kinds: tuple[str, ...] | None = None
    ) -> list[tuple[str, str, str, HopRollup]]:
        return read_hop_rollups(self._reader(), since_unix_nano, until_unix_nano, kinds)

    # -- queues ----------------------------------------------------------------------------------------

    def record_queue_poll(
        self,
        polled_unix_nano: int,
        queues: list[QueueState],
        samples: list[DepthSample],
        keep_after_unix_nano: int | None = None,
    ) -> None:
        with self._queue_transaction() as conn:
            sqlite_queues.record_poll(conn, polled_unix_nano, queues, samples, keep_after_unix_nano)

    @contextlib.contextmanager
    def _queue_transaction(self) -> Iterator[sqlite3.Connection]:
        """A transaction on the poller's own connection (the writer thread keeps its own)."""
        self._writer_conn()  # read-only stores refuse here
        with self._queue_writer_lock:
            if self._queue_writer is None:
                self._queue_writer = self._connect_rw()
            conn = self._queue_writer
            with self._transaction(conn):
                yield conn

    def queue_summaries(self) -> list[QueueSummary]:
        return sqlite_queues.queue_summaries(self._reader())

    def queue_depth(
        self, queue_name: str, since_unix_nano: int, until_unix_nano: int, limit: int
    ) -> list[DepthSample] | None:
        return sqlite_queues.queue_depth(self._reader(), queue_name, since_unix_nano, until_unix_nano, limit)

    def queue_destinations_seen(self, since_unix_nano: int) -> list[str]:
        return sqlite_graph.destinations_seen(self._reader(), "aws_sqs:", since_unix_nano)

    # -- a message's fate (store/sqlite/fate.py) --------------------------------------------------------

    def record_dead_letters(
        self, polled_unix_nano: int, peeks: Sequence[DeadLetterPeek], keep_after_unix_nano: int | None = None
    ) -> None:
        with self._queue_transaction() as conn:
            sqlite_fate.record_dead_letters(conn, polled_unix_nano, peeks, keep_after_unix_nano)

    def fate_counts(self, flow_ids: list[int]) -> dict[int, tuple[int, int]]:
        return sqlite_fate.fate_counts(self._reader(), flow_ids)

    def flows_with_fate(self, kind: FateFilter, limit: int) -> set[int]:
        return sqlite_fate.flows_with_fate(self._reader(), kind, limit)

    def dead_letters_of(
        self, message_ids: Sequence[str], trace_ids: Sequence[bytes]
    ) -> list[DeadLetterRecord]:
        return sqlite_fate.dead_letters_of(self._reader(), message_ids, trace_ids)

    def duplicate_rates(self, since_unix_nano: int) -> list[DuplicateRate]:
        return sqlite_fate.read_duplicate_rates(self._reader(), since_unix_nano)

    def storage_facts(self) -> StorageFacts:
        return sqlite_storage.storage_facts(self._reader(), self.path)

    def record_retention(self, retention_seconds: int | None) -> None:
        with self._queue_transaction() as conn:  # any thread: the poller's connection, not the writer's
            sqlite_storage.record_retention(conn, retention_seconds)

    def search_logs(self, criteria: LogFilter, budget: ReadBudget | None = None) -> list[LogLine]:
        return sqlite_logs.search_logs(self._reader(), criteria, budget)

    def get_logs(self, trace_ids: Sequence[bytes], limit: int, budget: ReadBudget | None = None) -> LogsData:
        return sqlite_logs.get_logs(self._reader(), trace_ids, limit, budget)

    def count_logs(self) -> int:
        return sqlite_logs.count_logs(self._reader())

    def count_spans(self) -> int:
        return sqlite_spans.count_spans(self._reader())

    def has_spans(self) -> bool:
        return sqlite_spans.has_spans(self._reader())

    def close(self) -> None:
        with self._queue_writer_lock:
            if self._queue_writer is not None:
                self._queue_writer.close()
                self._queue_writer = None
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._writer is not None:
            with contextlib.suppress(sqlite3.Error):  # a reader elsewhere may hold the WAL; that is fine
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._writer.close()
            self._writer = None


class _Checkpointer:
    """Copies committed WAL pages into the database file every few hundred ms, beside the writer.

    PASSIVE checkpoints never block the writer or readers; they only do what is possible right now.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hopscope-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failures = Failures(log, logging.WARNING)
        while not self._stopped.wait(CHECKPOINT_INTERVAL_SECONDS):
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
                if code is None or code & 0xFF in _BUSY_CODES:  # busy or locked now: the next round tries
                    continue
                failures.failed(exc, "WAL checkpoints fail; SQLite's own, in the writer's commits, go on")
            except Exception as exc:  # the thread must outlive any one failure
                failures.failed(exc, "WAL checkpoints fail; SQLite's own, in the writer's commits, go on")
            else:
                failures.succeeded("WAL checkpoints work again")

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._conn.close()


# SQLITE_BUSY and SQLITE_LOCKED: a checkpoint that meets them now simply waits for the next round.
_BUSY_CODES = frozenset({5, 6})
# SQLite's primary result codes that mean the environment failed, not the data: retry later, skip nothing.
_ENVIRONMENT_CODES = frozenset(
    {
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        7,  # SQLITE_NOMEM
        8,  # SQLITE_READONLY
        9,  # SQLITE_INTERRUPT
        10,  # SQLITE_IOERR
        11,  # SQLITE_CORRUPT
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
        26,  # SQLITE_NOTADB
    }
)


def is_environment_error(exc: BaseException) -> bool:
    """True for failures of the disk, memory or locks; False for what a span's data caused."""
    if isinstance(exc, (OSError, MemoryError, StoreError)):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
        return code is None or code & 0xFF in _ENVIRONMENT_CODES
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)
    )
