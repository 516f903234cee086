"""Run an idempotent job once for a burst of requests, never concurrently with itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Coalesced:
    """``await run()`` returns once the job has run *after* the call, or raises its error.

    A call while the job runs waits for the next run, and every call made meanwhile shares
    that one run: a thousand enrollments in a second cost two trust-file rewrites and two
    ``reload_config`` per node, not a thousand. The job must read the current state each
    time it runs (it is idempotent), so the last run covers every change before it.
    """

    def __init__(self, job: Callable[[], Awaitable[None]]) -> None:
        self._job = job
        self._next: asyncio.Future[None] | None = None  # the run that new callers wait for
        self._worker: asyncio.Task[None] | None = None

    async def run(self) -> None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        waiting = self._next
        if self._worker is None:
            self._worker = asyncio.create_task(self._work())
        # shield: a caller that gives up (its request was cancelled) must not cancel the run
        # the other callers are waiting for.
        await asyncio.shield(waiting)

    async def _work(self) -> None:
        try:
            while self._next is not None:
                current, self._next = self._next, None
                try:
                    await self._job()
                except asyncio.CancelledError:
                    # Shut down mid-run: nobody may wait forever for a run that never comes.
                    for pending in (current, self._next):
                        if pending is not None:
                            pending.cancel()
                    self._next = None
                    raise
                except Exception as exc:
                    current.set_exception(exc)
                    # Retrieved here too: a run nobody awaits any more must not log
                    # "exception was never retrieved".
                    current.exception()
                else:
                    current.set_result(None)
        finally:
            self._worker = None

    async def drain(self) -> None:
        """Wait for the run in progress and any queued one (at shutdown)."""
        worker = self._worker
        if worker is not None:
            await asyncio.shield(worker)
