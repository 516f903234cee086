"""Asking the server for pairing tokens over XEP-0050 ad-hoc commands (docs/protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass

import slixmpp

from pairing.errors import RequestFailed
from pairing.xmpp.adhoc import DATA, execute, fields_of

NODE_CREATE = "urn:xmpp-device-pairing:token:create"
NODE_LIST = "urn:xmpp-device-pairing:token:list"
NODE_CANCEL = "urn:xmpp-device-pairing:token:cancel"


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A token the server issued; ``uri`` holds the secret, so show it only to the device."""

    token_id: int
    jid: str
    name: str
    expires: str
    uri: str

    def __repr__(self) -> str:
        return f"TokenGrant(token_id={self.token_id}, jid={self.jid}, expires={self.expires})"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token_id: int
    jid: str
    name: str
    expires: str


async def request_token(
    client: slixmpp.ClientXMPP,
    resource: str,
    *,
    name: str | None = None,
    ttl_seconds: int | None = None,
    account: str | None = None,
    timeout: float = 10,
    service: str | None = None,
) -> TokenGrant:
    """Ask for a one-time token for ``<account>/<resource>`` (the own account by default)."""
    values = {"resource": resource}
    if name:
        values["name"] = name
    if ttl_seconds is not None:
        values["ttl"] = str(ttl_seconds)
    if account:
        values["jid"] = account
    reply = await execute(client, NODE_CREATE, values, timeout=timeout, service=service)
    x = reply.find(f"{{{DATA}}}x")
    fields = fields_of(x) if x is not None else {}
    try:
        return TokenGrant(
            int(fields["token-id"]), fields["jid"], fields["name"], fields["expires"], fields["uri"]
        )
    except (KeyError, ValueError):
        raise RequestFailed("create-token", "unexpected-reply", "the reply lacks fields") from None


async def list_tokens(
    client: slixmpp.ClientXMPP, *, timeout: float = 10, service: str | None = None
) -> list[TokenInfo]:
    reply = await execute(client, NODE_LIST, {}, timeout=timeout, service=service)
    x = reply.find(f"{{{DATA}}}x")
    if x is None:
        return []
    tokens = []
    for item in x.findall(f"{{{DATA}}}item"):
        f = fields_of(item)
        tokens.append(TokenInfo(int(f["token-id"]), f["jid"], f["name"], f["expires"]))
    return tokens


async def cancel_token(
    client: slixmpp.ClientXMPP,
    token_id: int,
    *,
    timeout: float = 10,
    service: str | None = None,
) -> None:
    await execute(
        client, NODE_CANCEL, {"token-id": str(token_id)}, timeout=timeout, service=service
    )
