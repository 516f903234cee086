"""Asking server-ext how this device stands, after a stock server refused it without saying
why (docs/protocol.md, section 9.7; the messages are :mod:`pairing.protocol.device_status`).

Only a device enrolled over server-ext's HTTPS API (a v2 URI) can ask; the question is signed
with the device's key over a fresh nonce, so nobody else learns the answer.
"""

from __future__ import annotations

from pathlib import Path

from device_agent.enrollment import ServerSettings
from device_agent.keystore import KeyStore
from pairing.errors import PairingError
from pairing.protocol import https_api
from pairing.protocol.device_status import (
    DEVICE_STATUS_PATH,
    DeviceStatus,
    DeviceStatusQuery,
    status_message,
)
from pairing.protocol.https_api import Challenge
from pairing.protocol.proofs import sign


async def device_status(state_dir: Path, *, timeout: float = 10.0) -> DeviceStatus | None:
    """The registry's answer for this device; None when there is nobody to ask (the device
    logs in to the embedded server, which says so itself) or the question got no answer."""
    settings = ServerSettings.load(state_dir)
    if not settings.over_https:
        return None
    from device_agent.https_client import HTTPSEndpoint

    store = KeyStore(state_dir)
    identity = store.load()
    endpoint = HTTPSEndpoint(settings.https_host, settings.https_port, settings.https_pin)
    try:
        challenge = Challenge.from_json(
            await endpoint.post(https_api.CHALLENGE_PATH, None, timeout=timeout)
        )
        signature = sign(store.private_key(), status_message(challenge.nonce, identity.fingerprint))
        query = DeviceStatusQuery(identity.certificate, challenge.nonce, signature)
        answer = await endpoint.post(DEVICE_STATUS_PATH, query.to_json(), timeout=timeout)
        return DeviceStatus.from_json(answer)
    except PairingError:  # unreachable, refused, or an answer that is not ours: ask later
        return None


__all__ = ["device_status"]
