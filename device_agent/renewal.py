"""Renewing the device's certificate: over its session while valid, before SASL once expired.

A valid certificate renews by rotation (:mod:`device_agent.rotation`: register a successor
over the device's own EXTERNAL session). An expired one cannot log in, so it renews before
SASL (docs/protocol.md, "Renewal"): the new certificate is *staged* (written, not current),
presented in TLS, and ``<renew/>`` carries the expired certificate with the expired key's
signature. The staged generation becomes current only once the server has registered it;
the expired key stays until then, because it is the only thing that can still renew.

When the answer is lost, the staged generation is kept and named in
``renewal-pending.json``: the next attempt presents the same new certificate, which the
server answers with ``already-registered`` if the first attempt got through.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent import state_files
from device_agent.enrollment import ServerSettings, client_for
from device_agent.errors import DeviceAgentError
from device_agent.keystore import DeviceIdentity, KeyStore
from device_agent.rotation import rotate
from device_agent.state_files import StateFile
from pairing.errors import AuthenticationFailed, PairingError
from pairing.protocol import https_api
from pairing.protocol.address import ServerAddress
from pairing.protocol.https_api import (
    APIRefused,
    Challenge,
    Renewed,
    SuccessorRequest,
    possession_message,
)
from pairing.protocol.jid import JID
from pairing.protocol.proofs import sign
from pairing.protocol.renewal import RenewCondition, sign_renewal
from pairing.xmpp.connection import PairingClient, TrustAnchor, login, logout, make_client
from pairing.xmpp.renewal import RenewalDenied, offer_renewal

log = logging.getLogger(__name__)

PENDING_RENEWAL_FILE = "renewal-pending.json"
#: Refusals that no retry can change: only the account owner can (enroll the device again).
FINAL = frozenset(
    {RenewCondition.REVOKED, RenewCondition.GRACE_EXPIRED, RenewCondition.NOT_REGISTERED}
)


class RenewalError(DeviceAgentError):
    """The certificate was not renewed; the message says why and what to do."""

    def __init__(self, text: str, *, condition: str = "", final: bool = False) -> None:
        super().__init__(text)
        self.condition = condition
        #: Retrying cannot help (revoked, expired past the grace period, unknown).
        self.final = final

    @property
    def revoked(self) -> bool:
        return self.condition == RenewCondition.REVOKED


@dataclass(frozen=True, slots=True)
class PendingRenewal:
    """A staged generation whose renewal got no answer: the server may hold it already."""

    generation: str

    def to_json(self) -> dict[str, Any]:
        return {"generation": self.generation}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PendingRenewal:
        return cls(state_files.text(data, "generation"))


PENDING_RENEWAL = StateFile(PENDING_RENEWAL_FILE, PendingRenewal)


def expired(state_dir: Path, now: dt.datetime | None = None) -> bool:
    """Whether the device's certificate has expired (it can no longer log in)."""
    return KeyStore(state_dir).load().not_after <= (now or dt.datetime.now(dt.UTC))


