"""The device's side of renewal after expiry, as a slixmpp stream feature (docs/protocol.md).

It runs after TLS and before SASL, like token redemption: the pin has been checked by then,
the TLS handshake presented the *new* certificate, and ``<renew/>`` carries the expired one
with the expired key's signature (:mod:`pairing.protocol.renewal`).
"""

from __future__ import annotations

import asyncio
import base64
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, ClassVar

import slixmpp
from slixmpp.stanza import StreamFeatures
from slixmpp.xmlstream import ElementBase, StanzaBase, register_stanza_plugin

from pairing.errors import PairingError
from pairing.protocol.renewal import RENEW_NS, RenewCondition
from pairing.xmpp.enrollment import answers, failure_of

_ORDER = 50  # before SASL (slixmpp's mechanisms feature is 100)


class RenewalDenied(PairingError):
    """The server refused the renewal; ``condition`` says why (docs/protocol.md)."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(f"renewal refused: {condition}" + (f" ({text})" if text else ""))
        self.condition = condition
        self.text = text

    @property
    def revoked(self) -> bool:
        """The device was revoked: it will never log in again, whatever it tries."""
        return self.condition == RenewCondition.REVOKED


class RenewalUnanswered(PairingError):
    """The request was sent but no answer came: the server may or may not have registered it."""


class RenewalNotOffered(PairingError):
    """The server did not offer renewal before SASL (it is not this project's server)."""


@dataclass(frozen=True, slots=True)
class Renewed:
    jid: str
    name: str


class RenewalOffer:
    """One renewal on one stream: whether the request left this machine, and the answer."""

    def __init__(self, outcome: asyncio.Future[Renewed]) -> None:
        self.outcome = outcome
        self.sent = False

    @property
    def registered(self) -> bool:
        """The server said the new certificate is registered."""
        return self.outcome.done() and self.outcome.exception() is None

    @property
    def refusal(self) -> RenewalDenied | None:
        if not self.outcome.done():
            return None
        refused = self.outcome.exception()
        return refused if isinstance(refused, RenewalDenied) else None


class _Feature(ElementBase):
    name = "renew"
    namespace = RENEW_NS
    plugin_attrib = "renew"
    interfaces: ClassVar[set[str]] = set()


class _Renew(StanzaBase):
    """``<renew xmlns='…'><expired/><signature/></renew>`` (docs/protocol.md)."""

    name = "renew"
    namespace = RENEW_NS
    interfaces: ClassVar[set[str]] = set()

    def setup(self, xml: Any = None) -> bool:
        # In our namespace, not the stream's (as pairing.xmpp.enrollment's <enroll/>).
        created: bool = super().setup(xml)
        self.xml.tag = self.tag_name()
        return created


def offer_renewal(
    client: slixmpp.ClientXMPP, expired_der: bytes, signature: bytes, *, timeout: float = 10.0
) -> RenewalOffer:
    """Renew when the server offers it; the offer tells the outcome.

    ``client`` must present the new certificate; ``signature`` is
    :func:`pairing.protocol.renewal.sign_renewal` over it with the expired key.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[Renewed] = loop.create_future()
    offer = RenewalOffer(outcome)
    register_stanza_plugin(StreamFeatures, _Feature)
    answer = answers(client)

    async def negotiate(features: Any) -> bool:
        if outcome.done():
            return False  # already renewed on this stream
        offer.sent = True  # from here on, the server may register the new certificate
        request = _Renew(client)
        ET.SubElement(request.xml, f"{{{RENEW_NS}}}expired").text = base64.b64encode(
            expired_der
        ).decode()
        ET.SubElement(request.xml, f"{{{RENEW_NS}}}signature").text = base64.b64encode(
            signature
        ).decode()
        request.send()
        try:
            reply = await asyncio.wait_for(answer.get(), timeout)
        except TimeoutError:
            outcome.set_exception(
                RenewalUnanswered(f"the server did not answer the renewal within {timeout:g} s")
            )
            client.abort()
            return True
        if reply.name == "success":
            outcome.set_result(Renewed(reply.xml.get("jid", ""), reply.xml.get("name", "")))
            return False  # go on to SASL EXTERNAL with the new certificate
        condition, text = failure_of(reply)
        if condition == RenewCondition.ALREADY_REGISTERED:
            # A retry after a lost answer: the new certificate is ours already, so log in.
            outcome.set_result(Renewed("", ""))
            return False
        outcome.set_exception(RenewalDenied(condition, text))
        client.abort()
        return True

    client.register_feature("renew", negotiate, restart=True, order=_ORDER)
    return offer
