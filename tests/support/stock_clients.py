"""Clients for the stock-server tests: slixmpp logins through ``pairing.xmpp.connection``
where a client's view is the point, and a byte-level client where the exact SASL and bind
answers are."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from pairing.protocol.jid import JID
from pairing.xmpp.connection import (
    PairingClient,
    ServerAddress,
    TrustAnchor,
    login,
    make_client,
)
from tests.support.certificates import CertificateFiles
from tests.support.rawclient import RawClient, client_context
from tests.support.stock_servers import LOOPBACK

PASSWORD = "owner's password 1"

#: The mechanisms a password client may use here: SCRAM only, never EXTERNAL or PLAIN.
SCRAM_ONLY = [f"SCRAM-SHA-{bits}{plus}" for bits in (1, 256, 512) for plus in ("", "-PLUS")]


async def password_login(
    port: int,
    server_cert: CertificateFiles,
    jid: str,
    *,
    scram_only: bool = True,
    plugins: tuple[str, ...] = (),
) -> tuple[PairingClient, JID]:
    client = make_client(
        jid,
        server=ServerAddress(LOOPBACK, port),
        trust=TrustAnchor(cafile=server_cert.cert),
        password=PASSWORD,
        plugins=plugins,
    )
    if scram_only:
        # slixmpp ranks EXTERNAL above every other mechanism and tries it whenever it is
        # offered, certificate or not; ejabberd with tls_verify offers it to every client.
        # (A list, not a set: slixmpp enforces use_mechs only when it is not a set.)
        client.plugin["feature_mechanisms"].use_mechs = list(SCRAM_ONLY)
    try:
        return client, await login(client)
    except Exception:
        client.abort()
        raise


async def certificate_login(
    port: int, server_cert: CertificateFiles, jid: str, device: CertificateFiles
) -> tuple[PairingClient, JID]:
    """SASL EXTERNAL with ``device``'s certificate, binding the resource of ``jid``."""
    client = make_client(
        jid,
        server=ServerAddress(LOOPBACK, port),
        trust=TrustAnchor(cafile=server_cert.cert),
        certfile=device.cert,
        keyfile=device.key,
    )
    try:
        return client, await login(client)
    except Exception:
        client.abort()
        raise


@dataclass
class RawAttempt:
    """What a byte-level client saw: the features after STARTTLS, the SASL answer, the bind."""

    features: bytes
    sasl: bytes
    bind: bytes = b""
    client: RawClient | None = None


async def raw_external(
    port: int,
    server_cert: CertificateFiles,
    device: CertificateFiles | None,
    *,
    authzid: str = "",
    resource: str | None = None,
) -> RawAttempt:
    """STARTTLS with ``device``'s certificate, EXTERNAL with ``authzid``, then bind if it worked."""
    raw = await RawClient.connect(LOOPBACK, port, "localhost")
    context = client_context(
        server_cert.cert,
        device.cert if device else None,
        device.key if device else None,
    )
    features = await raw.starttls(context)
    if b"<mechanism>EXTERNAL</mechanism>" not in features:
        await raw.close()
        return RawAttempt(features, b"")
    # An empty initial response (no authzid) is sent as "=" (RFC 6120 §6.4.2).
    answer = await raw.auth("EXTERNAL", authzid.encode())
    attempt = RawAttempt(features, answer, client=raw)
    if b"<success" in answer:
        attempt.bind = await raw.bind(resource)
    return attempt


def succeeded(attempt: RawAttempt) -> bool:
    return b"<success" in attempt.sasl and b"type='result'" in attempt.bind


def bound_jid(attempt: RawAttempt) -> str:
    root = ET.fromstring(attempt.bind)
    text = root.findtext(
        "{urn:ietf:params:xml:ns:xmpp-bind}bind/{urn:ietf:params:xml:ns:xmpp-bind}jid"
    )
    assert text, attempt.bind
    return text


async def close(*attempts: RawAttempt) -> None:
    for attempt in attempts:
        if attempt.client is not None:
            await attempt.client.close()


def disconnection(client: PairingClient) -> asyncio.Event:
    gone = asyncio.Event()
    client.add_event_handler("disconnected", lambda _: gone.set())
    return gone


async def measure_close(gone: asyncio.Event, command: Any) -> float:
    """Seconds from issuing ``command`` (run in a thread) to the client seeing the close."""
    began = time.monotonic()
    await asyncio.to_thread(command)
    await asyncio.wait_for(gone.wait(), 15)
    return time.monotonic() - began
