"""Enrolling this device from an enrollment URI (QR flow), and remembering its server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from device_agent import state_files
from device_agent.errors import DeviceAgentError
from device_agent.keystore import KeyStore
from device_agent.state_files import StateFile, StateFileError, StateFileMissing
from pairing.errors import ConnectionFailed, PairingError
from pairing.protocol.address import ServerAddress
from pairing.protocol.jid import JID
from pairing.protocol.uri import EnrollmentURI
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
    """Where the device logs in, and the server certificate it pins."""

    host: str
    port: int
    fingerprint: str
    jid: str
    name: str = ""  # the device's name on the account, when the server said it

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.name:
            del data["name"]  # as earlier versions wrote it
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerSettings:
        return cls(
            state_files.text(data, "host"),
            state_files.integer(data, "port"),
            state_files.text(data, "fingerprint"),
            state_files.text(data, "jid"),
            state_files.text(data, "name", default=""),
        )

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
        trust=TrustAnchor(fingerprint=settings.fingerprint),
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
    created = False
    if store.exists():
        identity = store.load()
        if identity.jid != uri.jid:
            raise EnrollmentError(
                f"this device already has the identity {identity.jid}, but the token is for "
                f"{uri.jid}; use another --state-dir, or `device-agent init --force` to replace it"
            )
    else:
        identity = store.create(uri.jid, valid_for=valid_for)
        created = True
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
    _record_enrolled(store.state_dir, _named(settings, offer))
    await logout(client)
    return bound


def _named(settings: ServerSettings, offer: TokenOffer) -> ServerSettings:
    """``settings`` with the device name the server gave in ``<success/>``, if it did."""
    if not offer.registered:
        return settings
    return replace(settings, name=offer.outcome.result().name or settings.name)


def _record_enrolled(state_dir: Path, settings: ServerSettings) -> None:
    settings.save(state_dir)
    PENDING.remove(state_dir)


def _settle_failure(
    store: KeyStore, settings: ServerSettings, offer: TokenOffer, *, created: bool
) -> None:
    """Keep exactly what a retry needs after a failed attempt, and nothing else."""
    if offer.registered:
        # The server said so: we are enrolled.
        _record_enrolled(store.state_dir, _named(settings, offer))
    elif offer.refusal is None and offer.sent:
        # The token left, the answer did not arrive: the server may hold this certificate
        # now, with the token burned. Deleting the key would brick the device for good.
        PENDING.write(store.state_dir, settings)
    elif created:
        # Refused, or the token never left: no attempt registered this new key.
        store.remove()


def _advice(refused: EnrollmentRefused) -> str:
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
    hint = hints.get(refused.condition)
    return f"{refused}" + (f"; {hint}" if hint else "")
