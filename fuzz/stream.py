"""Fuzz the XML stream parser and the c2s stream state machine (RFC 6120).

Whatever the peer sends, the stream must answer with events or a stream error and never
raise; a stream error must close it, and closing it must end with ``</stream:stream>``.
The input is split into chunks at bytes 0xFE (so the fuzzer also explores how data is cut)
and the harness acts as the server would: it finishes TLS when asked, and accepts any SASL
attempt and any bind, so that the later states are reached.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from pairing.protocol.jid import JID
    from server_ext.wire.events import (
        AuthRequested,
        BindRequested,
        StreamFailed,
        TLSRequested,
    )
    from server_ext.wire.stream import C2SStream

ALICE = JID.parse("alice@example.org")


def test_one_input(data: bytes) -> None:
    stream = C2SStream("example.org", mechanisms=("PLAIN",), max_stanza_bytes=4096)
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
            elif isinstance(event, StreamFailed):
                assert stream.closed, "a stream error must end the stream"
        written += stream.data_to_send()
    if not stream.closed:
        stream.close("connection-timeout", None)
        written += stream.data_to_send()
    assert written.endswith(b"</stream:stream>")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
