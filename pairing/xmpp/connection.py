"""Logging in with slixmpp: a pinned or CA-checked server, and a certificate or a password.

slixmpp's own behaviour needs guarding here: it silently connects *without* a client
certificate when the files fail to load, it verifies hostnames against public CAs by default,
and it may report a refused bind as success. This adapter checks each of those.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slixmpp

from pairing.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    CredentialFileError,
    PairingError,
    ServerIdentityMismatch,
    StreamClosed,
)
from pairing.protocol.address import ServerAddress
from pairing.protocol.conditions import says_revoked
from pairing.protocol.jid import JID

__all__ = [
    "PairingClient",
    "ServerAddress",
    "TrustAnchor",
    "authentication_failed",
    "login",
    "logout",
    "make_client",
    "on_stream_error",
    "stream_closed",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """How the server is recognised: a pinned SHA-256 fingerprint, or a CA/certificate file."""

    fingerprint: str | None = None
    cafile: Path | None = None

    def __post_init__(self) -> None:
        if (self.fingerprint is None) == (self.cafile is None):
            raise PairingError("give exactly one of a pinned fingerprint or a CA file")
        if self.fingerprint is not None:
            digits = self.fingerprint.replace(":", "").lower()
            if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
                raise PairingError("a pinned fingerprint is 64 hex digits (SHA-256)")
            object.__setattr__(self, "fingerprint", digits)


def _ssl_context(trust: TrustAnchor, certfile: Path | None, keyfile: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if trust.cafile is not None:
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
    client.ssl_context = ctx
    client.enable_direct_tls = server.direct_tls
    client.enable_starttls = not server.direct_tls
    client.enable_plaintext = False
    client.whitespace_keepalive = False
    for plugin in plugins:
        client.register_plugin(plugin)
    return client


async def login(client: PairingClient, *, timeout: float = 10.0) -> JID:
    """Connect, authenticate and bind; returns the bound full JID or raises a PairingError."""
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
        settle(ConnectionFailed(f"cannot reach {server.host}:{server.port}: {error}"))

    def on_disconnected(_: Any) -> None:
        settle(ConnectionFailed(f"{server.host}:{server.port} closed the connection"))

    def on_error(error: Any) -> None:
        settle(stream_closed(error))

    handlers = {
        "ssl_cert": on_cert,
        "failed_auth": on_failed_auth,
        "session_start": on_session_start,
        "connection_failed": on_connection_failed,
        "disconnected": on_disconnected,
        "stream_error": on_error,
    }
    for event, handler in handlers.items():
        client.add_event_handler(event, handler)
    client.connect(server.host, server.port)
    try:
        return await asyncio.wait_for(done, timeout)
    except TimeoutError:
        raise ConnectionFailed(
            f"no login at {server.host}:{server.port} within {timeout:.0f} s"
        ) from None
    except PairingError:
        client.abort()
        raise
    finally:
        for event, handler in handlers.items():
            client.del_event_handler(event, handler)


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
