"""Enrolling by a pairing request: the device shows a QR code, its owner approves it on the web
page (docs/protocol.md, section 9.6; the pattern of RFC 8628's device authorization grant).

The device makes its key and certificate first and binds the request to them: the request and
every status query are signed by the key over a fresh server nonce. The approval URL and the
user code it shows are not secrets (they are printed and logged); what the server answers is
only ever given to the key's holder, and what it registers is only the key's certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import replace

from device_agent.enrollment import EnrollmentError, ServerSettings, first_login, identity_for
from device_agent.https_client import AnswerLost, HTTPSEndpoint
from device_agent.keystore import KeyStore
from pairing.errors import ConnectionFailed, PairingError
from pairing.protocol import https_api
from pairing.protocol import pair_request as wire
from pairing.protocol.https_api import APIRefused, Challenge, Enrolled
from pairing.protocol.jid import JID
from pairing.protocol.proofs import SigningKey, sign

log = logging.getLogger(__name__)

#: The server holds a status query up to 20 s while the request is pending.
_STATUS_TIMEOUT = 35.0

_ENDINGS = {
    wire.EXPIRED: "nobody approved the request in time; run the command again",
    wire.UNKNOWN: "the server no longer knows this request (it restarted, or the request "
    "ended long ago); run the command again",
}


async def enroll_by_request(
    store: KeyStore,
    jid: JID,
    endpoint: HTTPSEndpoint,
    *,
    name: str,
    show: Callable[[wire.PairRequestIssued], None],
    valid_for: dt.timedelta = dt.timedelta(days=365),
    timeout: float = 15.0,
) -> JID:
    """Ask for a pairing request, ``show`` it, wait for the owner, then log in with EXTERNAL;
    returns the bound JID. Denial, expiry and an unknown request raise :class:`EnrollmentError`
    (and a key made for this attempt is removed, as nothing was registered)."""
    identity, created = identity_for(store, jid, valid_for)
    certificate = identity.certificate
    key = store.private_key()
    try:
        nonce = await _nonce(endpoint, timeout)
        request = wire.PairRequest(
            certificate,
            wire.check_name(name),
            nonce,
            sign(key, wire.pair_request_message(nonce, certificate.fingerprint, name.strip())),
        )
        issued = wire.PairRequestIssued.from_json(
            await endpoint.post(wire.PAIR_REQUEST_PATH, request.to_json(), timeout=timeout)
        )
        log.info(
            "pairing request %s: open %s and compare the code %s",
            issued.request,
            issued.approve_url,
            issued.user_code,
        )
        show(issued)
        enrolled = await _wait(endpoint, issued, key, timeout)
    except APIRefused as refused:
        if created:
            store.remove()  # nothing was registered for this key
        if refused.condition == wire.DENIED:  # the server says who denied or cancelled it
            raise EnrollmentError(f"not enrolled: {refused.text}") from None
        ending = _ENDINGS.get(refused.condition)
        raise EnrollmentError(ending or str(refused)) from None
    except PairingError as exc:
        if created:
            store.remove()
        if isinstance(exc, ConnectionFailed):
            raise EnrollmentError(f"{exc}; check that server-ext is reachable") from None
        raise EnrollmentError(str(exc)) from None
    settings = ServerSettings(
        enrolled.xmpp.host,
        enrolled.xmpp.port,
        enrolled.xmpp.pin or "",
        str(jid),
        https_host=endpoint.host,
        https_port=endpoint.port,
        https_pin=endpoint.pin,
    )
    settings = replace(settings, name=enrolled.name)
    return await first_login(store, settings, identity, jid, timeout=timeout, done="approved")


async def _nonce(endpoint: HTTPSEndpoint, timeout: float) -> str:
    answer = await endpoint.post(https_api.CHALLENGE_PATH, None, timeout=timeout)
    return Challenge.from_json(answer).nonce


async def _wait(
    endpoint: HTTPSEndpoint, issued: wire.PairRequestIssued, key: SigningKey, timeout: float
) -> Enrolled:
    """Ask until the request is decided (each query held by the server while pending)."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        nonce = await _nonce(endpoint, timeout)
        query = wire.PairStatusQuery(
            issued.request,
            nonce,
            sign(key, wire.pair_status_message(nonce, issued.request)),
        )
        try:
            answer = await endpoint.post(
                wire.PAIR_STATUS_PATH, query.to_json(), timeout=_STATUS_TIMEOUT
            )
        except AnswerLost:
            await asyncio.sleep(max(1, issued.interval))
            continue  # a lost answer changes nothing: the next query is answered the same
        status = wire.PairStatus.from_json(answer)
        if status.enrolled is not None:
            return status.enrolled
        if loop.time() - started < issued.interval:
            # Answered at once (no long hold): wait as long as the server asked.
            await asyncio.sleep(issued.interval)


__all__ = ["enroll_by_request"]