async def renew_expired(state_dir: Path, *, timeout: float = 15.0) -> JID:
    """Renew an expired certificate before SASL, log in with the new one once; the bound JID.

    A device enrolled over HTTPS (a stock XMPP server) renews there instead.
    """
    store = KeyStore(state_dir)
    current = store.load()
    settings = ServerSettings.load(state_dir)
    if settings.over_https:
        await successor_over_https(state_dir, expired=True, timeout=timeout)
        client = client_for(state_dir)
        try:
            bound = await login(client, timeout=timeout)
        except PairingError as exc:
            raise RenewalError(
                f"renewed, but the first login with the new certificate failed: {exc}"
            ) from None
        await logout(client)
        return bound
    staged = _pending(store)
    if staged is None:
        key, cert = store.next_identity()
        staged = store.stage(key, cert)
    jid = JID.parse(settings.jid)
    # Signed here, in this process; the expired key never leaves it.
    signature = sign_renewal(store.private_key(), jid.domain, staged.certificate_der)
    client = make_client(
        settings.jid,
        server=ServerAddress(settings.host, settings.port),
        trust=TrustAnchor(fingerprint=settings.fingerprint),
        certfile=staged.cert_path,
        keyfile=staged.key_path,
    )
    offer = offer_renewal(client, current.certificate_der, signature, timeout=timeout)
    try:
        bound = await login(client, timeout=timeout)
    except PairingError as exc:
        refusal = offer.refusal
        if offer.registered:
            _settle(store, staged, promote=True)  # the server holds it: it is ours now
            raise RenewalError(
                f"renewed, but the first login with the new certificate failed: {exc}"
            ) from None
        if refusal is not None:
            _settle(store, staged, promote=False)
            raise _refused(refusal) from None
        if offer.sent:
            # The request left, the answer did not come: keep the new key for the retry.
            PENDING_RENEWAL.write(state_dir, PendingRenewal(staged.key_path.parent.name))
            raise RenewalError(
                f"{exc}; the server may have renewed the certificate: the next attempt "
                "finishes it (the new key is kept)"
            ) from None
        _settle(store, staged, promote=False)
        if isinstance(exc, AuthenticationFailed):
            raise RenewalError(
                "the server did not offer renewal before login (it is not a server of this "
                "project, or too old): the account owner must enroll the device again",
                final=True,
            ) from None
        raise
    _settle(store, staged, promote=True)
    await logout(client)
    return bound


async def renew(state_dir: Path, *, timeout: float = 15.0) -> DeviceIdentity:
    """One renewal now, whatever the certificate's age; returns the new identity.

    A valid certificate rotates over its own EXTERNAL session (no downtime for a running
    agent elsewhere is promised: the new login takes the resource over); an expired one
    renews before SASL.
    """
    if expired(state_dir):
        await renew_expired(state_dir, timeout=timeout)
        return KeyStore(state_dir).load()
    if ServerSettings.load(state_dir).over_https:
        return await successor_over_https(state_dir, expired=False, timeout=timeout)
    client = client_for(state_dir)
    await login(client, timeout=timeout)
    successor: PairingClient | None = None
    try:
        successor = await rotate(state_dir, client, lambda: client_for(state_dir))
    finally:
        await logout(client)
        if successor is not None:
            await logout(successor)
    return KeyStore(state_dir).load()


async def successor_over_https(
    state_dir: Path, *, expired: bool, timeout: float = 15.0
) -> DeviceIdentity:
    """Register a new certificate over server-ext's HTTPS API (docs/protocol.md, section 9):
    ``/api/v1/rotate`` while the current one is valid, ``/api/v1/renew`` once it expired.

    As before SASL, the new generation is staged first and becomes current only when the
    server has registered it (200, or ``already-registered`` for a retry whose first answer
    was lost); the server retires the previous certificate at once, so the staged key must be
    on disk before the request leaves.
    """
    from device_agent.https_client import AnswerLost, HTTPSEndpoint

    store = KeyStore(state_dir)
    current = store.load()
    settings = ServerSettings.load(state_dir)
    staged = _pending(store)
    if staged is None:
        key, cert = store.next_identity()
        staged = store.stage(key, cert)
    domain = JID.parse(settings.jid).domain
    endpoint = HTTPSEndpoint(settings.https_host, settings.https_port, settings.https_pin)
    sent = False
    try:
        challenge = Challenge.from_json(
            await endpoint.post(https_api.CHALLENGE_PATH, None, timeout=timeout)
        )
        new_key = store.staged_private_key(staged)
        request = SuccessorRequest(
            current.certificate_der,
            staged.certificate,
            challenge.nonce,
            sign_renewal(store.private_key(), domain, staged.certificate_der),
            sign(new_key, possession_message(challenge.nonce, staged.fingerprint)),
        )
        path = https_api.RENEW_PATH if expired else https_api.ROTATE_PATH
        sent = True
        Renewed.from_json(await endpoint.post(path, request.to_json(), timeout=timeout))
    except APIRefused as refused:
        if refused.condition == RenewCondition.ALREADY_REGISTERED:
            _settle(store, staged, promote=True)  # an earlier attempt got through
            return store.load()
        if sent and refused.status >= 500:
            PENDING_RENEWAL.write(state_dir, PendingRenewal(staged.key_path.parent.name))
            raise RenewalError(f"{refused.text} (the new key is kept)") from None
        _settle(store, staged, promote=False)
        raise _refused_condition(refused.condition, str(refused)) from None
    except AnswerLost as exc:
        if sent:
            PENDING_RENEWAL.write(state_dir, PendingRenewal(staged.key_path.parent.name))
            raise RenewalError(
                f"{exc}; the server may have registered the new certificate: the next attempt "
                "finishes it (the new key is kept)"
            ) from None
        _settle(store, staged, promote=False)
        raise
    except PairingError:
        _settle(store, staged, promote=False)  # the request never left
        raise
    _settle(store, staged, promote=True)
    return store.load()


