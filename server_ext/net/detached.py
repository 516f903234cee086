"""Sessions whose link dropped, kept for their clients to resume (XEP-0198 §5).

One timer for the whole loop, not one per session: a fleet whose links drop together must not
put thousands of timer handles on the loop. A heap holds the deadlines; the single handle is
armed for the earliest one, and entries that were resumed or dropped meanwhile are skipped
when they come up (lazy deletion).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DetachedSessions(Generic[T]):
    """Resumable sessions by resume id, and when each detached one expires."""

    def __init__(self, expire: Callable[[T], None]) -> None:
        self._expire = expire
        self._resumable: dict[str, T] = {}
        self._deadlines: dict[str, float] = {}  # only the detached ones
        self._heap: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")

    def __len__(self) -> int:
        return len(self._deadlines)

    def register(self, resume_id: str, session: T) -> None:
        """``session`` may be resumed with ``resume_id`` (from ``<enabled/>`` or a resume)."""
        self._resumable[resume_id] = session
        self._deadlines.pop(resume_id, None)

    def get(self, resume_id: str) -> T | None:
        return self._resumable.get(resume_id)

    def forget(self, resume_id: str, session: T) -> None:
        """``session`` can no longer be resumed (closed, replaced, revoked, expired)."""
        if self._resumable.get(resume_id) is session:
            del self._resumable[resume_id]
            self._deadlines.pop(resume_id, None)

    def detach(self, resume_id: str, timeout: float) -> None:
        """The link of ``resume_id``'s session dropped: expire it ``timeout`` s from now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._deadlines[resume_id] = deadline
        heapq.heappush(self._heap, (deadline, next(self._order), resume_id))
        if deadline < self._armed_for:
            self._arm(loop)

    def close(self) -> list[T]:
        """Stop the timer; returns every detached session (the server is stopping)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        detached = [self._resumable[i] for i in self._deadlines if i in self._resumable]
        self._resumable.clear()
        self._deadlines.clear()
        self._heap.clear()
        return detached

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_for = float("inf")
        while self._heap:
            deadline, _, resume_id = self._heap[0]
            if self._deadlines.get(resume_id) == deadline:
                self._handle = loop.call_at(deadline, self._fire)
                self._armed_for = deadline
                return
            heapq.heappop(self._heap)  # resumed or dropped since

    def _fire(self) -> None:
        self._handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._heap and self._heap[0][0] <= now:
            deadline, _, resume_id = heapq.heappop(self._heap)
            if self._deadlines.get(resume_id) != deadline:
                continue
            del self._deadlines[resume_id]
            session = self._resumable.pop(resume_id, None)
            if session is not None:
                self._expire(session)
        self._arm(loop)


__all__ = ["DetachedSessions"]
