"""The embedded event store: one SQLite file in WAL mode with ``synchronous=FULL``.

A write returns only after its transaction committed and the WAL was fsynced, so an acknowledged event
survives a SIGKILL of the server (and a power cut, as far as the disk honours fsync). One writer
connection serves the process behind a lock (SQLite serialises writers anyway, across processes too,
with ``BEGIN IMMEDIATE``); reads have their own connection, which under WAL sees every committed write
and never waits for a writer's fsync. Feedback writes go through the group committer
(:mod:`avrec.serve.stores.group_commit`).

Writers in several processes (``--workers N``) take an OS file lock (``flock`` on ``STORE-avrec-write.lock``)
around each write transaction: a process waiting for another's commit wakes the moment it ends, where
SQLite's own busy handler would poll with sleeps of 1, 2, 5, 10 … ms, longer than the commit (one fsync).

A write the disk refuses (full, read-only, I/O error) raises :class:`StoreUnavailable` after the
transaction was rolled back; the next write tries again, so the server recovers once space returns.
A file that is not a SQLite database, or a damaged one, is one :class:`~avrec.errors.DataError` at open.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import cast

try:
    import fcntl
except ImportError:  # not on this platform: SQLite's busy handler alone orders the processes' writes
    fcntl = None  # type: ignore[assignment]

from avrec.errors import DataError
from avrec.serve.stores.base import EventStore, Row, StoreUnavailable
from avrec.serve.stores.migrations import META_KEY, migrate_sqlite

#: SQLite result codes of a store that cannot take writes now (full, read-only, I/O, busy): 503, not 500
UNAVAILABLE_CODES = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_BUSY",
                     "SQLITE_LOCKED", "SQLITE_PERM", "SQLITE_CORRUPT", "SQLITE_NOTADB")


def _unavailable(path: Path | str, e: sqlite3.Error) -> StoreUnavailable | None:
    """The 503 for a store failure, None for anything else (a bug in a query stays a 500)."""
    name = str(getattr(e, "sqlite_errorname", "") or "")
    if not name.startswith(UNAVAILABLE_CODES):
        return None
    return StoreUnavailable(f"the event store cannot write ({path}: {e}); nothing was stored, try again later")


class SqliteStore(EventStore, backend="sqlite"):
    """SQLite (WAL, synchronous=FULL) store of feedback events, added items and new users.

    ``max_bytes`` caps the database file (SQLite's ``max_page_count``): a write past it is refused like
    one on a full disk (503), which keeps a runaway client from filling the disk the models live on.
    """

    _order_column = "rowid"

    def __init__(self, path: str | Path, *, group_commit: bool = True, max_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.is_file() and self.path.stat().st_size > 0
        try:
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            if existed:  # a damaged file fails here, once, instead of on some later request
                self._conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            self._version = migrate_sqlite(self._conn, str(self.path))
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.path}: cannot open the event store ({e}); it is not a readable SQLite "
                            f"database (restore it from a backup or move it away)") from None
        if str(mode).lower() != "wal":
            raise DataError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); put the store on a local disk")
        self._lock = threading.Lock()
        self._process_lock = self._open_process_lock()
        self._page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        if max_bytes is not None:
            self.set_max_bytes(max_bytes)
        self._read_conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._read_conn.execute("PRAGMA busy_timeout=30000")
        self._read_lock = threading.Lock()
        self._start_group_commit(group_commit)

    def _open_process_lock(self) -> int | None:
        """The file every avrec process writing this store locks around a write (None: no flock here)."""
        if fcntl is None:
            return None
        try:
            return os.open(f"{self.path}-avrec-write.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # a read-only folder: writes fail anyway, with SQLite's own error
            return None

    def schema_version(self) -> int:
        return int(self.get_meta(META_KEY) or 0)

    def set_max_bytes(self, max_bytes: int | None) -> None:
        """Cap the database at ``max_bytes`` (None: SQLite's default, effectively no cap). A cap below the
        current size refuses every write that needs a new page until it is raised again."""
        pages = 4294967294 if max_bytes is None else max(1, int(max_bytes) // self._page_size)
        with self._lock:
            self._conn.execute(f"PRAGMA max_page_count={int(pages)}")

    def set_read_only(self, read_only: bool = True) -> None:
        with self._lock:
            self._conn.execute(f"PRAGMA query_only={'ON' if read_only else 'OFF'}")

    def size_bytes(self) -> int:
        """The database's size (pages × page size), without the WAL."""
        return int(self.query("PRAGMA page_count")[0][0]) * self._page_size

    def _rollback(self) -> None:
        # SQLite may have rolled back already (SQLITE_FULL does); a failed ROLLBACK must not hide the cause
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    @contextmanager
    def _write(self, flush: bool = True) -> Iterator[sqlite3.Cursor]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` on the writer connection; a store failure is StoreUnavailable.
        ``flush=False``: this one commit under ``synchronous=NORMAL`` (:meth:`transaction`)."""
        with self._lock:
            fd = self._process_lock
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            cur = self._conn.cursor()
            try:
                if not flush:
                    cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                self._rollback()
                unavailable = _unavailable(self.path, e)
                if unavailable is None:
                    raise
                raise unavailable from None
            except BaseException:
                self._rollback()
                raise
            finally:
                if not flush:
                    with suppress(sqlite3.Error):  # a setting of the connection, no I/O: it cannot fail the write
                        self._conn.execute("PRAGMA synchronous=FULL")  # every other commit is flushed
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def transaction(self, flush: bool = True) -> AbstractContextManager[sqlite3.Cursor]:
        """A durable write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error) on the
        writer connection; for other tables in this database (:mod:`avrec.serve.impressions`). ``flush``:
        as :meth:`EventStore.transaction <avrec.serve.stores.base.EventStore.transaction>` says."""
        return self._write(flush)

    def executescript(self, sql: str) -> None:
        with self._lock:
            self._conn.executescript(sql)

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._read_lock:
            return self._read_conn.execute(sql, args).fetchall()

    def _write_batch(self, requests: list[list[Row]]) -> list[list[int]]:
        now = time.time()
        out: list[list[int]] = []
        with self._write() as cur:
            for rows in requests:
                ids = []
                for row in rows:
                    cur.execute("INSERT INTO events(user_id, item_id, event, value, ts, received, impression_id, "
                                "position) VALUES (?,?,?,?,?,?,?,?)", row)
                    ids.append(int(cast(int, cur.lastrowid)))  # set by the INSERT just run
                out.append(ids)
            users = dict.fromkeys(r[0] for rows in requests for r in rows)
            cur.executemany("INSERT OR IGNORE INTO users(user_id, created) VALUES (?, ?)", [(u, now) for u in users])
        return out

    def add_user(self, user_id: str) -> bool:
        with self._write() as cur:
            cur.execute("INSERT OR IGNORE INTO users(user_id, created) VALUES (?, ?)", (str(user_id), time.time()))
            return cur.rowcount > 0

    def add_items(self, items: list[dict]) -> None:
        now = time.time()
        with self._write() as cur:
            cur.executemany("INSERT OR REPLACE INTO items(item_id, data, added) VALUES (?,?,?)",
                            [(str(it["item_id"]), json.dumps(it, ensure_ascii=False), now) for it in items])

    def remove_items(self, item_ids: list[str]) -> None:
        with self._write() as cur:
            cur.executemany("DELETE FROM items WHERE item_id = ?", [(str(i),) for i in item_ids])

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as cur:
            cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _close(self) -> None:
        with self._read_lock:
            self._read_conn.close()
        with self._lock:
            self._conn.close()
            if self._process_lock is not None:
                os.close(self._process_lock)
                self._process_lock = None
