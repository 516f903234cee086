"""The user's (and admin's) device commands: the richer inventory, revocation, kicking."""

from __future__ import annotations

from dataclasses import dataclass

import slixmpp

from pairing.errors import RequestFailed
from pairing.xmpp.adhoc import execute, table_of
from pairing.xmpp.saslcert import list_certificates

NODE_DEVICES = "urn:xmpp-device-pairing:devices:list"
NODE_REVOKE = "urn:xmpp-device-pairing:devices:revoke"
NODE_END_SESSIONS = "urn:xmpp-device-pairing:sessions:end"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    name: str
    jid: str
    state: str
    online: bool
    id: str = ""
    last_login: str = ""
    expires: str = ""
    enrolled_via: str = ""
    fingerprint: str = ""


async def list_devices(
    client: slixmpp.ClientXMPP,
    *,
    account: str | None = None,
    timeout: float = 10,
    service: str | None = None,
) -> list[DeviceInfo]:
    """The server's inventory for an account; plain XEP-0257 items on other servers."""
    try:
        reply = await execute(
            client, NODE_DEVICES, {"jid": account or ""}, timeout=timeout, service=service
        )
    except RequestFailed as exc:
        if service or account or exc.condition not in ("item-not-found", "service-unavailable"):
            raise
        # Another XEP-0257 server: names and who is online are all we can learn.
        return [
            DeviceInfo(item.name, "", "active", bool(item.users))
            for item in await list_certificates(client, timeout=timeout)
        ]
    return [
        DeviceInfo(
            name=row.get("name", ""),
            jid=row.get("jid", ""),
            state=row.get("state", ""),
            online=row.get("online") == "yes",
            id=row.get("id", ""),
            last_login=row.get("last-login", ""),
            expires=row.get("expires", ""),
            enrolled_via=row.get("enrolled-via", ""),
            fingerprint=row.get("fingerprint", ""),
        )
        for row in table_of(reply)
    ]


async def revoke_device(
    client: slixmpp.ClientXMPP,
    device: str,
    *,
    reason: str = "",
    timeout: float = 10,
    service: str | None = None,
) -> str:
    reply = await execute(
        client,
        NODE_REVOKE,
        {"device": device, "reason": reason},
        timeout=timeout,
        service=service,
    )
    note = reply.find("{http://jabber.org/protocol/commands}note")
    return note.text or "" if note is not None else ""


async def end_sessions(
    client: slixmpp.ClientXMPP,
    account: str,
    *,
    reason: str = "",
    timeout: float = 10,
    service: str | None = None,
) -> str:
    reply = await execute(
        client,
        NODE_END_SESSIONS,
        {"jid": account, "reason": reason},
        timeout=timeout,
        service=service,
    )
    note = reply.find("{http://jabber.org/protocol/commands}note")
    return note.text or "" if note is not None else ""
