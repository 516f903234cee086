"""XEP-0257 from the client side: typed calls over slixmpp's ``xep_0257`` plugin."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from pairing.errors import RequestFailed
from pairing.protocol.identity import PeerCertificate

PLUGINS = ("xep_0030", "xep_0257")


@dataclass(frozen=True, slots=True)
class CertificateItem:
    """One registered certificate as the server lists it (XEP-0257 §3.2)."""

    name: str
    certificate: PeerCertificate | None  # parsed here, once; None when it cannot be read
    users: tuple[str, ...]  # resources logged in with it now


def _raise(what: str, exc: IqError | IqTimeout) -> RequestFailed:
    if isinstance(exc, IqTimeout):
        return RequestFailed(what, "timeout", "the server did not answer")
    error = exc.iq["error"]
    return RequestFailed(what, str(error["condition"]), str(error["text"]))


async def list_certificates(
    client: slixmpp.ClientXMPP, *, timeout: float = 10
) -> list[CertificateItem]:
    try:
        items = await client.plugin["xep_0257"].get_certs(timeout=timeout)
    except (IqError, IqTimeout) as exc:
        raise _raise("listing certificates", exc) from None
    result = []
    for name, b64, users in items:
        resources = tuple(sorted(str(u) for u in users))
        result.append(CertificateItem(str(name), _certificate(str(b64)), resources))
    return sorted(result, key=lambda item: item.name)


def _certificate(b64: str) -> PeerCertificate | None:
    """The ``<x509cert/>`` of an item; a server's garbage is shown as unreadable, not fatal."""
    try:
        return PeerCertificate.parse(base64.b64decode("".join(b64.split()), validate=True))
    except (binascii.Error, ValueError):  # CertificateError is a ValueError
        return None


async def add_certificate(
    client: slixmpp.ClientXMPP,
    name: str,
    der: bytes,
    *,
    allow_management: bool = True,
    timeout: float = 10,
) -> None:
    try:
        await client.plugin["xep_0257"].add_cert(
            name, base64.b64encode(der).decode(), allow_management, timeout=timeout
        )
    except (IqError, IqTimeout) as exc:
        raise _raise(f"registering {name!r}", exc) from None


async def disable_certificate(
    client: slixmpp.ClientXMPP, name: str, *, timeout: float = 10
) -> None:
    try:
        await client.plugin["xep_0257"].disable_cert(name, timeout=timeout)
    except (IqError, IqTimeout) as exc:
        raise _raise(f"disabling {name!r}", exc) from None


async def revoke_certificate(client: slixmpp.ClientXMPP, name: str, *, timeout: float = 10) -> None:
    try:
        await client.plugin["xep_0257"].revoke_cert(name, timeout=timeout)
    except (IqError, IqTimeout) as exc:
        raise _raise(f"revoking {name!r}", exc) from None


#: XEP-0257 §4: the disco feature a server advertises when it manages certificates.
FEATURE = "urn:xmpp:saslcert:1"


async def supports_saslcert(
    client: slixmpp.ClientXMPP, domain: str, *, timeout: float = 10
) -> bool:
    """Whether the server of ``domain`` advertises XEP-0257 in its disco#info."""
    try:
        info = await client.plugin["xep_0030"].get_info(jid=slixmpp.JID(domain), timeout=timeout)
    except (IqError, IqTimeout):
        return False
    return FEATURE in info["disco_info"]["features"]
