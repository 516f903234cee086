"""The embedded XMPP server: asyncio listeners around the sans-I/O stream and TLS engines."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import secrets
import signal
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pairing.errors import InvalidJID
from pairing.protocol.enrollment import ENROLL_NS, EnrollCondition
from pairing.protocol.identity import fingerprint, format_fingerprint
from pairing.protocol.jid import JID
from server_ext.admin_channel import AdminListener, serve_admin
from server_ext.config import ServerConfig
from server_ext.errors import RegistryError
from server_ext.log_limits import CappedLog
from server_ext.model import DeviceState
from server_ext.policy.throttle import ConnectionCap, LoginThrottle
from server_ext.registry import Registry
from server_ext.sasl.external import ExternalMechanism
from server_ext.sasl.mechanism import Challenge, Failure, Mechanism, Outcome, Success
from server_ext.sasl.plain import PlainMechanism
from server_ext.sasl.scram import ScramMechanism
from server_ext.server_certificate import (
    ServerCertificate,
    ensure_server_certificate,
    load_server_certificate,
)
from server_ext.tls import TLSEngine, TLSError, make_server_context
from server_ext.xmpp import enroll
from server_ext.xmpp.account_iq import account_handlers
from server_ext.xmpp.delivery import Dispatcher
from server_ext.xmpp.handlers import ServerContext
from server_ext.xmpp.router import SessionTable
from server_ext.xmpp.saslcert import close_device_sessions
from server_ext.xmpp.stream import (
    AuthAborted,
    AuthRequested,
    AuthResponse,
    BindRequested,
    C2SStream,
    Event,
    NonzaReceived,
    Phase,
    StanzaReceived,
    StreamFailed,
    TLSRequested,
)
from server_ext.xmpp.xmlwriter import stream_error, stream_header

log = logging.getLogger(__name__)
peer_log = CappedLog(log)  # for what peers do wrong: they must not be able to flood the log

PASSWORD_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
_WRITE_LIMIT = 4 * 1024 * 1024  # a peer that stops reading is cut off past this backlog


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class ListeningAddress:
    host: str
    port: int
    direct_tls: bool


class Server:
    """One embedded c2s server for ``config.domain``."""

    def __init__(
        self,
        config: ServerConfig,
        registry: Registry,
        certificate: ServerCertificate,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.config = config
        self.registry = registry
        self.certificate = certificate
        self.clock = clock
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
            clock,
            fingerprint=certificate.fingerprint,
            connect_host=config.connect_host,
            connect_port=config.port,
            rotation_interval=dt.timedelta(seconds=config.rotation_interval),
        )
        self.dispatcher = Dispatcher(self.context, account_handlers())
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
        ports = [(self.config.port, False)]
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
        except OSError:
            await self.stop()  # a port is taken: leave nothing half-open behind
            raise
        if self.config.port == 0:  # tests: URIs must carry the port actually bound
            self.context = dataclasses.replace(self.context, connect_port=self.port)
            self.dispatcher = Dispatcher(self.context, account_handlers())
        self._sweeper = asyncio.create_task(self._sweep_tokens())
        return self.addresses

    def admin_request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer the admin CLI (another process) over the admin channel."""
        op = req.get("op")
        if op == "sessions":
            return {
                "ok": True,
                "sessions": [
                    {
                        "jid": str(s.jid),
                        "fingerprint": s.fingerprint,
                        "address": s.address,
                        "method": s.auth_method,
                    }
                    for s in self.sessions
                    if isinstance(s, C2SConnection)
                ],
            }
        if op == "device-changed":
            device_id = req.get("device")
            device = self.registry.get_device(device_id) if isinstance(device_id, int) else None
            if device is None:
                return {"ok": False, "error": "no such device"}
            closed = 0
            if device.state is DeviceState.REVOKED:
                closed = close_device_sessions(self.context, device)
            return {"ok": True, "closed": closed}
        if op == "kick":
            try:
                account = JID.parse(str(req.get("jid", ""))).bare
            except InvalidJID as exc:
                return {"ok": False, "error": str(exc)}
            reason = str(req.get("reason") or "an administrator ended this session")
            targets = self.sessions.resources(account)
            for session in targets:
                session.terminate("policy-violation", reason)
            return {"ok": True, "closed": len(targets)}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _sweep_tokens(self) -> None:
        """Mark tokens expired once a minute, so the audit log says when each one lapsed."""
        while True:
            try:
                self.registry.expire_tokens(self.clock())
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
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        for listener in self._listeners:
            listener.close()
        for conn in list(self.connections):
            conn.shutdown("system-shutdown", "the server is shutting down")
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
        for _ in range(200):  # up to 2 s for the closing tags to reach the clients
            if not self.connections:
                break
            await asyncio.sleep(0.01)

    def audit(
        self, event: str, *, actor: str, subject: str, address: str | None, **detail: str
    ) -> None:
        """Write an audit row; a failing disk must not take logins down with it."""
        try:
            self.registry.audit(event, actor=actor, subject=subject, address=address, detail=detail)
        except RegistryError as exc:
            log.error("audit %s not recorded: %s", event, exc)


