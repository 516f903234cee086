"""JIDs (RFC 7622) and xmppAddr certificates (RFC 6120 §13.7.1.4, XEP-0178)."""

from __future__ import annotations

import pytest
from cryptography import x509

from pairing.errors import CertificateError, InvalidJID
from pairing.protocol.identity import (
    XMPP_ADDR_OID,
    allows_client_auth,
    build_device_certificate,
    decode_utf8string,
    encode_utf8string,
    format_fingerprint,
    generate_key,
    xmpp_addrs,
)
from pairing.protocol.jid import JID


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Alice@Example.ORG/Phone", ("alice", "example.org", "Phone")),
        ("example.org.", ("", "example.org", "")),
        ("a@b/c/d@e", ("a", "b", "c/d@e")),
    ],
)
def test_jid_parsing_normalises(raw: str, expected: tuple[str, str, str]) -> None:
    jid = JID.parse(raw)
    assert (jid.local, jid.domain, jid.resource) == expected


@pytest.mark.parametrize(
    "raw", ["", "@example.org", "a@", "a b@example.org", "a@example.org/", "x\x00@y"]
)
def test_invalid_jids_say_why(raw: str) -> None:
    with pytest.raises(InvalidJID, match=r"not a valid JID|empty"):
        JID.parse(raw)


def test_bare_and_str() -> None:
    jid = JID.parse("alice@example.org/bot")
    assert str(jid.bare) == "alice@example.org"
    assert str(jid) == "alice@example.org/bot"
    assert jid.bare.with_resource("x") == JID.parse("alice@example.org/x")


@pytest.mark.parametrize("length", [0, 5, 127, 128, 300, 70000])
def test_utf8string_round_trip_at_der_length_boundaries(length: int) -> None:
    text = "é" * (length // 2) + "a" * (length % 2)
    assert decode_utf8string(encode_utf8string(text)) == text


@pytest.mark.parametrize(
    "der", [b"", b"\x0c", b"\x13\x01a", b"\x0c\x05abc", b"\x0c\x81\x01", b"\x0c\x02\xff\xfe"]
)
def test_malformed_utf8string(der: bytes) -> None:
    with pytest.raises(CertificateError):
        decode_utf8string(der)


def test_device_certificate_carries_xmppaddrs_and_client_auth() -> None:
    jids = [JID.parse("alice@example.org/bot"), JID.parse("alice@example.org/bot2")]
    cert = build_device_certificate(generate_key(), jids)
    assert xmpp_addrs(cert) == tuple(jids)
    assert allows_client_auth(cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert all(o.type_id == XMPP_ADDR_OID for o in san.get_values_for_type(x509.OtherName))
    assert not allows_client_auth(
        build_device_certificate(generate_key(), jids[0], client_auth=False)
    )


def test_fingerprint_format() -> None:
    assert format_fingerprint("ab01" * 16).startswith("AB:01:AB:01")
