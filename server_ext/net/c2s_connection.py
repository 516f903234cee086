"""One client connection of the embedded server: the socket, TLS records and timers around the
sans-I/O :class:`~server_ext.session.c2s.C2SSession` (the listeners are
:mod:`server_ext.net.server`)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from pairing.protocol.jid import JID
from server_ext.auth.scram import ChannelBindings
from server_ext.log_limits import CappedLog
from server_ext.session.actions import (
    Action,
    Authenticated,
    Bound,
    HoldFailure,
    ResumeRequested,
    SMEnabled,
    StartTLS,
)
from server_ext.session.c2s import C2SSession
from server_ext.wire.tls import TLSEngine, TLSError
from server_ext.wire.xmlwriter import STREAM_CLOSE, stream_error, stream_header

if TYPE_CHECKING:
    from server_ext.net.server import Server

log = logging.getLogger(__name__)
peer_log = CappedLog(log)  # for what peers do wrong: they must not be able to flood the log

_WRITE_LIMIT = 4 * 1024 * 1024  # a peer that stops reading is cut off past this backlog


class C2SConnection(asyncio.Protocol):
    """One client connection: the socket, TLS records and timers around a :class:`C2SSession`.

    Everything the protocol decides lives in the session; this class only moves bytes,
    switches TLS on, and keeps the two timers (the authentication deadline, a held failure).
    """

    def __init__(self, server: Server, *, direct_tls: bool) -> None:
        self.server = server
        self.direct_tls = direct_tls
        self.session: C2SSession | None = None
        self.transport: asyncio.Transport | None = None
        self.tls: TLSEngine | None = TLSEngine(server.tls_context) if direct_tls else None
        self._tls_ready = False
        self.address = "?"
        self._counted = False
        self._timer: asyncio.TimerHandle | None = None
        self._hold: asyncio.TimerHandle | None = None
        self._closing = False
        self._superseded = False  # its session continues on another connection (XEP-0198)
        self.available = False
        self.priority = 0
        self.csi_known: set[JID] | None = None  # XEP-0352, see Dispatcher.client_state

    # --- Session protocol (what the session table routes to) ------------------------------

    @property
    def jid(self) -> JID:
        session = self.session
        assert session is not None and session.jid is not None
        jid: JID = session.jid
        return jid

    @property
    def fingerprint(self) -> str | None:
        return self.session.fingerprint if self.session is not None else None

    @property
    def auth_method(self) -> str:
        return self.session.auth_method if self.session is not None else ""

    def set_presence(self, available: bool, priority: int) -> None:
        self.available = available
        self.priority = priority

    def deliver(self, element: ET.Element) -> None:
        session = self.session
        if session is None or self._superseded:
            return
        session.deliver(element)
        if session.detached:
            if session.over_quota:
                self.drop()  # the client would not get them all back: end the session now
            return
        self._flush()

    def request_ack(self) -> None:
        """XEP-0198 §4: ask the client to acknowledge what it has received."""
        if self.session is not None and not self._superseded:
            self.session.request_ack()
            self._flush()

    def terminate(self, condition: str, text: str, application: ET.Element | None = None) -> None:
        """Close this session with a stream error right after the current work is written."""
        asyncio.get_running_loop().call_soon(self.shutdown, condition, text, application)

    def shutdown(
        self, condition: str | None, text: str | None, application: ET.Element | None = None
    ) -> None:
        session = self.session
        if self._superseded or session is None:
            return
        if session.detached:
            # A detached session ends at once (a revocation, a new login of its resource);
            # there is no stream to say why on.
            self.drop()
            return
        if self._closing:
            return
        session.close(condition, text, application)
        self._flush()

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        server = self.server
        server.connections.add(self)
        transport.set_write_buffer_limits(high=_WRITE_LIMIT)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Nagle plus delayed ACK cost Prosody 40 ms per login (docs/performance.md).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not server.unauthenticated.acquire(self.address):
            peer_log.log(
                logging.WARNING,
                "connection cap",
                "too many unauthenticated connections from %s",
                self.address,
            )
            if not self.direct_tls:
                transport.write(
                    stream_header(stream_id=secrets.token_hex(8), from_domain=server.config.domain)
                    + stream_error("policy-violation", "too many connections from your address")
                    + STREAM_CLOSE
                )
            self._closing = True
            transport.close()
            return
        self._counted = True
        self.session = C2SSession(
            server.session_services, self, address=self.address, direct_tls=self.direct_tls
        )
        self._timer = asyncio.get_running_loop().call_later(
            server.config.auth_timeout, self._auth_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        server.connections.discard(self)
        self._release_slot()
        for timer in (self._timer, self._hold):
            if timer is not None:
                timer.cancel()
        self._timer = self._hold = None
        self._closing = True
        session = self.session
        if self._superseded or session is None:
            return
        management = session.sm
        if session.resumable and management is not None and management.resume_id is not None:
            # XEP-0198 §5: the link dropped without a closing tag; keep the session (still
            # routed to, still available) for its client to resume within 'max' seconds.
            session.detach()
            server.detached.detach(management.resume_id, management.timeout)
            # What a detached session keeps is its SM queue and routing facts: the TLS
            # engine and the transport of the dead link go now.
            self.tls = None
            self.transport = None
            return
        self.drop()

    def drop(self) -> None:
        """End the session for good: unroute it and tell the account's other resources."""
        server, session = self.server, self.session
        if session is None or self._superseded:
            return
        self._superseded = True  # nothing more happens on this object
        if session.sm is not None and session.sm.resume_id is not None:
            server.detached.forget(session.sm.resume_id, self)
        if session.jid is not None:
            removed = server.sessions.remove(self)
            if session.detached:
                session.bounce_unacked()  # its client is not coming back for them
            if removed and self.available:
                server.dispatcher.went_offline(self)

    def data_received(self, data: bytes) -> None:
        if self._closing or self.session is None:
            return
        try:
            self._receive(self.session, data)
        except Exception:
            # One broken connection must never take the server or other sessions down.
            log.exception("internal error on a connection from %s", self.address)
            self.session.close("internal-server-error", None)
            self._flush()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    # --- plumbing -------------------------------------------------------------------------

    def _receive(self, session: C2SSession, data: bytes) -> None:
        tls = self.tls
        if tls is not None:
            try:
                data = tls.receive(data)
            except TLSError as exc:
                peer_log.log(logging.INFO, "tls", "TLS failed with %s: %s", self.address, exc)
                self._write_raw(tls.outgoing())
                self._abort()
                return
            self._write_raw(tls.outgoing())
            if not self._tls_ready:
                if not tls.handshake_done:
                    return
                self._tls_ready = True
                session.tls_established(
                    tls.peer_certificate,
                    ChannelBindings(tls.channel_binding_types(), tls.channel_binding),
                )
            if not data:
                if tls.peer_closed:
                    self._abort()
                return
        self._carry_out(session.receive_data(data))
        self._flush()
        if self.tls is not None and self.tls.peer_closed:
            self._abort()

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StartTLS):
                self._flush()  # <proceed/> goes out in plaintext, then TLS starts
                self.tls = TLSEngine(self.server.tls_context)
            elif isinstance(action, Authenticated):
                self._release_slot()
            elif isinstance(action, Bound):
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            elif isinstance(action, SMEnabled):
                self.server.detached.register(action.resume_id, self)
            elif isinstance(action, ResumeRequested):
                self._resume(action)
            elif isinstance(action, HoldFailure) and self.transport is not None:
                self.transport.pause_reading()
                self._hold = asyncio.get_running_loop().call_later(action.delay, self._release)

    def _resume(self, request: ResumeRequested) -> None:
        """XEP-0198 §5: take over the session ``request.previd`` names, if it is ours."""
        session = self.session
        assert session is not None
        server = self.server
        previous = server.detached.get(request.previd)
        if previous is None or previous is self or previous.session is None:
            session.refuse_resume()
            return
        actions = session.resume(previous.session, request.previd, request.h)
        if not actions:
            return  # refused: the session stays where it was
        # This connection is the session now: routing, presence and the resume id move here;
        # the old link, if the server had not noticed it died, is cut without a word.
        self.available, self.priority = previous.available, previous.priority
        self.csi_known = previous.csi_known
        previous._superseded = True
        server.sessions.add(self)
        server.detached.register(request.previd, self)
        if previous.transport is not None and not previous.transport.is_closing():
            previous._closing = True
            previous.transport.abort()
        log.debug("session %s resumed from %s", session.jid, self.address)
        self._carry_out(actions)

    def _release(self) -> None:
        self._hold = None
        if self._closing or self.session is None:
            return
        self._carry_out(self.session.release())
        self._flush()
        if self._hold is None and self.transport is not None and not self._closing:
            self.transport.resume_reading()

    def _write_raw(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _flush(self) -> None:
        transport, session = self.transport, self.session
        if transport is None or session is None or transport.is_closing():
            return
        out = session.data_to_send()
        if out:
            if self.tls is not None and self._tls_ready:
                try:
                    self.tls.send(out)
                except TLSError:
                    self._abort()
                    return
                transport.write(self.tls.outgoing())
            else:
                transport.write(out)
        if session.closed:
            self._closing = True
            if self.tls is not None and self._tls_ready:
                self.tls.close()
                self._write_raw(self.tls.outgoing())
            transport.close()
        elif transport.get_write_buffer_size() > _WRITE_LIMIT:
            peer_log.log(
                logging.WARNING, "slow reader", "closing %s: it stopped reading", self.address
            )
            self._abort()

    def _abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    def _release_slot(self) -> None:
        if self._counted:
            self._counted = False
            self.server.unauthenticated.release(self.address)

    def _auth_timed_out(self) -> None:
        self._timer = None
        if not self._closing and self.session is not None:
            self.session.timed_out()
            self._flush()


__all__ = ["C2SConnection"]
