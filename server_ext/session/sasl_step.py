"""The SASL step of a C2S session: which mechanisms are offered (EXTERNAL when the client
presented a certificate, SCRAM-*-PLUS when the connection has channel bindings), the login
throttle, and what a success or a failure leaves behind (the audit, a held-back failure)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from pairing.protocol.conditions import device_revoked
from pairing.protocol.identity import PeerCertificate, UnreadableCertificate
from pairing.protocol.jid import JID
from server_ext.app import enroll, renewal
from server_ext.auth.external import ExternalMechanism
from server_ext.auth.mechanism import Challenge, Failure, Mechanism, Outcome, Success
from server_ext.auth.plain import PlainMechanism
from server_ext.auth.scram import ChannelBindings, ScramMechanism
from server_ext.errors import RegistryError
from server_ext.session.actions import Action, Authenticated, HoldFailure
from server_ext.session.state import SessionState
from server_ext.wire.events import AuthRequested
from server_ext.wire.namespaces import clark

log = logging.getLogger(__name__)

PASSWORD_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
PLUS_MECHANISMS = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS")
SASL_CB_NS = "urn:xmpp:sasl-cb:0"  # XEP-0440


class SASLStep(SessionState):
    """Offers the mechanisms once TLS is up, and runs the exchange the client starts."""

    def tls_established(
        self,
        presented: PeerCertificate | UnreadableCertificate | None,
        bindings: ChannelBindings | None = None,
    ) -> None:
        """The TLS handshake finished; ``presented`` is the client certificate it proved, and
        ``bindings`` what SCRAM-*-PLUS can bind to on this connection."""
        self.presented = presented
        self._bindings = bindings if bindings is not None and bindings.types else None
        mechanisms = list(PASSWORD_MECHANISMS)
        features: list[ET.Element] = []
        if self._bindings is not None:
            # RFC 5802 §6: the -PLUS variants first, so that clients that can bind do; XEP-0440
            # says which binding types this connection offers.
            mechanisms[:0] = PLUS_MECHANISMS
            offer = ET.Element(clark(SASL_CB_NS, "sasl-channel-binding"))
            for kind in self._bindings.types:
                ET.SubElement(offer, clark(SASL_CB_NS, "channel-binding"), {"type": kind})
            features.append(offer)
        if presented is not None:
            # XEP-0178 §3: offer EXTERNAL when the client presented a certificate; a device
            # with a certificate may also redeem an enrollment token first, or renew an
            # expired certificate with it (docs/protocol.md, sections 3 and 8).
            mechanisms.insert(0, "EXTERNAL")
            features.extend((enroll.feature(), renewal.feature()))
        if self._direct_tls:
            self.stream.set_pre_auth_offer(mechanisms=mechanisms, extra_features=features)
        else:
            self.stream.tls_established(mechanisms=mechanisms, extra_features=features)

    def _mechanism_for(self, name: str) -> Mechanism:
        context = self._context
        accounts = context.registry.accounts
        if name == "EXTERNAL":
            return ExternalMechanism(
                context.domain,
                self.presented,
                context.registry.devices.by_fingerprint,
                context.clock,
            )
        if name.startswith("SCRAM-"):
            hash_name = "sha256" if name.startswith("SCRAM-SHA-256") else "sha1"
            return ScramMechanism(
                hash_name,
                context.domain,
                lambda jid: accounts.scram_credentials(jid, hash_name),
                fake_salt_key=self._services.fake_salt_key,
                bindings=self._bindings,
                plus=name.endswith("-PLUS"),
            )
        return PlainMechanism(context.domain, lambda jid: accounts.scram_credentials(jid, "sha256"))

    def _start_auth(self, event: AuthRequested, actions: list[Action]) -> None:
        name = event.mechanism
        if name != "EXTERNAL":
            # Certificate logins never consult the throttle: guessing passwords must not lock
            # the owner's devices out.
            wait = self._services.throttle.retry_after(None, self.address)
            if wait > 0:
                self.stream.auth_failed(
                    "temporary-auth-failure",
                    f"too many failed logins from your address; retry in {int(wait) + 1} s",
                )
                return
        self._mechanism = self._mechanism_for(name)
        self._mechanism_name = name
        self._apply(self._mechanism.start(event.initial_response), actions)

    def _apply(self, outcome: Outcome, actions: list[Action]) -> None:
        if isinstance(outcome, Challenge):
            self.stream.auth_challenge(outcome.data)
            return
        mechanism, self._mechanism = self._mechanism, None
        if isinstance(outcome, Success):
            self._succeeded(outcome, mechanism, actions)
        else:
            self._failed(outcome, actions)

    def _succeeded(
        self, outcome: Success, mechanism: Mechanism | None, actions: list[Action]
    ) -> None:
        throttle = self._services.throttle
        account = outcome.identity.bare
        name = self._mechanism_name
        if name != "EXTERNAL":
            wait = throttle.retry_after(account, self.address)
            if wait > 0:
                # The same answer, at once, whether or not the password was right: no oracle.
                self.stream.auth_failed("temporary-auth-failure", _held_back(wait))
                return
            throttle.succeeded(account, self.address)
        self._identity = account
        self._locked_resource = outcome.locked_resource
        self.auth_method = name
        self.fingerprint = outcome.certificate_fingerprint
        self.stream.auth_succeeded(account, outcome.additional_data)
        actions.append(Authenticated())
        if self.fingerprint is not None:
            accepted = mechanism.accepted if isinstance(mechanism, ExternalMechanism) else None
            self._record_certificate_login(
                account, retire=accepted is not None and accepted.replaces is not None
            )

    def _failed(self, outcome: Failure, actions: list[Action]) -> None:
        throttle = self._services.throttle
        name = self._mechanism_name
        condition, text = str(outcome.condition), outcome.text
        delay = 0.0
        if name != "EXTERNAL":
            wait = throttle.retry_after(outcome.account, self.address)
            throttle.failed(outcome.account, self.address)
            if wait > 0:
                # This address is over its limit for the account: the answer the right password
                # gets too, and just as fast, so it tells the guesser nothing.
                condition, text = "temporary-auth-failure", _held_back(wait)
            elif outcome.account is not None:
                delay = throttle.failure_delay(outcome.account)
        subject = str(outcome.account or "unknown")
        if name == "EXTERNAL" and self.presented is not None:
            # A failed certificate login belongs to that device's history (audit --device).
            subject = self.presented.fingerprint
        self._context.audit(
            "login.failed",
            actor=str(outcome.account or "unknown"),
            subject=subject,
            address=self.address,
            mechanism=name,
            condition=str(outcome.condition),
        )
        if delay > 0:
            # The account is being guessed from many addresses: answer failures late (a tarpit)
            # and read nothing more from this client meanwhile. Successes are never delayed.
            self._held, self._held_failure = [], (condition, text)
            actions.append(HoldFailure(delay))
            return
        application = device_revoked() if outcome.device_revoked else None
        self.stream.auth_failed(condition, text, application)

    def _record_certificate_login(self, account: JID, *, retire: bool) -> None:
        assert self.fingerprint is not None
        devices = self._context.registry.devices
        try:
            devices.record_login(self.fingerprint, self.address)
            if retire:  # the first logins of a rotated certificate retire its predecessor
                devices.retire_replaced(self.fingerprint)
        except RegistryError as exc:
            log.error("last login not recorded: %s", exc)
        self._context.audit(
            "login.external", actor=str(account), subject=self.fingerprint, address=self.address
        )


def _held_back(wait: float) -> str:
    return f"too many failed logins for this account from your address; retry in {int(wait) + 1} s"


__all__ = ["PASSWORD_MECHANISMS", "PLUS_MECHANISMS", "SASL_CB_NS", "SASLStep"]
