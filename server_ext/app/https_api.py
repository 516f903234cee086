"""The HTTPS API's logic (docs/protocol.md, section 9), without I/O.

``server_ext/net/https.py`` hands each request's method, query, ``Authorization`` header,
peer address and body bytes to :class:`HTTPSAPI` and sends back the :class:`Reply`. A reply
that carries a :class:`~server_ext.model.RegistryChange` must not be sent before the stock
server has been brought in step (``sync_trust``): the device logs in right after it.

Every request gets an answer; malformed input is a 400 with the reason, never a 500.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pairing.protocol import pair_request as pairing_wire
from pairing.protocol.device_status import DeviceState, DeviceStatus, DeviceStatusQuery
from pairing.protocol.enrollment import EnrollCondition
from pairing.protocol.https_api import (
    MAX_BODY_BYTES,
    APICondition,
    APIRefused,
    Challenge,
    Enrolled,
    EnrollRequest,
    ProsodyCertificateAnswer,
    ProsodyCertificateQuery,
    Renewed,
    SuccessorRequest,
    XMPPServer,
    pem_of_der,
)
from pairing.protocol.identity import PeerCertificate, UnreadableCertificate
from pairing.protocol.jid import JID
from pairing.protocol.proofs import InvalidProof, verify_by_certificate
from pairing.protocol.renewal import RenewalRefused, RenewalRequest, RenewCondition
from server_ext.app.enroll import redeem_token
from server_ext.app.handlers import ServerContext
from server_ext.app.pair_requests import (
    POLL_INTERVAL,
    PairingRequest,
    PairingRequestBook,
    RequestRefused,
    RequestState,
)
from server_ext.app.renewal import register_successor
from server_ext.app.stock_requests import BASIC, BEARER, credential, mongooseim_account
from server_ext.errors import RegistryError
from server_ext.model import RegistryChange
from server_ext.policy.external import ExternalRefused, decide_external
from server_ext.policy.nonces import NonceBook, TooManyChallenges
from server_ext.policy.throttle import LoginThrottle, held_back
from server_ext.policy.tokens import TokenRefused

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send: a JSON object (``body``) or plain text (``text``), and a status."""

    status: int
    body: Mapping[str, Any] | None = None
    text: str | None = None
    change: RegistryChange | None = None  # bring the stock server in step before sending
    headers: Mapping[str, str] = field(default_factory=dict)


def refusal(refused: APIRefused) -> Reply:
    headers = {}
    if refused.retry_after is not None:
        headers["Retry-After"] = str(refused.retry_after)  # RFC 9110 §10.2.3
    return Reply(refused.status, refused.to_json(), headers=headers)


