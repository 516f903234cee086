"""The device's side of token redemption, as a slixmpp stream feature (docs/protocol.md).

It runs after TLS and before SASL: the pin has been checked by then, and the certificate the
server registers is the one this connection presented.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import slixmpp
from slixmpp.stanza import StreamFeatures
from slixmpp.xmlstream import ElementBase, StanzaBase, register_stanza_plugin
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from pairing.errors import PairingError
from pairing.protocol.enrollment import ENROLL_NS, EnrollCondition

_ORDER = 50  # before SASL (slixmpp's mechanisms feature is 100)


class EnrollmentRefused(PairingError):
    """The server refused the token; ``condition`` says why (docs/protocol.md)."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(f"enrollment refused: {condition}" + (f" ({text})" if text else ""))
        self.condition = condition
        self.text = text


class EnrollmentUnanswered(PairingError):
    """The token was sent but no answer came: the server may or may not have registered it."""


@dataclass(frozen=True, slots=True)
class Enrolled:
    jid: str
    name: str


class TokenOffer:
    """One redemption on one stream: whether the token left this machine, and the answer.

    ``outcome`` is :class:`Enrolled` (registered, now or by an earlier attempt),
    :class:`EnrollmentRefused` (the server answered with a failure, so this attempt registered
    nothing) or :class:`EnrollmentUnanswered`; it stays pending if the stream ended first.
    """

    def __init__(self, outcome: asyncio.Future[Enrolled]) -> None:
        self.outcome = outcome
        self.sent = False

    @property
    def registered(self) -> bool:
        """The server said this certificate is registered."""
        return self.outcome.done() and self.outcome.exception() is None

    @property
    def refusal(self) -> EnrollmentRefused | None:
        """The server's typed refusal, if it sent one."""
        if not self.outcome.done():
            return None
        refused = self.outcome.exception()
        return refused if isinstance(refused, EnrollmentRefused) else None


class _Feature(ElementBase):
    name = "enroll"
    namespace = ENROLL_NS
    plugin_attrib = "enroll"
    interfaces: ClassVar[set[str]] = set()


class _Redeem(StanzaBase):
    """``<enroll xmlns='…' token='…'/>``: the device redeems its token (docs/protocol.md)."""

    name = "enroll"
    namespace = ENROLL_NS
    interfaces: ClassVar[set[str]] = {"token"}

    def setup(self, xml: Any = None) -> bool:
        # A stanza made for a stream takes the stream's namespace (jabber:client); this one
        # lives in ours, as slixmpp's own SASL <auth/> does for its namespace.
        created: bool = super().setup(xml)
        self.xml.tag = self.tag_name()
        return created


class _Success(StanzaBase):
    name = "success"
    namespace = ENROLL_NS
    interfaces: ClassVar[set[str]] = {"jid", "name"}


class _Failure(StanzaBase):
    name = "failure"
    namespace = ENROLL_NS
    interfaces: ClassVar[set[str]] = set()


def answers(client: slixmpp.ClientXMPP) -> asyncio.Queue[StanzaBase]:
    """The server's ``<success/>`` and ``<failure/>`` answers in our namespace, as they come.

    Token redemption and renewal (:mod:`pairing.xmpp.renewal`) share them.
    """
    queue: asyncio.Queue[StanzaBase] = asyncio.Queue()
    client.register_stanza(_Success)
    client.register_stanza(_Failure)
    for cls in (_Success, _Failure):
        client.register_handler(
            Callback(f"enroll {cls.name}", MatchXPath(cls.tag_name()), queue.put_nowait)
        )
    return queue


def failure_of(reply: StanzaBase) -> tuple[str, str]:
    """The condition and text of a ``<failure/>`` answer."""
    condition = next(
        (child.tag.rpartition("}")[2] for child in reply.xml if not child.tag.endswith("text")),
        "undefined",
    )
    text_el = reply.xml.find(f"{{{ENROLL_NS}}}text")
    text = text_el.text or "" if text_el is not None else ""
    return condition, text


def offer_token(client: slixmpp.ClientXMPP, token: str, *, timeout: float = 10.0) -> TokenOffer:
    """Redeem ``token`` when the server offers enrollment; the offer tells the outcome."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[Enrolled] = loop.create_future()
    offer = TokenOffer(outcome)
    register_stanza_plugin(StreamFeatures, _Feature)
    answer = answers(client)

    async def negotiate(features: Any) -> bool:
        if outcome.done():
            return False  # already enrolled on this stream
        offer.sent = True  # from here on, the server may register the certificate
        redeem = _Redeem(client)
        redeem["token"] = token
        redeem.send()
        try:
            reply = await asyncio.wait_for(answer.get(), timeout)
        except TimeoutError:
            outcome.set_exception(
                EnrollmentUnanswered(f"the server did not answer the token within {timeout:g} s")
            )
            client.abort()
            return True
        if reply.name == "success":
            outcome.set_result(Enrolled(reply.xml.get("jid", ""), reply.xml.get("name", "")))
            return False  # go on to SASL EXTERNAL on this same stream
        condition, text = failure_of(reply)
        if condition == EnrollCondition.ALREADY_REGISTERED:
            # A retry after a lost reply: the certificate is ours already, so log in.
            outcome.set_result(Enrolled("", ""))
            return False
        outcome.set_exception(EnrollmentRefused(condition, text))
        client.abort()
        return True

    client.register_feature("enroll", negotiate, restart=True, order=_ORDER)
    return offer
