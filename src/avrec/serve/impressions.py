"""The impression log: every served list, with why each item was shown, in the event store's database.

An impression is one answer of /recommend, /similar or /search: its id, time, user, endpoint, the policy
(name and version) and model (name and version) that made it, the shown items with their slot, score,
propensity (:mod:`avrec.policies.base`) and whether the slot explored, the request's candidates with their
scores and features (what an off-policy estimate of another policy needs), and the request's context.
It is committed before the answer is sent, so an ``impression_id`` a client holds always exists, and a
crash of the server loses none. The commit is not flushed to disk by default (SQLite ``synchronous=NORMAL``
in WAL mode for that commit, PostgreSQL ``synchronous_commit = off``): the next feedback commit (always
flushed) or checkpoint flushes it, so only an operating-system crash or power loss in that window can
lose impressions, never a feedback event. ``serve.flush_impressions = true`` flushes each commit as
well (one fsync per group commit, which the answers then wait for). Feedback that names the impression
is joined to it by ``(impression_id, position)``: :meth:`ImpressionLog.rewards`.

Storage: the candidates record (most of an impression's bytes) is the same for every answer served from
one candidate pool, so it is stored once in ``candidate_sets`` under a digest of its JSON and the
impression's ``candidates`` column holds ``#`` + that digest (inline JSON, as older avrec wrote it, is
still read). Impression ids start with the time in milliseconds (hex), so the unique index on them grows
at its right edge instead of touching a random page per insert. Both keep a group commit to a few pages.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import secrets
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from avrec.policies.rewards import RewardConfig
from avrec.serve.errors import NotFound, ServiceError
from avrec.serve.store import EventStore
from avrec.serve.stores.group_commit import Durable, GroupCommitter

SCHEMA = """
CREATE TABLE IF NOT EXISTS impressions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    impression_id TEXT NOT NULL UNIQUE,
    ts REAL NOT NULL,
    user_id TEXT,
    endpoint TEXT NOT NULL,
    policy TEXT NOT NULL,
    policy_version INTEGER NOT NULL,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    items TEXT NOT NULL,
    candidates TEXT NOT NULL,
    context TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS impressions_ts ON impressions(ts);