class HTTPSAPI:
    """The handlers of the HTTPS face, for one server (its registry, domain and settings)."""

    def __init__(
        self,
        context: ServerContext,
        *,
        xmpp: XMPPServer,
        secret: str,
        throttle: LoginThrottle,
        nonces: NonceBook,
        requests: PairingRequestBook | None = None,
        web_origin: str = "",
    ) -> None:
        self.context = context
        self.xmpp = xmpp
        self._secret = secret
        self.throttle = throttle
        self.nonces = nonces
        self.requests = requests
        self.web_origin = web_origin  # https://host:port, where owners approve requests

    # --- device requests ------------------------------------------------------------------

    def challenge(self, address: str) -> Reply:
        """``POST /api/v1/challenge``."""
        if (refused := self._throttled(address)) is not None:
            return refusal(refused)
        try:
            nonce, lifetime = self.nonces.issue()
        except TooManyChallenges as exc:
            return refusal(APIRefused(APICondition.RATE_LIMITED, str(exc), retry_after=60))
        expires = self.context.clock() + dt.timedelta(seconds=lifetime)
        return Reply(200, Challenge(nonce, expires).to_json())

    def enroll(self, body: bytes, address: str) -> Reply:
        """``POST /api/v1/enroll``: a token, a certificate and the key's signature."""
        try:
            request = EnrollRequest.from_json(self._json(body, address))
            self._burn(request.nonce, address)
            self._require_signature(
                request.certificate,
                request.signature,
                request.message(),
                address,
                "the signature is not by the certificate's key over this enrollment",
            )
            try:
                record, registered = redeem_token(
                    request.token,
                    request.certificate,
                    registry=self.context.registry,
                    address=address,
                )
            except TokenRefused as exc:
                if exc.condition is EnrollCondition.ALREADY_REGISTERED:
                    return self._enrolled_again(request, address)
                if exc.condition is EnrollCondition.TOKEN_UNKNOWN:
                    # Guessing is hopeless at 160 bits; each unknown token still counts
                    # against the address, as over XMPP.
                    self.throttle.failed(None, address)
                raise APIRefused(exc.condition.value, exc.text) from None
        except APIRefused as refused:
            self._audit_failure("enroll.failed", address, refused)
            return refusal(refused)
        answer = Enrolled(record.jid, registered.name, self.xmpp)
        return Reply(200, answer.to_json(), change=RegistryChange("enrolled"))

    def _enrolled_again(self, request: EnrollRequest, address: str) -> Reply:
        """The certificate that redeemed this token asks again (its answer was lost)."""
        registered = self.context.registry.devices.by_fingerprint(request.certificate.fingerprint)
        if registered is None:  # pragma: no cover - the token names this very fingerprint
            return refusal(APIRefused(EnrollCondition.TOKEN_USED, "this token was used"))
        self.context.audit(
            "enroll.repeated",
            actor=str(registered.account),
            subject=registered.fingerprint,
            address=address,
            condition=EnrollCondition.ALREADY_REGISTERED.value,
        )
        jid = JID.parse(registered.subject_jids[0])
        answer = Enrolled(jid, registered.name, self.xmpp)
        return Reply(200, answer.to_json(), change=RegistryChange("enrolled again"))

    def renew(self, body: bytes, address: str) -> Reply:
        """``POST /api/v1/renew``: a valid or expired (within the grace) certificate."""
        return self._successor(body, address, via="renewal")

    def rotate(self, body: bytes, address: str) -> Reply:
        """``POST /api/v1/rotate``: a valid certificate registers its successor."""
        return self._successor(body, address, via="rotation")

    def _successor(self, body: bytes, address: str, *, via: str) -> Reply:
        context = self.context
        replaces: str | None = None
        try:
            request = SuccessorRequest.from_json(self._json(body, address))
            self._burn(request.nonce, address)
            try:
                renewal = RenewalRequest.parse(request.current, request.signature)
            except RenewalRefused as exc:
                raise APIRefused(exc.condition.value, exc.text) from None
            self._require_signature(
                request.certificate,
                request.proof,
                request.possession(),
                address,
                "the proof is not by the new certificate's key over this request",
            )
            replaces = renewal.expired.fingerprint
            try:
                jid, registered = register_successor(
                    renewal,
                    request.certificate,
                    registry=context.registry,
                    domain=context.domain,
                    address=address,
                    grace=context.renewal_grace,
                    interval=context.rotation_interval,
                    via=via,
                    where="as 'certificate'",
                )
            except RenewalRefused as exc:
                if exc.condition in (RenewCondition.BAD_SIGNATURE, RenewCondition.MALFORMED):
                    self.throttle.failed(None, address)
                raise APIRefused(exc.condition.value, exc.text) from None
            # The device staged the new key before it asked and keeps it until it has the
            # answer, so the previous certificate is retired now: on a stock server no first
            # login with the new one is seen that could retire it later.
            context.registry.devices.retire_replaced(registered.fingerprint)
        except APIRefused as refused:
            if refused.condition == RenewCondition.ALREADY_REGISTERED:
                # A retry whose first answer was lost: the device takes it as success, so the
                # stock server must be in step now too.
                reply = refusal(refused)
                return Reply(reply.status, reply.body, change=RegistryChange(f"{via} retried"))
            context.audit(
                "cert.renewal_refused" if via == "renewal" else "cert.rotation_refused",
                actor="unknown",
                subject=replaces or address,
                address=address,
                condition=refused.condition,
            )
            return refusal(refused)
        except RegistryError as exc:
            log.error("the previous certificate was not retired: %s", exc)
            return refusal(APIRefused(APICondition.INTERNAL_ERROR, "retry later"))
        answer = Renewed(jid, registered.name, registered.fingerprint)
        return Reply(200, answer.to_json(), change=RegistryChange(via))

    # --- pairing requests (section 9.6) --------------------------------------------------------

    def pair_request(self, body: bytes, address: str) -> Reply:
        """``POST /api/v1/pair-request``: a pending request bound to the device's key."""
        try:
            if self.requests is None:
                raise APIRefused(APICondition.NOT_FOUND, "pairing requests are off here")
            request = pairing_wire.PairRequest.from_json(self._json(body, address))
            self._burn(request.nonce, address)
            self._require_signature(
                request.certificate,
                request.signature,
                request.message(),
                address,
                "the signature is not by the certificate's key over this request",
            )
            try:
                made = self.requests.create(request.certificate, request.name, address)
            except RequestRefused as exc:
                raise APIRefused(exc.condition, exc.text) from None
        except APIRefused as refused:
            self._audit_failure("pair_request.failed", address, refused)
            return refusal(refused)
        self.context.audit(
            "pair_request.created",
            actor="unknown",
            subject=made.certificate.fingerprint,
            address=address,
            jid=str(made.jid),
            name=made.name,
            request=made.id,
        )
        issued = pairing_wire.PairRequestIssued(
            made.id,
            made.user_code,
            self.approve_url(made),
            made.expires_at,
            POLL_INTERVAL,
        )
        return Reply(200, issued.to_json())

    def approve_url(self, request: PairingRequest) -> str:
        return f"{self.web_origin}{pairing_wire.APPROVE_PATH_PREFIX}{request.id}"

    def pair_status(self, body: bytes, address: str) -> tuple[Reply, str | None]:
        """``POST /api/v1/pair-request/status``: the answer now, and the request id to wait
        on when it is still pending (the adapter holds the answer for a while)."""
        try:
            if self.requests is None:
                raise APIRefused(APICondition.NOT_FOUND, "pairing requests are off here")
            query = pairing_wire.PairStatusQuery.from_json(self._json(body, address))
            self._burn(query.nonce, address)
            request = self.requests.get(query.request)
            if request is None:
                raise APIRefused(pairing_wire.UNKNOWN, "this pairing request is not known")
            self._require_signature(
                request.certificate,
                query.signature,
                query.message(),
                address,
                "the signature is not by the requesting key over this query",
            )
        except APIRefused as refused:
            return refusal(refused), None
        return self.pair_answer(request), (
            request.id if request.state is RequestState.PENDING else None
        )

    def device_status(self, body: bytes, address: str) -> Reply:
        """``POST /api/v1/device/status``: the state of the device whose key signed the query
        (a stock server may refuse a revoked device without saying so)."""
        try:
            query = DeviceStatusQuery.from_json(self._json(body, address))
            self._burn(query.nonce, address)
            self._require_signature(
                query.certificate,
                query.signature,
                query.message(),
                address,
                "the signature is not by the certificate's key over this query",
            )
            found = self.context.registry.devices.by_fingerprint(query.certificate.fingerprint)
            if found is None:
                raise APIRefused(APICondition.NOT_FOUND, "this certificate is not registered here")
        except APIRefused as refused:
            return refusal(refused)
        device = found.device
        status = DeviceStatus(DeviceState(device.state.value), device.revoked_reason or "")
        return Reply(200, status.to_json())

    def pair_answer(self, request: PairingRequest) -> Reply:
        """How ``request`` stands, as the device is told."""
        state = request.state
        if state is RequestState.PENDING:
            return Reply(200, pairing_wire.PairStatus(pairing_wire.PairState.PENDING).to_json())
        if state is RequestState.APPROVED:
            name = request.registered.name if request.registered else request.name
            enrolled = Enrolled(request.jid, name, self.xmpp)
            answer = pairing_wire.PairStatus(pairing_wire.PairState.APPROVED, enrolled)
            return Reply(200, answer.to_json())
        if state is RequestState.EXPIRED:
            return refusal(APIRefused(pairing_wire.EXPIRED, "the request expired unapproved"))
        who = request.decided_by or "the owner"
        return refusal(APIRefused(pairing_wire.DENIED, f"the request was {state.value} by {who}"))

    # --- the stock servers' hooks ------------------------------------------------------------

    def prosody_certificate(self, body: bytes, authorization: str | None, address: str) -> Reply:
        """``POST /api/v1/stock/prosody/certificate``: the EXTERNAL decision for Prosody."""
        context = self.context
        try:
            self._require_secret(authorization, BEARER, address)
            query = ProsodyCertificateQuery.from_json(self._json(body, address))
        except APIRefused as refused:
            return refusal(refused)
        presented = UnreadableCertificate.presented(query.der)
        registered = context.registry.devices.by_fingerprint(presented.fingerprint)
        try:
            accepted = decide_external(
                presented=presented,
                authzid=query.authzid,
                domain=context.domain,
                registered=registered,
                now=context.clock(),
            )
        except ExternalRefused as exc:
            context.audit(
                "login.failed",
                actor=str(exc.account) if exc.account else "unknown",
                subject=presented.fingerprint,
                address=address,
                mechanism="EXTERNAL",
                via="prosody",
                reason=exc.text,
            )
            error = "revoked" if exc.device_revoked else "refused"
            return Reply(403, {"error": error, "text": exc.text})
        fingerprint = accepted.certificate.fingerprint
        change: RegistryChange | None = None
        try:
            context.registry.devices.record_login(fingerprint, address)
            if context.registry.devices.retire_replaced(fingerprint):
                change = RegistryChange("a successor logged in")
        except RegistryError as exc:
            log.error("login not recorded: %s", exc)
        context.audit(
            "login.external",
            actor=str(accepted.identity),
            subject=fingerprint,
            address=address,
            via="prosody",
        )
        resource = accepted.locked_resource
        jid = accepted.identity.with_resource(resource) if resource else accepted.identity
        answer = ProsodyCertificateAnswer(jid, accepted.identity, resource)
        return Reply(200, answer.to_json(), change=change)

    def mongooseim_get_certs(
        self, query: Mapping[str, str], authorization: str | None, address: str
    ) -> Reply:
        """``GET …/get_certs?user=&server=``: the user's usable certificates, PEM (200)."""
        try:
            self._require_secret(authorization, BASIC, address)
            account = mongooseim_account(query, self.context.domain)
        except APIRefused as refused:
            return Reply(refused.status, text=refused.text)
        certificates = self.context.registry.devices.usable(account)
        return Reply(200, text="".join(pem_of_der(c.der) for c in certificates))

    def mongooseim_user_exists(
        self, query: Mapping[str, str], authorization: str | None, address: str
    ) -> Reply:
        """``GET …/user_exists?user=&server=``: ``true`` when the registry knows the account."""
        try:
            self._require_secret(authorization, BASIC, address)
            account = mongooseim_account(query, self.context.domain)
        except APIRefused as refused:
            return Reply(refused.status, text=refused.text)
        known = self.context.registry.accounts.get(account) is not None
        return Reply(200, text="true" if known else "false")

    # --- shared ------------------------------------------------------------------------------

    def _throttled(self, address: str) -> APIRefused | None:
        wait = self.throttle.retry_after(None, address)
        if wait <= 0:
            return None
        seconds, text = held_back(wait)
        return APIRefused(APICondition.RATE_LIMITED, text, retry_after=seconds)

    def _json(self, body: bytes, address: str) -> Mapping[str, Any]:
        """The body as a JSON object, after the address's throttle is checked."""
        if (refused := self._throttled(address)) is not None:
            raise refused
        if len(body) > MAX_BODY_BYTES:
            raise APIRefused(APICondition.MALFORMED, "the body is too large")
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise APIRefused(APICondition.MALFORMED, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise APIRefused(APICondition.MALFORMED, "the body must be a JSON object")
        return data

    def _require_signature(
        self,
        certificate: PeerCertificate,
        signature: bytes,
        message: bytes,
        address: str,
        refusal_text: str,
    ) -> None:
        """The key of ``certificate`` signed ``message``; else a refusal that counts as a
        failed attempt of ``address`` (the same throttle as XMPP logins)."""
        try:
            verify_by_certificate(certificate, signature, message)
        except InvalidProof:
            self.throttle.failed(None, address)
            raise APIRefused(APICondition.BAD_SIGNATURE, refusal_text) from None

    def _burn(self, nonce: str, address: str) -> None:
        if not self.nonces.take(nonce):
            self.throttle.failed(None, address)
            raise APIRefused(
                APICondition.NONCE_UNKNOWN,
                "this nonce is unknown, used or expired; ask for a new challenge",
            )

    def _require_secret(self, authorization: str | None, scheme: str, address: str) -> None:
        """The stock server's shared secret, as a Bearer token or a basic-auth password."""
        if (refused := self._throttled(address)) is not None:
            raise refused
        given = credential(authorization or "", scheme)
        if (
            not self._secret
            or given is None
            or not hmac.compare_digest(given.encode(), self._secret.encode())
        ):
            self.throttle.failed(None, address)
            raise APIRefused(APICondition.UNAUTHORIZED, "the stock server's secret is wrong")

    def _audit_failure(self, event: str, address: str, refused: APIRefused) -> None:
        self.context.audit(
            event, actor="unknown", subject=address, address=address, condition=refused.condition
        )
