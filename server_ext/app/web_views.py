"""What the web page shows and who may act on what (docs/web.md), without I/O.

The adapter (``server_ext/net/web_*.py``) asks these functions for the rows of a page and for
permission before it acts; the device operations themselves are the registry's, the same as
the CLI's and the XEP-0257 commands'.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.admin.inventory import device_row
from server_ext.errors import ServerExtError
from server_ext.model import AuditEvent, DeviceRecord, DeviceState, TokenState
from server_ext.storage.registry import Registry

AUDIT_PAGE = 500  # rows shown at most; the CLI reads the whole log


class NotAllowed(ServerExtError):
    """The signed-in account may not see or change this."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is signed in to the page."""

    account: JID
    is_admin: bool


def device_for(registry: Registry, viewer: Viewer, device_id: int) -> DeviceRecord:
    """The device ``viewer`` may act on: their own, or any for an admin."""
    device = registry.devices.get(device_id)
    if device is None or not (viewer.is_admin or device.account == viewer.account.bare):
        raise NotAllowed("no such device")  # the same answer for someone else's
    return device


def device_rows(
    registry: Registry,
    online: Mapping[str, Sequence[str]],
    *,
    account: JID | None,
    state: str = "",
    text: str = "",
) -> list[dict[str, Any]]:
    """Devices as rows (``account`` None: every account), newest first, filtered."""
    wanted = DeviceState(state) if state in {s.value for s in DeviceState} else None
    rows = []
    for device in registry.devices.all(account, wanted):
        row = device_row(device, registry.devices.chain(device.id), online)
        if text and text.lower() not in f"{row['name']} {row['account']} {row['jids']}".lower():
            continue
        rows.append(row)
    rows.sort(key=lambda r: (r["state"] == DeviceState.REVOKED.value, -int(r["id"])))
    return rows


def live_state(
    registry: Registry, online: Mapping[str, Sequence[str]], account: JID | None
) -> dict[str, dict[str, Any]]:
    """What the live updates carry: per device id, its state and where it is online."""
    rows = device_rows(registry, online, account=account)
    return {
        str(r["id"]): {
            "state": r["state"],
            "online": r["online"],
            "online_as": r["online_as"],
            "last_login_at": r["last_login_at"],
            "last_login_address": r["last_login_address"],
        }
        for r in rows
    }


def pending_tokens(registry: Registry, account: JID | None) -> list[dict[str, Any]]:
    return [
        {
            "id": t.id,
            "jid": str(t.jid),
            "name": t.name,
            "expires": t.expires_at.isoformat(timespec="seconds"),
            "created_by": t.created_by,
        }
        for t in registry.tokens.all(account.bare if account else None, TokenState.PENDING)
        if t.expires_at > registry.clock()
    ]


def parse_account(text: str, domain: str) -> JID | None:
    """A filter's account, or None when the field is empty or not an account."""
    if not text.strip():
        return None
    try:
        return JID.parse_account(text.strip(), domain).bare
    except InvalidJID:
        return None


def parse_time(text: str) -> dt.datetime | None:
    """An ISO 8601 date or time from a filter (UTC when no zone is given)."""
    if not text.strip():
        return None
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def audit_rows(
    registry: Registry,
    *,
    device: str = "",
    account: JID | None = None,
    event: str = "",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[AuditEvent]:
    """The audit log, newest first, filtered by device (id or name), account, event name
    (a prefix: ``device.`` matches every device event) and time."""
    subjects: set[str] | None = None
    device_ids: set[str] = set()
    if device.strip():
        found = [
            d
            for d in registry.devices.all(account)
            if device.strip() in (str(d.id), d.name) or d.name.startswith(device.strip())
        ]
        device_ids = {str(d.id) for d in found}
        subjects = {c.fingerprint for d in found for c in registry.devices.chain(d.id)}
        subjects |= {f"device:{i}" for i in device_ids}
    events = registry.audit.events(
        subjects=sorted(subjects) if subjects is not None else None, since=since
    )
    kept = []
    for row in reversed(events):
        if until is not None and row.at > until:
            continue
        if event.strip() and not row.event.startswith(event.strip()):
            continue
        if account is not None:
            named = {row.actor, row.subject, row.detail.get("account", ""), row.detail.get("jid")}
            if not any(n and (n == str(account) or n.startswith(f"{account}/")) for n in named):
                continue
        kept.append(row)
        if len(kept) >= AUDIT_PAGE:
            break
    return kept


__all__ = [
    "AUDIT_PAGE",
    "NotAllowed",
    "Viewer",
    "audit_rows",
    "device_for",
    "device_rows",
    "live_state",
    "parse_account",
    "parse_time",
    "pending_tokens",
]
