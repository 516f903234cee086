"""Certificate rotation with no downtime (docs/admin.md, "Rotation").

1. make a new key and certificate for the same full JID;
2. register it over the device's own EXTERNAL session (the server allows exactly this, even
   under no-cert-management, and links the two certificates as one device);
3. switch: log in with the new certificate, which replaces the old session on the same
   resource (RFC 6120 §7.7.2.2) and makes the server disable the old certificate.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

from device_agent.errors import DeviceAgentError
from device_agent.keystore import KeyStore
from pairing.protocol.identity import certificate_der
from pairing.xmpp.connection import PairingClient, login
from pairing.xmpp.saslcert import add_certificate

log = logging.getLogger(__name__)


class RotationError(DeviceAgentError):
    """The rotation settings cannot work; the message says what to give instead."""


def check_margin(state_dir: Path, margin: dt.timedelta) -> None:
    """Refuse a margin that would make the device renew again as soon as it has renewed.

    A renewed certificate is valid for as long as the current one was made for, and it is due
    ``margin`` before it expires: with a margin at or above that lifetime it is due at once,
    and the device would rotate without pause (and the server refuse it as abuse).
    """
    validity = KeyStore(state_dir).load().validity
    if margin <= dt.timedelta(0):
        raise RotationError("the rotation margin must be more than 0 days")
    if margin >= validity:
        raise RotationError(
            f"cannot rotate {_days(margin)} before expiry: the certificate is valid for only "
            f"{_days(validity)}; give less than that (or enroll with a longer --valid-days)"
        )


def _days(delta: dt.timedelta) -> str:
    days = delta / dt.timedelta(days=1)
    return f"{days:g} day" + ("" if days == 1 else "s")


def default_margin(state_dir: Path) -> dt.timedelta:
    """Rotate a third of the lifetime before expiry, but never more than 30 days before."""
    identity = KeyStore(state_dir).load()
    lifetime = identity.not_after - identity.not_before
    return min(dt.timedelta(days=30), lifetime / 3)


def due(state_dir: Path, margin: dt.timedelta) -> dt.datetime:
    """When the certificate should be rotated: ``margin`` before it expires."""
    return KeyStore(state_dir).load().not_after - margin


async def rotate(
    state_dir: Path, client: PairingClient, make_client: Callable[[], PairingClient]
) -> PairingClient:
    """Rotate over ``client`` (logged in with the current certificate); returns the new client."""
    store = KeyStore(state_dir)
    key, cert = store.next_identity()
    client.register_plugin("xep_0030")
    client.register_plugin("xep_0257")
    await add_certificate(client, "rotation", certificate_der(cert), allow_management=False)
    store.install(key, cert)
    successor = make_client()
    await login(successor)
    return successor
