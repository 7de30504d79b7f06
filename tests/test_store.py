"""The event store on both backends: SQLite (always) and PostgreSQL (a throwaway server from
tests/pg_fixtures.py; those tests skip with the reason where none can start).

Covers the interface (events, users, items, meta), versioned migrations (a pre-versioning SQLite store is
migrated in place; a newer schema is refused), group commit (concurrent writers share one commit and each
is acknowledged only once it is durable), readers in other processes seeing new events in id order,
the SQLite dialect other modules use (impressions, policy statistics) answering the same on PostgreSQL,
and a store that cannot write raising StoreUnavailable and recovering.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from pg_fixtures import pg_cluster, pg_url  # noqa: F401 - fixtures

from avrec.errors import DataError
from avrec.policies.rewards import RewardConfig
from avrec.serve.impressions import ImpressionLog, new_impression_id
from avrec.serve.policy_stats import coverage, policy_series, policy_totals
from avrec.serve.store import EventStore, PostgresStore, SqliteStore, StoreUnavailable, open_store
from avrec.serve.stores.migrations import LATEST, META_KEY

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def target(request, tmp_path: Path) -> str:
    """Where a store of the backend under test lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "events.sqlite3")
    return request.getfixturevalue("pg_url")


def test_open_store_picks_the_backend(target: str):
    with open_store(target) as store:
        assert isinstance(store, PostgresStore if target.startswith("postgresql://") else SqliteStore)
        assert isinstance(store, EventStore)
        assert store.schema_version() == LATEST
        if isinstance(store, PostgresStore):
            assert "postgresql://" in str(store.path)


def test_events_users_items_meta(target: str):
    with EventStore(target) as store:
        ids = store.add_events([{"user_id": "a", "item_id": "i1", "event": "like"},
                                {"user_id": "b", "item_id": "i2", "event": "rate", "value": 4.5, "ts": 100.0},
                                {"user_id": "a", "item_id": "i3", "event": "skip", "impression_id": "imp",
                                 "position": 2}])
        assert ids == sorted(ids) and len(set(ids)) == 3
        assert store.add_events([]) == []
        with pytest.raises(DataError, match="event 0: unknown event type 'clap'"):
            store.add_events([{"user_id": "a", "item_id": "i1", "event": "clap"}])
        got = store.events()
        assert [(e.user_id, e.item_id, e.event) for e in got] == [("a", "i1", "like"), ("b", "i2", "rate"),
                                                                   ("a", "i3", "skip")]
        assert got[1].value == 4.5 and got[1].ts == 100.0 and got[1].polarity() == 1
        assert (got[2].impression_id, got[2].position) == ("imp", 2)
        assert [e.item_id for e in store.events(user_id="a", after_id=ids[0])] == ["i3"]
        assert [e.id for e in store.iter_events(batch=2)] == ids
        assert store.event_ids() == set(ids) and store.count_events() == 3
        assert store.users() == ["a", "b"] and store.has_user("b") and not store.has_user("zz")
        assert store.add_user("c") is True and store.add_user("c") is False
        store.add_items([{"item_id": "n1", "title": "One"}, {"item_id": "n2", "title": "Two"}])
        store.add_items([{"item_id": "n1", "title": "One again"}])  # replaced: moves to the end
        assert [(it["item_id"], it["title"]) for it in store.items()] == [("n2", "Two"), ("n1", "One again")]
        store.remove_items(["n2"])
        assert [it["item_id"] for it in store.items()] == ["n1"]
        assert store.get_meta("k") is None and store.get_meta("k", "d") == "d"
        store.set_meta("k", "v1")
        store.set_meta("k", "v2")
        assert store.get_meta("k") == "v2"
    with EventStore(target) as again:  # durable: a new connection sees it all
        assert again.count_events() == 3 and again.get_meta("k") == "v2" and again.users() == ["a", "b", "c"]


