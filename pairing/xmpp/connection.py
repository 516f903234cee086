"""Logging in with slixmpp: a pinned or CA-checked server, and a certificate or a password.

slixmpp's own behaviour needs guarding here: it silently connects *without* a client
certificate when the files fail to load, it verifies hostnames against public CAs by default,
and it may report a refused bind as success. This adapter checks each of those.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import idna
import slixmpp

from pairing.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    CredentialFileError,
    LoginTimedOut,
    PairingError,
    ServerIdentityMismatch,
    ServerUnreachable,
    StreamClosed,
)
from pairing.protocol.address import DEFAULT_C2S_PORT, ServerAddress
from pairing.protocol.conditions import says_revoked
from pairing.protocol.jid import JID
from pairing.protocol.srv import CLIENT_SERVICE, ServiceNotOffered, SRVRecord, client_addresses

if TYPE_CHECKING:
    import dns.asyncresolver

__all__ = [
    "PairingClient",
    "ServerAddress",
    "TrustAnchor",
    "authentication_failed",
    "login",
    "login_first",
    "logout",
    "make_client",
    "on_stream_error",
    "resolve_server",
    "stream_closed",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """How the server is recognised: a pinned SHA-256 fingerprint, a CA/certificate file, or
    the system's CAs (a server with a public certificate, as any XMPP client checks it)."""

    fingerprint: str | None = None
    cafile: Path | None = None
    system: bool = False

    def __post_init__(self) -> None:
        given = (self.fingerprint is not None) + (self.cafile is not None) + self.system
        if given != 1:
            raise PairingError(
                "give exactly one of a pinned fingerprint, a CA file or the system's CAs"
            )
        if self.fingerprint is not None:
            digits = self.fingerprint.replace(":", "").lower()
            if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
                raise PairingError("a pinned fingerprint is 64 hex digits (SHA-256)")
            object.__setattr__(self, "fingerprint", digits)


