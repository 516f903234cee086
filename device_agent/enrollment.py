"""Enrolling this device from an enrollment URI (QR flow), and remembering its server."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from device_agent.errors import DeviceAgentError
from device_agent.keystore import KeyStore
from pairing.errors import ConnectionFailed, PairingError
from pairing.protocol.jid import JID
from pairing.protocol.uri import EnrollmentURI
from pairing.secure_files import write_private
from pairing.xmpp.connection import ServerAddress, TrustAnchor, login, logout, make_client
from pairing.xmpp.enrollment import EnrollmentRefused, offer_token

SERVER_FILE = "server.json"


class EnrollmentError(DeviceAgentError):
    """Enrollment did not happen; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Where the device logs in, and the server certificate it pins."""

    host: str
    port: int
    fingerprint: str
    jid: str

    def save(self, state_dir: Path) -> None:
        write_private(state_dir / SERVER_FILE, json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, state_dir: Path) -> ServerSettings:
        path = state_dir / SERVER_FILE
        try:
            data = json.loads(path.read_text())
            return cls(
                str(data["host"]), int(data["port"]), str(data["fingerprint"]), str(data["jid"])
            )
        except FileNotFoundError:
            raise EnrollmentError(
                f"this device is not enrolled yet ({path} is missing): run `device-agent enroll`"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EnrollmentError(f"{path} is unreadable: {exc}") from None


async def enroll(
    store: KeyStore,
    uri: EnrollmentURI,
    *,
    valid_for: dt.timedelta = dt.timedelta(days=365),
    timeout: float = 15.0,
) -> JID:
    """Create the identity if needed, redeem the token, log in with EXTERNAL; returns the JID.

    On failure nothing is left half-done: a key made for this attempt is removed, and the
    server settings are written only after the server has registered the certificate.
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
    client = make_client(
        str(uri.jid),
        server=ServerAddress(uri.host, uri.port),
        trust=TrustAnchor(fingerprint=uri.fingerprint),
        certfile=identity.cert_path,
        keyfile=identity.key_path,
    )
    outcome = offer_token(client, uri.token, timeout=timeout)
    try:
        bound = await login(client, timeout=timeout)
    except PairingError as exc:
        if created:
            store.remove()
        refused = outcome.exception() if outcome.done() else None
        if isinstance(refused, EnrollmentRefused):
            raise EnrollmentError(_advice(refused)) from None
        if isinstance(exc, ConnectionFailed):
            raise EnrollmentError(
                f"{exc}; check that the server is running and reachable"
            ) from None
        raise EnrollmentError(str(exc)) from None
    ServerSettings(uri.host, uri.port, uri.fingerprint, str(uri.jid)).save(store.state_dir)
    await logout(client)
    return bound


def _advice(refused: EnrollmentRefused) -> str:
    hints = {
        "token-expired": "ask the account owner for a new QR code",
        "token-used": "each QR code works once; ask for a new one",
        "token-unknown": "check that you scanned the right code for this server",
        "token-cancelled": "ask the account owner for a new QR code",
        "jid-mismatch": "the token names another device; use a fresh --state-dir",
        "name-conflict": "ask for a token with another --name",
        "jid-in-use": "the owner must revoke the old device first",
    }
    hint = hints.get(refused.condition)
    return f"{refused}" + (f"; {hint}" if hint else "")
