"""Enrolling this device from an enrollment URI (QR flow), and remembering its server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from device_agent import state_files
from device_agent.errors import DeviceAgentError
from device_agent.keystore import DeviceIdentity, KeyStore
from device_agent.state_files import StateFile, StateFileError, StateFileMissing
from pairing.errors import ConnectionFailed, PairingError
from pairing.protocol import https_api
from pairing.protocol.address import ServerAddress
from pairing.protocol.https_api import APIRefused, Challenge, Enrolled, EnrollRequest
from pairing.protocol.jid import JID
from pairing.protocol.proofs import sign
from pairing.protocol.uri import EnrollmentURI, HTTPSEnrollmentURI
from pairing.xmpp.connection import PairingClient, TrustAnchor, login, logout, make_client
from pairing.xmpp.enrollment import EnrollmentRefused, TokenOffer, offer_token

SERVER_FILE = "server.json"
# Written when the token left this machine but the answer did not arrive: the server may have
# registered the key, so the key stays, and the same `device-agent enroll` finishes the job.
PENDING_FILE = "enrollment-pending.json"


class EnrollmentError(DeviceAgentError):
    """Enrollment did not happen; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Where the device logs in, and the server certificate it pins.

    A device enrolled with a v2 URI (a stock XMPP server) also records server-ext's HTTPS
    API (``https_*``), where it renews and rotates; ``fingerprint`` is then the stock
    server's pin, or empty to check its certificate with the system's CAs.
    """

    host: str
    port: int
    fingerprint: str
    jid: str
    name: str = ""  # the device's name on the account, when the server said it
    https_host: str = ""
    https_port: int = 0
    https_pin: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.name:
            del data["name"]  # as earlier versions wrote it
        if not self.https_host:
            for key in ("https_host", "https_port", "https_pin"):
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerSettings:
        return cls(
            state_files.text(data, "host"),
            state_files.integer(data, "port"),
            state_files.text(data, "fingerprint"),
            state_files.text(data, "jid"),
            state_files.text(data, "name", default=""),
            state_files.text(data, "https_host", default=""),
            state_files.integer(data, "https_port", default=0),
            state_files.text(data, "https_pin", default=""),
        )

    @property
    def over_https(self) -> bool:
        """Enrolled through server-ext's HTTPS API (a v2 URI): it renews there too."""
        return bool(self.https_host)

    @property
    def trust(self) -> TrustAnchor:
        """How the XMPP server is recognised: the pin, or the system's CAs."""
        if self.fingerprint:
            return TrustAnchor(fingerprint=self.fingerprint)
        return TrustAnchor(system=True)

    @property
    def presence_status(self) -> str:
        """What the device's presence says, so its owner recognises it: its name, else its
        resource (the owner chose both)."""
        return self.name or JID.parse(self.jid).resource

    def save(self, state_dir: Path) -> None:
        SERVER.write(state_dir, self)

    @classmethod
    def load(cls, state_dir: Path) -> ServerSettings:
        """The enrolled device's server; a missing file says what to run."""
        try:
            return SERVER.read(state_dir)
        except StateFileMissing as exc:
            if PENDING.exists(state_dir):
                raise EnrollmentError(
                    "the last enrollment did not finish (its answer was lost): run the same "
                    "`device-agent enroll` again to complete it"
                ) from None
            raise EnrollmentError(
                f"this device is not enrolled yet ({exc.path} is missing): run "
                "`device-agent enroll`, or, for a certificate registered by hand, "
                "`device-agent run --server HOST[:PORT] --pin SHA256` once"
            ) from None


SERVER = StateFile(SERVER_FILE, ServerSettings, indent=2)
PENDING = StateFile(PENDING_FILE, ServerSettings, indent=2)


def client_for(state_dir: Path, *, plugins: Sequence[str] = ()) -> PairingClient:
    """A slixmpp client for this enrolled device (EXTERNAL, pinned server), not yet connected."""
    identity = KeyStore(state_dir).load()
    settings = ServerSettings.load(state_dir)
    return make_client(
        settings.jid,
        server=ServerAddress(settings.host, settings.port),
        trust=settings.trust,
        certfile=identity.cert_path,
        keyfile=identity.key_path,
        plugins=plugins,
    )


def pending(state_dir: Path) -> ServerSettings | None:
    """The server of an enrollment whose outcome is unknown, if there is one."""
    try:
        return PENDING.read(state_dir)
    except StateFileError:
        return None