def run_hook(command: str, identity: DeviceIdentity, state_dir: Path) -> None:
    """Run ``command`` after a renewal (as step-ca's ``--exec``), without a shell.

    It gets the new files in ``DEVICE_AGENT_CERT`` and ``DEVICE_AGENT_KEY`` (the stable names,
    which now point at the new generation) and ``DEVICE_AGENT_STATE``.
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise DeviceAgentError(f"--exec: {exc}") from None
    if not argv:
        raise DeviceAgentError("--exec: the command is empty")
    store = KeyStore(state_dir)
    env = {
        **os.environ,
        "DEVICE_AGENT_CERT": str(store.cert_path),
        "DEVICE_AGENT_KEY": str(store.key_path),
        "DEVICE_AGENT_STATE": str(state_dir),
        "DEVICE_AGENT_FINGERPRINT": identity.fingerprint,
    }
    try:
        done = subprocess.run(argv, env=env, check=False)  # noqa: S603 - the owner's own command
    except OSError as exc:
        raise DeviceAgentError(
            f"the certificate was renewed, but --exec could not run {argv[0]}: "
            f"{exc.strerror or exc}"
        ) from None
    if done.returncode != 0:
        raise DeviceAgentError(
            f"the certificate was renewed, but --exec {argv[0]} exited with {done.returncode}"
        )


def _pending(store: KeyStore) -> DeviceIdentity | None:
    """The new identity of an unanswered renewal, if it is still whole."""
    try:
        pending = PENDING_RENEWAL.read_if_present(store.state_dir)
    except state_files.StateFileError:
        pending = None
    if pending is None:
        return None
    staged = store.staged(pending.generation)
    if staged is None:
        PENDING_RENEWAL.remove(store.state_dir)
    return staged


def _settle(store: KeyStore, staged: DeviceIdentity, *, promote: bool) -> None:
    if promote:
        store.promote(staged)  # destroys the expired key: it has done its last job
    else:
        store.discard(staged)
    PENDING_RENEWAL.remove(store.state_dir)


def _refused(refusal: RenewalDenied) -> RenewalError:
    return _refused_condition(refusal.condition, str(refusal))


def _refused_condition(condition: str, text: str) -> RenewalError:
    hints: dict[str, str] = {
        RenewCondition.REVOKED: "this device was revoked; it stops for good",
        RenewCondition.GRACE_EXPIRED: "the account owner must enroll this device again",
        RenewCondition.NOT_REGISTERED: "the account owner must enroll this device again",
        RenewCondition.DISABLED: "the account owner must enable the device again",
        RenewCondition.RATE_LIMITED: "retrying later",
    }
    hint = hints.get(condition, "")
    return RenewalError(
        text + (f"; {hint}" if hint else ""),
        condition=condition,
        final=condition in FINAL,
    )
