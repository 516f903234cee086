"""Pairing requests, server side (docs/protocol.md, section 9.6): the state machine, without I/O.

A request is made by a device that proved possession of its key; it names one full JID (the
certificate's only xmppAddr) and waits for that account's owner, or an admin, to approve it on
the web page. Approval registers the certificate in the same step, so an unapproved request
can never become a login; denial, cancellation and expiry end it. Each request is approved at
most once (single use), lives a few minutes, and each address may hold only a few.

In memory only, like the HTTPS nonces: a request lives minutes, and a restart only makes the
waiting device say the request is unknown (it asks again). The clock is injected.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum

from pairing.protocol import pair_request as wire
from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID
from server_ext.errors import (
    DuplicateCertificate,
    DuplicateName,
    JIDInUse,
    RegistryError,
    ServerExtError,
)
from server_ext.model import CertificateRecord
from server_ext.policy.certificates import CertificateRefused, require_registrable
from server_ext.storage.registry import Registry

#: RFC 8628 §6.1: a user code from 20 consonants (no vowels, so no words; no look-alikes),
#: 8 characters shown as XXXX-XXXX: 34 bits, enough for a code that lives minutes and is only
#: compared by eye, never typed as a credential.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
REQUEST_LIFETIME = dt.timedelta(minutes=5)
POLL_INTERVAL = 2  # seconds between status queries a device is told (it long-polls anyway)
MAX_PENDING_PER_ADDRESS = 5
MAX_PENDING = 1000


class RequestState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class RequestRefused(ServerExtError):
    """A pairing request cannot be made or decided; ``condition`` is the wire name."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


@dataclass(frozen=True, slots=True)
class PairingRequest:
    """One request: who asked (the certificate and its JID), from where, and how it stands."""

    id: str
    user_code: str
    certificate: PeerCertificate
    jid: JID  # the certificate's one full JID: the account is its bare part
    name: str
    address: str
    created_at: dt.datetime
    expires_at: dt.datetime
    state: RequestState = RequestState.PENDING
    decided_by: str | None = None
    registered: CertificateRecord | None = None

    @property
    def account(self) -> JID:
        return self.jid.bare

    @property
    def resource(self) -> str:
        return self.jid.resource or ""


def user_code() -> str:
    """A fresh user code, ``XXXX-XXXX`` (RFC 8628 §6.1)."""
    chars = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


def may_decide(request: PairingRequest, account: JID, is_admin: bool) -> bool:
    """Only the account the device asks for, or an admin, decides its request."""
    return is_admin or request.account == account.bare


