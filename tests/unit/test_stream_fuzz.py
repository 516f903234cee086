"""Mutated streams never crash the state machine: every input ends in events or a stream error."""

from __future__ import annotations

import random

import pytest

from pairing.protocol.jid import JID
from server_ext.wire.events import AuthRequested, BindRequested, StreamFailed, TLSRequested
from server_ext.wire.stream import C2SStream

SESSION = [
    b"<?xml version='1.0'?><stream:stream to='example.org' version='1.0' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams'>",
    b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
]
AFTER_TLS = [
    SESSION[0],
    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>",
]
AFTER_AUTH = [
    SESSION[0],
    b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource>"
    b"</bind></iq>",
    b"<message to='bob@example.org' type='chat'><body>hi &amp; &#x1F600;</body></message>",
    b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq><presence/>",
    b"</stream:stream>",
]
ALPHABET = b"<>/='\"&;!?-[]x \x00\xff\xc3"


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(3)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            del buf[min(pos, len(buf) - 1)]
        elif op == 1:
            buf.insert(pos, rng.choice(ALPHABET))
        elif buf:
            buf[min(pos, len(buf) - 1)] = rng.choice(ALPHABET)
    return bytes(buf)


def drive(chunks: list[bytes], rng: random.Random) -> tuple[int, bool]:
    """Feed a (mutated) session; returns how far it got and whether it failed with an error.

    However it went, the stream must end: closed by the peer's ``</stream:stream>``, by a
    stream error, or by the server's own close (what a timeout or EOF does) from whatever
    state the input left it in, with the closing tag as the last thing it writes.
    """
    stream = C2SStream("example.org", mechanisms=("PLAIN",))
    queue = list(chunks)
    phase = 0
    failed = False
    written = b""
    while queue and not stream.closed:
        data = queue.pop(0)
        # One chunk in four is mutated, so that many sessions get deep before they break.
        if rng.random() < 0.25:
            data = mutate(rng, data)
        for event in stream.receive_data(data):
            if isinstance(event, TLSRequested):
                stream.tls_established(mechanisms=("PLAIN",))
                queue = list(AFTER_TLS)
                phase = 1
            elif isinstance(event, AuthRequested) and phase == 1:
                stream.auth_succeeded(JID.parse("alice@example.org"))
                queue = list(AFTER_AUTH)
                phase = 2
            elif isinstance(event, BindRequested):
                stream.bind_succeeded(event.iq_id, JID.parse("alice@example.org/r"))
                phase = 3
            elif isinstance(event, StreamFailed):
                failed = True
                out = stream.data_to_send()
                written += out
                assert b"<stream:error>" in out
                assert out.endswith(b"</stream:stream>")
                assert stream.closed, "a stream error must end the stream"
        written += stream.data_to_send()
    if not stream.closed:
        stream.close("connection-timeout", None)
        written += stream.data_to_send()
    assert stream.closed
    assert written.endswith(b"</stream:stream>"), written[-80:]
    assert stream.data_to_send() == b""  # nothing after the closing tag
    return phase, failed


@pytest.mark.parametrize("seed", range(300))
def test_mutated_sessions_end_cleanly(seed: int) -> None:
    rng = random.Random(seed)
    drive(list(SESSION), rng)


def test_the_mutations_reach_every_phase_and_the_error_paths() -> None:
    """The fuzz above is only worth something if it gets past TLS, SASL and bind, and fails."""
    outcomes = [drive(list(SESSION), random.Random(seed)) for seed in range(300)]
    phases = [phase for phase, _ in outcomes]
    assert sum(1 for p in phases if p >= 3) >= 15, phases
    assert sum(1 for _, failed in outcomes if failed) >= 30
    assert sum(1 for p, failed in outcomes if p >= 2 and failed) >= 5
