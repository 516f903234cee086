"""The HTTPS face (docs/protocol.md, section 9): aiohttp in the ``serve`` event loop.

Only an adapter: it reads the method, query, ``Authorization`` header, peer address and body
(at most 64 KiB), lets :class:`~server_ext.app.https_api.HTTPSAPI` decide, brings the stock
server in step when the answer says the registry changed (before the answer leaves, so the
device's first EXTERNAL login is accepted), and writes the answer. TLS uses the server's own
identity (``[tls]``); the device pins it through the v2 URI. No client certificate is asked
for: enrollment proves possession of the key with a signature instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from pairing.protocol import https_api as paths
from pairing.protocol import pair_request
from pairing.protocol.device_status import DEVICE_STATUS_PATH
from pairing.protocol.https_api import MAX_BODY_BYTES, APICondition, APIRefused
from server_ext.app.https_api import HTTPSAPI, Reply, refusal
from server_ext.app.pair_requests import RequestState
from server_ext.log_limits import CappedLog
from server_ext.model import RegistryChange

if TYPE_CHECKING:
    from server_ext.net.web import WebPages

log = logging.getLogger(__name__)
#: How long a pairing request's status query is held while it is pending (seconds).
LONG_POLL = 20.0
peer_log = CappedLog(log)

#: Brings the stock server in step; raises ``server_ext.stock.base.StockError`` on failure.
Sync = Callable[[RegistryChange], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class HTTPSAddress:
    host: str
    port: int


def make_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.2+ with the server's own certificate; :meth:`HTTPSFace.reload_tls` swaps it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


class HTTPSFace:
    """The listener; ``api`` is asked anew per request (a TLS reload replaces the context)."""

    def __init__(
        self,
        api: Callable[[], HTTPSAPI],
        sync: Sync,
        tls: ssl.SSLContext,
        *,
        host: str,
        port: int,
        pages: WebPages | None = None,
    ) -> None:
        self._web = pages
        self._api = api
        self._sync = sync
        self._tls = tls
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.address: HTTPSAddress | None = None

    def _application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(paths.CHALLENGE_PATH, self._challenge)
        app.router.add_post(paths.ENROLL_PATH, self._device(lambda api: api.enroll))
        app.router.add_post(paths.RENEW_PATH, self._device(lambda api: api.renew))
        app.router.add_post(paths.ROTATE_PATH, self._device(lambda api: api.rotate))
        app.router.add_post(paths.PROSODY_CERTIFICATE_PATH, self._prosody)
        app.router.add_get(paths.MONGOOSEIM_GET_CERTS_PATH, self._get_certs)
        app.router.add_get(paths.MONGOOSEIM_USER_EXISTS_PATH, self._user_exists)
        app.router.add_post(
            pair_request.PAIR_REQUEST_PATH, self._device(lambda api: api.pair_request)
        )
        app.router.add_post(pair_request.PAIR_STATUS_PATH, self._pair_status)
        app.router.add_post(DEVICE_STATUS_PATH, self._device(lambda api: api.device_status))
        if self._web is not None:
            self._web.add_routes(app)
        return app

    async def start(self) -> HTTPSAddress:
        runner = web.AppRunner(self._application(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(
            runner, self._host, self._port, ssl_context=self._tls, reuse_address=True
        )
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0]  # the port actually bound (port 0 in tests)
        self.address = HTTPSAddress(str(bound[0]), int(bound[1]))
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def reload_tls(self, cert_file: Path, key_file: Path) -> None:
        """New handshakes use the new certificate (the context object is shared)."""
        self._tls.load_cert_chain(str(cert_file), str(key_file))

    # --- handlers ----------------------------------------------------------------------------

    async def _challenge(self, request: web.Request) -> web.StreamResponse:
        return await self._send(self._api().challenge(_address(request)))

    def _device(
        self, pick: Callable[[HTTPSAPI], Callable[[bytes, str], Reply]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await _body(request)
            if isinstance(body, Reply):
                return await self._send(body)
            return await self._send(pick(self._api())(body, _address(request)))

        return handle

    async def _pair_status(self, request: web.Request) -> web.StreamResponse:
        """A long poll: a pending request's answer is held until it is decided (or a while)."""
        body = await _body(request)
        if isinstance(body, Reply):
            return await self._send(body)
        api = self._api()
        reply, waiting = api.pair_status(body, _address(request))
        if waiting is not None and self._web is not None and api.requests is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + LONG_POLL
            while (left := deadline - loop.time()) > 0:
                await self._web.pulse.wait(min(left, 1.0))
                current = api.requests.get(waiting)
                if current is None or current.state is not RequestState.PENDING:
                    reply = api.pair_answer(current) if current is not None else reply
                    break
        return await self._send(reply)

    async def _prosody(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        if isinstance(body, Reply):
            return await self._send(body)
        authorization = request.headers.get("Authorization")
        return await self._send(
            self._api().prosody_certificate(body, authorization, _address(request))
        )

    async def _get_certs(self, request: web.Request) -> web.StreamResponse:
        api = self._api()
        reply = api.mongooseim_get_certs(
            dict(request.query), request.headers.get("Authorization"), _address(request)
        )
        return await self._send(reply)

    async def _user_exists(self, request: web.Request) -> web.StreamResponse:
        api = self._api()
        reply = api.mongooseim_user_exists(
            dict(request.query), request.headers.get("Authorization"), _address(request)
        )
        return await self._send(reply)

    async def _send(self, reply: Reply) -> web.StreamResponse:
        if reply.change is not None:
            try:
                await self._sync(reply.change)
            except Exception as exc:  # the answer must still go out, saying what failed
                log.error("the stock server was not brought in step: %s", exc)
                reply = refusal(
                    APIRefused(
                        APICondition.INTERNAL_ERROR,
                        "registered, but the XMPP server could not be updated yet; retry the "
                        "same request",
                        retry_after=5,
                    )
                )
                reply = Reply(503, reply.body, headers=reply.headers)
        headers = dict(reply.headers)
        if reply.text is not None:
            # MongooseIM's http auth needs a Content-Length (its doc says MUST): a whole,
            # unchunked body gets one.
            return web.Response(
                status=reply.status, text=reply.text, content_type="text/plain", headers=headers
            )
        return web.Response(
            status=reply.status,
            body=json.dumps(reply.body or {}).encode(),
            content_type="application/json",
            headers=headers,
        )


async def _body(request: web.Request) -> bytes | Reply:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return refusal(APIRefused(APICondition.MALFORMED, "the body is too large"))


def _address(request: web.Request) -> str:
    return request.remote or "?"
