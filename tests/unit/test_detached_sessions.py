"""The detached-session deadlines: one loop timer, earliest first, resumed ones skipped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from server_ext.net.detached import DetachedSessions


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``condition()`` to hold (no timing asserted: a busy machine is slow)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "never happened"
        await asyncio.sleep(0.01)


async def test_deadlines_expire_in_order_and_skip_what_was_resumed_or_dropped() -> None:
    expired: list[str] = []
    table: DetachedSessions[str] = DetachedSessions(expired.append)
    for name in ("a", "b", "c", "d"):
        table.register(f"id-{name}", name)
    table.detach("id-a", 0.06)
    table.detach("id-b", 0.02)
    table.detach("id-c", 0.04)
    table.detach("id-d", 0.03)
    assert len(table) == 4
    table.register("id-b", "b2")  # resumed on another connection: no longer detached
    table.forget("id-d", "d")  # dropped (revoked): gone at once
    assert table.get("id-d") is None and table.get("id-b") == "b2"
    await until(lambda: len(expired) >= 2)
    assert expired == ["c", "a"]
    assert len(table) == 0 and table.get("id-a") is None and table.get("id-b") == "b2"
    # A later detach re-arms the one timer.
    table.detach("id-b", 0.01)
    await until(lambda: len(expired) >= 3)
    assert expired == ["c", "a", "b2"]
    assert table.close() == []
