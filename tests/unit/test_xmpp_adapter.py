"""The slixmpp adapter's typed surface, from the XML a server sends (no sockets)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import slixmpp
from slixmpp.features.feature_mechanisms.stanza import Failure
from slixmpp.stanza import StreamError

from pairing.protocol.conditions import DEVICE_NS
from pairing.protocol.enrollment import ENROLL_NS
from pairing.xmpp.connection import authentication_failed, stream_closed
from pairing.xmpp.enrollment import _Redeem

STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
STREAM = "http://etherx.jabber.org/streams"


def stream_error(text: str, *, typed: bool) -> StreamError:
    revoked = f"<revoked xmlns='{DEVICE_NS}'/>" if typed else ""
    xml = ET.fromstring(
        f"<stream:error xmlns:stream='{STREAM}'><reset xmlns='{STREAMS}'/>"
        f"<text xmlns='{STREAMS}'>{text}</text>{revoked}</stream:error>"
    )
    return StreamError(xml=xml)


@pytest.mark.parametrize(
    ("text", "typed", "revoked"),
    [
        ("the device 'bot' was revoked: stolen", True, True),
        ("the device 'revoked-sensor' got a new certificate", False, False),
        ("revoked", False, False),
        ("", True, True),
    ],
)
def test_a_stream_error_is_revoked_only_with_the_typed_condition(
    text: str, typed: bool, revoked: bool
) -> None:
    closed = stream_closed(stream_error(text, typed=typed))
    assert (closed.condition, closed.text, closed.revoked) == ("reset", text, revoked)


@pytest.mark.parametrize(
    ("text", "typed", "revoked"),
    [
        ("this device was revoked: stolen", True, True),
        ("this certificate was revoked: superseded before first use", False, False),
        ("this device was disabled", False, False),
    ],
)
def test_a_sasl_failure_is_revoked_only_with_the_typed_condition(
    text: str, typed: bool, revoked: bool
) -> None:
    """slixmpp hands ``failed_auth`` the stanza, whose ``xml`` keeps the foreign element."""
    element = f"<revoked xmlns='{DEVICE_NS}'/>" if typed else ""
    xml = ET.fromstring(
        f"<failure xmlns='{SASL}'><not-authorized/><text>{text}</text>{element}</failure>"
    )
    refused = authentication_failed(Failure(xml=xml))
    assert (refused.condition, refused.text, refused.revoked) == ("not-authorized", text, revoked)


def test_the_token_is_sent_as_an_escaped_attribute_of_enroll() -> None:
    client = slixmpp.ClientXMPP("alice@example.org/bot", "")
    redeem = _Redeem(client)
    redeem["token"] = "AB'\"<&>CD"
    sent = ET.fromstring(str(redeem))
    assert sent.tag == f"{{{ENROLL_NS}}}enroll"
    assert sent.attrib == {"token": "AB'\"<&>CD"}
    assert len(sent) == 0
