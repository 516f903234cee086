"""The web page for owners and admins (docs/web.md): routes on the HTTPS face's aiohttp app.

Only an adapter: it reads forms, cookies and the peer address, asks the app layer
(:mod:`server_ext.app.web_sessions`, :mod:`server_ext.app.web_views`,
:mod:`server_ext.app.pair_requests`) and the registry, renders Jinja2 templates, and carries
out what was decided through the server's own paths (a revocation goes through
``Server.apply_change``, which closes the device's live sessions at once).

The pages work without JavaScript; ``static/web.js`` (the only script, no inline script under
the CSP) adds the live device state (server-sent events from ``/events``) and countdowns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from aiohttp import web
from markupsafe import Markup

from pairing import qr
from pairing.errors import InvalidJID
from pairing.protocol.https_api import APIRefused
from pairing.protocol.identity import format_fingerprint
from pairing.protocol.jid import JID
from pairing.protocol.pair_request import APPROVE_PATH_PREFIX, check_name
from server_ext.admin.token_issuer import issue_token
from server_ext.app import web_views as views
from server_ext.app.pair_requests import RequestRefused, RequestState
from server_ext.app.web_sessions import (
    LoginRefused,
    WebSession,
    check_password,
    login_account,
    login_failed,
)
from server_ext.errors import RegistryError, ServerExtError
from server_ext.model import DeviceState, RegistryChange
from server_ext.stock.base import StockError
from server_ext.stock.password import password_accepted

if TYPE_CHECKING:
    from server_ext.net.server import Server

log = logging.getLogger(__name__)

SESSION_COOKIE = "__Host-session"  # RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain
LOGIN_COOKIE = "__Host-login"  # the login form's CSRF token (double submit)
_HERE = Path(__file__).parent
TEMPLATES = _HERE / "web_templates"
STATIC = _HERE / "web_static"
#: No inline script or style: everything the page loads comes from here.
CSP = (
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
_MAX_FORM = 16 * 1024
_LIVE_POLL = 0.5  # seconds between live-state checks (the embedded server's table is memory)
_LIVE_POLL_STOCK = 3.0  # a stock server is asked over its own API
_LONG_POLL = 20.0  # how long a device's status query is held while its request is pending
_SAFE_NEXT = re.compile(r"^/[A-Za-z0-9/_\-]*$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Pulse:
    """Wakes whoever waits for "something changed" (long polls, live updates)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass


def _since(value: Any) -> str:
    if value is None:
        return "—"
    when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