def test_a_newer_schema_is_refused(target: str):
    with EventStore(target) as store:
        store.set_meta(META_KEY, str(LATEST + 1))
    with pytest.raises(DataError, match=f"schema version {LATEST + 1}, newer than this avrec understands"):
        EventStore(target)


def test_a_store_from_before_versioning_is_migrated_in_place(tmp_path: Path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)  # the schema of avrec before issue 13: no impression columns, no version
    conn.executescript("""
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, item_id TEXT NOT NULL,
                             event TEXT NOT NULL, value REAL, ts REAL NOT NULL, received REAL NOT NULL);
        CREATE TABLE items (item_id TEXT PRIMARY KEY, data TEXT NOT NULL, added REAL NOT NULL);
        CREATE TABLE users (user_id TEXT PRIMARY KEY, created REAL NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO events(user_id, item_id, event, value, ts, received) VALUES ('u', 'i', 'play', NULL, 5, 5);
    """)
    conn.commit()
    conn.close()
    with EventStore(path) as store:
        assert store.schema_version() == LATEST
        old = store.events()
        assert [(e.user_id, e.item_id, e.event, e.impression_id) for e in old] == [("u", "i", "play", None)]
        store.add_events([{"user_id": "u", "item_id": "j", "event": "like", "impression_id": "x", "position": 0}])
        assert store.events()[-1].impression_id == "x"


def test_group_commit_shares_one_transaction_and_acknowledges_after_it(target: str):
    """While the write lock is held, 8 concurrent add_events wait: the first in its own thread (it found the
    store idle), the second taken by the writer thread, 6 queued; they then need 3 commits, and each caller
    returns only once its events are visible to a separate connection."""
    with EventStore(target) as store, EventStore(target) as other:
        results: dict[int, list[int]] = {}
        seen_at_return: dict[int, int] = {}

        def write(n: int) -> None:
            ids = store.add_events([{"user_id": f"u{n}", "item_id": f"i{k}", "event": "play"} for k in range(3)])
            results[n] = ids
            seen_at_return[n] = len({e.id for e in other.events()} & set(ids))

        with store.transaction():  # holds the writer: nothing can commit yet
            threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
            for t in threads:
                t.start()
            deadline = time.time() + 10
            while store.commit_stats()["queued"] < 6 and time.time() < deadline:
                time.sleep(0.01)
            assert not results, "nothing may be acknowledged before its commit"
        for t in threads:
            t.join(30)
        stats = store.commit_stats()
        assert stats["requests"] == 8 and stats["commits"] == 3  # the direct one, the writer's first, 6 at once
        assert seen_at_return == {n: 3 for n in range(8)}  # acknowledged ⇒ committed
        all_ids = [i for ids in results.values() for i in ids]
        assert len(set(all_ids)) == 24 and other.count_events() == 24
        assert {e.user_id for e in other.events()} == {f"u{n}" for n in range(8)}


def test_reads_are_not_held_up_by_a_writer(target: str):
    with EventStore(target) as store:
        store.add_events([{"user_id": "a", "item_id": "s1", "event": "like"}])
        done = threading.Event()
        with store.transaction():
            threading.Thread(target=lambda: (store.events("a"), done.set()), daemon=True).start()
            assert done.wait(5), "a read waited for an open write transaction"
        store.add_events([{"user_id": "a", "item_id": "s2", "event": "play"}])
        assert [e.item_id for e in store.events("a")] == ["s1", "s2"]  # committed writes are visible at once


