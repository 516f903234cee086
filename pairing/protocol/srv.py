"""Where a domain's XMPP clients connect: DNS SRV records in the order clients try them.

Pure: the records come in (looked up by :mod:`pairing.xmpp.connection`), the addresses to
try go out, and the one random choice RFC 2782 asks for is a function the caller passes, so
a test can fix it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pairing.errors import ServerUnreachable
from pairing.protocol.address import ServerAddress

#: RFC 6120 §3.2.1: the SRV service and protocol labels of client-to-server streams.
CLIENT_SERVICE = "_xmpp-client._tcp"

#: ``upper -> a uniform integer in [0, upper]`` (RFC 2782 says "inclusive").
Draw = Callable[[int], int]


class ServiceNotOffered(ServerUnreachable):
    """The domain says in DNS that it offers no XMPP client service (an SRV target of ".")."""


@dataclass(frozen=True, slots=True)
class SRVRecord:
    """One SRV answer (RFC 2782): lower ``priority`` first, ``weight`` shares the load."""

    priority: int
    weight: int
    port: int
    target: str  # a domain name, without the trailing dot; "" for the root (".")

    def __post_init__(self) -> None:
        for field, value in (("priority", self.priority), ("weight", self.weight)):
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"an SRV {field} is 0-65535, not {value}")
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"an SRV port is 0-65535, not {self.port}")
        object.__setattr__(self, "target", self.target.rstrip("."))


def _system_draw(upper: int) -> int:
    return random.randint(0, upper)


def order(records: Iterable[SRVRecord], draw: Draw = _system_draw) -> list[SRVRecord]:
    """``records`` in the order to try them (RFC 2782, "Usage rules").

    Lowest priority first; within one priority, a weighted random pick among those not yet
    picked, repeated until none is left, with the weight-0 records placed first so that they
    are chosen only when the random number is 0 (rarely, unless all weights are 0).
    """
    by_priority: dict[int, list[SRVRecord]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    ordered: list[SRVRecord] = []
    for priority in sorted(by_priority):
        remaining = sorted(by_priority[priority], key=lambda r: r.weight != 0)
        while remaining:
            total = sum(r.weight for r in remaining)
            chosen = draw(total)
            if not 0 <= chosen <= total:
                raise ValueError(f"draw({total}) gave {chosen}, outside [0, {total}]")
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= chosen:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


def client_addresses(
    records: Sequence[SRVRecord], draw: Draw = _system_draw
) -> list[ServerAddress]:
    """The addresses to try, in order, from a domain's ``_xmpp-client._tcp`` records.

    RFC 6120 §3.2.1: a single record whose target is "." means the service is decidedly not
    available at this domain (RFC 2782), so there is nothing to try and no fallback either.
    Records with a zero port cannot be connected to and are left out.
    """
    if len(records) == 1 and records[0].target == "":
        raise ServiceNotOffered("its DNS says it offers no XMPP client service (SRV target '.')")
    return [
        ServerAddress(record.target, record.port)
        for record in order(records, draw)
        if record.target and record.port
    ]
