"""SASL EXTERNAL (XEP-0178): the authzid in, the policy decision out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pairing.protocol.identity import PeerCertificate, UnreadableCertificate
from server_ext.auth.mechanism import Challenge, Failure, Outcome, SASLUsageError, Success
from server_ext.model import CertificateRecord
from server_ext.policy.external import ExternalRefused, decide_external
from server_ext.wire.conditions import SASLCondition

_MAX_AUTHZID = 3071  # three JID parts of 1023 bytes plus separators (RFC 7622 §3.1)


class ExternalMechanism:
    name = "EXTERNAL"

    def __init__(
        self,
        domain: str,
        presented: PeerCertificate | UnreadableCertificate | None,
        lookup: Callable[[str], CertificateRecord | None],
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._domain = domain
        self._presented = presented
        self._lookup = lookup
        self._clock = clock
        self._state = 0
        #: The registry record of the accepted certificate, once the login succeeded.
        self.accepted: CertificateRecord | None = None

    def start(self, initial_response: bytes | None) -> Outcome:
        if self._state != 0:
            raise SASLUsageError("start() called twice")
        self._state = 1
        if initial_response is None:
            return Challenge(b"")  # RFC 6120 §6.4.2; the client answers with the authzid
        return self._decide(initial_response)

    def respond(self, data: bytes) -> Outcome:
        if self._state != 1:
            raise SASLUsageError("the exchange is already decided")
        return self._decide(data)

    def _decide(self, data: bytes) -> Outcome:
        self._state = 2
        if len(data) > _MAX_AUTHZID:
            return Failure(SASLCondition.MALFORMED_REQUEST, "the authzid is too long")
        try:
            authzid = data.decode("utf-8")
        except UnicodeDecodeError:
            return Failure(SASLCondition.INCORRECT_ENCODING, "the authzid is not UTF-8")
        presented = self._presented
        registered = (
            self._lookup(presented.fingerprint) if isinstance(presented, PeerCertificate) else None
        )
        try:
            accepted = decide_external(
                presented=presented,
                authzid=authzid,
                domain=self._domain,
                registered=registered,
                now=self._clock(),
            )
        except ExternalRefused as refused:
            return Failure(refused.condition, refused.text, refused.account, refused.device_revoked)
        self.accepted = accepted.certificate
        return Success(
            accepted.identity,
            self.name,
            certificate_fingerprint=accepted.certificate.fingerprint,
            locked_resource=accepted.locked_resource,
        )
