"""The device inventory and the admin operations on it (shared by the CLI and ad-hoc commands).

A *device* is what enrolled once (QR token, LAN pairing, XEP-0257, ``server-ext certs add``)
together with every certificate it rotated to since: its id, name, JID, current fingerprint
and expiry, how, when and by whom it was enrolled, its last login, whether it is online now,
and its state. Revoking a device revokes every certificate it ever had.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.admin import admin_channel
from server_ext.errors import ServerExtError, UnknownCertificate
from server_ext.model import CertificateRecord, CertState, DeviceRecord, DeviceState
from server_ext.storage.registry import Registry


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def device_row(
    device: DeviceRecord,
    certificates: Sequence[CertificateRecord],
    online: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """One device as a flat row (CLI tables and ``--json``)."""
    live = [c for c in certificates if c.state is not CertState.REVOKED]
    current = (live or list(certificates))[-1] if certificates else None
    resources = sorted({jid for c in certificates for jid in (online or {}).get(c.fingerprint, ())})
    logins = [c for c in certificates if c.last_login_at is not None]
    last = max(logins, key=lambda c: c.last_login_at or 0) if logins else None
    return {
        "id": device.id,
        "name": device.name,
        "account": str(device.account),
        "jids": list(current.subject_jids) if current else [],
        "state": device.state.value,
        "online": bool(resources),
        "online_as": resources,
        "fingerprint": current.fingerprint if current else None,
        "expires": _iso(current.not_after) if current else None,
        "enrolled_via": device.added_via,
        "enrolled_by": device.added_by,
        "enrolled_at": _iso(device.added_at),
        "last_login_at": _iso(last.last_login_at) if last else None,
        "last_login_address": last.last_login_address if last else None,
        "revoked_reason": device.revoked_reason,
        "state_changed_at": _iso(device.state_changed_at),
        "certificates": [
            {"fingerprint": c.fingerprint, "state": c.state.value, "expires": _iso(c.not_after)}
            for c in certificates
        ],
    }


def live_sessions(data_dir: Path) -> dict[str, list[str]] | None:
    """Fingerprint → full JIDs online now, from the running server; None if it is not running."""
    reply = admin_channel.request(data_dir, {"op": "sessions"})
    if reply is None or not reply.get("ok"):
        return None
    online: dict[str, list[str]] = {}
    for session in reply.get("sessions", []):
        if session.get("fingerprint"):
            online.setdefault(session["fingerprint"], []).append(session["jid"])
    return online


def tell_trust_changed(data_dir: Path, reason: str) -> bool:
    """Tell the running server that certificates were added (it syncs the stock server);
    False when no server is running (it syncs at its next start)."""
    reply = admin_channel.request(data_dir, {"op": "trust-changed", "reason": reason})
    if reply is None:
        return False
    if not reply.get("ok"):
        raise ServerExtError(
            f"saved in the registry, but the running server said: {reply.get('error')}"
        )
    return True


def resolve(
    registry: Registry, target: str, domain: str, *, account: JID | None = None
) -> DeviceRecord:
    """A device by id, full JID, certificate fingerprint (8+ hex digits) or, with ``account``,
    by name.

    A JID resolves to the one device that logs in as it, whichever certificate of its rotation
    chain did; when only revoked devices ever used it, to the newest of them (so it stays
    reachable for ``devices show`` and the audit log).
    """
    text = target.strip()
    if account is not None:
        named = registry.devices.by_name(account, text)
        if named is not None:
            return named
    if text.isdigit():
        device = registry.devices.get(int(text))
        if device is None:
            raise UnknownCertificate(f"no device with id {text}")
        return device
    if "/" in text or "@" in text:
        if "@" not in text:
            raise ServerExtError(f"{text!r}: give a full JID like alice@{domain}/bot")
        try:
            jid = JID.parse(text)
        except InvalidJID as exc:
            raise ServerExtError(str(exc)) from None
        found = registry.devices.for_jid(jid)
        if not found:
            raise UnknownCertificate(f"no device logs in as {jid}")
        live = [d for d in found if d.state is not DeviceState.REVOKED]
        if len(live) > 1:
            ids = ", ".join(str(d.id) for d in live)
            raise ServerExtError(f"several devices log in as {jid} (ids {ids}); give an id")
        return live[0] if live else found[0]
    digits = text.replace(":", "").lower()
    if len(digits) < 8 or any(c not in "0123456789abcdef" for c in digits):
        hint = "" if account is not None else " (or a name, with the account)"
        raise UnknownCertificate(
            f"{target!r} is not a device id, a full JID or a fingerprint (8+ hex digits){hint}"
        )
    devices = {c.device.id: c.device for c in registry.devices.find(digits)}
    if not devices:
        raise UnknownCertificate(f"no device has a fingerprint starting with {digits}")
    if len(devices) > 1:
        raise ServerExtError(f"{len(devices)} devices match {digits}; give more digits")
    return next(iter(devices.values()))


def change_state(
    registry: Registry,
    data_dir: Path,
    device: DeviceRecord,
    state: DeviceState,
    *,
    actor: str,
    reason: str = "",
) -> tuple[DeviceRecord, bool, int | None]:
    """Set the state, then tell the running server.

    Returns the device, whether its state changed (revoking twice keeps the first reason),
    and how many sessions the server closed (None: not running).
    """
    updated, changed = registry.devices.set_state(device.id, state, actor=actor, reason=reason)
    try:
        reply = admin_channel.request(data_dir, {"op": "device-changed", "device": updated.id})
    except admin_channel.AdminChannelError as exc:
        raise admin_channel.AdminChannelError(
            f"device {updated.id} is {updated.state.value} in the registry, but the running "
            f"server was not told ({exc}); its live sessions stay open until the server "
            "restarts"
        ) from None
    if reply is None:
        return updated, changed, None
    if not reply.get("ok"):
        raise ServerExtError(
            f"the state is saved, but the running server said: {reply.get('error')}"
        )
    return updated, changed, int(reply.get("closed", 0))
