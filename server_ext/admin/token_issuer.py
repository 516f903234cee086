"""Issuing enrollment tokens and the URI that carries one (shared by the CLI and ad-hoc)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pairing.protocol.jid import JID
from pairing.protocol.uri import EnrollmentURI
from server_ext.errors import ServerExtError
from server_ext.model import DeviceState, TokenRecord
from server_ext.policy.tokens import TokenRules, generate_token, hash_token
from server_ext.storage.registry import Registry


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A fresh token: the only moment the plain token exists on the server side."""

    token: str
    record: TokenRecord

    def uri(self, *, host: str, port: int, fingerprint: str) -> EnrollmentURI:
        return EnrollmentURI(self.record.jid, self.token, host, port, fingerprint)

    def __repr__(self) -> str:
        return f"IssuedToken(id={self.record.id}, jid={self.record.jid})"


def issue_token(
    registry: Registry,
    rules: TokenRules,
    *,
    account: JID,
    resource: str,
    name: str | None,
    ttl: dt.timedelta | None,
    created_by: str,
) -> IssuedToken:
    """Issue a token for ``account/resource``; the device's certificate must name exactly that."""
    now = registry.clock()
    if not resource.strip():
        raise ServerExtError("a device needs a resource, e.g. --resource weatherbot")
    jid = account.bare.with_resource(resource.strip())
    live = [d for d in registry.devices.for_jid(jid) if d.state is not DeviceState.REVOKED]
    if live:
        # Said now rather than when the device redeems: the redemption would be refused.
        raise ServerExtError(
            f"the device {live[0].name!r} (id {live[0].id}) already logs in as {jid}; "
            "revoke it first, or choose another resource"
        )
    device_name = (name or jid.resource).strip()[:1023]
    holder = registry.devices.by_name(account.bare, device_name)
    if holder is not None and holder.state is not DeviceState.REVOKED:
        # A revoked device gives its name up at the redemption (docs/admin.md, "Names");
        # a live one keeps it, and the device could do nothing about it: say so now.
        raise ServerExtError(
            f"the account already has a device named {device_name!r} (id {holder.id}); "
            "revoke it first, or give the new device another name"
        )
    lifetime = rules.ttl(ttl)
    token = generate_token()
    record = registry.tokens.add(
        jid,
        name=device_name,
        token_hash=hash_token(token),
        expires_at=now + lifetime,
        created_by=created_by,
        max_outstanding=rules.max_outstanding,
    )
    return IssuedToken(token, record)
