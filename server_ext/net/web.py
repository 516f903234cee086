"""The web page for owners and admins (docs/web.md): routes on the HTTPS face's aiohttp app.

Only an adapter: it reads forms, cookies and the peer address, asks the app layer
(:mod:`server_ext.app.web_sessions`, :mod:`server_ext.app.web_views`,
:mod:`server_ext.app.pair_requests`) and the registry, renders Jinja2 templates, and carries
out what was decided through the server's own paths (a revocation goes through
``Server.apply_change``, which closes the device's live sessions at once).

The pages work without JavaScript; ``static/web.js`` (the only script, no inline script under
the CSP) adds the live device state (server-sent events from ``/events``) and countdowns.

This module puts the page groups together and holds the route table: signing in
(:mod:`~server_ext.net.web_sign_in`), an owner's pages (:mod:`~server_ext.net.web_owner_pages`),
the admin's (:mod:`~server_ext.net.web_admin_pages`) and the live updates
(:mod:`~server_ext.net.web_events`), all on :class:`~server_ext.net.web_face.WebFace`; the
cookies, security headers and form reading are :mod:`~server_ext.net.web_security`.
"""

from __future__ import annotations

from aiohttp import web

from pairing.protocol.pair_request import APPROVE_PATH_PREFIX
from server_ext.net.web_admin_pages import AdminPages
from server_ext.net.web_events import LiveEvents
from server_ext.net.web_face import STATIC
from server_ext.net.web_owner_pages import OwnerPages
from server_ext.net.web_security import security_headers
from server_ext.net.web_sign_in import SignInPages


class WebPages(SignInPages, OwnerPages, AdminPages, LiveEvents):
    """The page's routes for one :class:`~server_ext.net.server.Server`."""

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(security_headers)
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


__all__ = ["WebPages"]
