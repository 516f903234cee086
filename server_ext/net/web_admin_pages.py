"""The admin's pages: every account, device, token, pairing request and live session
(``/admin``, with filters), the audit log (``/admin/audit``), and ending a JID's sessions
(``/admin/kick``)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from aiohttp import web

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.app import web_views as views
from server_ext.app.web_sessions import WebSession
from server_ext.errors import ServerExtError
from server_ext.net.web_face import WebFace, request_view


class AdminPages(WebFace):
    """``/admin``, ``/admin/audit`` and ``/admin/kick`` (the routes require an admin)."""

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
                request_view(r, self.server) for r in self.server.pair_requests.pending_for(None)
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


__all__ = ["AdminPages"]
