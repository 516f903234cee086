"""The pairing connections of one window or advertising device, ended when it closes.

asyncio's streams (Python 3.11) log a traceback for a connection handler whose task ends
cancelled, which is what ``asyncio.run`` does to every connection still open when a window
times out or a device pairs. So each side keeps its connections here and closes them itself:
each handler ends normally, and the user sees one line, not a ``CancelledError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ConnectionTasks:
    """Runs one handler per connection and cancels the ones still running on :meth:`close`."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The ``asyncio.start_server`` callback (also awaited for outgoing connections)."""
        task = asyncio.current_task()
        assert task is not None
        if self.closed:
            writer.close()
            return
        self._tasks.add(task)
        try:
            await self._handler(reader, writer)
        except asyncio.CancelledError:
            # Only close(), or asyncio.run shutting down, cancels these tasks: the window or
            # the device is closing, which is no error for this connection.
            task.uncancel()
        finally:
            self._tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        """Cancel every running handler and wait until each has said goodbye."""
        self.closed = True
        running = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
