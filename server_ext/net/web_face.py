"""The base of the web page's handlers (:class:`WebFace`): the server it adapts, the Jinja2
templates, the signed-in session from its cookie, and the guards every page and form goes
through (signed in, admin where asked, the session's CSRF token in every POST).

The page groups are subclasses: :mod:`~server_ext.net.web_sign_in`,
:mod:`~server_ext.net.web_owner_pages`, :mod:`~server_ext.net.web_admin_pages` and
:mod:`~server_ext.net.web_events`; :mod:`server_ext.net.web` puts them together.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web

from pairing.protocol.identity import format_fingerprint
from server_ext.app import web_views as views
from server_ext.app.web_sessions import WebSession
from server_ext.net.web_security import SESSION_COOKIE, Handler, form_fields

if TYPE_CHECKING:
    from server_ext.net.server import Server

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
TEMPLATES = _HERE / "web_templates"
STATIC = _HERE / "web_static"


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


class WebFace:
    """What every page handler of one :class:`~server_ext.net.server.Server` shares."""

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
            fields = await form_fields(request)
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


def request_view(pending: Any, server: Server) -> dict[str, Any]:
    """A pairing request as the templates show it (the owner's and the admin's lists)."""
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


__all__ = ["STATIC", "TEMPLATES", "Pulse", "WebFace", "request_view"]
