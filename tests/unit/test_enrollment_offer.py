"""The LAN hand-off carries a v2 URI for an account on a stock server (pair_messages)."""

from __future__ import annotations

import dataclasses

import pytest

from pairing.errors import RemoteProtocolError
from pairing.protocol.jid import JID
from pairing.protocol.pair_messages import EnrollmentOffer, EnrollMode
from pairing.protocol.uri import HTTPSEnrollmentURI

BOT = JID.parse("alice@example.org/bot")
TOKEN = "A" * 32
HTTPS_PIN = "ab" * 32
XMPP_PIN = "cd" * 32


def v2(**changes: object) -> HTTPSEnrollmentURI:
    uri = HTTPSEnrollmentURI(
        BOT, TOKEN, "127.0.0.1", 5443, HTTPS_PIN, "xmpp.example.org", 5222, None
    )
    return dataclasses.replace(uri, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("pin", [None, XMPP_PIN])
def test_an_offer_with_a_v2_uri_round_trips(pin: str | None) -> None:
    offer = EnrollmentOffer.for_https(v2(xmpp_pin=pin))
    again = EnrollmentOffer.from_json(offer.to_json())
    assert again == offer
    assert again.https_uri == v2(xmpp_pin=pin)
    assert (again.host, again.port, again.fingerprint) == ("xmpp.example.org", 5222, pin or "")


def test_an_offer_without_a_uri_is_as_before() -> None:
    offer = EnrollmentOffer(BOT, "127.0.0.1", 5222, XMPP_PIN, EnrollMode.TOKEN, TOKEN)
    assert "uri" not in offer.to_json()
    assert EnrollmentOffer.from_json(offer.to_json()) == offer


@pytest.mark.parametrize(
    "field",
    ["jid", "token", "host", "port", "fingerprint", "mode", "garbage"],
)
def test_a_uri_that_disagrees_with_the_offer_is_refused(field: str) -> None:
    data = EnrollmentOffer.for_https(v2()).to_json()
    changed = {
        "jid": ("jid", "alice@example.org/other"),
        "token": ("token", "B" * 32),
        "host": ("host", "elsewhere.example.org"),
        "port": ("port", 5223),
        "fingerprint": ("fingerprint", XMPP_PIN),
        "mode": ("mode", "xep0257"),
        "garbage": ("uri", "XMPP-DP:2/not a uri"),
    }[field]
    data[changed[0]] = changed[1]
    with pytest.raises(RemoteProtocolError, match="malformed enrollment offer"):
        EnrollmentOffer.from_json(data)