"""
SET_PREFIX = "#"  # a candidates column value naming a row of candidate_sets (JSON records start with "{")
COLUMNS = ("seq, impression_id, ts, user_id, endpoint, policy, policy_version, model, model_version, items, "
           "candidates, context")


_ID_SOURCE: tuple[int, str, Iterator[int]] = (0, "", itertools.count())


def new_impression_id(now: float) -> str:
    """32 hex digits: milliseconds since the epoch (12), a random tag of this process (8), then a counter
    of the process (12); sorts by time of issue, and takes no system call (os.urandom costs one per id)."""
    global _ID_SOURCE
    pid, tag, counter = _ID_SOURCE
    if pid != os.getpid():  # first use, or a forked child: a new tag, so two processes never share ids
        pid, tag, counter = os.getpid(), secrets.token_hex(4), itertools.count()
        _ID_SOURCE = (pid, tag, counter)
    return f"{int(now * 1000) & 0xFFFFFFFFFFFF:012x}{tag}{next(counter) & 0xFFFFFFFFFFFF:012x}"


@dataclass
class Impression:
    """One logged list. ``items``: ``{item_id, position, score, propensity, explored}`` per slot (0-based
    positions); ``candidates``: ``{item_ids, scores, features, feature_names}``."""

    seq: int
    impression_id: str
    ts: float
    user_id: str | None
    endpoint: str
    policy: str
    policy_version: int
    model: str
    model_version: str
    items: list[dict[str, Any]]
    candidates: dict[str, Any]
    context: dict[str, Any]

    def shown(self, position: int) -> dict[str, Any] | None:
        return self.items[position] if 0 <= position < len(self.items) else None

    def position_of(self, item_id: str) -> int | None:
        return next((it["position"] for it in self.items if it["item_id"] == str(item_id)), None)


class ImpressionLog:
    """Impressions in the ``impressions`` table of an :class:`EventStore`'s database."""

    def __init__(self, store: EventStore, flush: bool = False) -> None:
        self.store = store
        self.flush = flush  # fsync each commit (else committed, flushed by the next event commit or checkpoint)
        store.executescript(SCHEMA)
        # concurrent requests' impressions share one transaction (one fsync); each is acknowledged only
        # once its transaction has committed
        self._committer = GroupCommitter(self._write_batch, name="avrec-impressions")
        self._stored_sets: set[str] = set()  # digests this process has seen committed: no INSERT needed
        self._sets_lock = threading.Lock()
        self._set_cache: dict[str, str] = {}  # digest → record JSON, for reads (records never change)

    def add(self, *, user_id: str | None, endpoint: str, policy: str, policy_version: int, model: str,
            model_version: str, items: list[dict[str, Any]], candidates: dict[str, Any] | str,
            context: dict[str, Any]) -> str:
        """Store one impression durably; returns its id once committed."""
        impression_id, durable = self.submit(user_id=user_id, endpoint=endpoint, policy=policy,
                                             policy_version=policy_version, model=model, model_version=model_version,
                                             items=items, candidates=candidates, context=context)
        durable.result()
        return impression_id

    def submit(self, *, user_id: str | None, endpoint: str, policy: str, policy_version: int, model: str,
               model_version: str, items: list[dict[str, Any]], candidates: dict[str, Any] | str,
               context: dict[str, Any]) -> tuple[str, Durable]:
        """Queue one impression for the next group commit: its id and a future that resolves once it is
        durable (or raises the store's error). Impressions commit in the order they were submitted.
        ``candidates``: the record, or its JSON text (kept by the pool cache, :mod:`avrec.serve.pools`)."""
        return self.submit_row(self.row(user_id=user_id, endpoint=endpoint, policy=policy,
                                        policy_version=policy_version, model=model, model_version=model_version,
                                        items=items, candidates=candidates, context=context))

    @staticmethod
    def row(*, user_id: str | None, endpoint: str, policy: str, policy_version: int, model: str,
            model_version: str, items: list[dict[str, Any]], candidates: dict[str, Any] | str,
            context: dict[str, Any]) -> tuple:
        """An impression's stored columns without its id and time (JSON text where the table has it), plus
        its candidates record's JSON: the same list served again is logged from it without serialising
        anything (:meth:`submit_row`)."""
        record = candidates if isinstance(candidates, str) else json.dumps(candidates)
        digest = hashlib.blake2b(record.encode(), digest_size=16).hexdigest()
        return (user_id, endpoint, policy, int(policy_version), model, model_version, json.dumps(items),
                SET_PREFIX + digest, json.dumps(context, ensure_ascii=False), record)

    @staticmethod
    def for_user(row: tuple | None, user_id: str | None) -> tuple | None:
        """A row made by :meth:`row`, shown to ``user_id`` instead (the popular list's answer template)."""
        return None if row is None else (user_id, *row[1:])

    def submit_row(self, row: tuple, loop: asyncio.AbstractEventLoop | None = None) -> tuple[str, Durable]:
        """Queue an impression made by :meth:`row` under a new id and the current time (as :meth:`submit`;
        with ``loop``, the future is that event loop's, :class:`~avrec.serve.stores.group_commit.PendingWrites`)."""
        now = time.time()
        impression_id = new_impression_id(now)
        return impression_id, self._committer.submit((impression_id, now, *row), loop)

    def commit_stats(self) -> dict[str, int]:
        """Group commits of impressions so far and the impressions they carried (for ``/health``)."""
        return {"commits": self._committer.commits, "impressions": self._committer.requests}

    def _write_batch(self, rows: list[tuple]) -> list[None]:
        with self._sets_lock:
            new_sets = {r[9][len(SET_PREFIX):]: r[-1] for r in rows}
            new_sets = {d: rec for d, rec in new_sets.items() if d not in self._stored_sets}
        with self.store.transaction(flush=self.flush) as cur:
            if new_sets:  # another process may have stored the same set: IGNORE keeps the first, identical one
                cur.executemany("INSERT OR IGNORE INTO candidate_sets(digest, record) VALUES (?, ?)",
                                list(new_sets.items()))
            cur.executemany("INSERT INTO impressions(impression_id, ts, user_id, endpoint, policy, policy_version, "
                            "model, model_version, items, candidates, context) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            [r[:-1] for r in rows])
        with self._sets_lock:  # only after the commit: a rolled-back set must be inserted again next time
            if len(self._stored_sets) > 100_000:  # bounded memory; INSERT OR IGNORE keeps forgetting correct
                self._stored_sets.clear()
            self._stored_sets.update(new_sets)
        return [None] * len(rows)

    def _records(self, texts: Collection[str]) -> dict[str, str]:
        """Digest → record JSON for the sets the candidates column values ``texts`` reference (one query
        per 500 not yet cached)."""
        digests = {t[len(SET_PREFIX):] for t in texts if t.startswith(SET_PREFIX)}
        found = {d: rec for d in digests if (rec := self._set_cache.get(d)) is not None}
        missing = sorted(digests - found.keys())
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            found.update((str(d), str(rec)) for d, rec in self.store.query(
                f"SELECT digest, record FROM candidate_sets WHERE digest IN ({','.join('?' * len(chunk))})",
                tuple(chunk)))
        if missing:
            if len(self._set_cache) > 4096:
                self._set_cache = {}
            self._set_cache.update(found)
        return found

    def _rows(self, rows: list[tuple]) -> list[Impression]:
        records = self._records([r[10] for r in rows])
        out = []
        for r in rows:
            text = records.get(r[10][len(SET_PREFIX):], r[10]) if r[10].startswith(SET_PREFIX) else r[10]
            if text.startswith(SET_PREFIX):
                raise ServiceError(f"impression {r[1]!r}: its candidates record {text[len(SET_PREFIX):]!r} is "
                                   f"missing from candidate_sets (the store was edited by hand?)")
            out.append(Impression(int(r[0]), r[1], float(r[2]), r[3], r[4], r[5], int(r[6]), r[7], r[8],
                                  json.loads(r[9]), json.loads(text), json.loads(r[11])))
        return out

    def get(self, impression_id: str) -> Impression | None:
        rows = self.store.query(f"SELECT {COLUMNS} FROM impressions WHERE impression_id = ?", (str(impression_id),))
        return self._rows(rows)[0] if rows else None

    def iter(self, after_seq: int = 0, batch: int = 5000) -> Iterator[Impression]:
        """Impressions in logging order after ``after_seq``, fetched in batches."""
        last = after_seq
        while True:
            rows = self.store.query(f"SELECT {COLUMNS} FROM impressions WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (last, batch))
            if not rows:
                return
            yield from self._rows(rows)
            last = int(rows[-1][0])

    def count(self) -> int:
        return int(self.store.query("SELECT COUNT(*) FROM impressions")[0][0])

    def last_seq(self) -> int:
        return int(self.store.query("SELECT COALESCE(MAX(seq), 0) FROM impressions")[0][0])

    def counts_by_policy(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self.store.query("SELECT policy, COUNT(*) FROM impressions GROUP BY policy")}

    def rewards(self, config: RewardConfig, upto_event: int | None = None,
                impression_ids: Collection[str] | None = None) -> dict[tuple[str, int], float]:
        """The reward of every (impression, position) that got feedback: the largest over its events
        (only events with id ≤ ``upto_event``, and of ``impression_ids``, when given)."""
        sql = "SELECT impression_id, position, event, value FROM events WHERE impression_id IS NOT NULL"
        args: tuple = ()
        if upto_event is not None:
            sql += " AND id <= ?"
            args = (int(upto_event),)
        if impression_ids is not None:
            ids = sorted({str(i) for i in impression_ids})
            sql += f" AND impression_id IN ({','.join('?' * len(ids))})"
            args += tuple(ids)
        out: dict[tuple[str, int], float] = {}
        for imp, pos, event, value in self.store.query(sql, args):
            key = (str(imp), int(pos))
            r = config.reward(event, None if value is None else float(value))
            out[key] = max(out.get(key, r), r)
        return out

    def rewards_by_policy(self, config: RewardConfig) -> dict[str, tuple[int, float]]:
        """Policy → (slots with feedback, sum of their rewards)."""
        policy_of = {r[0]: r[1] for r in self.store.query("SELECT impression_id, policy FROM impressions")}
        out: dict[str, tuple[int, float]] = {}
        for (imp, _pos), r in self.rewards(config).items():
            p = policy_of.get(imp)
            if p is not None:
                n, s = out.get(p, (0, 0.0))
                out[p] = (n + 1, s + r)
        return out


def check_feedback(log: ImpressionLog, event: dict[str, Any], n: int) -> Impression:
    """The impression a feedback event names, after checking the item was shown there to that user.

    Sets ``event["position"]``; a 404 (unknown impression) or 400 naming ``events[n]`` otherwise.
    """
    imp = log.get(str(event["impression_id"]))
    if imp is None:
        raise NotFound(f"events[{n}].impression_id: unknown impression_id {str(event['impression_id'])!r}")
    position = imp.position_of(str(event["item_id"]))
    if position is None:
        raise ServiceError(f"events[{n}].item_id: {str(event['item_id'])!r} was not shown in impression "
                        f"{imp.impression_id!r}")
    if imp.user_id is not None and str(imp.user_id) != str(event["user_id"]):
        raise ServiceError(f"events[{n}].user_id: impression {imp.impression_id!r} was shown to another user")
    event["position"] = position
    return imp


def export_tables(log: ImpressionLog, rewards: RewardConfig) -> tuple[list[dict], list[dict]]:
    """Rows of the slot and candidate tables of :mod:`avrec.policies.logfiles`, rewards joined."""
    got = log.rewards(rewards)
    slots, cands = [], []
    for imp in log.iter(0):
        cum = 1.0
        total = float(np.prod([it["propensity"] for it in imp.items])) if imp.items else 1.0
        for it in imp.items:
            cum *= float(it["propensity"])
            key = (imp.impression_id, int(it["position"]))
            slots.append({"impression_id": imp.impression_id, "slate_id": imp.seq, "timestamp": imp.ts,
                          "user_id": imp.user_id, "endpoint": imp.endpoint, "policy": imp.policy,
                          "policy_version": imp.policy_version, "model": imp.model,
                          "model_version": imp.model_version, "position": int(it["position"]),
                          "action": it["item_id"], "action_index": int(it["candidate"]), "score": float(it["score"]),
                          "pscore": float(it["propensity"]), "pscore_cascade": cum, "pscore_slate": total,
                          "explored": bool(it["explored"]), "reward": got.get(key, 0.0), "feedback": key in got,
                          "context": json.dumps(imp.context, ensure_ascii=False)})
        c = imp.candidates
        for n, (item, score, feats) in enumerate(zip(c["item_ids"], c["scores"], c["features"])):
            cands.append({"impression_id": imp.impression_id, "action_index": n, "action": str(item),
                          "score": float(score), "features": [float(x) for x in feats]})
    return slots, cands
