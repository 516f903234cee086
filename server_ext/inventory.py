"""The device inventory and the admin operations on it (shared by the CLI and ad-hoc commands).

A *device* is a registered certificate, however it came (QR token, LAN pairing, XEP-0257,
``server-ext certs add``): its id, name, JID, fingerprint and expiry, how, when and by whom it
was enrolled, its last login, whether it is online now, and its state.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext import admin_channel
from server_ext.errors import ServerExtError, UnknownCertificate
from server_ext.model import CertificateRecord, CertState
from server_ext.registry import Registry


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def device_row(record: CertificateRecord, online: Iterable[str] = ()) -> dict[str, Any]:
    resources = sorted(online)
    return {
        "id": record.id,
        "name": record.name,
        "account": str(record.account),
        "jids": list(record.subject_jids),
        "state": record.state.value,
        "online": bool(resources),
        "online_as": resources,
        "fingerprint": record.fingerprint,
        "expires": _iso(record.not_after),
        "enrolled_via": record.added_via,
        "enrolled_by": record.added_by,
        "enrolled_at": _iso(record.added_at),
        "last_login_at": _iso(record.last_login_at),
        "last_login_address": record.last_login_address,
        "revoked_reason": record.revoked_reason,
        "state_changed_at": _iso(record.state_changed_at),
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


def resolve(registry: Registry, target: str, domain: str) -> CertificateRecord:
    """A device by id, fingerprint (8+ hex digits, colons allowed) or full JID."""
    text = target.strip()
    if text.isdigit():
        record = registry.certificate_by_id(int(text))
        if record is None:
            raise UnknownCertificate(f"no device with id {text}")
        return record
    if "/" in text or "@" in text:
        try:
            jid = JID.parse(text if "@" in text else f"{text}")
        except InvalidJID as exc:
            raise ServerExtError(str(exc)) from None
        if "@" not in text:
            raise ServerExtError(f"{text!r}: give a full JID like alice@{domain}/bot")
        matches = [
            r
            for r in registry.list_certificates(jid.bare)
            if str(jid) in r.subject_jids and r.state is not CertState.REVOKED
        ]
        if not matches:
            raise UnknownCertificate(f"no active or disabled device logs in as {jid}")
        if len(matches) > 1:
            ids = ", ".join(str(r.id) for r in matches)
            raise ServerExtError(f"several devices log in as {jid} (ids {ids}); give an id")
        return matches[0]
    digits = text.replace(":", "").lower()
    if len(digits) < 8 or any(c not in "0123456789abcdef" for c in digits):
        raise ServerExtError(
            f"{target!r} is not a device id, a fingerprint (8+ hex digits) or a full JID"
        )
    found = registry.find_certificates(digits)
    if not found:
        raise UnknownCertificate(f"no device has a fingerprint starting with {digits}")
    if len(found) > 1:
        raise ServerExtError(f"{len(found)} devices match {digits}; give more digits")
    return found[0]


def change_state(
    registry: Registry,
    data_dir: Path,
    record: CertificateRecord,
    state: CertState,
    *,
    actor: str,
    reason: str = "",
) -> tuple[CertificateRecord, int | None]:
    """Set the state, then tell the running server.

    Returns the updated record and how many sessions the server closed (None: not running).
    """
    updated = registry.set_certificate_state(
        record.account, record.name, state, actor=actor, reason=reason
    )
    try:
        reply = admin_channel.request(
            data_dir, {"op": "certificate-changed", "fingerprint": updated.fingerprint}
        )
    except admin_channel.AdminChannelError as exc:
        raise ServerExtError(
            f"device {updated.id} is {updated.state.value} in the registry, but the running "
            f"server was not told ({exc}); its live sessions stay open until the server "
            "restarts"
        ) from None
    if reply is None:
        return updated, None
    if not reply.get("ok"):
        raise ServerExtError(
            f"the state is saved, but the running server said: {reply.get('error')}"
        )
    return updated, int(reply.get("closed", 0))