class C2SConnection(asyncio.Protocol):
    """One client connection: socket and TLS plumbing around a :class:`C2SStream`."""

    def __init__(self, server: Server, *, direct_tls: bool) -> None:
        self.server = server
        self.direct_tls = direct_tls
        self.stream = C2SStream(
            server.config.domain,
            tls=direct_tls,
            max_stanza_bytes=server.config.max_stanza_bytes,
            extension_namespaces=(ENROLL_NS,),
        )
        self.transport: asyncio.Transport | None = None
        self.tls: TLSEngine | None = TLSEngine(server.tls_context) if direct_tls else None
        self._tls_ready = False
        self.address = "?"
        self._counted = False
        self._timer: asyncio.TimerHandle | None = None
        # A failed password answered late (LoginThrottle.failure_delay), and what the client
        # sent meanwhile, handled only after that answer.
        self._tarpit: asyncio.TimerHandle | None = None
        self._held: list[Event] = []
        self._mechanism: Mechanism | None = None
        self._mechanism_name = ""
        self._identity: JID | None = None
        self._locked_resource: str | None = None
        self._jid: JID | None = None
        self._closing = False
        # Session facts, set once SASL succeeds.
        self.auth_method = ""
        self.fingerprint: str | None = None
        self.available = False
        self.priority = 0

    # --- Session protocol -----------------------------------------------------------------

    @property
    def jid(self) -> JID:
        assert self._jid is not None
        return self._jid

    def set_presence(self, available: bool, priority: int) -> None:
        self.available = available
        self.priority = priority

    def deliver(self, element: ET.Element) -> None:
        self.stream.send_element(element)
        self._flush()

    def terminate(self, condition: str, text: str) -> None:
        """Close this session with a stream error right after the current work is written."""
        asyncio.get_running_loop().call_soon(self.shutdown, condition, text)

    def shutdown(self, condition: str | None, text: str | None) -> None:
        if self._closing:
            return
        self.stream.close(condition, text)
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
                    + b"</stream:stream>"
                )
            self._closing = True
            transport.close()
            return
        self._counted = True
        self._timer = asyncio.get_running_loop().call_later(
            server.config.auth_timeout, self._auth_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        server.connections.discard(self)
        self._release_slot()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tarpit is not None:
            self._tarpit.cancel()
            self._tarpit = None
        if self._jid is not None and server.sessions.remove(self) and self.available:
            # RFC 6121 §4.5.2: the user's other resources learn this one is gone.
            for peer in server.sessions.available_resources(self._jid.bare):
                peer.deliver(
                    ET.Element(
                        "{jabber:client}presence",
                        {"from": str(self._jid), "to": str(peer.jid), "type": "unavailable"},
                    )
                )
        self._closing = True

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._receive(data)
        except Exception:
            # One broken connection must never take the server or other sessions down.
            log.exception("internal error on a connection from %s", self.address)
            self.stream.close("internal-server-error", None)
            self._flush()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    # --- plumbing ---------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        if self.tls is not None:
            try:
                data = self.tls.receive(data)
            except TLSError as exc:
                peer_log.log(logging.INFO, "tls", "TLS failed with %s: %s", self.address, exc)
                self._write_raw(self.tls.outgoing())
                self._abort()
                return
            self._write_raw(self.tls.outgoing())
            if not self._tls_ready:
                if not self.tls.handshake_done:
                    return
                self._tls_ready = True
                self._on_tls_established()
            if not data:
                if self.tls.peer_closed:
                    self._abort()
                return
        self._handle_all(self.stream.receive_data(data))
        self._flush()
        if self.tls is not None and self.tls.peer_closed:
            self._abort()

    def _on_tls_established(self) -> None:
        assert self.tls is not None
        mechanisms = list(PASSWORD_MECHANISMS)
        features: list[bytes] = []
        if self.tls.peer_certificate_der is not None:
            # XEP-0178 §3: offer EXTERNAL when the client presented a certificate; a device
            # with a certificate may also redeem an enrollment token first.
            mechanisms.insert(0, "EXTERNAL")
            features.append(enroll.FEATURE)
        if self.direct_tls:
            self.stream.set_pre_auth_offer(mechanisms=mechanisms, extra_features=features)
        else:
            self.stream.tls_established(mechanisms=mechanisms, extra_features=features)

    def _write_raw(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        out = self.stream.data_to_send()
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
        if self.stream.closed:
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
        if self._jid is None and not self._closing:
            # RFC 6120 §4.9.3.4: connection-timeout for a stream that never authenticated.
            self.shutdown("connection-timeout", "authenticate sooner")

    # --- events ---------------------------------------------------------------------------

    def _handle_all(self, events: list[Event]) -> None:
        for index, event in enumerate(events):
            if self._tarpit is not None:
                self._held.extend(events[index:])  # answered in order, after the late failure
                return
            self._handle(event)
            if isinstance(event, TLSRequested):
                break

    def _handle(self, event: Event) -> None:
        if isinstance(event, StanzaReceived):
            self.server.dispatcher.dispatch(self, event.element)
        elif isinstance(event, TLSRequested):
            self._flush()  # <proceed/> goes out in plaintext, then TLS starts.
            self.tls = TLSEngine(self.server.tls_context)
        elif isinstance(event, AuthRequested):
            self._start_auth(event)
        elif isinstance(event, AuthResponse):
            if self._mechanism is None:  # pragma: no cover - the stream orders this
                self.stream.auth_failed("malformed-request", "no exchange in progress")
            else:
                self._apply(self._mechanism.respond(event.data))
        elif isinstance(event, AuthAborted):
            self._mechanism = None
        elif isinstance(event, BindRequested):
            self._bind(event)
        elif isinstance(event, NonzaReceived):
            self._enroll(event.element)
        elif isinstance(event, StreamFailed):
            peer_log.log(
                logging.INFO,
                f"stream {event.condition}",
                "stream from %s failed: %s",
                self.address,
                event.condition,
            )

    def _start_auth(self, event: AuthRequested) -> None:
        server = self.server
        name = event.mechanism
        domain = server.config.domain
        registry = server.registry
        mechanism: Mechanism
        if name == "EXTERNAL":
            assert self.tls is not None
            mechanism = ExternalMechanism(
                domain,
                self.tls.peer_certificate_der,
                server.registry.certificate_by_fingerprint,
                server.clock,
            )
        elif name == "SCRAM-SHA-256":
            mechanism = ScramMechanism(
                "sha256", domain, lambda jid: registry.scram_credentials(jid, "sha256")
            )
        elif name == "SCRAM-SHA-1":
            mechanism = ScramMechanism(
                "sha1", domain, lambda jid: registry.scram_credentials(jid, "sha1")
            )
        else:
            mechanism = PlainMechanism(
                domain, lambda jid: registry.scram_credentials(jid, "sha256")
            )
        if name != "EXTERNAL":
            wait = server.throttle.retry_after(None, self.address)
            if wait > 0:
                self.stream.auth_failed(
                    "temporary-auth-failure",
                    f"too many failed logins from your address; retry in {int(wait) + 1} s",
                )
                return
        self._mechanism = mechanism
        self._mechanism_name = name
        self._apply(mechanism.start(event.initial_response))

    def _apply(self, outcome: Outcome) -> None:
        server = self.server
        mechanism = self._mechanism
        name = self._mechanism_name
        password = name != "EXTERNAL"
        if isinstance(outcome, Challenge):
            self.stream.auth_challenge(outcome.data)
            return
        self._mechanism = None
        if isinstance(outcome, Success):
            account = outcome.identity.bare
            if password:
                wait = server.throttle.retry_after(account, self.address)
                if wait > 0:
                    # The same answer, at once, whether or not the password was right: no oracle.
                    self.stream.auth_failed("temporary-auth-failure", _held_back(wait))
                    return
                server.throttle.succeeded(account, self.address)
            self._identity = account
            self._locked_resource = outcome.locked_resource
            self.auth_method = name
            self.fingerprint = outcome.certificate_fingerprint
            self.stream.auth_succeeded(account, outcome.additional_data)
            self._release_slot()
            if self.fingerprint is not None:
                replaces = (
                    mechanism.accepted.replaces
                    if isinstance(mechanism, ExternalMechanism) and mechanism.accepted
                    else None
                )
                self._record_certificate_login(account, retire=replaces is not None)
            return
        assert isinstance(outcome, Failure)
        condition, text = str(outcome.condition), outcome.text
        delay = 0.0
        if password:
            wait = server.throttle.retry_after(outcome.account, self.address)
            server.throttle.failed(outcome.account, self.address)
            if wait > 0:
                # This address is over its limit for the account: the answer the right password
                # gets too, and just as fast, so it tells the guesser nothing.
                condition, text = "temporary-auth-failure", _held_back(wait)
            elif outcome.account is not None:
                delay = server.throttle.failure_delay(outcome.account)
        subject = str(outcome.account or "unknown")
        if not password and self.tls is not None and self.tls.peer_certificate_der is not None:
            # A failed certificate login belongs to that device's history (audit --device).
            subject = fingerprint(self.tls.peer_certificate_der)
        server.audit(
            "login.failed",
            actor=str(outcome.account or "unknown"),
            subject=subject,
            address=self.address,
            mechanism=name,
            condition=str(outcome.condition),
        )
        if delay > 0 and self.transport is not None:
            # The account is being guessed from many addresses: answer failures late (a tarpit)
            # and read nothing more from this client meanwhile. Successes are never delayed.
            self.transport.pause_reading()
            self._tarpit = asyncio.get_running_loop().call_later(
                delay, self._fail_late, condition, text
            )
            return
        self.stream.auth_failed(condition, text)

    def _fail_late(self, condition: str, text: str | None) -> None:
        self._tarpit = None
        if self._closing:
            return
        if self.stream.phase is Phase.AUTHENTICATING:
            self.stream.auth_failed(condition, text)
        held, self._held = self._held, []
        self._handle_all(held)
        self._flush()
        if self._tarpit is None and self.transport is not None and not self._closing:
            self.transport.resume_reading()

    def _enroll(self, element: ET.Element) -> None:
        server = self.server
        assert self.tls is not None
        wait = server.throttle.retry_after(None, self.address)
        if wait > 0:
            result = enroll.failure(
                EnrollCondition.RATE_LIMITED,
                f"too many failed attempts from your address; retry in {int(wait) + 1} s",
            )
        else:
            result = enroll.redeem(
                element,
                peer_certificate_der=self.tls.peer_certificate_der,
                registry=server.registry,
                address=self.address,
                now=server.clock(),
            )
        if result.condition is not None:
            if result.condition is EnrollCondition.TOKEN_UNKNOWN:
                # Guessing is hopeless at 160 bits, but each unknown token still counts
                # against the address, like a failed password.
                server.throttle.failed(None, self.address)
            repeated = result.condition is EnrollCondition.ALREADY_REGISTERED
            server.audit(
                # A device retrying with its own, registered certificate has not failed.
                "enroll.repeated" if repeated else "enroll.failed",
                actor="unknown",
                subject=self.address,
                address=self.address,
                condition=result.condition.value,
            )
        self.stream.send_bytes(result.reply)

    def _record_certificate_login(self, account: JID, *, retire: bool) -> None:
        assert self.fingerprint is not None
        server = self.server
        try:
            server.registry.record_login(self.fingerprint, self.address, server.clock())
            if retire:  # the first logins of a rotated certificate retire its predecessor
                server.registry.retire_replaced(self.fingerprint)
        except RegistryError as exc:
            log.error("last login not recorded: %s", exc)
        server.audit(
            "login.external",
            actor=str(account),
            subject=self.fingerprint,
            address=self.address,
        )

    def _bind(self, event: BindRequested) -> None:
        server = self.server
        identity = self._identity
        assert identity is not None
        requested = event.resource
        locked = self._locked_resource
        if locked is not None and requested not in (None, locked):
            # XEP-0257 §2 / XEP-0178: a full JID in xmppAddr pins the resource.
            self.stream.bind_failed(
                event.iq_id, "cancel", "not-allowed", f"this certificate may bind only {locked!r}"
            )
            return
        resource = locked or requested or f"r-{secrets.token_hex(6)}"
        try:
            jid = identity.with_resource(resource)
        except InvalidJID as exc:
            self.stream.bind_failed(event.iq_id, "modify", "bad-request", str(exc))
            return
        self._jid = jid
        displaced = server.sessions.add(self)
        if displaced is not None:
            # RFC 6120 §7.7.2.2: the newer session wins; the old one gets <conflict/>.
            displaced.terminate("conflict", "replaced by a new session for the same resource")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.stream.bind_succeeded(event.iq_id, jid)


def _held_back(wait: float) -> str:
    return f"too many failed logins for this account from your address; retry in {int(wait) + 1} s"


def load_certificate_for(config: ServerConfig) -> ServerCertificate:
    """The operator's certificate when configured, else the generated one in the data dir."""
    if config.cert_file is not None and config.key_file is not None:
        return load_server_certificate(config.cert_file, config.key_file)
    return ensure_server_certificate(config.data_dir, config.domain)


async def serve(config: ServerConfig, *, ready: Callable[[Server], None] | None = None) -> None:
    """Run the server until cancelled or sent SIGINT/SIGTERM."""
    certificate = load_certificate_for(config)
    with Registry.open(config.database_path) as registry:
        server = Server(config, registry, certificate)
        await server.start()
        if ready is not None:
            ready(server)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Unix
                pass
        try:
            await stop.wait()
        finally:
            await server.stop()


def run(config: ServerConfig) -> None:
    """Blocking entry point for ``server-ext serve``: print where it listens, then serve."""

    def announce(server: Server) -> None:
        fp = format_fingerprint(server.certificate.fingerprint)
        for address in server.addresses:
            kind = "direct TLS (XEP-0368)" if address.direct_tls else "STARTTLS"
            print(f"listening on {address.host}:{address.port} ({kind})", flush=True)
        print(f"domain: {server.config.domain}", flush=True)
        print(f"server certificate SHA-256: {fp}", flush=True)
        print(f"data: {server.config.data_dir}  (Ctrl-C to stop)", flush=True)

    asyncio.run(serve(config, ready=announce))


__all__ = ["C2SConnection", "ListeningAddress", "Server", "run", "serve"]
