"""The XEP-0114 component face: users reach the ad-hoc commands through their own server.

With a stock server (ejabberd, Prosody), ``server-ext serve`` attaches to it as a component,
e.g. ``pairing.example.org``. A user's client sends its XEP-0050 commands there; the stock
server authenticated the user and stamps the IQ's ``from`` with their full JID (XEP-0114 §1:
the server routes stanzas to the component as it would to a remote domain), so that ``from``
is the requester. Only ``from`` addresses of the served domain are answered: a stock server
with s2s on would deliver IQs from other servers' users too, whose JIDs it never checked.

The commands are :mod:`server_ext.app.adhoc`'s, plus one the ``pairing`` CLI needs on a
stock server: registering its own certificate (:mod:`server_ext.app.certificate_commands`,
what XEP-0257 ``<append/>`` does on the embedded server). After a command that changed the
registry, the face brings the stock server in step *before* it answers (a registered
certificate logs in at once; a revoked device's sessions are closed within the answer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import slixmpp
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.app import adhoc
from server_ext.app.certificate_commands import COMMANDS as CERTIFICATE_COMMANDS
from server_ext.app.handlers import ServerContext
from server_ext.log_limits import CappedLog
from server_ext.model import DeviceState, RegistryChange
from server_ext.stock.base import StockError, StockServer, Unsupported
from server_ext.stock.online import online_table
from server_ext.stock.options import ComponentSettings
from server_ext.wire import namespaces as ns
from server_ext.wire.stanzas import ErrorType, StanzaError

log = logging.getLogger(__name__)
peer_log = CappedLog(log)

#: What the component's disco#info carries, so the ``pairing`` CLI can tell it from other
#: components of the domain (disco#items lists them all).
FEATURE = "urn:xmpp-device-pairing:component:0"
_ACCEPT = "jabber:component:accept"
_RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class ComponentRequester:
    """The user who sent a command, as the stock server authenticated them."""

    jid: JID
    auth_method: str = "stock-server"
    fingerprint: str | None = None
    address: str = ""


#: Commands that read or end live sessions: they get the stock server's online sessions.
_SEES_SESSIONS = frozenset({adhoc.NODE_DEVICES, adhoc.NODE_REVOKE, adhoc.NODE_END_SESSIONS})


@dataclass
class _Outcome:
    """What one command did: registry changes (``ServerContext.changes``) and the sessions
    it ended (recorded by :class:`~server_ext.stock.online.OnlineSession`)."""

    changes: list[RegistryChange] = field(default_factory=list)
    ended: list[tuple[JID, str]] = field(default_factory=list)


class ComponentFace:
    """Attached to the stock server as ``settings.domain`` until :meth:`stop`."""

    def __init__(
        self,
        settings: ComponentSettings,
        secret: str,
        context: Callable[[], ServerContext],
        stock: StockServer,
    ) -> None:
        self.settings = settings
        self._secret = secret
        self._context = context
        self._stock = stock
        self._commands: Mapping[str, adhoc.Command] = {
            **adhoc.BY_NODE,
            **{c.node: c for c in CERTIFICATE_COMMANDS},
        }
        self._xmpp: slixmpp.ComponentXMPP | None = None
        self._runner: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # set while attached

    @property
    def domain(self) -> str:
        return self.settings.domain

    async def start(self, *, wait: float | None = None) -> None:
        """Attach in the background (and again whenever the stream drops); with ``wait``,
        raise :class:`StockError` unless attached within that many seconds."""
        self._runner = asyncio.create_task(self._attach_forever())
        if wait is not None:
            try:
                await asyncio.wait_for(self.ready.wait(), wait)
            except TimeoutError:
                raise StockError(
                    f"could not attach as the component {self.domain} at "
                    f"{self.settings.host}:{self.settings.port} within {wait:g} s (is the "
                    "stock server's component listener set up with the same secret?)"
                ) from None

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            try:
                await runner
            except asyncio.CancelledError:
                pass
        # Cancelling the runner aborted the stream (its finally): the stock server sees the
        # component go, and nothing reconnects.
        self._xmpp = None
        self.ready.clear()

    # -- the stream -----------------------------------------------------------------------

    def _make_stream(self) -> slixmpp.ComponentXMPP:
        xmpp = slixmpp.ComponentXMPP(  # type: ignore[no-untyped-call]
            self.domain, self._secret, self.settings.host, self.settings.port
        )
        xmpp.register_handler(
            CoroutineCallback(
                "pairing commands",
                MatchXPath(f"{{{_ACCEPT}}}iq/{{{adhoc.COMMANDS}}}command"),
                self._on_command,
            )
        )
        for query in (ns.DISCO_INFO, ns.DISCO_ITEMS):
            xmpp.register_handler(
                CoroutineCallback(
                    f"pairing {query}",
                    MatchXPath(f"{{{_ACCEPT}}}iq/{{{query}}}query"),
                    self._on_disco,
                )
            )
        return xmpp

    async def _attach_forever(self) -> None:
        attempt = 0
        while True:
            if await self._attach_once():
                attempt = 0
            delay = _RETRY_SECONDS[min(attempt, len(_RETRY_SECONDS) - 1)]
            attempt += 1
            await asyncio.sleep(delay)

    async def _attach_once(self) -> bool:
        """One stream, until it drops; True when it was attached meanwhile."""
        xmpp = self._make_stream()
        self._xmpp = xmpp
        attached = asyncio.Event()
        dropped = asyncio.Event()
        xmpp.add_event_handler("session_start", lambda _: attached.set())
        xmpp.add_event_handler("disconnected", lambda _: dropped.set())
        xmpp.add_event_handler("connection_failed", lambda _: dropped.set())
        xmpp.connect()
        waiters = [asyncio.create_task(attached.wait()), asyncio.create_task(dropped.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if attached.is_set():
                self.ready.set()
                log.info("attached to the stock server as the component %s", self.domain)
                await dropped.wait()
                log.warning("the component %s lost its stream; attaching again", self.domain)
        finally:
            self.ready.clear()
            for waiter in waiters:
                waiter.cancel()
            xmpp.abort()
        return attached.is_set()

    # -- requests -------------------------------------------------------------------------

    def _requester(self, iq: Any) -> ComponentRequester | None:
        try:
            sender = JID.parse(str(iq["from"]))
        except InvalidJID:
            return None
        if sender.domain != self._context().domain or not sender.local:
            return None
        return ComponentRequester(sender)

    async def _on_disco(self, iq: Any) -> None:
        if iq["type"] != "get":
            return
        query = iq.xml[0]
        if query.tag == f"{{{ns.DISCO_INFO}}}query":
            answer = ET.Element(query.tag)
            if query.get("node"):
                answer.set("node", query.get("node", ""))
            ET.SubElement(
                answer,
                f"{{{ns.DISCO_INFO}}}identity",
                {"category": "component", "type": "generic", "name": "Device pairing"},
            )
            for feature in (ns.DISCO_INFO, ns.DISCO_ITEMS, adhoc.COMMANDS, FEATURE):
                ET.SubElement(answer, f"{{{ns.DISCO_INFO}}}feature", {"var": feature})
        elif query.get("node") == adhoc.COMMANDS:
            answer = ET.Element(query.tag, {"node": adhoc.COMMANDS})
            for command in self._commands.values():
                ET.SubElement(
                    answer,
                    f"{{{ns.DISCO_ITEMS}}}item",
                    {"jid": self.domain, "node": command.node, "name": command.name},
                )
        else:
            answer = ET.Element(query.tag)
            if query.get("node"):
                answer.set("node", query.get("node", ""))
        reply = iq.reply(clear=True)
        reply.xml.append(answer)
        reply.send()

    async def _on_command(self, iq: Any) -> None:
        requester = self._requester(iq)
        if requester is None:
            peer_log.log(
                logging.INFO,
                "foreign requester",
                "component: refused a command from %s (not a user of the served domain)",
                iq["from"],
            )
            self._error(iq, ErrorType.AUTH, "forbidden", "only users of this domain")
            return
        outcome = _Outcome()
        try:
            context = await self._context_for(iq, outcome)
            payload = adhoc.handle(context, requester, iq.xml, commands=self._commands)
            await self._carry_out(outcome, context)
        except StanzaError as exc:
            self._error(iq, exc.error_type, exc.condition, exc.text)
            return
        except StockError as exc:
            # The registry changed, but the stock server could not be brought in step: the
            # user must know, or a "revoked" device would stay trusted without anyone noticing.
            log.error("component: the stock server was not brought in step: %s", exc)
            self._error(
                iq, ErrorType.WAIT, "internal-server-error", f"saved, but the server said: {exc}"
            )
            return
        except Exception:
            log.exception("component: the command %s failed", iq.xml[0].get("node"))
            self._error(iq, ErrorType.WAIT, "internal-server-error")
            return
        reply = iq.reply(clear=True)
        if payload is not None:
            reply.xml.append(payload)
        reply.send()

    async def _context_for(self, iq: Any, outcome: _Outcome) -> ServerContext:
        """The handlers' context: this request's change log, and who is online (asked of
        the stock server only when the command lists devices)."""
        base = self._context()
        changes: Callable[[RegistryChange], None] = outcome.changes.append
        context = dataclasses.replace(base, changes=changes)
        if iq.xml[0].get("node") in _SEES_SESSIONS:
            try:
                online = await self._stock.online()
            except Unsupported:
                online = {}
            sessions = online_table(base.registry, online, outcome.ended)
            context = dataclasses.replace(context, sessions=sessions)
        return context

    async def _carry_out(self, outcome: _Outcome, context: ServerContext) -> None:
        """Trust first (a revoked certificate must not log in again while its sessions are
        being closed), then the sessions: a revoked device's, else the ones ended."""
        if outcome.changes:
            await self._stock.sync_trust()
        revoked = [
            device
            for change in outcome.changes
            if change.device is not None
            and (device := context.registry.devices.get(change.device)) is not None
            and device.state is DeviceState.REVOKED
        ]
        try:
            for device in revoked:
                reason = device.revoked_reason or "no reason given"
                await self._stock.close_device(
                    device,
                    context.registry.devices.chain(device.id),
                    f"the device {device.name!r} was revoked: {reason}",
                )
            if not revoked and outcome.ended:
                await self._stock.close_sessions(
                    [jid for jid, _ in outcome.ended], outcome.ended[0][1]
                )
        except Unsupported as exc:
            log.warning("component: %s", exc)

    def _error(self, iq: Any, error_type: ErrorType, condition: str, text: str = "") -> None:
        reply = iq.reply(clear=True)
        reply["type"] = "error"
        reply["error"]["type"] = error_type.value
        reply["error"]["condition"] = condition
        if text:
            reply["error"]["text"] = text
        reply.send()


__all__ = ["FEATURE", "ComponentFace", "ComponentRequester"]
