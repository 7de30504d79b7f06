"""Group commit with event-loop futures: each request gets its own result (or its own error) on the loop
that submitted it, after the batch it was in ran, and one commit wakes the loop once."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest

from avrec.serve.stores.group_commit import GroupCommitter, PendingWrites, loop_of


def count_wakeups(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count the loop's call_soon_threadsafe calls (each wakes it); the count is the list's one element."""
    calls = [0]
    original = loop.call_soon_threadsafe

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    return calls



def test_loop_futures_get_their_own_results_after_the_commit():
    ran: list[list[int]] = []
    gate = threading.Event()

    def run_batch(requests: list[int]) -> list[int]:
        gate.wait(5)
        if 13 in requests:
            raise ValueError("thirteen")
        ran.append(list(requests))
        return [r * 10 for r in requests]

    committer = GroupCommitter(run_batch)

    async def main() -> list:
        loop = asyncio.get_running_loop()
        pending = PendingWrites(loop)
        assert loop_of(pending) is loop and loop_of([]) is None and loop_of(None) is None
        pending.extend(committer.submit(r, loop) for r in [1, 2, 13, 4, 5, 6, 7, 8])
        assert all(isinstance(f, asyncio.Future) and not f.done() for f in pending)
        calls = count_wakeups(loop)
        gate.set()
        out = await asyncio.gather(*pending, return_exceptions=True)
        return [out, calls[0]]

    (results, wakeups) = asyncio.run(main())
    assert results[:2] == [10, 20] and results[3:] == [40, 50, 60, 70, 80]
    assert isinstance(results[2], ValueError) and "thirteen" in str(results[2])
    assert sorted(r for batch in ran for r in batch) == [1, 2, 4, 5, 6, 7, 8]  # 13 alone failed
    assert wakeups == len(ran) + 1  # one per committed batch, one for 13 (a failed batch is retried per request)
    thread_future = committer.submit(5)
    assert isinstance(thread_future, Future) and thread_future.result(5) == 50
    committer.close()


def test_a_committed_batch_wakes_the_loop_once():
    gate = threading.Event()
    committer = GroupCommitter(lambda requests: (gate.wait(5), [r + 1 for r in requests])[1])

    async def main() -> tuple[list, int]:
        loop = asyncio.get_running_loop()
        wakes = count_wakeups(loop)
        futures = [committer.submit(r, loop) for r in range(16)]
        gate.set()
        return await asyncio.gather(*futures), wakes[0]

    results, wakes = asyncio.run(main())
    assert results == list(range(1, 17))
    assert wakes == committer.commits <= 2  # the writer may take the first request alone, then the rest
    committer.close()


def test_a_closed_loop_does_not_break_the_writer():
    committer = GroupCommitter(lambda requests: list(requests))
    loop = asyncio.new_event_loop()
    future = committer.submit(1, loop)
    loop.close()
    assert committer.submit(2).result(5) == 2  # the writer thread survived settling a closed loop's future
    assert not future.done()
    committer.close()
    with pytest.raises(RuntimeError, match="closed"):
        committer.submit(3)