class WebPages:
    """The page's routes for one :class:`~server_ext.net.server.Server`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.pulse = Pulse()
        self.closing = False
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=jinja2.select_autoescape(("html",)),
            undefined=jinja2.StrictUndefined,
        )
        self._env.filters["when"] = _since
        self._env.filters["fingerprint"] = format_fingerprint

    # --- wiring ----------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(self._headers)
        route = app.router
        route.add_get("/", self._index)
        route.add_get("/login", self._login_form)
        route.add_post("/login", self._login)
        route.add_post("/logout", self._form(self._logout))
        route.add_get("/devices", self._page(self._devices))
        route.add_post(
            "/devices/{id:\\d+}/{action:rename|disable|enable|revoke}",
            self._form(self._device_action),
        )
        route.add_post("/tokens/{id:\\d+}/cancel", self._form(self._cancel_token))
        route.add_post("/requests/{id}/cancel", self._form(self._cancel_request))
        route.add_get("/pair", self._page(self._pair_form))
        route.add_post("/pair", self._form(self._pair))
        route.add_get(APPROVE_PATH_PREFIX + "{id}", self._page(self._approve_page))
        route.add_post(APPROVE_PATH_PREFIX + "{id}", self._form(self._decide))
        route.add_get("/events", self._events)
        route.add_get("/admin", self._page(self._admin, admin=True))
        route.add_get("/admin/audit", self._page(self._audit, admin=True))
        route.add_post("/admin/kick", self._form(self._kick, admin=True))
        route.add_static("/static/", STATIC, append_version=False)

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        if not request.path.startswith("/api/"):
            response.headers.update(SECURITY_HEADERS)
            if not request.path.startswith("/static/"):
                response.headers.setdefault("Cache-Control", "no-store")
        if isinstance(response, web.HTTPException):
            raise response
        return response

    # --- plumbing ----------------------------------------------------------------------------

    @property
    def registry(self) -> Any:
        return self.server.registry

    def session(self, request: web.Request) -> WebSession | None:
        return self.server.web_sessions.get(request.cookies.get(SESSION_COOKIE))

    def render(
        self, request: web.Request, name: str, status: int = 200, **values: Any
    ) -> web.Response:
        session = self.session(request)
        text = self._env.get_template(name).render(
            viewer=session, csrf=session.csrf if session else "", **values
        )
        return web.Response(text=text, content_type="text/html", charset="utf-8", status=status)

    def message(
        self, request: web.Request, title: str, text: str, status: int = 200
    ) -> web.Response:
        return self.render(request, "message.html", status, title=title, text=text)

    def _page(
        self,
        handler: Callable[[web.Request, WebSession], Awaitable[web.StreamResponse]],
        *,
        admin: bool = False,
    ) -> Handler:
        async def page(request: web.Request) -> web.StreamResponse:
            session = self.session(request)
            if session is None:
                raise web.HTTPSeeOther(f"/login?next={request.path}")
            if admin and not session.is_admin:
                return self.message(request, "Not allowed", "This page is for admins.", 403)
            return await handler(request, session)

        return page

    def _form(
        self,
        handler: Callable[
            [web.Request, WebSession, Mapping[str, str]], Awaitable[web.StreamResponse]
        ],
        *,
        admin: bool = False,
    ) -> Handler:
        """A POST: signed in, the session's CSRF token in the form, then the handler."""

        async def form(request: web.Request) -> web.StreamResponse:
            session = self.session(request)
            fields = await _fields(request)
            if session is None:
                return self.message(request, "Signed out", "Sign in again, then retry.", 403)
            if not session.csrf_ok(fields.get("csrf")):
                # The synchronizer token: a form posted from another site has none.
                log.info("a form without the session's CSRF token was refused")
                return self.message(
                    request, "Refused", "This form is stale or came from another site (CSRF).", 403
                )
            if admin and not session.is_admin:
                return self.message(request, "Not allowed", "This is for admins.", 403)
            return await handler(request, session, fields)

        return form

    def viewer(self, session: WebSession) -> views.Viewer:
        return views.Viewer(session.account, session.is_admin)

    async def online(self) -> dict[str, list[str]]:
        online: dict[str, list[str]] = {}
        for entry in await self.server.live_sessions():
            if entry.get("fingerprint"):
                online.setdefault(entry["fingerprint"], []).append(entry["jid"])
        return online

    def changed(self) -> None:
        self.pulse.fire()

    def close(self) -> None:
        """End the live-update streams (the server is stopping)."""
        self.closing = True
        self.pulse.fire()

    # --- sign in and out ------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/devices" if self.session(request) else "/login")

    async def _login_form(self, request: web.Request) -> web.StreamResponse:
        return self._login_page(request, _next(request.query.get("next", "")), "", 200)

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
        fields = await _fields(request)
        next_path = _next(fields.get("next", ""))
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
        response.del_cookie(LOGIN_COOKIE, path="/")
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
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    # --- my devices -------------------------------------------------------------------------

    async def _devices(self, request: web.Request, session: WebSession) -> web.StreamResponse:
        online = await self.online()
        account = session.account
        return self.render(
            request,
            "devices.html",
            devices=views.device_rows(self.registry, online, account=account),
            tokens=views.pending_tokens(self.registry, account),
            requests=[
                _request_view(r, self.server)
                for r in self.server.pair_requests.pending_for(account)
            ],
            notice=request.query.get("notice", "")[:200],
        )

    async def _device_action(
        self, request: web.Request, session: WebSession, fields: Mapping[str, str]
    ) -> web.StreamResponse:
        action = request.match_info["action"]
        back = "/admin" if fields.get("back") == "admin" and session.is_admin else "/devices"
        try:
            device = views.device_for(
                self.registry, self.viewer(session), int(request.match_info["id"])
            )
        except views.NotAllowed:
            return self.message(request, "Not found", "There is no such device.", 404)
        actor = f"web:{session.account}"
        try:
            if action == "rename":
                name = check_name(fields.get("name", ""))
                self.registry.devices.rename(device.id, name, actor=actor)
                notice = f"renamed to {name}"
            elif action == "revoke":
                if fields.get("confirm") != "yes":
                    return self.render(request, "confirm.html", device=device, back=back)
                self.registry.devices.set_state(
                    device.id,
                    DeviceState.REVOKED,
                    actor=actor,
                    reason=fields.get("reason", "")[:200] or "revoked on the web page",
                )
                notice = f"{device.name} revoked"
            else:
                state = DeviceState.DISABLED if action == "disable" else DeviceState.ACTIVE
                self.registry.devices.set_state(device.id, state, actor=actor)
                notice = f"{device.name} {action}d"
        except (RegistryError, APIRefused) as exc:
            return self.message(request, "Not done", str(exc), 409)
        # The existing path: a revoked device's live sessions close now, the stock server
        # (if any) is brought in step.
        try:
            await self.server.apply_change(RegistryChange(f"web {action}", device.id))
        except ServerExtError as exc:
            return self.message(request, "Changed, not applied", f"The XMPP server: {exc}", 502)
        self.changed()
        raise web.HTTPSeeOther(f"{back}?notice={quote(notice)}")

    async def _cancel_token(
        self, request: web.Request, session: WebSession, fields: Mapping[str, str]
    ) -> web.StreamResponse:
        try:
            self.registry.tokens.cancel(
                int(request.match_info["id"]),
                actor=f"web:{session.account}",
                account=None if session.is_admin else session.account,
            )
        except (RegistryError, ServerExtError) as exc:
            return self.message(request, "Not done", str(exc), 409)
        raise web.HTTPSeeOther("/devices?notice=" + quote("token cancelled"))

    async def _cancel_request(
        self, request: web.Request, session: WebSession, fields: Mapping[str, str]
    ) -> web.StreamResponse:
        try:
            cancelled = self.server.pair_requests.cancel(
                request.match_info["id"], session.account, is_admin=session.is_admin
            )
        except RequestRefused as exc:
            return self.message(request, "Not done", exc.text, 409)
        self.server.context.audit(
            "pair_request.cancelled",
            actor=f"web:{session.account}",
            subject=cancelled.certificate.fingerprint,
            address=request.remote,
            jid=str(cancelled.jid),
            request=cancelled.id,
        )
        self.changed()
        raise web.HTTPSeeOther("/devices?notice=" + quote("request cancelled"))

    # --- pair a new bot (the page shows the QR) --------------------------------------------

    async def _pair_form(self, request: web.Request, session: WebSession) -> web.StreamResponse:
        return self.render(request, "pair.html", issued=None, error="")

    async def _pair(
        self, request: web.Request, session: WebSession, fields: Mapping[str, str]
    ) -> web.StreamResponse:
        context = self.server.context
        try:
            issued = issue_token(
                self.registry,
                context.token_rules,
                account=session.account,
                resource=fields.get("resource", ""),
                name=fields.get("name") or None,
                ttl=None,
                created_by=f"web:{session.account}",
            )
        except (ServerExtError, InvalidJID) as exc:
            return self.render(request, "pair.html", 400, issued=None, error=str(exc))
        if context.stock_enrollment is not None:
            uri = str(issued.https_uri(context.stock_enrollment))
        else:
            uri = str(
                issued.uri(
                    host=context.connect_host,
                    port=context.connect_port,
                    fingerprint=context.fingerprint,
                )
            )
        return self.render(
            request,
            "pair.html",
            issued=issued.record,
            uri=uri,
            svg=Markup(qr.svg(uri)),  # noqa: S704 - qrcode's own SVG, made from our URI
            error="",
        )

    # --- approval (the bot shows the QR) ----------------------------------------------------

    async def _approve_page(self, request: web.Request, session: WebSession) -> web.StreamResponse:
        pending = self.server.pair_requests.get(request.match_info["id"])
        if pending is None or not (session.is_admin or pending.account == session.account):
            return self.message(
                request,
                "No such request",
                "This pairing request is unknown, expired long ago, or is for another account.",
                404,
            )
        return self.render(request, "approve.html", pending=_request_view(pending, self.server))

    async def _decide(
        self, request: web.Request, session: WebSession, fields: Mapping[str, str]
    ) -> web.StreamResponse:
        request_id = request.match_info["id"]
        book = self.server.pair_requests
        decision = fields.get("decision")
        actor = str(session.account)
        try:
            if decision == "approve":
                decided = book.approve(request_id, session.account, is_admin=session.is_admin)
            elif decision == "deny":
                decided = book.deny(request_id, session.account, is_admin=session.is_admin)
            else:
                return self.message(request, "Refused", "Approve or deny.", 400)
        except RequestRefused as exc:
            return self.message(request, "Not done", exc.text, 409)
        self.server.context.audit(
            f"pair_request.{decided.state.value}",
            actor=f"web:{actor}",
            subject=decided.certificate.fingerprint,
            address=request.remote,
            jid=str(decided.jid),
            request=decided.id,
        )
        if decided.state is RequestState.APPROVED:
            try:  # the stock server must trust the certificate before the device logs in
                await self.server.apply_change(RegistryChange("pairing request approved"))
            except ServerExtError as exc:
                log.error("the stock server was not brought in step: %s", exc)
        self.changed()
        notice = f"{decided.name} {decided.state.value}"
        raise web.HTTPSeeOther(f"/devices?notice={quote(notice)}")

    # --- live updates -------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the state of the viewer's devices whenever it changes."""
        session = self.session(request)
        if session is None:
            raise web.HTTPUnauthorized()
        account = None if request.query.get("all") == "1" and session.is_admin else session.account
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        poll = _LIVE_POLL if self.server.stock.kind.embedded else _LIVE_POLL_STOCK
        last = ""
        try:
            while not self.closing and self.session(request) is not None:
                state = json.dumps(
                    views.live_state(self.registry, await self.online(), account), sort_keys=True
                )
                if state != last:
                    await response.write(f"event: devices\ndata: {state}\n\n".encode())
                    last = state
                await self.pulse.wait(poll)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    # --- admin ----------------------------------------------------------------------------------

    async def _admin(self, request: web.Request, session: WebSession) -> web.StreamResponse:
        query = request.query
        account = views.parse_account(query.get("account", ""), self.server.config.domain)
        online = await self.online()
        return self.render(
            request,
            "admin.html",
            accounts=self.registry.accounts.all(),
            devices=views.device_rows(
                self.registry,
                online,
                account=account,
                state=query.get("state", ""),
                text=query.get("q", "")[:100],
            ),
            tokens=views.pending_tokens(self.registry, None),
            requests=[
                _request_view(r, self.server) for r in self.server.pair_requests.pending_for(None)
            ],
            sessions=await self.server.live_sessions(),
            filters={k: query.get(k, "")[:100] for k in ("account", "state", "q")},
            notice=query.get("notice", "")[:200],
        )

    async def _audit(self, request: web.Request, session: WebSession) -> web.StreamResponse:
        query = request.query
        filters = {
            k: query.get(k, "")[:100] for k in ("device", "account", "event", "since", "until")
        }
        rows = views.audit_rows(
            self.registry,
            device=filters["device"],
            account=views.parse_account(filters["account"], self.server.config.domain),
            event=filters["event"],
            since=views.parse_time(filters["since"]),
            until=views.parse_time(filters["until"]),
        )
        return self.render(request, "audit.html", rows=rows, filters=filters)

    async def _kick(
        self, request: web.Request, session: WebSession, fields: Mapping[str, str]
    ) -> web.StreamResponse:
        try:
            jid = JID.parse(fields.get("jid", ""))
        except InvalidJID as exc:
            return self.message(request, "Refused", f"Not a JID: {exc}", 400)
        try:
            closed = await self.server.stock.close_sessions(
                [jid], f"an administrator ({session.account}) ended this session"
            )
        except ServerExtError as exc:
            return self.message(request, "Not done", str(exc), 502)
        self.server.context.audit(
            "session.kicked", actor=f"web:{session.account}", subject=str(jid), closed=str(closed)
        )
        self.changed()
        raise web.HTTPSeeOther("/admin?notice=" + quote(f"closed {closed} session(s) of {jid}"))


def _request_view(pending: Any, server: Server) -> dict[str, Any]:
    return {
        "id": pending.id,
        "name": pending.name,
        "jid": str(pending.jid),
        "account": str(pending.account),
        "resource": pending.resource,
        "fingerprint": format_fingerprint(pending.certificate.fingerprint),
        "user_code": pending.user_code,
        "address": pending.address,
        "created": pending.created_at,
        "expires": pending.expires_at.isoformat(timespec="seconds"),
        "state": pending.state.value,
    }


async def _fields(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > _MAX_FORM:
        raise web.HTTPRequestEntityTooLarge(max_size=_MAX_FORM, actual_size=request.content_length)
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _next(value: str) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    return value if _SAFE_NEXT.match(value) and not value.startswith("//") else ""


__all__ = ["CSP", "SECURITY_HEADERS", "Pulse", "WebPages"]