async def enroll(
    store: KeyStore,
    uri: EnrollmentURI,
    *,
    valid_for: dt.timedelta = dt.timedelta(days=365),
    timeout: float = 15.0,
) -> JID:
    """Create the identity if needed, redeem the token, log in with EXTERNAL; returns the JID.

    The key is never deleted once the server may have registered it: only a key made for this
    very attempt goes, and only when the token never left this machine or the server answered
    with a refusal (which it sends before registering anything). When the answer is lost, the
    key and the server settings stay (``enrollment-pending.json``), and the same command again
    completes the enrollment: the server answers a repeated redemption by the certificate that
    redeemed the token with ``already-registered`` (docs/protocol.md, section 3).
    """
    identity, created = identity_for(store, uri.jid, valid_for)
    settings = ServerSettings(uri.host, uri.port, uri.fingerprint, str(uri.jid))
    client = make_client(
        str(uri.jid),
        server=ServerAddress(uri.host, uri.port),
        trust=TrustAnchor(fingerprint=uri.fingerprint),
        certfile=identity.cert_path,
        keyfile=identity.key_path,
    )
    offer = offer_token(client, uri.token, timeout=timeout)
    try:
        bound = await login(client, timeout=timeout)
    except PairingError as exc:
        _settle_failure(store, settings, offer, created=created)
        refused = offer.refusal
        if refused is not None:
            raise EnrollmentError(_advice(refused)) from None
        if offer.registered:
            raise EnrollmentError(
                f"enrolled as {uri.jid}, but the first login failed: {exc}; "
                "`device-agent run` logs in from now on"
            ) from None
        if offer.sent:
            raise EnrollmentError(
                f"{exc}; the server may have enrolled this device before the connection "
                "ended: run the same `device-agent enroll` again to finish (the key is kept)"
            ) from None
        if isinstance(exc, ConnectionFailed):
            raise EnrollmentError(
                f"{exc}; check that the server is running and reachable"
            ) from None
        raise EnrollmentError(str(exc)) from None
    record_enrolled(store.state_dir, _named(settings, offer))
    await logout(client)
    return bound


async def enroll_https(
    store: KeyStore,
    uri: HTTPSEnrollmentURI,
    *,
    valid_for: dt.timedelta = dt.timedelta(days=365),
    timeout: float = 15.0,
) -> JID:
    """Enroll over server-ext's HTTPS API (a v2 URI), then log in to the XMPP server with
    EXTERNAL; returns the bound JID (docs/protocol.md, section 9).

    The key is kept on the same terms as :func:`enroll`: a key made for this attempt goes only
    when the enrollment request never left or the server refused it (before registering
    anything); when its answer is lost, or the server registered it but could not update the
    XMPP server yet (5xx), ``enrollment-pending.json`` keeps it and the same command finishes
    (the server answers a retry by the same certificate as the first time).
    """
    from device_agent.https_client import AnswerLost, HTTPSEndpoint

    identity, created = identity_for(store, uri.jid, valid_for)
    endpoint = HTTPSEndpoint(uri.https_host, uri.https_port, uri.https_fingerprint)
    settings = ServerSettings(
        uri.xmpp_host,
        uri.xmpp_port,
        uri.xmpp_pin or "",
        str(uri.jid),
        https_host=uri.https_host,
        https_port=uri.https_port,
        https_pin=uri.https_fingerprint,
    )
    sent = False
    try:
        challenge = Challenge.from_json(
            await endpoint.post(https_api.CHALLENGE_PATH, None, timeout=timeout)
        )
        message = https_api.enrollment_message(challenge.nonce, uri.token, identity.fingerprint)
        request = EnrollRequest(
            uri.token,
            identity.certificate,
            challenge.nonce,
            sign(store.private_key(), message),  # signed here; the key never leaves
        )
        sent = True
        enrolled = Enrolled.from_json(
            await endpoint.post(https_api.ENROLL_PATH, request.to_json(), timeout=timeout)
        )
    except APIRefused as refused:
        if sent and refused.status >= 500:
            # Registered, or maybe: the server could not finish. Keep the key for the retry.
            PENDING.write(store.state_dir, settings)
            raise EnrollmentError(
                f"{refused.text}: run the same `device-agent enroll` again to finish "
                "(the key is kept)"
            ) from None
        if created:
            store.remove()  # refused before anything was registered
        raise EnrollmentError(_advice_for(refused.condition, str(refused))) from None
    except AnswerLost as exc:
        if not sent:  # the challenge's answer was lost: nothing was registered
            if created:
                store.remove()
            raise EnrollmentError(f"{exc}; check that server-ext is reachable") from None
        PENDING.write(store.state_dir, settings)
        raise EnrollmentError(
            f"{exc}; the server may have enrolled this device: run the same "
            "`device-agent enroll` again to finish (the key is kept)"
        ) from None
    except PairingError as exc:
        if created:
            store.remove()  # the request never left (unreachable, or the pin did not match)
        if isinstance(exc, ConnectionFailed):
            raise EnrollmentError(f"{exc}; check that server-ext is reachable") from None
        raise EnrollmentError(str(exc)) from None
    settings = replace(
        settings,
        host=enrolled.xmpp.host,
        port=enrolled.xmpp.port,
        fingerprint=enrolled.xmpp.pin or "",
        name=enrolled.name,
    )
    return await first_login(store, settings, identity, uri.jid, timeout=timeout, done="enrolled")


