"""Where an XMPP server listens: a host and a TCP port, parsed once where the user types it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pairing.errors import InvalidServerAddress

#: RFC 6120 §3.2.1: the port for client-to-server streams that start in plaintext (STARTTLS).
DEFAULT_C2S_PORT = 5222


@dataclass(frozen=True, slots=True)
class ServerAddress:
    host: str
    port: int
    direct_tls: bool = False  # XEP-0368: TLS from the first byte instead of STARTTLS

    def __post_init__(self) -> None:
        if not self.host:
            raise InvalidServerAddress("a server address needs a host")
        if not 0 < self.port < 65536:
            raise InvalidServerAddress(f"{self.port} is not a TCP port (1-65535)")

    @classmethod
    def parse(cls, text: str, *, default_port: int = DEFAULT_C2S_PORT) -> ServerAddress:
        """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; a bare IPv6 literal has no port.

        The brackets are RFC 3986 §3.2.2's way to tell an IPv6 address's colons from the port's.
        """
        text = text.strip()
        host: str = text
        port: str | None = None
        if text.startswith("["):
            inside, bracket, rest = text[1:].partition("]")
            if not bracket or not _is_ipv6(inside) or (rest and not rest.startswith(":")):
                raise _invalid(text)
            host, port = inside, (rest[1:] if rest else None)
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        elif ":" in text and not _is_ipv6(text):
            raise _invalid(text)
        if not host:
            raise _invalid(text)
        if port is None:
            return cls(host, default_port)
        if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise _invalid(text)
        return cls(host, int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _invalid(text: str) -> InvalidServerAddress:
    return InvalidServerAddress(f"{text!r} is not a server address (host or host:port)")
