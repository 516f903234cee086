"""Fuzz the XML stream parser and the c2s stream state machine (RFC 6120).

Whatever the peer sends, the stream must answer with events or a stream error and never
raise; a stream error must close it, and closing it must end with ``</stream:stream>``.
The input is split into chunks at bytes 0xFE (so the fuzzer also explores how data is cut)
and the harness acts as the server would: it finishes TLS when asked, and accepts any SASL
attempt and any bind, so that the later states are reached. After bind it keeps XEP-0198
stream management as the session does (enable, ``<r/>``, ``<a h/>``), so the counters and
'h' parsing are fuzzed too.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import atheris

with atheris.instrument_imports():
    from pairing.protocol.jid import JID
    from server_ext.session import sm
    from server_ext.wire.events import (
        AuthRequested,
        BindRequested,
        NonzaReceived,
        StreamFailed,
        TLSRequested,
    )
    from server_ext.wire.stream import C2SStream

ALICE = JID.parse("alice@example.org")


def test_one_input(data: bytes) -> None:
    stream = C2SStream(
        "example.org",
        mechanisms=("PLAIN",),
        max_stanza_bytes=4096,
        session_namespaces=(sm.SM_NS,),
        session_features=(sm.feature(),),
    )
    management: sm.StreamManagement | None = None
    written = b""
    for chunk in data.split(b"\xfe"):
        if stream.closed:
            break
        for event in stream.receive_data(chunk):
            if isinstance(event, TLSRequested):
                stream.tls_established(mechanisms=("PLAIN",))
            elif isinstance(event, AuthRequested):
                stream.auth_succeeded(ALICE)
            elif isinstance(event, BindRequested):
                stream.bind_succeeded(event.iq_id, ALICE.with_resource("r"))
            elif isinstance(event, NonzaReceived):
                management = stream_management(stream, management, event.element)
            elif isinstance(event, StreamFailed):
                assert stream.closed, "a stream error must end the stream"
        written += stream.data_to_send()
    if not stream.closed:
        stream.close("connection-timeout", None)
        written += stream.data_to_send()
    assert written.endswith(b"</stream:stream>")


def stream_management(
    stream: C2SStream, management: sm.StreamManagement | None, element: ET.Element
) -> sm.StreamManagement | None:
    """What the session does with an XEP-0198 nonza, without the registry behind it."""
    name = element.tag.rsplit("}", 1)[-1]
    if name == "enable" and management is None:
        management = sm.StreamManagement("id", timeout=60, max_unacked=8)
        stream.observer = management
        stream.send_nonza(sm.enabled(management))
    elif name == "r" and management is not None:
        stream.send_nonza_bytes(management.answer())
    elif name == "a" and management is not None:
        h = sm.parse_h(element.get("h"))
        if h is None:
            stream.close("invalid-xml", None)
            return management
        try:
            management.ack(h)
        except sm.HandledCountTooHigh as error:
            stream.close("undefined-condition", None, sm.too_high(error))
    else:
        stream.send_nonza(sm.failed(sm.SMCondition.UNEXPECTED_REQUEST))
    return management


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
