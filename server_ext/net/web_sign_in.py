"""Signing in to the web page and out: the login form with its double-submit token, the
password check (the embedded server's SCRAM keys, or a password login to a stock server),
and a fresh session cookie at every login."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping

from aiohttp import web

from pairing.protocol.jid import JID
from server_ext.app.web_sessions import (
    LoginRefused,
    WebSession,
    check_password,
    login_account,
    login_failed,
)
from server_ext.net.web_face import WebFace
from server_ext.net.web_security import (
    LOGIN_COOKIE,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    form_fields,
    safe_next,
)
from server_ext.stock.base import StockError
from server_ext.stock.password import password_accepted

log = logging.getLogger(__name__)


class SignInPages(WebFace):
    """``/``, ``/login`` and ``/logout``."""

    async def _index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/devices" if self.session(request) else "/login")

    async def _login_form(self, request: web.Request) -> web.StreamResponse:
        return self._login_page(request, safe_next(request.query.get("next", "")), "", 200)

    def _login_page(
        self, request: web.Request, next_path: str, error: str, status: int
    ) -> web.Response:
        token = secrets.token_urlsafe(24)
        response = self.render(
            request, "login.html", status, login_token=token, next=next_path, error=error
        )
        response.set_cookie(
            LOGIN_COOKIE, token, secure=True, httponly=True, samesite="Strict", path="/"
        )
        return response

    async def _login(self, request: web.Request) -> web.StreamResponse:
        fields = await form_fields(request)
        next_path = safe_next(fields.get("next", ""))
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        given = fields.get("login_token", "")
        if not cookie or not secrets.compare_digest(cookie.encode(), given.encode()):
            return self._login_page(request, next_path, "The form expired; try again.", 403)
        address = request.remote or "?"
        try:
            account, is_admin = await self._check(
                fields.get("account", ""), fields.get("password", ""), address
            )
        except LoginRefused as refused:
            if refused.delay > 0:  # as XMPP password failures are held back
                await asyncio.sleep(refused.delay)
            self.server.context.audit(
                "login.failed",
                actor=fields.get("account", "")[:100] or "unknown",
                subject="web",
                address=address,
                mechanism="web",
                reason=refused.text,
            )
            return self._login_page(request, next_path, refused.text, 401)
        # A fresh id at every login (never one the browser brought): no session fixation.
        self.server.web_sessions.close(request.cookies.get(SESSION_COOKIE))
        session_id, _ = self.server.web_sessions.open(account, is_admin)
        self.server.context.audit("login.web", actor=str(account), subject="web", address=address)
        response = web.HTTPSeeOther(next_path or "/devices")
        response.set_cookie(
            SESSION_COOKIE, session_id, secure=True, httponly=True, samesite="Strict", path="/"
        )
        response.del_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _check(self, username: str, password: str, address: str) -> tuple[JID, bool]:
        """The embedded server's accounts by their SCRAM keys here; a stock server's by a
        password login to it (server-ext keeps no keys for those)."""
        server = self.server
        domain = server.config.domain
        if server.stock.kind.embedded:
            return check_password(
                self.registry, domain, server.throttle, username, password, address
            )
        account = login_account(domain, server.throttle, username, address)
        try:
            accepted = await password_accepted(server.xmpp_target(), account, password)
        except StockError as exc:
            log.error("web sign-in: %s", exc)
            raise LoginRefused("the XMPP server cannot be asked now; try again later") from None
        if not accepted:
            raise login_failed(server.throttle, account, address)
        server.throttle.succeeded(account, address)
        self.registry.accounts.ensure(account, actor="web")
        record = self.registry.accounts.get(account)
        return account, record is not None and record.is_admin

    async def _logout(
        self, request: web.Request, session: WebSession, fields: Mapping[str, str]
    ) -> web.StreamResponse:
        self.server.web_sessions.close(request.cookies.get(SESSION_COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
        return response


__all__ = ["SignInPages"]
