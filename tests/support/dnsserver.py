"""A tiny authoritative DNS server on 127.0.0.1 for tests: real UDP, real DNS messages.

It answers SRV questions from a table (and NXDOMAIN for every other name), built on
dnspython's message codec, so the resolver under test talks to it exactly as to a real one.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

#: name -> SRV records as (priority, weight, port, target), e.g. (0, 5, 5222, "xmpp.example.").
Zone = Mapping[str, Sequence[tuple[int, int, int, str]]]


def _answer(query: dns.message.Message, zone: Zone) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    question = query.question[0]
    name = question.name.to_text().lower()
    records = zone.get(name)
    if records is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response
    if question.rdtype == dns.rdatatype.SRV:
        texts = [f"{p} {w} {port} {target}" for p, w, port, target in records]
        response.answer.append(
            dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, dns.rdatatype.SRV, texts)
        )
    return response


@contextmanager
def dns_server(zone: Zone) -> Iterator[dns.asyncresolver.Resolver]:
    """Serve ``zone`` on 127.0.0.1 (a free UDP port); yields a resolver that asks only it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    port = sock.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            try:
                query = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue
            sock.sendto(_answer(query, zone).to_wire(), peer)

    thread = threading.Thread(target=serve, name="test-dns", daemon=True)
    thread.start()
    try:
        yield resolver_at(port)
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


def resolver_at(port: int) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    return resolver


@contextmanager
def silent_dns_server() -> Iterator[dns.asyncresolver.Resolver]:
    """A DNS server that never answers (a dropped packet, a dead resolver)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield resolver_at(sock.getsockname()[1])
    finally:
        sock.close()
