"""An owner's pages: their devices (rename, disable, enable, revoke), their pending tokens and
pairing requests, pairing a new bot by QR (``/pair``), and approving a request a bot shows as
a QR (``/approve/…``). An admin may act on anyone's devices and requests from here too."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import quote

from aiohttp import web
from markupsafe import Markup

from pairing import qr
from pairing.errors import InvalidJID
from pairing.protocol.https_api import APIRefused
from pairing.protocol.pair_request import check_name
from server_ext.admin.token_issuer import issue_token
from server_ext.app import web_views as views
from server_ext.app.pair_requests import RequestRefused, RequestState
from server_ext.app.web_sessions import WebSession
from server_ext.errors import RegistryError, ServerExtError
from server_ext.model import DeviceState, RegistryChange
from server_ext.net.web_face import WebFace, request_view

log = logging.getLogger(__name__)


class OwnerPages(WebFace):
    """``/devices``, ``/tokens/…``, ``/requests/…``, ``/pair`` and ``/approve/…``."""

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
                request_view(r, self.server) for r in self.server.pair_requests.pending_for(account)
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
        return self.render(request, "approve.html", pending=request_view(pending, self.server))

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


__all__ = ["OwnerPages"]
