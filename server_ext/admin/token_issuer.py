"""Issuing enrollment tokens and the URI that carries one (shared by the CLI and ad-hoc)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pairing.protocol.https_api import XMPPServer
from pairing.protocol.jid import JID
from pairing.protocol.uri import EnrollmentURI, HTTPSEnrollmentURI
from server_ext.config import ServerConfig
from server_ext.errors import ServerExtError
from server_ext.model import DeviceState, TokenRecord
from server_ext.policy.tokens import TokenRules, generate_token, hash_token
from server_ext.storage.registry import Registry


@dataclass(frozen=True, slots=True)
class HTTPSEnrollment:
    """Where v2 URIs send a device (accounts on a stock server): server-ext's HTTPS face,
    pinned by ``fingerprint``, and the XMPP server it then logs in to."""

    host: str
    port: int
    fingerprint: str
    xmpp: XMPPServer


def stock_xmpp(config: ServerConfig) -> XMPPServer:
    """Where devices log in to the stock server (server.toml ``[stock]``)."""
    return XMPPServer(
        config.stock_xmpp_host or config.domain, config.stock_xmpp_port, config.stock_xmpp_pin
    )


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A fresh token: the only moment the plain token exists on the server side."""

    token: str
    record: TokenRecord

    def uri(self, *, host: str, port: int, fingerprint: str) -> EnrollmentURI:
        """Version 1: enroll before SASL on the embedded server at ``host:port``."""
        return EnrollmentURI(self.record.jid, self.token, host, port, fingerprint)

    def https_uri(self, target: HTTPSEnrollment) -> HTTPSEnrollmentURI:
        """Version 2: enroll over HTTPS, then log in to the stock server."""
        return HTTPSEnrollmentURI(
            self.record.jid,
            self.token,
            target.host,
            target.port,
            target.fingerprint,
            target.xmpp.host,
            target.xmpp.port,
            target.xmpp.pin,
        )

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
    external_account: bool = False,
) -> IssuedToken:
    """Issue a token for ``account/resource``; the device's certificate must name exactly that.

    ``external_account``: the account lives on a stock server, which authenticated it (or an
    admin named it), so the registry records it without credentials if it is new.
    """
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
    if external_account:
        registry.accounts.ensure(account, actor=created_by)
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
