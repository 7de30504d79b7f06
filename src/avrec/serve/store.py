"""Durable embedded store for what the service learns online: feedback events, added items, new users.

SQLite in WAL mode with ``synchronous=FULL``: :meth:`EventStore.add_events` returns only after the
transaction has committed and the WAL has been fsynced, so an acknowledged event survives a SIGKILL of
the server (and a power cut, as far as the disk honours fsync). One connection serves the whole
process behind a lock; SQLite serialises writers anyway, and WAL lets readers in other processes
(``avrec update``) read while the server writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from avrec.errors import DataError

#: Event types the store accepts, and whether each one is positive evidence for the item.
EVENT_TYPES = ("play", "like", "skip", "dislike", "rate")
POSITIVE_EVENTS = frozenset({"play", "like"})
NEGATIVE_EVENTS = frozenset({"skip", "dislike"})
#: A ``rate`` event at or above this value counts as positive, below as negative.
DEFAULT_RATING_THRESHOLD = 3.5

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event TEXT NOT NULL,
    value REAL,
    ts REAL NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events(user_id, id);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Event:
    """One stored feedback event."""

    id: int
    user_id: str
    item_id: str
    event: str
    value: float | None
    ts: float
    #: the impression (served list) the event answers, and the item's 0-based slot in it, when given
    impression_id: str | None = None
    position: int | None = None

    def polarity(self, rating_threshold: float = DEFAULT_RATING_THRESHOLD) -> int:
        """+1 for positive evidence (play, like, high rating), -1 for negative (skip, dislike, low rating)."""
        if self.event in POSITIVE_EVENTS:
            return 1
        if self.event in NEGATIVE_EVENTS:
            return -1
        if self.event == "rate":
            return 1 if (self.value is not None and self.value >= rating_threshold) else -1
        return 0


class EventStore:
    """SQLite (WAL, synchronous=FULL) store of feedback events, added items and new users."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.path}: cannot open the event store ({e})") from None
        if str(mode).lower() != "wal":
            raise DataError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); put the store on a local disk")
        self._lock = threading.Lock()
        # reads get their own connection: under WAL they see every committed write and never wait for a
        # writer's fsync, so the read path of the API is not held up by /feedback
        self._read_conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._read_conn.execute("PRAGMA busy_timeout=30000")
        self._read_lock = threading.Lock()

    def _migrate(self) -> None:
        """Add the columns newer versions write to a store made by an older one (SQLite ALTER TABLE)."""
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(events)").fetchall()}
        for name, kind in (("impression_id", "TEXT"), ("position", "INTEGER")):
            if name not in columns:
                self._conn.execute(f"ALTER TABLE events ADD COLUMN {name} {kind}")
        self._conn.execute("CREATE INDEX IF NOT EXISTS events_impression ON events(impression_id)")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """A durable write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error) on the
        writer connection; for other tables in this database (:mod:`avrec.serve.impressions`)."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def executescript(self, sql: str) -> None:
        """Run DDL (``CREATE TABLE IF NOT EXISTS`` …) on the writer connection."""
        with self._lock:
            self._conn.executescript(sql)

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of a read-only query on the reader connection."""
        return self._query(sql, args)

    # ---- writes --------------------------------------------------------------------------------
    def add_events(self, events: Iterable[dict]) -> list[int]:
        """Append events atomically; returns their ids once the transaction is durable.

        Each event is a dict with ``user_id``, ``item_id``, ``event`` and optional ``value``, ``ts`` (unix
        seconds; defaults to now), ``impression_id`` and ``position``. Users seen for the first time are
        recorded in ``users``.
        """
        now = time.time()
        rows = []
        for n, e in enumerate(events):
            kind = str(e["event"])
            if kind not in EVENT_TYPES:
                raise DataError(f"event {n}: unknown event type {kind!r}; expected one of {', '.join(EVENT_TYPES)}")
            value = e.get("value")
            imp, pos = e.get("impression_id"), e.get("position")
            rows.append((str(e["user_id"]), str(e["item_id"]), kind, value, float(e.get("ts") or now), now,
                         None if imp is None else str(imp), None if pos is None else int(pos)))
        if not rows:
            return []
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                ids = []
                for row in rows:
                    cur.execute(
                        "INSERT INTO events(user_id, item_id, event, value, ts, received, impression_id, position) "
                        "VALUES (?,?,?,?,?,?,?,?)", row
                    )
                    ids.append(int(cast(int, cur.lastrowid)))  # set by the INSERT just run
                cur.executemany(
                    "INSERT OR IGNORE INTO users(user_id, created) VALUES (?, ?)",
                    [(u, now) for u in dict.fromkeys(r[0] for r in rows)],
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return ids

    def add_user(self, user_id: str) -> bool:
        """Record a new user (no events yet); returns False when the user was already there."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO users(user_id, created) VALUES (?, ?)", (str(user_id), time.time())
            )
            return cur.rowcount > 0

    def add_items(self, items: list[dict]) -> None:
        """Persist added catalogue items (``item_id`` + string metadata) in one durable transaction."""
        now = time.time()
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.executemany(
                    "INSERT OR REPLACE INTO items(item_id, data, added) VALUES (?,?,?)",
                    [(str(it["item_id"]), json.dumps(it, ensure_ascii=False), now) for it in items],
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def remove_items(self, item_ids: list[str]) -> None:
        """Take items out again (a batch that was stored but could not be added), in one durable transaction."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.executemany("DELETE FROM items WHERE item_id = ?", [(str(i),) for i in item_ids])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ---- reads ---------------------------------------------------------------------------------
    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._read_lock:
            return self._read_conn.execute(sql, args).fetchall()

    @staticmethod
    def _event(row: tuple) -> Event:
        return Event(int(row[0]), row[1], row[2], row[3], None if row[4] is None else float(row[4]), float(row[5]),
                     row[6], None if row[7] is None else int(row[7]))

    def events(self, user_id: str | None = None, after_id: int = 0) -> list[Event]:
        """Stored events in arrival order, optionally of one user and/or after an event id."""
        sql = "SELECT id, user_id, item_id, event, value, ts, impression_id, position FROM events WHERE id > ?"
        args: tuple = (after_id,)
        if user_id is not None:
            sql += " AND user_id = ?"
            args += (str(user_id),)
        return [self._event(r) for r in self._query(sql + " ORDER BY id", args)]

    def iter_events(self, batch: int = 50_000) -> Iterator[Event]:
        """All events in arrival order, fetched in batches (for large stores)."""
        last = 0
        while True:
            rows = self._query(
                "SELECT id, user_id, item_id, event, value, ts, impression_id, position FROM events "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (last, batch),
            )
            if not rows:
                return
            for r in rows:
                yield self._event(r)
            last = int(rows[-1][0])

    def event_ids(self) -> set[int]:
        return {int(r[0]) for r in self._query("SELECT id FROM events")}

    def count_events(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM events")[0][0])

    def items(self) -> list[dict]:
        """Added items, oldest first."""
        return [json.loads(r[0]) for r in self._query("SELECT data FROM items ORDER BY added, rowid")]

    def users(self) -> list[str]:
        return [r[0] for r in self._query("SELECT user_id FROM users ORDER BY created, rowid")]

    def has_user(self, user_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM users WHERE user_id = ?", (str(user_id),)))

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def close(self) -> None:
        with self._read_lock:
            self._read_conn.close()
        with self._lock:
            self._conn.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventStore({str(self.path)!r})"