async def first_login(
    store: KeyStore,
    settings: ServerSettings,
    identity: DeviceIdentity,
    jid: JID,
    *,
    timeout: float,
    done: str,
) -> JID:
    """Record the enrollment, then log in once with EXTERNAL; returns the bound JID.

    Recorded first: from here on the device is enrolled whatever the login does, and a
    failed first login says so (``done``: how it was enrolled) instead of undoing anything.
    """
    record_enrolled(store.state_dir, settings)
    client = make_client(
        str(jid),
        server=ServerAddress(settings.host, settings.port),
        trust=settings.trust,
        certfile=identity.cert_path,
        keyfile=identity.key_path,
    )
    try:
        bound = await login(client, timeout=timeout)
    except PairingError as exc:
        raise EnrollmentError(
            f"{done} as {jid}, but the first login at {settings.host}:{settings.port} "
            f"failed: {exc}; `device-agent run` logs in from now on"
        ) from None
    await logout(client)
    return bound


def identity_for(store: KeyStore, jid: JID, valid_for: dt.timedelta) -> tuple[DeviceIdentity, bool]:
    """The device's identity for ``jid`` (made now if there is none) and whether it is new."""
    if store.exists():
        identity = store.load()
        if identity.jid != jid:
            raise EnrollmentError(
                f"this device already has the identity {identity.jid}, but the token is for "
                f"{jid}; use another --state-dir, or `device-agent init --force` to replace it"
            )
        return identity, False
    return store.create(jid, valid_for=valid_for), True


def _named(settings: ServerSettings, offer: TokenOffer) -> ServerSettings:
    """``settings`` with the device name the server gave in ``<success/>``, if it did."""
    if not offer.registered:
        return settings
    return replace(settings, name=offer.outcome.result().name or settings.name)


def record_enrolled(state_dir: Path, settings: ServerSettings) -> None:
    settings.save(state_dir)
    PENDING.remove(state_dir)


def _settle_failure(
    store: KeyStore, settings: ServerSettings, offer: TokenOffer, *, created: bool
) -> None:
    """Keep exactly what a retry needs after a failed attempt, and nothing else."""
    if offer.registered:
        # The server said so: we are enrolled.
        record_enrolled(store.state_dir, _named(settings, offer))
    elif offer.refusal is None and offer.sent:
        # The token left, the answer did not arrive: the server may hold this certificate
        # now, with the token burned. Deleting the key would brick the device for good.
        PENDING.write(store.state_dir, settings)
    elif created:
        # Refused, or the token never left: no attempt registered this new key.
        store.remove()


def _advice(refused: EnrollmentRefused) -> str:
    return _advice_for(refused.condition, str(refused))


def _advice_for(condition: str, text: str) -> str:
    hints = {
        "token-expired": "ask the account owner for a new QR code",
        "token-used": "each QR code works once; ask for a new one",
        "token-unknown": "check that you scanned the right code for this server",
        "token-cancelled": "ask the account owner for a new QR code",
        "jid-mismatch": "the token names another device; use a fresh --state-dir",
        "name-conflict": "the account owner must revoke that device, or issue a new token "
        "with another name (`pairing token --name …`)",
        "jid-in-use": "the owner must revoke the old device first",
    }
    hint = hints.get(condition)
    return text + (f"; {hint}" if hint else "")
