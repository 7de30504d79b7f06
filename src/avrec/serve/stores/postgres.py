"""The shared event store on PostgreSQL (psycopg 3): several server processes, on one machine or many,
read and write one store.

Same promise as SQLite: a write returns after ``COMMIT`` returned, and PostgreSQL's default
``synchronous_commit=on`` means the commit record was flushed to its WAL. Every write transaction first
takes one transaction-scoped advisory lock (as SQLite's ``BEGIN IMMEDIATE`` takes the write lock), so
event ids and impression sequence numbers become visible in increasing order across processes: a reader
that remembers the last id it saw (``events(after_id=…)``, ``avrec update``) never skips one committed
later with a smaller id. Feedback goes through the group committer, one transaction for all concurrent
writers of a process.

Reads use a small pool of autocommit connections, so a read sees everything committed before it started
and never waits for a writer. A connection that breaks (server restarted, network) is replaced on the
next call; until the server is back, writes raise :class:`StoreUnavailable` (503) and store nothing.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from avrec.errors import ConfigError, DataError
from avrec.serve.stores.base import EventStore, Row, StoreUnavailable
from avrec.serve.stores.dialect import ddl_to_postgres, to_postgres
from avrec.serve.stores.migrations import META_KEY, POSTGRES_STEPS, check_version, parse_version

#: the advisory lock every write transaction holds (any fixed 64-bit number; "avrec" in ASCII)
WRITE_LOCK = 0x6176726563
#: the advisory lock migrations and DDL hold
SCHEMA_LOCK = WRITE_LOCK + 1
READ_POOL = 4


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class _Cursor:
    """A psycopg cursor that takes SQLite's dialect (``?`` placeholders …) in ``execute``."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, args: tuple = ()) -> _Cursor:
        self._cur.execute(to_postgres(sql), args)
        return self

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        self._cur.executemany(to_postgres(sql), rows)

    def fetchone(self) -> tuple | None:
        return self._cur.fetchone()

    def fetchall(self) -> list[tuple]:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)


