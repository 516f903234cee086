"""The web page's live updates: server-sent events (``/events``) with the state of the viewer's
devices, sent again whenever it changes (``static/web.js`` shows them)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from server_ext.app import web_views as views
from server_ext.net.web_face import WebFace
from server_ext.net.web_security import SECURITY_HEADERS, SESSION_COOKIE

_LIVE_POLL = 0.5  # seconds between live-state checks (the embedded server's table is memory)
_LIVE_POLL_STOCK = 3.0  # a stock server is asked over its own API


class LiveEvents(WebFace):
    """``/events``: sent again when :attr:`WebFace.pulse` fires, and checked every poll."""

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the state of the viewer's devices whenever it changes."""
        session = self.session(request)
        if session is None:
            raise web.HTTPUnauthorized()
        account = None if request.query.get("all") == "1" and session.is_admin else session.account
        # Prepared here, before the middleware could add them: the same headers as every page.
        response = web.StreamResponse(
            headers={
                **SECURITY_HEADERS,
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        poll = _LIVE_POLL if self.server.stock.kind.embedded else _LIVE_POLL_STOCK
        cookie = request.cookies.get(SESSION_COOKIE)
        last = ""
        try:
            while not self.closing:
                # Ends with the session (signed out, lapsed, password changed) and, for the
                # list of every device, with the viewer's admin right.
                current = self.server.web_sessions.get(cookie, touch=False)
                if current is None or (account is None and not current.is_admin):
                    break
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


__all__ = ["LiveEvents"]
