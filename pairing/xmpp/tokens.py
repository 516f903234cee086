"""Asking the server for pairing tokens over XEP-0050 ad-hoc commands (docs/protocol.md)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from pairing.errors import RequestFailed

COMMANDS = "http://jabber.org/protocol/commands"
DATA = "jabber:x:data"
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


async def _execute(
    client: slixmpp.ClientXMPP, node: str, values: dict[str, str], *, timeout: float
) -> ET.Element:
    """Run a single-stage command with a submitted form; returns the <command/> reply."""
    iq = client.make_iq_set(ito=client.boundjid.domain)
    command = ET.Element(f"{{{COMMANDS}}}command", {"node": node, "action": "execute"})
    x = ET.SubElement(command, f"{{{DATA}}}x", {"type": "submit"})
    for var, value in values.items():
        field = ET.SubElement(x, f"{{{DATA}}}field", {"var": var})
        ET.SubElement(field, f"{{{DATA}}}value").text = value
    iq.append(command)
    try:
        result = await iq.send(timeout=timeout)  # type: ignore[no-untyped-call]
    except IqError as exc:
        error = exc.iq["error"]
        raise RequestFailed(
            node.rsplit(":", 1)[-1], str(error["condition"]), str(error["text"])
        ) from None
    except IqTimeout:
        raise RequestFailed(node.rsplit(":", 1)[-1], "timeout", "no answer") from None
    reply: ET.Element | None = result.xml.find(f"{{{COMMANDS}}}command")
    if reply is None or reply.get("status") != "completed":
        raise RequestFailed(
            node.rsplit(":", 1)[-1], "unexpected-reply", "the command did not complete"
        )
    return reply


def _fields(x: ET.Element) -> dict[str, str]:
    out = {}
    for field in x.findall(f"{{{DATA}}}field"):
        value = field.find(f"{{{DATA}}}value")
        out[field.get("var", "")] = (value.text or "") if value is not None else ""
    return out


async def request_token(
    client: slixmpp.ClientXMPP,
    resource: str,
    *,
    name: str | None = None,
    ttl_seconds: int | None = None,
    account: str | None = None,
    timeout: float = 10,
) -> TokenGrant:
    """Ask for a one-time token for ``<account>/<resource>`` (the own account by default)."""
    values = {"resource": resource}
    if name:
        values["name"] = name
    if ttl_seconds is not None:
        values["ttl"] = str(ttl_seconds)
    if account:
        values["jid"] = account
    reply = await _execute(client, NODE_CREATE, values, timeout=timeout)
    x = reply.find(f"{{{DATA}}}x")
    fields = _fields(x) if x is not None else {}
    try:
        return TokenGrant(
            int(fields["token-id"]), fields["jid"], fields["name"], fields["expires"], fields["uri"]
        )
    except (KeyError, ValueError):
        raise RequestFailed("create-token", "unexpected-reply", "the reply lacks fields") from None


async def list_tokens(client: slixmpp.ClientXMPP, *, timeout: float = 10) -> list[TokenInfo]:
    reply = await _execute(client, NODE_LIST, {}, timeout=timeout)
    x = reply.find(f"{{{DATA}}}x")
    if x is None:
        return []
    tokens = []
    for item in x.findall(f"{{{DATA}}}item"):
        f = _fields(item)
        tokens.append(TokenInfo(int(f["token-id"]), f["jid"], f["name"], f["expires"]))
    return tokens


async def cancel_token(client: slixmpp.ClientXMPP, token_id: int, *, timeout: float = 10) -> None:
    await _execute(client, NODE_CANCEL, {"token-id": str(token_id)}, timeout=timeout)
