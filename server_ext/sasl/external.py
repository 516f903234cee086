"""SASL EXTERNAL (XEP-0178): the authzid in, the policy decision out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pairing.protocol.identity import fingerprint
from server_ext.model import CertificateRecord
from server_ext.policy.external import ExternalAccepted, decide_external
from server_ext.sasl.mechanism import (
    Challenge,
    Failure,
    Outcome,
    SASLCondition,
    SASLUsageError,
    Success,
)

_MAX_AUTHZID = 3071  # three JID parts of 1023 bytes plus separators (RFC 7622 §3.1)


class ExternalMechanism:
    name = "EXTERNAL"

    def __init__(
        self,
        domain: str,
        peer_certificate_der: bytes | None,
        lookup: Callable[[str], CertificateRecord | None],
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._domain = domain
        self._der = peer_certificate_der
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
        registered = self._lookup(fingerprint(self._der)) if self._der is not None else None
        decision = decide_external(
            peer_certificate_der=self._der,
            authzid=authzid,
            domain=self._domain,
            registered=registered,
            now=self._clock(),
        )
        if isinstance(decision, ExternalAccepted):
            self.accepted = decision.certificate
            return Success(
                decision.identity,
                self.name,
                certificate_fingerprint=decision.fingerprint,
                locked_resource=decision.locked_resource,
            )
        return Failure(decision.condition, decision.text, decision.account)