def test_a_reader_elsewhere_sees_every_event_in_id_order(target: str):
    """Two writers (two store objects, as two server processes have) and a reader that only asks for
    events after the last id it saw: it must end with every event, none skipped by a late commit."""
    stores = [EventStore(target), EventStore(target)]
    reader = EventStore(target)
    stop = threading.Event()
    seen: list[int] = []

    def follow() -> None:
        last = 0
        while True:
            final = stop.is_set()
            for e in reader.events(after_id=last):
                seen.append(e.id)
                last = e.id
            if final:
                return

    def write(store: EventStore, w: int) -> None:
        for n in range(40):
            store.add_events([{"user_id": f"w{w}", "item_id": f"i{n}", "event": "play"}])

    follower = threading.Thread(target=follow)
    follower.start()
    writers = [threading.Thread(target=write, args=(s, w)) for w, s in enumerate(stores) for _ in range(2)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    follower.join(60)
    assert len(seen) == 160 and seen == sorted(seen) and set(seen) == reader.event_ids()
    for s in [*stores, reader]:
        s.close()


def _impressions_and_feedback(store: EventStore) -> dict:
    log = ImpressionLog(store)
    shown = [("p1", ["a", "b", "c"], [True, False, False]), ("p1", ["b", "c", "d"], [False, False, True]),
             ("p2", ["a", "d", "e"], [False, True, False])]
    ids = []
    for policy, items, explored in shown:
        ids.append(log.add(user_id="u", endpoint="recommend", policy=policy, policy_version=1, model="m",
                           model_version="v1",
                           items=[{"item_id": it, "position": p, "score": 1.0 - p / 10, "propensity": 0.5,
                                   "explored": ex, "candidate": p} for p, (it, ex) in enumerate(zip(items, explored))],
                           candidates={"item_ids": items, "scores": [1, 2, 3], "features": [[0.0]] * 3},
                           context={"k": 3}))
    store.add_events([{"user_id": "u", "item_id": "b", "event": "like", "impression_id": ids[0], "position": 1},
                      {"user_id": "u", "item_id": "b", "event": "skip", "impression_id": ids[0], "position": 1},
                      {"user_id": "u", "item_id": "e", "event": "play", "impression_id": ids[2], "position": 2},
                      {"user_id": "u", "item_id": "z", "event": "play"}])
    rewards = RewardConfig()
    return {"totals": policy_totals(log, rewards), "series": sorted(policy_series(log, rewards, bucket=10 ** 9),
                                                              key=lambda r: (r["t"], r["policy"])),
            "coverage": coverage(log, n_catalog=10), "by_policy": log.counts_by_policy(), "count": log.count(),
            "rewards": sorted((ids.index(i), p, r) for (i, p), r in log.rewards(rewards).items()),
            "subset": len(log.rewards(rewards, impression_ids=[ids[2]])), "order": [i.seq for i in log.iter(0)],
            "last": log.last_seq(), "get": log.get(ids[1]).items[2]["item_id"]}


def test_impressions_and_policy_stats_answer_the_same_on_both_backends(tmp_path: Path, pg_url: str):  # noqa: F811
    """The SQLite-dialect SQL of impressions.py and policy_stats.py (JSON1, LEFT JOIN json_each, CAST) runs
    on PostgreSQL through the translator and gives the same answers; the SQLite answers are checked too."""
    with EventStore(tmp_path / "s.sqlite3") as lite, EventStore(pg_url) as pg:
        a, b = _impressions_and_feedback(lite), _impressions_and_feedback(pg)
    assert a["totals"]["p1"]["impressions"] == 2 and a["totals"]["p1"]["slots"] == 6
    assert a["totals"]["p1"]["explored_slots"] == 2 and a["totals"]["p2"]["explored_slots"] == 1
    assert a["coverage"]["items_shown"] == 5 and a["by_policy"] == {"p1": 2, "p2": 1} and a["subset"] == 1
    assert a["rewards"] == [(0, 1, 1.0), (2, 2, 1.0)] and a["get"] == "d" and a["order"] == [1, 2, 3] and a["last"] == 3
    assert b == a


def test_sqlite_disk_full_is_unavailable_and_recovers(tmp_path: Path):
    """Disk full simulated with the store's size cap (SQLite's max_page_count gives the SQLITE_FULL a full
    disk gives): the write raises StoreUnavailable, stores nothing, and succeeds once the cap is raised."""
    with EventStore(tmp_path / "s.sqlite3") as store:
        assert isinstance(store, SqliteStore)
        store.add_events([{"user_id": "a", "item_id": "i", "event": "play"}])
        store.set_max_bytes(store.size_bytes())
        big = [{"user_id": "a", "item_id": "x" * 500 + str(n), "event": "play"} for n in range(200)]
        with pytest.raises(StoreUnavailable, match="cannot write .*nothing was stored"):
            store.add_events(big)
        assert store.count_events() == 1
        store.set_max_bytes(None)
        assert len(store.add_events(big)) == 200 and store.count_events() == 201


def test_a_read_only_store_is_unavailable_and_recovers(target: str):
    """Read-only through the database's own switch (SQLite's query_only, PostgreSQL's
    default_transaction_read_only), which raise the errors a read-only file or a standby server raise."""
    with EventStore(target) as store:
        store.add_events([{"user_id": "a", "item_id": "i", "event": "play"}])
        store.set_read_only(True)
        for write in (lambda: store.add_events([{"user_id": "a", "item_id": "j", "event": "play"}]),
                      lambda: store.add_items([{"item_id": "n"}]), lambda: store.set_meta("k", "v")):
            with pytest.raises(StoreUnavailable, match="cannot write"):
                write()
        assert store.count_events() == 1 and store.items() == [] and store.get_meta("k") is None
        store.set_read_only(False)
        assert len(store.add_events([{"user_id": "a", "item_id": "k", "event": "play"}])) == 1
        assert [e.item_id for e in store.events()] == ["i", "k"]


def test_postgres_down_is_unavailable_and_recovers(pg_cluster, pg_url: str):  # noqa: F811
    if pg_cluster.folder is None:
        pytest.skip("needs a PostgreSQL server this session started (not AVREC_TEST_POSTGRES) to stop it")
    with EventStore(pg_url) as store:
        store.add_events([{"user_id": "a", "item_id": "i", "event": "play"}])
        pg_cluster.stop()
        try:
            with pytest.raises(StoreUnavailable, match="cannot write"):
                store.add_events([{"user_id": "a", "item_id": "j", "event": "play"}])
        finally:
            pg_cluster.start()
        assert len(store.add_events([{"user_id": "a", "item_id": "k", "event": "play"}])) == 1
        assert [e.item_id for e in store.events()] == ["i", "k"]


def test_a_corrupt_sqlite_file_is_one_clear_error(tmp_path: Path):
    path = tmp_path / "broken.sqlite3"
    path.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(DataError, match=f"{path}: cannot open the event store .*not a readable SQLite database"):
        EventStore(path)


def test_logs_export_reads_a_postgres_store(pg_url: str, tmp_path: Path, capsys):  # noqa: F811
    """`avrec logs export postgresql://…` exports the impression log the same way as from a SQLite file."""
    import json

    from avrec.cli import main

    with EventStore(pg_url) as store:
        _impressions_and_feedback(store)
    assert main(["logs", "export", pg_url, "--out", str(tmp_path / "logs")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["impressions"] == 3 and summary["slots"] == 9 and summary["slots_with_feedback"] == 2
    assert summary["policies"] == {"p1": 2, "p2": 1}


def test_sqlite_writers_in_several_processes_take_turns_on_a_file_lock(tmp_path: Path):
    """Two store objects stand for two worker processes (separate flock descriptions): every write of
    both lands, ids increase in commit order, and one waits on the other's file lock while it writes."""
    import fcntl

    a, b = SqliteStore(tmp_path / "e.sqlite3"), SqliteStore(tmp_path / "e.sqlite3")
    lock_file = tmp_path / "e.sqlite3-avrec-write.lock"
    assert lock_file.exists()

    def write(store: SqliteStore, user: str) -> None:
        for n in range(40):
            store.add_events([{"user_id": user, "item_id": f"i{n}", "event": "play"}])

    threads = [threading.Thread(target=write, args=(s, u)) for s, u in ((a, "ua"), (b, "ub"), (a, "uc"), (b, "ud"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [e.id for e in a.events()]
    assert len(ids) == 160 and ids == sorted(ids) and len(set(ids)) == 160
    # while another holder has the file lock, a write waits for it (and goes through once it is released)
    with open(lock_file, "rb") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        done = threading.Event()
        writer = threading.Thread(target=lambda: (b.add_events([{"user_id": "w", "item_id": "x", "event": "like"}]),
                                                  done.set()))
        writer.start()
        assert not done.wait(0.3)
        fcntl.flock(other, fcntl.LOCK_UN)
        assert done.wait(10)
        writer.join()
    assert b.events(user_id="w")[0].event == "like"
    a.close()
    b.close()


def test_a_candidates_record_is_stored_once_and_inline_records_still_read(target: str):
    """Answers from one pool share one candidate_sets row (also across two logs, as two processes would);
    a record written inline by an older avrec reads the same; ids sort in the order they were issued."""
    record = {"item_ids": ["a", "b"], "scores": [2.0, 1.0], "features": [[0.5], [0.25]], "feature_names": ["s"]}
    items = [{"item_id": "a", "position": 0, "score": 2.0, "propensity": 1.0, "explored": False, "candidate": 0}]
    with EventStore(target) as store:
        one, two = ImpressionLog(store), ImpressionLog(store)
        ids = [log.add(user_id=f"u{n}", endpoint="recommend", policy="p", policy_version=1, model="m",
                       model_version="v", items=items, candidates=record if n % 2 else json.dumps(record),
                       context={"n": n}) for n, log in enumerate([one, two, one, two])]
        other = one.add(user_id="u9", endpoint="similar", policy="p", policy_version=1, model="m", model_version="v",
                        items=items, candidates={**record, "scores": [3.0, 1.0]}, context={})
        assert int(store.query("SELECT COUNT(*) FROM candidate_sets")[0][0]) == 2
        stored = [r[0] for r in store.query("SELECT candidates FROM impressions ORDER BY seq")]
        assert all(s.startswith("#") and len(s) < 40 for s in stored) and len(set(stored)) == 2
        with store.transaction() as cur:  # a row as avrec before candidate_sets wrote it
            cur.execute("INSERT INTO impressions(impression_id, ts, user_id, endpoint, policy, policy_version, model, "
                        "model_version, items, candidates, context) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        ("old", 1.0, "u", "recommend", "p", 1, "m", "v", json.dumps(items), json.dumps(record), "{}"))
        fresh = ImpressionLog(store)  # nothing cached: every record comes from the table
        assert [fresh.get(i).candidates for i in ids] == [record] * 4
        assert fresh.get("old").candidates == record and fresh.get(other).candidates["scores"] == [3.0, 1.0]
        assert [imp.candidates for imp in fresh.iter(0)][-2:] == [{**record, "scores": [3.0, 1.0]}, record]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids) and ids == sorted(ids)  # time, tag, counter
    assert abs(int(ids[-1][:12], 16) / 1000 - time.time()) < 60
    many = [new_impression_id(1.0) for _ in range(10_000)]  # one millisecond: the counter keeps them apart
    assert len(set(many)) == len(many) and many == sorted(many)


def test_an_unflushed_transaction_is_committed_and_the_next_one_flushed_again(target: str):
    with EventStore(target) as store:
        log = ImpressionLog(store)  # flush=False by default: committed, not fsynced
        ids = [log.add(user_id="a", endpoint="recommend", policy="greedy", policy_version=0, model="m",
                       model_version="v", items=[], candidates={"item_ids": []}, context={}) for _ in range(3)]
        with EventStore(target) as other:  # another connection sees them at once
            assert all(ImpressionLog(other).get(i) is not None for i in ids)
        if isinstance(store, SqliteStore):  # the setting is restored: events are fsynced as before
            assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        else:
            with store.transaction() as cur:
                cur.execute("SELECT current_setting('synchronous_commit')")
                assert cur.fetchone()[0] == "on"
        assert store.add_events([{"user_id": "a", "item_id": "i", "event": "like"}])
