"""Group commit: concurrent writers share one transaction, so one fsync acknowledges them all.

Each caller hands its rows to :meth:`GroupCommitter.submit` and waits on the returned future. One writer
thread takes every request that is waiting, runs them in one transaction (``run_batch``) and resolves
each future only after the commit returned, so "acknowledged" still means "durable". While that commit
fsyncs, new requests queue up and form the next batch: with N concurrent writers the store does about
one commit per fsync time instead of N.

A batch that fails is retried request by request, so one bad request never fails the others; a store
failure (disk full, read-only, connection lost) then fails each of them with its own error.

A request submitted with an event loop (:class:`PendingWrites` carries it) gets an asyncio future, and
a committed batch wakes each loop once for all of its futures: a ``concurrent.futures.Future`` awaited
through ``asyncio.wrap_future`` costs a callback and a wake-up of the loop per request (about 45 µs of
CPU each, measured), a large part of a cached answer.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Union

#: what a submitted write returns: a thread future, or an asyncio future of the loop it was submitted with
Durable = Union[Future, "asyncio.Future[Any]"]

#: the most requests one transaction takes (bounds the time a batch holds the store's write lock)
MAX_BATCH = 512


class PendingWrites(list[Durable]):
    """The durable-write futures one request waits for before it answers, and the event loop that awaits
    them (None: a thread that calls ``.result()``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__()
        self.loop = loop


def loop_of(pending: list[Durable] | None) -> asyncio.AbstractEventLoop | None:
    """The event loop that awaits ``pending`` (None for a plain list or no list)."""
    return pending.loop if isinstance(pending, PendingWrites) else None


def _resolve(outcomes: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    """Settle asyncio futures on their loop's thread (one call per committed batch and loop)."""
    for future, result, error in outcomes:
        if not future.done():  # a client that went away cancelled it
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)


def settle(entries: list[tuple[Durable, Any, BaseException | None]]) -> None:
    """Give each future its result (or error): thread futures at once, asyncio ones with one wake-up of
    each loop."""
    wake: dict[asyncio.AbstractEventLoop, list] = {}
    for future, result, error in entries:
        if isinstance(future, asyncio.Future):
            wake.setdefault(future.get_loop(), []).append((future, result, error))
        elif error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    for loop, outcomes in wake.items():
        try:
            loop.call_soon_threadsafe(_resolve, outcomes)
        except RuntimeError:  # the loop was closed: nobody waits for these any more
            pass


class GroupCommitter:
    """A writer thread that runs queued write requests in shared transactions.

    ``run_batch(requests)`` must write all ``requests`` (each a list of rows) in one transaction and
    return one result per request, or raise and leave nothing written.
    """

    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], name: str = "avrec-group-commit") -> None:
        self.run_batch = run_batch
        self.name = name
        self._queue: queue.SimpleQueue[tuple[Any, Durable] | None] = queue.SimpleQueue()
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

    def submit(self, request: Any, loop: asyncio.AbstractEventLoop | None = None) -> Durable:
        """Queue one request; its future resolves to ``run_batch``'s result for it once committed (an
        asyncio future of ``loop`` when one is given, to be awaited there)."""
        if self._closed:
            raise RuntimeError("the store is closed")
        future: Durable = Future() if loop is None else loop.create_future()
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

    def _run(self, batch: list[tuple[Any, Durable]]) -> None:
        try:
            results = self.run_batch([request for request, _ in batch])
        except BaseException as e:  # noqa: BLE001 - handed to the waiting callers
            if len(batch) == 1:
                settle([(batch[0][1], None, e)])
                return
            for one in batch:  # isolate the request that failed; the others still commit
                self._run([one])
            return
        self.commits += 1
        self.requests += len(batch)
        settle([(future, result, None) for (_, future), result in zip(batch, results)])

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
