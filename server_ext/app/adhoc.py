"""Ad-hoc commands (XEP-0050) for pairing tokens, so any client with ad-hoc support can pair.

Commands are single-stage: an ``execute`` without a form returns the form to fill
(``status='executing'``); an ``execute`` or ``complete`` carrying the submitted form runs the
command and returns ``status='completed'`` with a result form (XEP-0004).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.admin.inventory import device_row, resolve
from server_ext.admin.token_issuer import issue_token
from server_ext.app.handlers import Requester, ServerContext
from server_ext.app.saslcert import close_device_sessions
from server_ext.errors import RegistryError, ServerExtError
from server_ext.model import DeviceState, RegistryChange, TokenState
from server_ext.wire import namespaces as ns
from server_ext.wire.stanzas import ErrorType, StanzaError

log = logging.getLogger(__name__)

COMMANDS = "http://jabber.org/protocol/commands"
DATA = "jabber:x:data"
NODE_CREATE = "urn:xmpp-device-pairing:token:create"
NODE_LIST = "urn:xmpp-device-pairing:token:list"
NODE_CANCEL = "urn:xmpp-device-pairing:token:cancel"
NODE_DEVICES = "urn:xmpp-device-pairing:devices:list"
NODE_REVOKE = "urn:xmpp-device-pairing:devices:revoke"
NODE_END_SESSIONS = "urn:xmpp-device-pairing:sessions:end"


def _q(namespace: str, tag: str) -> str:
    return ns.clark(namespace, tag)


@dataclass(frozen=True, slots=True)
class Field:
    var: str
    label: str
    type: str = "text-single"
    required: bool = False
    value: str = ""


@dataclass(frozen=True, slots=True)
class Command:
    node: str
    name: str
    fields: tuple[Field, ...]
    run: Callable[[ServerContext, Requester, dict[str, str]], tuple[str, list[dict[str, str]]]]


def _form(form_type: str, title: str, fields: tuple[Field, ...]) -> ET.Element:
    x = ET.Element(_q(DATA, "x"), {"type": form_type})
    ET.SubElement(x, _q(DATA, "title")).text = title
    for f in fields:
        el = ET.SubElement(x, _q(DATA, "field"), {"var": f.var, "label": f.label, "type": f.type})
        if f.required:
            ET.SubElement(el, _q(DATA, "required"))
        if f.value:
            ET.SubElement(el, _q(DATA, "value")).text = f.value
    return x


def _submitted(command: ET.Element) -> dict[str, str] | None:
    x = command.find(_q(DATA, "x"))
    if x is None or x.get("type") != "submit":
        return None
    values: dict[str, str] = {}
    for field_el in x.findall(_q(DATA, "field")):
        var = field_el.get("var")
        value = field_el.find(_q(DATA, "value"))
        if var:
            values[var] = (value.text or "").strip() if value is not None else ""
    return values


def _is_admin(ctx: ServerContext, requester: Requester) -> bool:
    account = ctx.registry.accounts.get(requester.jid.bare)
    return account is not None and account.is_admin


def _account_for(ctx: ServerContext, requester: Requester, values: dict[str, str]) -> JID:
    wanted = values.get("jid", "")
    if not wanted:
        return requester.jid.bare
    try:
        jid = JID.parse_account(wanted, ctx.domain)
    except InvalidJID as exc:
        raise StanzaError(ErrorType.MODIFY, "bad-request", str(exc)) from None
    if jid != requester.jid.bare and not _is_admin(ctx, requester):
        raise StanzaError(ErrorType.AUTH, "forbidden", "only an admin may pair for another account")
    return jid


def _create(
    ctx: ServerContext, requester: Requester, values: dict[str, str]
) -> tuple[str, list[dict[str, str]]]:
    account = _account_for(ctx, requester, values)
    try:
        ttl = dt.timedelta(seconds=int(values.get("ttl") or ctx.token_rules.default_ttl.seconds))
    except ValueError:
        raise StanzaError(ErrorType.MODIFY, "bad-request", "ttl is a number of seconds") from None
    try:
        issued = issue_token(
            ctx.registry,
            ctx.token_rules,
            account=account,
            resource=values.get("resource", ""),
            name=values.get("name") or None,
            ttl=ttl,
            created_by=str(requester.jid),
            external_account=ctx.stock_enrollment is not None,
        )
    except (ServerExtError, InvalidJID) as exc:
        raise StanzaError(ErrorType.MODIFY, "not-acceptable", str(exc)) from None
    uri: object
    if ctx.stock_enrollment is not None:
        uri = issued.https_uri(ctx.stock_enrollment)
    else:
        uri = issued.uri(host=ctx.connect_host, port=ctx.connect_port, fingerprint=ctx.fingerprint)
    record = issued.record
    return (
        f"Show the URI to the device as a QR code. It works once, until "
        f"{record.expires_at:%H:%M} UTC.",
        [
            {
                "token-id": str(record.id),
                "jid": str(record.jid),
                "name": record.name,
                "expires": record.expires_at.isoformat(timespec="seconds"),
                "uri": str(uri),
            }
        ],
    )


def _list(
    ctx: ServerContext, requester: Requester, values: dict[str, str]
) -> tuple[str, list[dict[str, str]]]:
    account = _account_for(ctx, requester, values)
    now = ctx.clock()
    rows = [
        {
            "token-id": str(r.id),
            "jid": str(r.jid),
            "name": r.name,
            "expires": r.expires_at.isoformat(timespec="seconds"),
        }
        for r in ctx.registry.tokens.all(account, TokenState.PENDING)
        if r.expires_at > now
    ]
    return (f"{len(rows)} unused token(s) for {account}.", rows)


def _cancel(
    ctx: ServerContext, requester: Requester, values: dict[str, str]
) -> tuple[str, list[dict[str, str]]]:
    try:
        token_id = int(values.get("token-id", ""))
    except ValueError:
        raise StanzaError(ErrorType.MODIFY, "bad-request", "token-id is a number") from None
    owner = None if _is_admin(ctx, requester) else requester.jid.bare
    try:
        record = ctx.registry.tokens.cancel(token_id, actor=str(requester.jid), account=owner)
    except RegistryError as exc:
        raise StanzaError(ErrorType.CANCEL, "item-not-found", str(exc)) from None
    return (f"Cancelled token {record.id} for {record.jid}.", [])


def _require_admin(ctx: ServerContext, requester: Requester) -> None:
    if not _is_admin(ctx, requester):
        raise StanzaError(ErrorType.AUTH, "forbidden", "this command is for administrators")


def _devices(
    ctx: ServerContext, requester: Requester, values: dict[str, str]
) -> tuple[str, list[dict[str, str]]]:
    wanted = values.get("jid", "")
    if wanted == "*":
        _require_admin(ctx, requester)
        devices = ctx.registry.devices.all()
    else:
        devices = ctx.registry.devices.all(_account_for(ctx, requester, values))
    rows = []
    for device in devices:
        certificates = ctx.registry.devices.chain(device.id)
        online = {
            fp: [str(s.jid) for s in ctx.sessions.with_certificate(fp)]
            for fp in (c.fingerprint for c in certificates)
        }
        row = device_row(device, certificates, online)
        rows.append(
            {
                "id": str(row["id"]),
                "name": row["name"],
                "jid": ", ".join(row["jids"]),
                "state": row["state"],
                "online": "yes" if row["online"] else "no",
                "last-login": row["last_login_at"] or "",
                "expires": row["expires"] or "",
                "enrolled-via": row["enrolled_via"],
                "fingerprint": row["fingerprint"] or "",
            }
        )
    return (f"{len(rows)} device(s).", rows)


def _revoke_device(
    ctx: ServerContext, requester: Requester, values: dict[str, str]
) -> tuple[str, list[dict[str, str]]]:
    own = requester.jid.bare
    try:
        device = resolve(ctx.registry, values.get("device", ""), ctx.domain, account=own)
    except ServerExtError as exc:
        raise StanzaError(ErrorType.CANCEL, "item-not-found", str(exc)) from None
    if device.account != own and not _is_admin(ctx, requester):
        # Do not reveal other accounts' devices to non-admins.
        raise StanzaError(ErrorType.CANCEL, "item-not-found", "no such device on your account")
    reason = values.get("reason") or f"by {requester.jid}"
    try:
        updated, changed = ctx.registry.devices.set_state(
            device.id, DeviceState.REVOKED, actor=str(requester.jid), reason=reason
        )
    except RegistryError as exc:
        raise StanzaError(ErrorType.CANCEL, "not-allowed", str(exc)) from None
    closed = close_device_sessions(ctx, updated)
    ctx.changes(RegistryChange("revoked (ad-hoc)", updated.id))
    already = "" if changed else " (it was already revoked)"
    return (
        f"Revoked device {updated.id} ({updated.name}){already}; closed {closed} session(s).",
        [],
    )


def _end_sessions(
    ctx: ServerContext, requester: Requester, values: dict[str, str]
) -> tuple[str, list[dict[str, str]]]:
    _require_admin(ctx, requester)
    account = _account_for(ctx, requester, values)
    reason = values.get("reason") or "an administrator ended this session"
    sessions = ctx.sessions.resources(account)
    for session in sessions:
        session.terminate("policy-violation", reason)
    return (f"Ended {len(sessions)} session(s) of {account}.", [])


_RESOURCE = Field("resource", "Device resource (e.g. weatherbot)", required=True)
_JID = Field("jid", "Account (admins only; empty for your own)", "jid-single")
COMMAND_LIST = (
    Command(
        NODE_CREATE,
        "Create device pairing token",
        (
            _RESOURCE,
            Field("name", "Device name (optional)"),
            Field("ttl", "Lifetime in seconds (30 to 3600)", value="600"),
            _JID,
        ),
        _create,
    ),
    Command(NODE_LIST, "List unused pairing tokens", (_JID,), _list),
    Command(
        NODE_CANCEL,
        "Cancel a pairing token",
        (Field("token-id", "Token id", required=True),),
        _cancel,
    ),
    Command(
        NODE_DEVICES,
        "List devices",
        (Field("jid", "Account (admins: any, or * for all)"),),
        _devices,
    ),
    Command(
        NODE_REVOKE,
        "Revoke a device",
        (
            Field("device", "Device name, id, full JID or fingerprint", required=True),
            Field("reason", "Reason (kept in the audit log)"),
        ),
        _revoke_device,
    ),
    Command(
        NODE_END_SESSIONS,
        "End a user's sessions (admins)",
        (Field("jid", "Account", "jid-single", required=True), Field("reason", "Reason")),
        _end_sessions,
    ),
)
BY_NODE = {c.node: c for c in COMMAND_LIST}


def handle(
    ctx: ServerContext,
    requester: Requester,
    iq: ET.Element,
    *,
    commands: Mapping[str, Command] = BY_NODE,
) -> ET.Element | None:
    """Answer one XEP-0050 ``<command/>`` IQ from ``commands`` (by node)."""
    command_el = iq[0]
    if iq.get("type") != "set":
        raise StanzaError(ErrorType.CANCEL, "bad-request", "commands are executed with set")
    node = command_el.get("node", "")
    command = commands.get(node)
    if command is None:
        raise StanzaError(ErrorType.CANCEL, "item-not-found", f"no command {node!r}")
    action = command_el.get("action", "execute")
    session = command_el.get("sessionid") or secrets.token_hex(8)
    reply = ET.Element(_q(COMMANDS, "command"), {"node": node, "sessionid": session})
    if action == "cancel":
        reply.set("status", "canceled")
        return reply
    if action not in ("execute", "complete"):
        raise StanzaError(ErrorType.MODIFY, "bad-request", f"action {action!r} is not offered")
    values = _submitted(command_el)
    if values is None:
        # XEP-0050 §3.4: the first stage returns the form and the allowed actions.
        reply.set("status", "executing")
        actions = ET.SubElement(reply, _q(COMMANDS, "actions"), {"execute": "complete"})
        ET.SubElement(actions, _q(COMMANDS, "complete"))
        reply.append(_form("form", command.name, command.fields))
        return reply
    note, rows = command.run(ctx, requester, values)
    reply.set("status", "completed")
    ET.SubElement(reply, _q(COMMANDS, "note"), {"type": "info"}).text = note
    if rows:
        x = ET.SubElement(reply, _q(DATA, "x"), {"type": "result"})
        ET.SubElement(x, _q(DATA, "title")).text = command.name
        if len(rows) == 1 and node == NODE_CREATE:
            for key, value in rows[0].items():
                f = ET.SubElement(x, _q(DATA, "field"), {"var": key, "type": "text-single"})
                ET.SubElement(f, _q(DATA, "value")).text = value
        else:
            # XEP-0004 §3.4: a table is a <reported/> header and one <item/> per row.
            reported = ET.SubElement(x, _q(DATA, "reported"))
            for key in rows[0]:
                ET.SubElement(reported, _q(DATA, "field"), {"var": key})
            for row in rows:
                item = ET.SubElement(x, _q(DATA, "item"))
                for key, value in row.items():
                    f = ET.SubElement(item, _q(DATA, "field"), {"var": key})
                    ET.SubElement(f, _q(DATA, "value")).text = value
    return reply


def disco_items(domain: str) -> ET.Element:
    """XEP-0050 §2.2: the command list, answered to disco#items on the commands node."""
    query = ET.Element(_q(ns.DISCO_ITEMS, "query"), {"node": COMMANDS})
    for command in COMMAND_LIST:
        ET.SubElement(
            query,
            _q(ns.DISCO_ITEMS, "item"),
            {"jid": domain, "node": command.node, "name": command.name},
        )
    return query