def _ssl_context(trust: TrustAnchor, certfile: Path | None, keyfile: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if trust.system:
        # Checked against the XMPP domain, not an SRV target (RFC 6120 §13.7.2.1, RFC 7590
        # §3.1): slixmpp passes the account's domain as the TLS server name.
        ctx.load_default_certs()
    elif trust.cafile is not None:
        try:
            ctx.load_verify_locations(cafile=str(trust.cafile))
        except (OSError, ssl.SSLError) as exc:
            raise CredentialFileError(f"cannot use the CA file {trust.cafile}: {exc}") from exc
    else:
        # The pin is checked on the handshake's certificate before anything is sent.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if certfile is not None:
        for path in (certfile, keyfile):
            if path is not None and not path.is_file():
                raise CredentialFileError(f"{path} does not exist or is not a file")
        try:
            ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
        except (OSError, ssl.SSLError) as exc:
            raise CredentialFileError(
                f"cannot use the certificate {certfile} with the key {keyfile}: {exc}"
            ) from exc
    return ctx


class PairingClient(slixmpp.ClientXMPP):
    """A slixmpp client that remembers where it connects and which certificate it pins."""

    def __init__(
        self, jid: str, password: str, *, server: ServerAddress, pin: str | None, **kwargs: Any
    ) -> None:
        super().__init__(jid, password, **kwargs)
        self.server_address = server
        self.pin = pin
        self.server_fingerprint = ""  # SHA-256 of the certificate seen in the TLS handshake
        # Where the device-management commands go: None for the account's own server (the
        # embedded one offers them), else server-ext's component on a stock server.
        self.service: str | None = None
        # True when the last login resumed the previous session (XEP-0198 §5) instead of
        # binding a new one: the server kept its presence and what it had queued.
        self.resumed = False


#: What a password login may use, strongest first (RFC 5802 §6: -PLUS binds to the channel).
PASSWORD_MECHANISMS = (
    "SCRAM-SHA-512-PLUS",
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-512",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "PLAIN",
)


def make_client(
    jid: str,
    *,
    server: ServerAddress,
    trust: TrustAnchor,
    password: str | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    plugins: Sequence[str] = (),
) -> PairingClient:
    """A slixmpp client that logs in with a certificate (EXTERNAL) or a password."""
    if password is None and certfile is None:
        raise PairingError("a login needs a password or a client certificate")
    use_external = password is None
    ctx = _ssl_context(trust, certfile, keyfile)
    client = PairingClient(
        jid,
        password or "",
        server=server,
        pin=trust.fingerprint,
        sasl_mech="EXTERNAL" if use_external else None,
    )
    if not use_external:
        # A password login never tries EXTERNAL: slixmpp ranks it first whenever a server
        # offers it (ejabberd with tls_verify offers it to every client), and a failure there
        # would end the login before the password is tried. A list: slixmpp ignores a set.
        client.plugin["feature_mechanisms"].use_mechs = list(PASSWORD_MECHANISMS)
    client.ssl_context = ctx
    client.enable_direct_tls = server.direct_tls
    client.enable_starttls = not server.direct_tls
    client.enable_plaintext = False
    client.whitespace_keepalive = False
    for plugin in plugins:
        client.register_plugin(plugin, pconfig=_PLUGIN_CONFIG.get(plugin))
    return client


#: slixmpp's XEP-0198 plugin: acks, and resumption of a session whose link dropped.
STREAM_MANAGEMENT = "xep_0198"


#: slixmpp's XEP-0352 plugin: client state indication.
CLIENT_STATE = "xep_0352"


#: slixmpp reads the ``<csi/>`` feature after the bind by default, so a client could come
#: online before it knew it may say inactive; read it first (it only notes the offer).
_PLUGIN_CONFIG: dict[str, dict[str, Any]] = {CLIENT_STATE: {"order": 8000}}


def say_inactive(client: slixmpp.ClientXMPP) -> bool:
    """Tell the server nobody is looking at this client (XEP-0352 §4.2), if it offered that.

    A headless device never shows the presence of its account's other resources; an inactive
    client is spared them, which is what keeps an account with thousands of devices from
    costing N² presence stanzas when they all come online (docs/scaling.md).
    """
    plugin: Any = client.plugin.get(CLIENT_STATE, None)
    if plugin is None or not plugin.enabled:
        return False
    plugin.send_inactive()
    return True


def can_resume(client: slixmpp.ClientXMPP) -> bool:
    """The server gave this client a session it may resume (XEP-0198 §3 ``<enabled id/>``)."""
    plugin: Any = client.plugin.get(STREAM_MANAGEMENT, None)
    return plugin is not None and bool(plugin.sm_id)


async def login(client: PairingClient, *, timeout: float = 10.0) -> JID:
    """Connect, authenticate and bind; returns the bound full JID or raises a PairingError.

    A client with slixmpp's ``xep_0198`` plugin that logged in before resumes its session
    when the server still holds it (``client.resumed`` says which happened).
    """
    loop = asyncio.get_running_loop()
    client.loop = loop
    done: asyncio.Future[JID] = loop.create_future()
    server = client.server_address
    pin = client.pin

    def settle(exc: PairingError | None = None, jid: JID | None = None) -> None:
        if done.done():
            return
        if exc is not None:
            done.set_exception(exc)
        elif jid is not None:
            done.set_result(jid)

    def on_cert(pem: str) -> None:
        der = ssl.PEM_cert_to_DER_cert(pem)
        client.server_fingerprint = hashlib.sha256(der).hexdigest()
        if pin is None:
            return
        if not hmac.compare_digest(client.server_fingerprint, pin):
            # Abort before SASL: with a wrong server, no credential leaves this machine.
            if client.transport is not None:
                client.transport.abort()
            settle(
                ServerIdentityMismatch(
                    f"the server at {server.host}:{server.port} presented a certificate whose "
                    "SHA-256 fingerprint is not the pinned one; nothing was sent"
                )
            )

    def on_failed_auth(stanza: Any) -> None:
        settle(authentication_failed(stanza))

    def on_session_start(_: Any) -> None:
        client.resumed = False
        settle_bound()

    def on_session_resumed(_: Any) -> None:
        client.resumed = True
        settle_bound()

    def settle_bound() -> None:
        bound = str(client.boundjid.full)
        try:
            jid = JID.parse(bound)
        except PairingError:
            settle(ConnectionFailed(f"the server bound an invalid JID {bound!r}"))
            return
        if not jid.resource:
            settle(ConnectionFailed("the server did not bind a resource"))
            return
        settle(jid=jid)

    def on_connection_failed(error: Any) -> None:
        settle(_connection_failure(server, error))

    def on_invalid_chain(error: Any) -> None:
        settle(_untrusted(server, error))

    def on_disconnected(reason: Any) -> None:
        if isinstance(reason, ssl.SSLError):  # the STARTTLS handshake failed
            settle(_untrusted(server, reason))
            return
        settle(ConnectionFailed(f"{server.host}:{server.port} closed the connection"))

    def on_error(error: Any) -> None:
        settle(stream_closed(error))

    handlers = {
        "ssl_cert": on_cert,
        "failed_auth": on_failed_auth,
        "session_start": on_session_start,
        "session_resumed": on_session_resumed,
        "connection_failed": on_connection_failed,
        "ssl_invalid_chain": on_invalid_chain,
        "disconnected": on_disconnected,
        "stream_error": on_error,
    }
    for event, handler in handlers.items():
        client.add_event_handler(event, handler)
    client.connect(server.host, server.port)
    try:
        return await asyncio.wait_for(done, timeout)
    except TimeoutError:
        _give_up(client)
        raise LoginTimedOut(
            f"no login at {server.host}:{server.port} within {timeout:g} s"
        ) from None
    except PairingError:
        _give_up(client)
        raise
    finally:
        for event, handler in handlers.items():
            client.del_event_handler(event, handler)


def _give_up(client: PairingClient) -> None:
    """Leave nothing of a failed login running: the caller decides when to try again.

    slixmpp retries a refused connection on its own (``reschedule_connection_attempt``), and
    that attempt connected behind the caller's back while it waited; the caller's next login
    then ran a second stream on the same client (in the reconnect storm: streams refused
    before STARTTLS, two binds at once, a session replacing itself). A half-done stream is
    closed for the same reason.
    """
    client.cancel_connection_attempt()
    client.abort()


def _connection_failure(server: ServerAddress, error: Any) -> PairingError:
    """What slixmpp's ``connection_failed`` means, said the way a person can act on."""
    if isinstance(error, ssl.SSLError):  # direct TLS (XEP-0368): the handshake is the connect
        return _untrusted(server, error)
    where = f"the server at {server}"
    if isinstance(error, str):
        # slixmpp reports a failed name lookup (socket.gaierror) as a sentence of its own.
        return ServerUnreachable(f"{where} is not reachable: {server.host} is not in the DNS")
    if isinstance(error, ConnectionRefusedError):
        why = "nothing listens there (connection refused)"
    elif isinstance(error, TimeoutError):
        why = "no answer (timed out)"
    elif isinstance(error, OSError) and error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        why = "no route to it"
    elif isinstance(error, socket.gaierror):
        why = f"{server.host} is not in the DNS"
    elif isinstance(error, OSError) and error.strerror:
        why = error.strerror.lower()
    else:
        why = str(error) or type(error).__name__
    return ServerUnreachable(f"{where} is not running or not reachable: {why}")


def _untrusted(server: ServerAddress, error: Any) -> ServerIdentityMismatch:
    reason = getattr(error, "verify_message", None) or getattr(error, "reason", None) or error
    return ServerIdentityMismatch(
        f"the server at {server} presented a certificate that is not trusted ({reason}); "
        "nothing was sent. Pin it with --pin SHA256 (from `server-ext fingerprint`) or give "
        "--cafile"
    )


async def login_first(
    make: Callable[[ServerAddress], PairingClient],
    addresses: Sequence[ServerAddress],
    *,
    timeout: float = 10.0,
) -> PairingClient:
    """Log in at the first of ``addresses`` that answers; the logged-in client.

    RFC 6120 §3.2.1: the targets of a domain's SRV records are tried in order until one
    connects. Only an unreachable address moves on to the next: a server that answered
    and refused (a wrong certificate, a refused login) is the answer.
    """
    if not addresses:
        raise ServerUnreachable("there is no address to connect to")
    failures: list[ServerUnreachable] = []
    for address in addresses:
        client = make(address)
        try:
            await login(client, timeout=timeout)
        except ServerUnreachable as exc:
            log.info("%s", exc)
            failures.append(exc)
            continue
        return client
    if len(failures) == 1:
        raise failures[0]
    tried = "; ".join(str(f).removeprefix("the server at ") for f in failures)
    raise ServerUnreachable(f"none of the servers is running or reachable: {tried}")


async def resolve_server(
    domain: str,
    *,
    resolver: dns.asyncresolver.Resolver | None = None,
    lifetime: float = 5.0,
) -> list[ServerAddress]:
    """The addresses to try for ``domain``'s XMPP service, in order (RFC 6120 §3.2).

    The ``_xmpp-client._tcp`` SRV records, ordered by priority and weight (RFC 2782); when
    the domain has none, or DNS cannot be asked, the domain itself on port 5222 (the
    fallback of RFC 6120 §3.2.2). An IP address or a ``localhost`` name is used as it is:
    there is nothing to look up (RFC 6761 §6.3).
    """
    # Imported here: only a client that looks a server up needs a DNS library (a device
    # agent always knows its server's address).
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    fallback = [ServerAddress(domain, DEFAULT_C2S_PORT)]
    if _is_ip_address(domain) or domain == "localhost" or domain.endswith(".localhost"):
        return fallback
    try:
        qname = f"{CLIENT_SERVICE}.{idna.encode(domain).decode('ascii')}."
    except idna.IDNAError:
        return fallback
    try:
        resolver = resolver or dns.asyncresolver.Resolver()
        answer = await resolver.resolve(qname, "SRV", lifetime=lifetime)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        log.debug("no SRV records at %s; trying %s", qname, fallback[0])
        return fallback
    except dns.exception.DNSException as exc:
        # No resolver configured, no answer in time, a broken server: a client still tries
        # the domain itself, as it would without SRV.
        log.info("cannot look up %s (%s); trying %s", qname, exc, fallback[0])
        return fallback
    records = [
        SRVRecord(
            priority=int(rr.priority),
            weight=int(rr.weight),
            port=int(rr.port),
            target=rr.target.to_text(omit_final_dot=True),  # the root "." becomes ""
        )
        for rr in answer
    ]
    try:
        addresses = client_addresses(records)
    except ServiceNotOffered:
        raise ServiceNotOffered(
            f"{domain} offers no XMPP client service: its {CLIENT_SERVICE} SRV record's "
            "target is '.' (RFC 2782)"
        ) from None
    log.debug("SRV %s: %s", qname, ", ".join(str(a) for a in addresses))
    return addresses


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def authentication_failed(failure: Any) -> AuthenticationFailed:
    """A slixmpp SASL ``<failure/>`` as the typed :class:`AuthenticationFailed`."""
    return AuthenticationFailed(
        str(failure["condition"]), str(failure["text"]), revoked=says_revoked(failure.xml)
    )


def stream_closed(error: Any) -> StreamClosed:
    """A slixmpp stream error as the typed :class:`StreamClosed` (condition, text, revoked)."""
    return StreamClosed(
        str(error["condition"]), str(error["text"] or ""), revoked=says_revoked(error.xml)
    )


def on_stream_error(client: slixmpp.ClientXMPP, handler: Callable[[StreamClosed], None]) -> None:
    """Call ``handler`` with each stream error the server ends ``client``'s stream with."""
    client.add_event_handler("stream_error", lambda error: handler(stream_closed(error)))


async def logout(client: slixmpp.ClientXMPP, *, timeout: float = 5.0) -> None:
    """Close the stream politely and wait for the connection to end."""
    with contextlib.suppress(Exception):
        await client.disconnect(wait=timeout)
