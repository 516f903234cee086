"""The c2s stream state machine (RFC 6120 negotiation), driven with bytes and no sockets."""

from __future__ import annotations

import base64

import pytest

from pairing.protocol.jid import JID
from server_ext.wire.events import (
    AuthAborted,
    AuthRequested,
    AuthResponse,
    BindRequested,
    Phase,
    StanzaReceived,
    StreamEnded,
    StreamFailed,
    TLSRequested,
)
from server_ext.wire.negotiation import PROCEED
from server_ext.wire.stream import MAX_AUTH_ATTEMPTS, C2SStream, LocalProtocolError

HEADER = (
    b"<?xml version='1.0'?><stream:stream to='example.org' version='1.0' "
    b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


def secured(mechanisms: tuple[str, ...] = ("EXTERNAL", "PLAIN")) -> C2SStream:
    stream = C2SStream("example.org")
    stream.receive_data(HEADER)
    assert stream.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>") == [
        TLSRequested()
    ]
    stream.data_to_send()
    stream.tls_established(mechanisms=mechanisms)
    stream.receive_data(HEADER)
    stream.data_to_send()
    return stream


def authenticated() -> C2SStream:
    stream = secured()
    stream.receive_data(f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGE=</auth>".encode())
    stream.auth_succeeded(JID.parse("alice@example.org"))
    stream.receive_data(HEADER)
    stream.data_to_send()
    return stream


def bound() -> C2SStream:
    stream = authenticated()
    stream.receive_data(
        b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
    )
    stream.bind_succeeded("b", JID.parse("alice@example.org/phone"))
    stream.data_to_send()
    return stream


def test_first_features_require_starttls() -> None:
    stream = C2SStream("example.org")
    assert stream.receive_data(HEADER) == []
    out = stream.data_to_send()
    assert b"<stream:stream" in out
    assert b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>" in out
    assert b"mechanism" not in out


def test_anything_but_starttls_before_tls_is_a_policy_violation() -> None:
    """RFC 6120 §5.3.1: TLS is mandatory here, so SASL in plaintext ends the stream."""
    stream = C2SStream("example.org")
    stream.receive_data(HEADER)
    stream.data_to_send()
    events = stream.receive_data(f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGE=</auth>".encode())
    assert events == [StreamFailed("policy-violation", "STARTTLS is required before anything else")]
    out = stream.data_to_send()
    assert b"<policy-violation" in out and out.endswith(b"</stream:stream>")
    assert stream.closed


def test_bytes_after_starttls_are_discarded_until_tls() -> None:
    """Plaintext injected after <starttls/> must never be processed (STARTTLS injection)."""
    stream = C2SStream("example.org")
    stream.receive_data(HEADER)
    events = stream.receive_data(
        b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
        + f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGE=</auth>".encode()
    )
    assert events == [TLSRequested()]
    assert stream.receive_data(b"<presence/>") == []
    assert stream.phase is Phase.TLS_PENDING


def test_mechanisms_offered_after_tls() -> None:
    stream = C2SStream("example.org")
    stream.receive_data(HEADER)
    stream.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    stream.data_to_send()
    stream.tls_established(mechanisms=("EXTERNAL", "SCRAM-SHA-256"))
    stream.receive_data(HEADER)
    out = stream.data_to_send()
    assert b"<mechanism>EXTERNAL</mechanism><mechanism>SCRAM-SHA-256</mechanism>" in out


@pytest.mark.parametrize(
    ("body", "expected"),
    [("", None), ("=", b""), (base64.b64encode(b"\0alice\0pw").decode(), b"\0alice\0pw")],
)
def test_initial_response_decoding(body: str, expected: bytes | None) -> None:
    """RFC 6120 §6.4.2: no text means no initial response, '=' means an empty one."""
    stream = secured()
    events = stream.receive_data(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{body}</auth>".encode())
    assert events == [AuthRequested("PLAIN", expected)]


def test_unoffered_mechanism_is_refused_without_ending_the_stream() -> None:
    stream = secured(("PLAIN",))
    events = stream.receive_data(f"<auth xmlns='{SASL}' mechanism='EXTERNAL'>=</auth>".encode())
    assert events == []
    assert b"<invalid-mechanism/>" in stream.data_to_send()
    assert stream.phase is Phase.SECURED


def test_bad_base64_is_incorrect_encoding() -> None:
    stream = secured()
    stream.receive_data(f"<auth xmlns='{SASL}' mechanism='PLAIN'>!!!</auth>".encode())
    assert b"<incorrect-encoding/>" in stream.data_to_send()


def test_challenge_response_round_trip() -> None:
    stream = secured(("SCRAM-SHA-1",))
    stream.receive_data(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-1'>eA==</auth>".encode())
    stream.auth_challenge(b"server-first")
    assert base64.b64encode(b"server-first") in stream.data_to_send()
    events = stream.receive_data(f"<response xmlns='{SASL}'>eQ==</response>".encode())
    assert events == [AuthResponse(b"y")]


def test_abort_mid_exchange_and_stray_abort() -> None:
    """A Gajim-style <abort/> after a failure is ignored; mid-exchange it aborts."""
    stream = secured()
    stream.receive_data(f"<auth xmlns='{SASL}' mechanism='PLAIN'/>".encode())
    assert stream.receive_data(f"<abort xmlns='{SASL}'/>".encode()) == [AuthAborted()]
    assert b"<aborted/>" in stream.data_to_send()
    assert stream.receive_data(f"<abort xmlns='{SASL}'/>".encode()) == []
    assert stream.data_to_send() == b""


def test_too_many_failures_close_the_stream() -> None:
    """RFC 6120 §6.4.5: after a reasonable number of retries the stream is closed."""
    stream = secured()
    for _ in range(MAX_AUTH_ATTEMPTS):
        stream.receive_data(f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGE=</auth>".encode())
        stream.auth_failed("not-authorized", "wrong password")
    out = stream.data_to_send()
    assert out.count(b"<not-authorized/>") == MAX_AUTH_ATTEMPTS
    assert b"<policy-violation" in out
    assert stream.closed


def test_success_restarts_the_stream_and_offers_bind() -> None:
    stream = secured()
    stream.receive_data(f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGE=</auth>".encode())
    stream.auth_succeeded(JID.parse("alice@example.org"))
    assert f"<success xmlns='{SASL}'/>".encode() in stream.data_to_send()
    stream.receive_data(HEADER)
    out = stream.data_to_send()
    assert b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>" in out
    assert stream.authenticated_jid == JID.parse("alice@example.org")


def test_stanza_before_bind_is_not_authorized() -> None:
    """RFC 6120 §7.1: no stanzas before a resource is bound."""
    stream = authenticated()
    events = stream.receive_data(b"<message to='bob@example.org'><body>hi</body></message>")
    assert isinstance(events[0], StreamFailed)
    assert events[0].condition == "not-authorized"


def test_bind_request_carries_the_resource() -> None:
    stream = authenticated()
    events = stream.receive_data(
        b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        b"<resource>phone</resource></bind></iq>"
    )
    assert events == [BindRequested("b1", "phone")]
    stream.bind_succeeded("b1", JID.parse("alice@example.org/phone"))
    assert b"<jid>alice@example.org/phone</jid>" in stream.data_to_send()
    assert stream.phase is Phase.BOUND


def test_stanzas_are_stamped_with_the_session_jid() -> None:
    """RFC 6120 §8.1.2.1: the server stamps 'from' with the full JID of the session."""
    stream = bound()
    (event,) = stream.receive_data(b"<message to='bob@example.org'><body>hi</body></message>")
    assert isinstance(event, StanzaReceived)
    assert event.element.get("from") == "alice@example.org/phone"


def test_spoofed_from_is_a_stream_error() -> None:
    stream = bound()
    (event,) = stream.receive_data(b"<message from='bob@example.org/x' to='carol@example.org'/>")
    assert isinstance(event, StreamFailed)
    assert event.condition == "invalid-from"


def test_iq_without_id_gets_bad_request() -> None:
    stream = bound()
    assert stream.receive_data(b"<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>") == []
    assert b"<bad-request" in stream.data_to_send()


def test_unknown_top_level_element_is_unsupported_stanza_type() -> None:
    stream = bound()
    (event,) = stream.receive_data(b"<foo xmlns='jabber:client'/>")
    assert isinstance(event, StreamFailed)
    assert event.condition == "unsupported-stanza-type"


def test_wrong_domain_is_host_unknown() -> None:
    stream = C2SStream("example.org")
    (event,) = stream.receive_data(HEADER.replace(b"example.org", b"example.net"))
    assert isinstance(event, StreamFailed)
    assert event.condition == "host-unknown"
    out = stream.data_to_send()
    # RFC 6120 §4.9.1.2: a stream error is sent inside a stream header of our own.
    assert out.index(b"<stream:stream") < out.index(b"<host-unknown")


def test_restricted_xml_ends_the_stream() -> None:
    """RFC 6120 §11.1: DTDs and the like get <restricted-xml/>."""
    stream = C2SStream("example.org")
    (event,) = stream.receive_data(b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>")
    assert isinstance(event, StreamFailed)
    assert event.condition == "restricted-xml"
    assert stream.closed


def test_peer_close_is_answered_with_our_close() -> None:
    stream = bound()
    assert stream.receive_data(b"</stream:stream>") == [StreamEnded()]
    assert stream.data_to_send().endswith(b"</stream:stream>")
    assert stream.receive_data(b"<presence/>") == []


def test_out_of_order_calls_are_local_errors() -> None:
    stream = C2SStream("example.org")
    with pytest.raises(LocalProtocolError):
        stream.auth_succeeded(JID.parse("alice@example.org"))


def test_proceed_is_the_bytes_it_always_was() -> None:
    assert PROCEED == b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
