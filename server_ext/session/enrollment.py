"""What a device with a certificate may ask before SASL: redeem an enrollment token
(``<enroll/>``) or renew its expired certificate (``<renew/>``), each throttled by address
like a failed login (docs/protocol.md, sections 3 and 8)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pairing.protocol.enrollment import EnrollCondition
from pairing.protocol.renewal import RenewCondition
from server_ext.app import enroll, renewal
from server_ext.policy.throttle import held_back
from server_ext.session.state import SessionState


class Enrollment(SessionState):
    """Answers ``<enroll/>`` and ``<renew/>`` through ``server_ext.app``, and audits refusals."""

    def _enroll(self, element: ET.Element) -> None:
        throttle = self._services.throttle
        wait = throttle.retry_after(None, self.address)
        if wait > 0:
            result = enroll.failure(EnrollCondition.RATE_LIMITED, held_back(wait)[1])
        else:
            result = enroll.redeem(
                element,
                presented=self.presented,
                registry=self._context.registry,
                address=self.address,
            )
        if result.condition is not None:
            if result.condition is EnrollCondition.TOKEN_UNKNOWN:
                # Guessing is hopeless at 160 bits, but each unknown token still counts
                # against the address, like a failed password.
                throttle.failed(None, self.address)
            repeated = result.condition is EnrollCondition.ALREADY_REGISTERED
            self._context.audit(
                # A device retrying with its own, registered certificate has not failed.
                "enroll.repeated" if repeated else "enroll.failed",
                actor="unknown",
                subject=self.address,
                address=self.address,
                condition=result.condition.value,
            )
        self.stream.send_nonza(result.reply)

    def _renew(self, element: ET.Element) -> None:
        throttle = self._services.throttle
        context = self._context
        wait = throttle.retry_after(None, self.address)
        if wait > 0:
            result = renewal.refused(RenewCondition.RATE_LIMITED, held_back(wait)[1])
        else:
            result = renewal.renew(
                element,
                presented=self.presented,
                registry=context.registry,
                domain=context.domain,
                address=self.address,
                grace=context.renewal_grace,
                interval=context.rotation_interval,
            )
        if result.condition is not None:
            if result.condition in (RenewCondition.BAD_SIGNATURE, RenewCondition.MALFORMED):
                # Whoever sends a certificate without its key is guessing: count it against
                # the address, like a failed password.
                throttle.failed(None, self.address)
            if result.condition is not RenewCondition.ALREADY_REGISTERED:
                context.audit(
                    "cert.renewal_refused",
                    actor="unknown",
                    subject=result.replaces or self.address,
                    address=self.address,
                    condition=result.condition.value,
                )
        self.stream.send_nonza(result.reply)


__all__ = ["Enrollment"]