class PairingRequestBook:
    """The outstanding and recently decided requests of one server."""

    def __init__(
        self,
        registry: Registry,
        domain: str,
        *,
        lifetime: dt.timedelta = REQUEST_LIFETIME,
        per_address: int = MAX_PENDING_PER_ADDRESS,
        limit: int = MAX_PENDING,
    ) -> None:
        self._registry = registry
        self._domain = domain
        self._lifetime = lifetime
        self._per_address = per_address
        self._limit = limit
        self._requests: OrderedDict[str, PairingRequest] = OrderedDict()

    def _now(self) -> dt.datetime:
        return self._registry.clock()

    def _sweep(self) -> None:
        """Pending requests past their time expire; ended ones are forgotten after another
        lifetime (a device still polling then hears the request is unknown)."""
        now = self._now()
        for key, request in list(self._requests.items()):
            if request.state is RequestState.PENDING and request.expires_at <= now:
                self._requests[key] = replace(request, state=RequestState.EXPIRED)
            elif request.expires_at + self._lifetime <= now:
                del self._requests[key]

    def __iter__(self) -> Iterator[PairingRequest]:
        self._sweep()
        return iter(list(self._requests.values()))

    def create(self, certificate: PeerCertificate, name: str, address: str) -> PairingRequest:
        """A new pending request for ``certificate`` (whose key the caller saw proved)."""
        self._sweep()
        now = self._now()
        if len(certificate.jids) != 1 or certificate.jids[0].is_bare:
            raise RequestRefused(
                "bad-certificate", "the certificate must name one full JID (account/resource)"
            )
        jid = certificate.jids[0]
        if jid.domain != self._domain:
            raise RequestRefused("jid-mismatch", f"this server serves {self._domain}")
        try:
            require_registrable(certificate, jid.bare, now, exactly=jid)
        except CertificateRefused as refused:
            raise RequestRefused("bad-certificate", str(refused)) from None
        pending = [r for r in self._requests.values() if r.state is RequestState.PENDING]
        if sum(1 for r in pending if r.address == address) >= self._per_address:
            raise RequestRefused(
                "rate-limited", "too many pairing requests are pending from your address"
            )
        if len(pending) >= self._limit:
            raise RequestRefused("rate-limited", "too many pairing requests are pending")
        if any(r.certificate.fingerprint == certificate.fingerprint for r in pending):
            raise RequestRefused("already-registered", "this certificate has a pending request")
        request = PairingRequest(
            id=secrets.token_urlsafe(18),
            user_code=user_code(),
            certificate=certificate,
            jid=jid,
            name=name,
            address=address,
            created_at=now,
            expires_at=now + self._lifetime,
        )
        self._requests[request.id] = request
        return request

    def get(self, request_id: str) -> PairingRequest | None:
        self._sweep()
        return self._requests.get(request_id)

    def pending_for(self, account: JID | None) -> list[PairingRequest]:
        """Pending requests for ``account`` (every account's when None)."""
        return [
            r
            for r in self
            if r.state is RequestState.PENDING and (account is None or r.account == account.bare)
        ]

    def _pending(self, request_id: str, account: JID, is_admin: bool) -> PairingRequest:
        request = self.get(request_id)
        if request is None or not may_decide(request, account, is_admin):
            # The same answer whether it does not exist or is someone else's.
            raise RequestRefused(wire.UNKNOWN, "no such pairing request")
        if request.state is RequestState.EXPIRED:
            raise RequestRefused(wire.EXPIRED, "this pairing request has expired")
        if request.state is not RequestState.PENDING:
            raise RequestRefused("request-decided", f"this request was {request.state.value}")
        return request

    def approve(self, request_id: str, account: JID, *, is_admin: bool) -> PairingRequest:
        """Register the request's certificate for its account; the request ends approved."""
        request = self._pending(request_id, account, is_admin)
        if self._registry.accounts.get(request.account) is None:
            raise RequestRefused("not-found", f"there is no account {request.account}")
        try:
            registered = self._registry.devices.add(
                request.account,
                request.name,
                request.certificate,
                added_by=str(account.bare),
                added_via="request",
            )
        except DuplicateName:
            raise RequestRefused(
                "name-conflict",
                f"{request.account} already has a device named {request.name!r}",
            ) from None
        except (JIDInUse, DuplicateCertificate) as exc:
            raise RequestRefused("jid-in-use", str(exc)) from None
        except RegistryError as exc:
            raise RequestRefused("internal-error", f"not stored: {exc}") from None
        approved = replace(
            request,
            state=RequestState.APPROVED,
            decided_by=str(account.bare),
            registered=registered,
        )
        self._requests[request.id] = approved
        return approved

    def deny(self, request_id: str, account: JID, *, is_admin: bool) -> PairingRequest:
        request = self._pending(request_id, account, is_admin)
        denied = replace(request, state=RequestState.DENIED, decided_by=str(account.bare))
        self._requests[request.id] = denied
        return denied

    def cancel(self, request_id: str, account: JID, *, is_admin: bool) -> PairingRequest:
        request = self._pending(request_id, account, is_admin)
        cancelled = replace(request, state=RequestState.CANCELLED, decided_by=str(account.bare))
        self._requests[request.id] = cancelled
        return cancelled


__all__ = [
    "POLL_INTERVAL",
    "REQUEST_LIFETIME",
    "USER_CODE_ALPHABET",
    "PairingRequest",
    "PairingRequestBook",
    "RequestRefused",
    "RequestState",
    "may_decide",
    "user_code",
]
