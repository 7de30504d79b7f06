"""A small readers-writer lock: requests read the model in parallel, catalogue additions write it alone."""

from __future__ import annotations

import threading
from collections.abc import Callable


class RWLock:
    """Many readers or one writer; writers wait for readers in progress and block new ones."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    @property
    def writer_pending(self) -> bool:
        """A writer holds the lock or waits for it, so a new reader would block."""
        return self._writer or self._waiting_writers > 0

    def read(self) -> _Guard:
        return _Guard(self.acquire_read, self.release_read)

    def write(self) -> _Guard:
        return _Guard(self.acquire_write, self.release_write)


class _Guard:
    def __init__(self, enter: Callable[[], None], leave: Callable[[], None]) -> None:
        self._enter, self._leave = enter, leave

    def __enter__(self) -> None:
        self._enter()

    def __exit__(self, *exc) -> None:
        self._leave()