class PostgresStore(EventStore, backend="postgresql"):
    """Event store in a PostgreSQL database named by a ``postgresql://`` URL (libpq syntax)."""

    _order_column = "seq"

    def __init__(self, url: str, *, group_commit: bool = True, connect_timeout: float = 10.0) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError("a postgresql:// store needs psycopg 3: pip install 'psycopg[binary]'") from None
        self._psycopg = psycopg
        self.url = url
        self.path = self.where = redact(url)
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        self._read_only = False
        self._readers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        try:
            self._conn = self._connect()
            self._version = self._migrate()
        except psycopg.Error as e:
            raise DataError(f"{self.path}: cannot open the event store ({str(e).strip()})") from None
        self._start_group_commit(group_commit)

    # ---- connections ---------------------------------------------------------------------------
    def _connect(self) -> Any:
        # autocommit: every write is an explicit ``with conn.transaction()`` (BEGIN … COMMIT), every read
        # its own snapshot
        return self._psycopg.connect(self.url, autocommit=True, connect_timeout=int(self._connect_timeout))

    def _unavailable(self, e: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"the event store cannot write ({self.path}: {str(e).strip() or type(e).__name__}); "
                                "nothing was stored, try again later")

    def _is_store_failure(self, e: Exception) -> bool:
        """A failure of the store itself (connection, disk full, read-only), not of the statement."""
        errors = self._psycopg.errors
        return isinstance(e, (self._psycopg.OperationalError, errors.ReadOnlySqlTransaction, errors.DiskFull,
                              errors.InsufficientResources, errors.AdminShutdown, errors.CannotConnectNow))

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """One write transaction on the writer connection, holding the store-wide write lock."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = self._connect()
                    if self._read_only:
                        self._conn.execute("SET default_transaction_read_only = on")
                conn = self._conn
                with conn.transaction():
                    cur = conn.cursor()
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                    yield cur
            except self._psycopg.Error as e:
                if self._conn is not None and self._conn.broken:
                    self._conn = None
                if self._is_store_failure(e):
                    raise self._unavailable(e) from None
                raise

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = None
        try:
            if conn is None or conn.closed or conn.broken:
                conn = self._connect()
            yield conn
        except self._psycopg.OperationalError as e:
            if conn is not None and not conn.closed:
                conn.close()
            conn = None
            raise StoreUnavailable(f"the event store cannot be read ({self.path}: {str(e).strip()})") from None
        finally:
            if conn is not None and not conn.closed and self._readers.qsize() < READ_POOL:
                self._readers.put(conn)
            elif conn is not None:
                conn.close()

    def _migrate(self) -> int:
        conn = self._conn
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key = %s", (META_KEY,)).fetchone()
            version = parse_version(row[0] if row else None, self.where)
            check_version(version, self.where)
            for target, statements in POSTGRES_STEPS:
                if target <= version:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                             "SET value = EXCLUDED.value", (META_KEY, str(target)))
                version = target
        return version

    def set_read_only(self, read_only: bool = True) -> None:
        self._read_only = read_only
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                self._conn.execute(f"SET default_transaction_read_only = {'on' if read_only else 'off'}")

    def schema_version(self) -> int:
        return parse_version(self.get_meta(META_KEY), self.where)

    # ---- the interface -------------------------------------------------------------------------
    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._reader() as conn:
            return conn.execute(to_postgres(sql), args).fetchall()

    def transaction(self, flush: bool = True) -> AbstractContextManager[Any]:
        return self._translated(flush)

    @contextmanager
    def _translated(self, flush: bool) -> Iterator[_Cursor]:
        with self._write() as cur:
            if not flush:  # this transaction only: the commit returns before the server flushes its WAL
                cur.execute("SET LOCAL synchronous_commit TO OFF")
            yield _Cursor(cur)

    def executescript(self, sql: str) -> None:
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for statement in ddl_to_postgres(sql):
                    self._conn.execute(statement)

    def _write_batch(self, requests: list[list[Row]]) -> list[list[int]]:
        now = time.time()
        rows = [row for request in requests for row in request]
        with self._write() as cur:
            cur.execute(
                "INSERT INTO events(user_id, item_id, event, value, ts, received, impression_id, position) "
                "SELECT u, i, e, v, ts, r, imp, pos FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], "
                "%s::float8[], %s::float8[], %s::text[], %s::int[]) "
                "WITH ORDINALITY AS t(u, i, e, v, ts, r, imp, pos, n) ORDER BY n RETURNING id",
                [list(c) for c in zip(*rows)])
            ids = sorted(int(r[0]) for r in cur.fetchall())
            users = list(dict.fromkeys(r[0] for r in rows))
            cur.execute("INSERT INTO users(user_id, created) SELECT u, %s FROM unnest(%s::text[]) AS t(u) "
                        "ON CONFLICT DO NOTHING", (now, users))
        out, start = [], 0
        for request in requests:
            out.append(ids[start:start + len(request)])
            start += len(request)
        return out

    def add_user(self, user_id: str) -> bool:
        with self._write() as cur:
            cur.execute("INSERT INTO users(user_id, created) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (str(user_id), time.time()))
            return int(cur.rowcount) > 0

    def add_items(self, items: list[dict]) -> None:
        now = time.time()
        with self._write() as cur:
            # a replaced item moves to the end (a new seq), as SQLite's INSERT OR REPLACE gives it a new rowid
            cur.executemany("INSERT INTO items(item_id, data, added) VALUES (%s, %s, %s) ON CONFLICT (item_id) "
                            "DO UPDATE SET data = EXCLUDED.data, added = EXCLUDED.added, seq = DEFAULT",
                            [(str(it["item_id"]), json.dumps(it, ensure_ascii=False), now) for it in items])

    def remove_items(self, item_ids: list[str]) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM items WHERE item_id = ANY(%s)", ([str(i) for i in item_ids],))

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as cur:
            cur.execute("INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                        "SET value = EXCLUDED.value", (key, value))

    def _close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                return
