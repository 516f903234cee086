"""A few requests to server-ext's HTTPS API (docs/protocol.md, section 9), with the stdlib.

A device sends a handful of requests in its life (a challenge and an enrollment, now and then
a renewal), so it needs no HTTP library: ``http.client`` over ``ssl`` is enough. The server is
recognised by the SHA-256 of its certificate, pinned from the enrollment URI: it is checked
on the handshake's certificate **before** any byte of a request leaves, as the XMPP login
does (pairing.xmpp.connection).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from pairing.errors import ConnectionFailed, ServerIdentityMismatch, ServerUnreachable
from pairing.protocol.https_api import MAX_BODY_BYTES, APIRefused


class AnswerLost(ConnectionFailed):
    """The request left, the answer did not arrive: the server may have acted on it."""


@dataclass(frozen=True, slots=True)
class HTTPSEndpoint:
    """server-ext's HTTPS API at ``host:port``, pinned by ``pin`` (64 hex digits)."""

    host: str
    port: int
    pin: str

    async def post(self, path: str, payload: dict[str, Any] | None, *, timeout: float) -> Any:
        """POST ``payload`` (JSON) to ``path``; the 200 answer's JSON, or :class:`APIRefused`."""
        return await asyncio.to_thread(self._exchange, path, payload, timeout)

    def _exchange(self, path: str, payload: dict[str, Any] | None, timeout: float) -> Any:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The pin below is the check: the server's certificate is self-signed, as the embedded
        # server's is, and its SHA-256 came with the token in the QR code.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        where = f"{self.host}:{self.port}"
        connection = http.client.HTTPSConnection(
            self.host, self.port, timeout=timeout, context=context
        )
        try:
            try:
                connection.connect()
            except (TimeoutError, socket.gaierror, ConnectionRefusedError) as exc:
                raise ServerUnreachable(f"cannot reach {where}: {exc}") from None
            except (OSError, ssl.SSLError) as exc:
                raise ConnectionFailed(f"cannot connect to {where}: {exc}") from None
            sock = connection.sock
            der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
            if not der or not hmac.compare_digest(hashlib.sha256(der).hexdigest(), self.pin):
                raise ServerIdentityMismatch(
                    f"the server at {where} presented a certificate whose SHA-256 fingerprint "
                    "is not the pinned one; nothing was sent"
                )
            body = json.dumps(payload or {}).encode()
            try:
                connection.request(
                    "POST", path, body=body, headers={"Content-Type": "application/json"}
                )
            except (OSError, http.client.HTTPException) as exc:
                raise ConnectionFailed(f"the request to {where} failed: {exc}") from None
            try:
                response = connection.getresponse()
                raw = response.read(MAX_BODY_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise AnswerLost(f"no answer from {where}: {exc}") from None
        finally:
            connection.close()
        try:
            data = json.loads(raw) if len(raw) <= MAX_BODY_BYTES else None
        except (UnicodeDecodeError, ValueError):
            data = None
        if response.status != 200:
            raise APIRefused.from_json(response.status, data)
        if not isinstance(data, dict):
            raise APIRefused("malformed", f"the answer from {where} is not a JSON object")
        return data


__all__ = ["AnswerLost", "HTTPSEndpoint"]
