"""Running XEP-0050 ad-hoc commands from the user's client (single stage, submitted form)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from pairing.errors import RequestFailed

COMMANDS = "http://jabber.org/protocol/commands"
DATA = "jabber:x:data"


async def execute(
    client: slixmpp.ClientXMPP,
    node: str,
    values: dict[str, str],
    *,
    timeout: float,
    service: str | None = None,
) -> ET.Element:
    """Run a single-stage command with a submitted form; returns the <command/> reply.

    ``service`` is who offers the commands: the account's own server, or, on a stock server,
    server-ext's component (e.g. ``pairing.example.org``); by default the client's
    ``service`` (:class:`~pairing.xmpp.connection.PairingClient`), else its own server.
    """
    if service is None:
        service = getattr(client, "service", None)  # a PairingClient's, when set
    iq = client.make_iq_set(ito=service or client.boundjid.domain)
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


def fields_of(x: ET.Element) -> dict[str, str]:
    out = {}
    for field in x.findall(f"{{{DATA}}}field"):
        value = field.find(f"{{{DATA}}}value")
        out[field.get("var", "")] = (value.text or "") if value is not None else ""
    return out


def table_of(reply: ET.Element) -> list[dict[str, str]]:
    """The rows of a result form's table (XEP-0004 §3.4), or its single record as one row."""
    x = reply.find(f"{{{DATA}}}x")
    if x is None:
        return []
    items = x.findall(f"{{{DATA}}}item")
    if items:
        return [fields_of(item) for item in items]
    record = fields_of(x)
    return [record] if record else []
