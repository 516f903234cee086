"""The TCP listener of a pairing window or an advertising device, bound where the user said.

``--interface`` names the addresses mDNS runs on and the window advertises; listening on
every address meanwhile would let anyone who can reach another interface of the machine
(a second network, a VPN) knock on the pairing port. So with interfaces given and no
explicit host, the listener binds those addresses only, all on one port (the port the
advertisement carries).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]

WILDCARDS = ("0.0.0.0", "", "::")  # noqa: S104 - names for "every address", not a bind


def bind_hosts(host: str, interfaces: Sequence[str] | None) -> list[str]:
    """Where to listen: the interfaces when the host is the wildcard, else the host."""
    if interfaces and host in WILDCARDS:
        return list(dict.fromkeys(interfaces))
    return [host]


class Listener:
    """One port, on one or several addresses."""

    def __init__(self, servers: list[asyncio.Server], port: int) -> None:
        self._servers = servers
        self.port = port

    @property
    def bound(self) -> list[tuple[str, int]]:
        """The (address, port) of every listening socket, as the kernel reports them."""
        return [
            (str(sock.getsockname()[0]), int(sock.getsockname()[1]))
            for server in self._servers
            for sock in server.sockets
        ]

    @classmethod
    async def start(cls, handler: Handler, host: str, interfaces: Sequence[str] | None) -> Listener:
        hosts = bind_hosts(host, interfaces)
        first = await asyncio.start_server(handler, hosts[0], 0)
        port = int(first.sockets[0].getsockname()[1])
        listener = cls([first], port)
        try:
            for other in hosts[1:]:
                listener._servers.append(await asyncio.start_server(handler, other, port))
        except OSError:
            listener.close()
            await listener.wait_closed()
            raise
        return listener

    def close(self) -> None:
        for server in self._servers:
            server.close()

    async def wait_closed(self) -> None:
        for server in self._servers:
            await server.wait_closed()
