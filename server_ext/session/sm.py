"""XEP-0198 stream management for one session: the counters, the unacknowledged queue and
the nonzas, without sockets or timers.

:class:`StreamManagement` is created when a bound client sends ``<enable/>`` (§3). The stream
(:class:`server_ext.wire.stream.C2SStream`) tells it of every stanza in and out once it is
attached as the stream's observer; the session answers ``<r/>`` and applies ``<a/>`` with it,
and hands it over to a new connection on ``<resume/>`` (§5). The adapter only keeps detached
sessions and their deadlines (``server_ext.net.detached``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import deque
from enum import Enum

from server_ext.wire import namespaces as ns
from server_ext.wire.xmlwriter import serialize

SM_NS = ns.SM
#: XEP-0198 §4: both counters are unsigned 32-bit integers that wrap to zero.
SEQUENCE_MODULUS = 2**32
#: What one session may hold for its client, whatever the count: 500 stanzas of the largest
#: size the server accepts would otherwise be over 100 MB.
MAX_UNACKED_BYTES = 1024 * 1024
#: §4: the server asks for an ack (<r/>) once this many stanzas are unacknowledged. Clients
#: such as slixmpp acknowledge only when asked, so without it the queue would only grow.
ACK_WINDOW = 5


class SMCondition(Enum):
    """Why a stream-management request failed (the RFC 6120 §8.3.3 condition it carries)."""

    UNEXPECTED_REQUEST = "unexpected-request"  # §3: <enable/> before bind, or twice
    ITEM_NOT_FOUND = "item-not-found"  # §5: an unknown, expired or someone else's previd
    BAD_REQUEST = "bad-request"  # an attribute that is not what the schema says


class HandledCountTooHigh(Exception):
    """XEP-0198 §4: the peer acknowledged stanzas that were never sent."""

    def __init__(self, h: int, send_count: int) -> None:
        super().__init__(f"the peer acknowledged {h} stanzas; {send_count} were sent")
        self.h = h
        self.send_count = send_count


class SMPhase(Enum):
    """Where a managed session is: on a live stream, or waiting for its client to resume."""

    ATTACHED = "attached"
    DETACHED = "detached"


def parse_h(text: str | None) -> int | None:
    """The 'h' attribute as an unsigned 32-bit integer, or None when it is not one."""
    if text is None or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value < SEQUENCE_MODULUS else None


class StreamManagement:
    """The XEP-0198 state of one session: what it handled, what it sent and what is unacked.

    ``max_unacked`` and ``max_bytes`` bound the memory a session may hold for a client that
    never acknowledges (or that is gone): past either, :attr:`overflowed` is set and the
    session must end.
    """

    def __init__(
        self,
        resume_id: str | None,
        *,
        timeout: int,
        max_unacked: int,
        max_bytes: int = MAX_UNACKED_BYTES,
    ) -> None:
        self.resume_id = resume_id
        self.timeout = timeout
        self.phase = SMPhase.ATTACHED
        self._max_unacked = max_unacked
        self._max_bytes = max_bytes
        self._bytes = 0
        self.handled = 0  # stanzas received from the client, mod 2^32 (§4 'h')
        self.sent = 0  # stanzas sent to the client, mod 2^32
        self.acked = 0  # the client's last 'h'
        self._unacked: deque[bytes] = deque()
        self.overflowed = False
        self._requested = False  # an <r/> is out and its <a/> has not come back

    # --- the stream's observer --------------------------------------------------------------

    def stanza_received(self) -> None:
        """§4: 'h' counts each stanza handled from the peer, wrapping at 2^32."""
        self.handled = (self.handled + 1) % SEQUENCE_MODULUS

    def stanza_sent(self, data: bytes) -> None:
        """A stanza left (or, detached, would have left) for the client: keep it until acked."""
        self.sent = (self.sent + 1) % SEQUENCE_MODULUS
        self._unacked.append(data)
        self._bytes += len(data)
        if len(self._unacked) > self._max_unacked or self._bytes > self._max_bytes:
            self.overflowed = True

    # --- acks (§4) -----------------------------------------------------------------------

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    def ack(self, h: int) -> None:
        """Apply the client's 'h': drop the stanzas it acknowledged.

        The difference is taken mod 2^32, so a counter that wrapped acknowledges correctly.
        """
        count = (h - self.acked) % SEQUENCE_MODULUS
        if count > len(self._unacked):
            raise HandledCountTooHigh(h, self.sent)
        for _ in range(count):
            self._bytes -= len(self._unacked.popleft())
        self.acked = h
        self._requested = False

    def ack_due(self) -> bool:
        """Whether to send ``<r/>`` now; once it is sent, not again until an ack arrives."""
        if self._requested or len(self._unacked) < ACK_WINDOW or self.phase is SMPhase.DETACHED:
            return False
        self._requested = True
        return True

    def answer(self) -> bytes:
        """The ``<a h/>`` that answers ``<r/>``."""
        return serialize(ET.Element(ns.clark(SM_NS, "a"), {"h": str(self.handled)}))

    # --- resumption (§5) -----------------------------------------------------------------

    def resume(self, h: int) -> list[bytes]:
        """The client is back with its 'h': the stanzas to send again, oldest first.

        They stay queued (still unacknowledged) and keep their place in the count, since the
        client counts them only when it receives them on the new stream.
        """
        self.ack(h)
        self.phase = SMPhase.ATTACHED
        self._requested = False
        return list(self._unacked)

    def detach(self) -> None:
        self.phase = SMPhase.DETACHED

    def take_unacked(self) -> list[bytes]:
        """Empty the queue: the session ends and these will never be acknowledged."""
        unacked = list(self._unacked)
        self._unacked.clear()
        self._bytes = 0
        return unacked


def sm_element(name: str, **attributes: str) -> ET.Element:
    return ET.Element(ns.clark(SM_NS, name), attributes)


def feature() -> ET.Element:
    """§2: the stream feature, offered after authentication."""
    return sm_element("sm")


def enabled(management: StreamManagement) -> ET.Element:
    """§3: ``<enabled/>``, with the id and 'max' when the session may be resumed."""
    element = sm_element("enabled")
    if management.resume_id is not None:
        element.set("id", management.resume_id)
        element.set("resume", "true")
        element.set("max", str(management.timeout))
    return element


def resumed(previd: str, handled: int) -> ET.Element:
    """§5: ``<resumed/>`` with the server's 'h', so the client can drop what arrived."""
    return sm_element("resumed", previd=previd, h=str(handled))


def failed(condition: SMCondition, handled: int | None = None) -> ET.Element:
    """§6: ``<failed/>`` with a stanza error condition; §5: 'h' when the session is known."""
    element = sm_element("failed")
    if handled is not None:
        element.set("h", str(handled))
    ET.SubElement(element, ns.clark(ns.STANZAS, condition.value))
    return element


def too_high(error: HandledCountTooHigh) -> ET.Element:
    """§4: the application condition of the stream error for an impossible 'h'."""
    return sm_element(
        "handled-count-too-high", h=str(error.h), **{"send-count": str(error.send_count)}
    )


__all__ = [
    "ACK_WINDOW",
    "MAX_UNACKED_BYTES",
    "SEQUENCE_MODULUS",
    "SM_NS",
    "HandledCountTooHigh",
    "SMCondition",
    "SMPhase",
    "StreamManagement",
    "enabled",
    "failed",
    "feature",
    "parse_h",
    "resumed",
    "sm_element",
    "too_high",
]
