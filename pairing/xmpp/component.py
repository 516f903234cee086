"""server-ext's component on a stock server: finding it, and registering a certificate there.

On ejabberd or Prosody, server-ext attaches as an XEP-0114 component (e.g.
``pairing.example.org``) and offers the ad-hoc commands the embedded server offers itself.
The CLI finds it in the disco#items of the account's domain (XEP-0030 §4), by the feature
its disco#info carries, unless a profile or ``--service`` names it.
"""

from __future__ import annotations

import asyncio
import base64

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from pairing.errors import RequestFailed
from pairing.xmpp.adhoc import execute, table_of

#: What server-ext's component advertises in its disco#info (server_ext/net/component.py).
FEATURE = "urn:xmpp-device-pairing:component:0"
NODE_ADD = "urn:xmpp-device-pairing:certificates:add"


async def _features(client: slixmpp.ClientXMPP, jid: str, timeout: float) -> set[str]:
    try:
        info = await client.plugin["xep_0030"].get_info(jid=slixmpp.JID(jid), timeout=timeout)
    except (IqError, IqTimeout):
        return set()
    return {str(f) for f in info["disco_info"]["features"]}


async def find_component(
    client: slixmpp.ClientXMPP, domain: str, *, timeout: float = 10
) -> str | None:
    """The JID of server-ext's component among ``domain``'s items, or None."""
    try:
        items = await client.plugin["xep_0030"].get_items(jid=slixmpp.JID(domain), timeout=timeout)
    except (IqError, IqTimeout):
        return None
    candidates = sorted({str(item[0]) for item in items["disco_items"]["items"]})
    # Asked together: a domain may list many services, each one round trip.
    found = await asyncio.gather(*(_features(client, jid, timeout) for jid in candidates))
    for jid, features in zip(candidates, found, strict=True):
        if FEATURE in features:
            return jid
    return None


async def is_component(client: slixmpp.ClientXMPP, jid: str, *, timeout: float = 10) -> bool:
    """Whether ``jid`` answers as server-ext's component (for a service named by hand)."""
    return FEATURE in await _features(client, jid, timeout)


async def register_certificate(
    client: slixmpp.ClientXMPP,
    service: str,
    name: str,
    der: bytes,
    *,
    allow_management: bool = True,
    timeout: float = 10,
) -> dict[str, str]:
    """Register the certificate ``der`` for the logged-in account under ``name``."""
    reply = await execute(
        client,
        NODE_ADD,
        {
            "name": name,
            "certificate": base64.b64encode(der).decode(),
            "no-cert-management": "false" if allow_management else "true",
        },
        timeout=timeout,
        service=service,
    )
    rows = table_of(reply)
    if not rows:
        raise RequestFailed("register", "unexpected-reply", "the reply lacks the certificate")
    return rows[0]
