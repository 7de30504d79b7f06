"""Group commit: concurrent writers share one transaction, so one fsync acknowledges them all.

Each caller hands its rows to :meth:`GroupCommitter.submit` and waits on the returned future. One writer
thread takes every request that is waiting, runs them in one transaction (``run_batch``) and resolves
each future only after the commit returned, so "acknowledged" still means "durable". While that commit
fsyncs, new requests queue up and form the next batch: with N concurrent writers the store does about
one commit per fsync time instead of N.

A batch that fails is retried request by request, so one bad request never fails the others; a store
failure (disk full, read-only, connection lost) then fails each of them with its own error.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

#: the most requests one transaction takes (bounds the time a batch holds the store's write lock)
MAX_BATCH = 512


class GroupCommitter:
    """A writer thread that runs queued write requests in shared transactions.

    ``run_batch(requests)`` must write all ``requests`` (each a list of rows) in one transaction and
    return one result per request, or raise and leave nothing written.
    """

    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], name: str = "avrec-group-commit") -> None:
        self.run_batch = run_batch
        self.name = name
        self._queue: queue.SimpleQueue[tuple[Any, Future] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()
        self._closed = False
        self._busy = 0  # requests taken by the writer thread and not answered yet
        #: transactions committed and requests they carried (for the benchmark and the tests)
        self.commits = 0
        self.requests = 0

    def _ensure_thread(self) -> None:
        # started lazily, and again in a forked child (threads do not survive fork)
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()

    def submit(self, request: Any) -> Future:
        """Queue one request; its future resolves to ``run_batch``'s result for it once committed."""
        if self._closed:
            raise RuntimeError("the store is closed")
        future: Future = Future()
        self._ensure_thread()
        self._queue.put((request, future))
        return future

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            self._busy = 1
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            try:
                self._run(batch)
            finally:
                self._busy = 0

    def _run(self, batch: list[tuple[Any, Future]]) -> None:
        try:
            results = self.run_batch([request for request, _ in batch])
        except BaseException as e:  # noqa: BLE001 - handed to the waiting callers
            if len(batch) == 1:
                batch[0][1].set_exception(e)
                return
            for one in batch:  # isolate the request that failed; the others still commit
                self._run([one])
            return
        self.commits += 1
        self.requests += len(batch)
        for (_, future), result in zip(batch, results):
            future.set_result(result)

    def idle(self) -> bool:
        """Nothing queued and no batch being written (a caller may then write in its own thread)."""
        return not self._busy and self._queue.empty()

    def queued(self) -> int:
        """Requests waiting for the writer thread (not yet in a transaction)."""
        return self._queue.qsize()

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the writer thread."""
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self._queue.put(None)
            thread.join(timeout)
