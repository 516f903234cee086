"""The embedded XMPP server: asyncio listeners around the sans-I/O stream and TLS engines.

:class:`Server` holds what one ``server-ext serve`` runs (listeners, the HTTPS face, the admin
channel, the stock-server kind); each client connection is a
:class:`~server_ext.net.c2s_connection.C2SConnection`, and the process around the server
(signals, the banner) is :mod:`server_ext.net.serve`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from pairing.errors import InvalidJID
from pairing.protocol.https_api import XMPPServer
from pairing.protocol.identity import format_fingerprint
from pairing.protocol.jid import JID
from server_ext.admin.admin_channel import AdminListener, serve_admin
from server_ext.admin.token_issuer import HTTPSEnrollment, stock_xmpp
from server_ext.app.account_iq import account_handlers
from server_ext.app.delivery import Dispatcher
from server_ext.app.handlers import ServerContext
from server_ext.app.https_api import HTTPSAPI
from server_ext.app.pair_requests import PairingRequestBook
from server_ext.app.router import SessionTable
from server_ext.app.web_sessions import WebSessions
from server_ext.config import ServerConfig
from server_ext.errors import ConfigError, RegistryError, ServerExtError
from server_ext.model import RegistryChange
from server_ext.net.c2s_connection import C2SConnection
from server_ext.net.component import ComponentFace
from server_ext.net.detached import DetachedSessions
from server_ext.net.https import HTTPSAddress, HTTPSFace, make_tls_context
from server_ext.net.server_certificate import ServerCertificate, load_server_certificate
from server_ext.net.web import WebPages
from server_ext.policy.nonces import NonceBook
from server_ext.policy.throttle import ConnectionCap, LoginThrottle
from server_ext.policy.tokens import TokenRules
from server_ext.session.services import SessionServices
from server_ext.stock.base import StockError, StockServer, close_stale_sessions
from server_ext.stock.changes import apply_device_change
from server_ext.stock.embedded import EmbeddedStock
from server_ext.stock.options import component_settings
from server_ext.storage.registry import Registry
from server_ext.wire.tls import TLSError, make_server_context

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListeningAddress:
    host: str
    port: int
    direct_tls: bool


class Server:
    """What ``server-ext serve`` runs for ``config.domain``: the admin channel, the HTTPS face
    when ``[https]`` has a port, the stock-server kind, and, for the embedded kind, the c2s
    listeners of the project's own XMPP server."""

    def __init__(
        self,
        config: ServerConfig,
        registry: Registry,
        certificate: ServerCertificate,
        *,
        stock: StockServer | None = None,
        stock_secret: str = "",
    ) -> None:
        self.config = config
        self.registry = registry
        self.certificate = certificate
        self.tls_context = make_server_context(certificate.cert_path, certificate.key_path)
        self.sessions = SessionTable()
        self.throttle = LoginThrottle(
            clock=time.monotonic,
            pair_limit=config.failed_logins_per_account_and_address,
            address_limit=config.failed_logins_per_address,
            account_soft_limit=config.failed_logins_before_slowdown,
            max_delay=config.slowdown_max_delay,
            window=config.failed_login_window,
        )
        self.unauthenticated = ConnectionCap(config.max_unauthenticated_per_address)
        self.context = ServerContext(
            config.domain,
            registry,
            self.sessions,
            fingerprint=certificate.fingerprint,
            connect_host=config.connect_host,
            connect_port=config.port,
            token_rules=token_rules(config),
            rotation_interval=dt.timedelta(seconds=config.rotation_interval),
            renewal_grace=dt.timedelta(seconds=config.renewal_grace),
            changes=self.registry_changed,
        )
        # The stock-server kind; the embedded one is this server's own session table.
        self.stock: StockServer = stock or EmbeddedStock(lambda: self.context)
        self._stock_secret = stock_secret
        self._tasks: set[asyncio.Task[None]] = set()
        self.nonces = NonceBook(time.monotonic)
        # Failed HTTPS requests (bad signatures, unknown tokens or nonces) are counted per
        # address like failed token redemptions, in a throttle of their own.
        self.https_throttle = LoginThrottle(
            clock=time.monotonic,
            address_limit=config.failed_logins_per_address,
            window=config.failed_login_window,
        )
        self.https: HTTPSFace | None = None
        # The web page (server_ext/net/web.py and its web_*.py page groups), on the HTTPS
        # face: its logins and the pairing requests devices make for their owners to approve
        # there.
        self.web_sessions = WebSessions(registry.clock, registry.accounts.get)
        self.pair_requests = PairingRequestBook(registry, config.domain)
        self.web = WebPages(self)
        # On a stock server, users reach the ad-hoc commands through this component.
        self.component: ComponentFace | None = None
        self.dispatcher = Dispatcher(self.context, account_handlers())
        self.session_services = SessionServices(
            self.context,
            self.dispatcher,
            self.throttle,
            config.max_stanza_bytes,
            registry.accounts.server_secret("scram-fake-salt"),
            resume_timeout=int(config.resume_timeout),
            max_unacked=config.max_unacked_stanzas,
        )
        # XEP-0198: resumable sessions by id, and the detached ones' deadlines (one timer).
        self.detached: DetachedSessions[C2SConnection] = DetachedSessions(lambda conn: conn.drop())
        self.addresses: list[ListeningAddress] = []
        self._listeners: list[asyncio.Server] = []
        self.connections: set[C2SConnection] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._admin: AdminListener | None = None

    async def start(self) -> list[ListeningAddress]:
        """Bind the listeners (port 0 picks a free port) and start accepting."""
        loop = asyncio.get_running_loop()
        # First the admin socket: a second server on the same data directory stops here,
        # before it binds any port.
        self._admin = await serve_admin(self.config.data_dir, self.admin_request)
        ports: list[tuple[int, bool]] = []
        if self.config.stock_kind.embedded:
            ports.append((self.config.port, False))
            if self.config.direct_tls_port is not None:
                ports.append((self.config.direct_tls_port, True))
        try:
            for port, direct in ports:
                listener = await loop.create_server(
                    lambda direct=direct: C2SConnection(self, direct_tls=direct),  # type: ignore[misc]
                    self.config.host,
                    port,
                    backlog=self.config.backlog,
                    reuse_address=True,
                )
                self._listeners.append(listener)
                bound = listener.sockets[0].getsockname()
                self.addresses.append(ListeningAddress(bound[0], bound[1], direct))
            if self.config.https_port is not None:
                cert = self.certificate
                self.https = HTTPSFace(
                    self.https_api,
                    self.apply_change,
                    make_tls_context(cert.cert_path, cert.key_path),
                    host=self.config.https_host,
                    port=self.config.https_port,
                    pages=self.web,
                )
                bound = await self.https.start()
                if not self.config.stock_kind.embedded:
                    self._replace_context(stock_enrollment=self.stock_enrollment(bound.port))
            await self.stock.start()
            if not self.config.stock_kind.embedded:
                await self._close_stale_sessions()
            settings = component_settings(self.config)
            if settings is not None:
                # Attached in the background, and again whenever the stock server restarts:
                # serving devices (HTTPS, trust) must not wait for it.
                self.component = ComponentFace(
                    settings, self._stock_secret, lambda: self.context, self.stock
                )
                await self.component.start()
        except (OSError, ServerExtError):
            await self.stop()  # a port is taken: leave nothing half-open behind
            raise
        if self.config.port == 0 and ports:  # tests: URIs must carry the port actually bound
            self._replace_context(connect_port=self.port)
        self._sweeper = asyncio.create_task(self._sweep_tokens())
        return self.addresses

    async def _close_stale_sessions(self) -> None:
        """Sessions of devices revoked while server-ext was down end now (see
        :func:`~server_ext.stock.base.close_stale_sessions`); a stock server that does not
        answer yet is said and does not stop serving."""
        try:
            stale = await close_stale_sessions(self.stock, self.registry)
        except StockError as exc:
            log.error("could not check the stock server's sessions at start: %s", exc)
            return
        if stale:
            log.warning(
                "closed %d session(s) of devices revoked or disabled while server-ext was down: %s",
                len(stale),
                ", ".join(str(jid) for jid in stale),
            )

    @property
    def https_address(self) -> HTTPSAddress | None:
        return self.https.address if self.https is not None else None

    def xmpp_target(self) -> XMPPServer:
        """Where an enrolled device logs in: this server, or the stock server."""
        config = self.config
        if config.stock_kind.embedded:
            return XMPPServer(
                self.context.connect_host, self.context.connect_port, self.certificate.fingerprint
            )
        return stock_xmpp(config)

    def stock_enrollment(self, https_port: int) -> HTTPSEnrollment:
        """Where v2 URIs send devices: this HTTPS face, pinned, then the stock server."""
        return HTTPSEnrollment(
            self.config.https_connect_host,
            https_port,
            self.certificate.fingerprint,
            self.xmpp_target(),
        )

    def https_api(self) -> HTTPSAPI:
        """The HTTPS API over the current context (a TLS reload replaces the context)."""
        return HTTPSAPI(
            self.context,
            xmpp=self.xmpp_target(),
            secret=self._stock_secret,
            throttle=self.https_throttle,
            nonces=self.nonces,
            requests=self.pair_requests,
            web_origin=self.web_origin,
        )

    @property
    def web_origin(self) -> str:
        """``https://host:port`` of the web page, as phones and devices reach it."""
        address = self.https_address
        if address is None:
            return ""
        if self.config.https_public_url:  # behind a reverse proxy (docs/web.md)
            return self.config.https_public_url
        host = self.config.https_connect_host
        shown = f"[{host}]" if ":" in host else host
        return f"https://{shown}:{address.port}"

    async def live_sessions(self) -> list[dict[str, Any]]:
        """Who is online now (the embedded table, or the stock server's answer)."""
        return await self._sessions()

    def registry_changed(self, change: RegistryChange) -> None:
        """Told by the app layer's handlers (synchronous): apply it in the background."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a handler run outside the server (tests): nothing to apply
            return
        task = loop.create_task(self._apply_logged(change, from_handler=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply_logged(self, change: RegistryChange, *, from_handler: bool) -> None:
        try:
            await self.apply_change(change, from_handler=from_handler)
        except Exception as exc:  # a background task must say what failed, once
            log.error("the stock server was not brought in step (%s): %s", change.reason, exc)

    async def apply_change(self, change: RegistryChange, *, from_handler: bool = False) -> int:
        """Bring the stock server in step with ``change``; how many sessions were closed."""
        # The embedded server's handlers close a revoked device's sessions themselves, at
        # once; a stock server's sessions are closed here.
        handled = from_handler and self.stock.kind.embedded
        return await apply_device_change(
            self.stock, self.registry, change.device, close=not handled
        )

    def _replace_context(self, **changes: Any) -> None:
        """New sessions get a context with ``changes``; live ones keep the one they have."""
        self.context = dataclasses.replace(self.context, **changes)
        self.dispatcher = Dispatcher(self.context, account_handlers())
        self.session_services = dataclasses.replace(
            self.session_services, context=self.context, dispatcher=self.dispatcher
        )

    def reload_tls(self) -> dict[str, Any]:
        """Read the certificate and key again (SIGHUP): new connections use them at once.

        Live sessions keep the TLS session they have. A file that does not load, or a key that
        does not match, leaves the current certificate in use and says so in one log line, so
        a renewal hook that wrote half a file cannot take the server down.
        """
        try:
            current = self.certificate
            certificate = load_server_certificate(current.cert_path, current.key_path)
            context = make_server_context(certificate.cert_path, certificate.key_path)
        except (ConfigError, TLSError) as exc:
            log.error("TLS reload failed, still serving the previous certificate: %s", exc)
            return {"ok": False, "error": str(exc)}
        changed = certificate.fingerprint != self.certificate.fingerprint
        self.certificate, self.tls_context = certificate, context
        self._replace_context(fingerprint=certificate.fingerprint)
        enrollment = self.context.stock_enrollment
        if enrollment is not None:
            self._replace_context(stock_enrollment=self.stock_enrollment(enrollment.port))
        if self.https is not None:
            self.https.reload_tls(certificate.cert_path, certificate.key_path)
        log.info(
            "TLS certificate reloaded: SHA-256 %s, valid until %s%s",
            format_fingerprint(certificate.fingerprint),
            certificate.not_after.isoformat(timespec="seconds"),
            "" if changed else " (unchanged)",
        )
        if changed:
            log.warning(
                "the server certificate changed: clients that pinned the old SHA-256 "
                "fingerprint refuse this one until they are given the new one"
            )
        return {"ok": True, "fingerprint": certificate.fingerprint, "changed": changed}

    async def admin_request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer the admin CLI (another process) over the admin channel."""
        op = req.get("op")
        if op == "sessions":
            return {"ok": True, "sessions": await self._sessions()}
        if op == "device-changed":
            device_id = req.get("device")
            device = self.registry.devices.get(device_id) if isinstance(device_id, int) else None
            if device is None:
                return {"ok": False, "error": "no such device"}
            try:
                closed = await self.apply_change(RegistryChange("device-changed", device.id))
            except ServerExtError as exc:
                return {"ok": False, "error": f"the {self.stock.kind} server: {exc}"}
            return {"ok": True, "closed": closed}
        if op == "trust-changed":
            try:
                await self.apply_change(RegistryChange(str(req.get("reason") or "cli")))
            except ServerExtError as exc:
                return {"ok": False, "error": f"the {self.stock.kind} server: {exc}"}
            return {"ok": True}
        if op == "reload-tls":
            return self.reload_tls()
        if op == "kick":
            try:
                account = JID.parse(str(req.get("jid", ""))).bare
            except InvalidJID as exc:
                return {"ok": False, "error": str(exc)}
            reason = str(req.get("reason") or "an administrator ended this session")
            try:
                closed = await self.stock.close_sessions([account], reason)
            except ServerExtError as exc:
                return {"ok": False, "error": f"the {self.stock.kind} server: {exc}"}
            return {"ok": True, "closed": closed}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _sessions(self) -> list[dict[str, Any]]:
        if self.stock.kind.embedded:
            return [
                {
                    "jid": str(s.jid),
                    "fingerprint": s.fingerprint,
                    "address": s.address,
                    "method": s.auth_method,
                }
                for s in self.sessions
                if isinstance(s, C2SConnection)
            ]
        online = await self.stock.online()
        return [
            {"jid": str(jid), "fingerprint": fingerprint, "address": None, "method": None}
            for jid, fingerprint in sorted(online.items(), key=lambda item: str(item[0]))
        ]

    async def _sweep_tokens(self) -> None:
        """Mark tokens expired once a minute, so the audit log says when each one lapsed."""
        while True:
            try:
                self.registry.tokens.expire()
            except RegistryError as exc:
                log.error("token expiry sweep failed: %s", exc)
            await asyncio.sleep(60)

    @property
    def port(self) -> int:
        return next(a.port for a in self.addresses if not a.direct_tls)

    @property
    def direct_tls_port(self) -> int | None:
        return next((a.port for a in self.addresses if a.direct_tls), None)

    async def stop(self) -> None:
        """Stop accepting, close every stream with ``system-shutdown``, and wait briefly."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.https is not None:
            self.web.close()
            await self.https.stop()
            self.https = None
        if self.component is not None:
            await self.component.stop()
            self.component = None
        for task in list(self._tasks):
            await asyncio.wait({task}, timeout=2)
        await self.stock.stop()
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        for listener in self._listeners:
            listener.close()
        for conn in list(self.connections):
            conn.shutdown("system-shutdown", "the server is shutting down")
        for conn in self.detached.close():
            conn.drop()
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
        for _ in range(200):  # up to 2 s for the closing tags to reach the clients
            if not self.connections:
                break
            await asyncio.sleep(0.01)


def token_rules(config: ServerConfig) -> TokenRules:
    """The token lifetimes and caps ``config`` sets (server.toml, ``[tokens]``)."""
    return TokenRules(
        default_ttl=dt.timedelta(seconds=config.token_default_ttl),
        min_ttl=dt.timedelta(seconds=config.token_min_ttl),
        max_ttl=dt.timedelta(seconds=config.token_max_ttl),
        max_outstanding=config.max_tokens_per_account,
    )


__all__ = ["ListeningAddress", "Server", "token_rules"]
