"""Prosody (0.12) as the server devices log in to, through a module of this project.

``mod_xmpp_device_pairing`` (``server_ext/stock/lua/``, loaded from Prosody's
``plugin_paths``) offers SASL EXTERNAL and asks the HTTPS face whether the certificate a
client presented is registered (``POST /api/v1/stock/prosody/certificate``), so the
registry decides every login at the moment it happens: devices keep their self-signed
certificates, and a revoked or replaced certificate is refused at once, with nothing to push.
The module also locks the resource a certificate names, and serves this adapter over
Prosody's HTTP server (Bearer: the shared secret):

- ``POST <url>/close`` ``{"jids": [...], "reason": "...", "revoked": bool}`` → ``{"closed": n}``
- ``GET <url>/sessions`` → ``{"sessions": [{"jid": full JID, "fingerprint": SHA-256 or null}]}``
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.config import StockKind
from server_ext.model import CertificateRecord, DeviceRecord
from server_ext.stock.base import StockContext, StockError, StockServer, device_jids
from server_ext.stock.options import ComponentSettings, Options

log = logging.getLogger(__name__)

MODULE_NAME = "xmpp_device_pairing"  # modules_enabled; the file is mod_<name>.lua
DEFAULT_URL = f"http://127.0.0.1:5280/{MODULE_NAME}"


def module_directory() -> Path:
    """The directory holding ``mod_xmpp_device_pairing.lua``: what ``plugin_paths`` names."""
    return Path(str(resources.files("server_ext.stock") / "lua"))


@dataclass(frozen=True, slots=True)
class ProsodySettings:
    """``[stock.prosody]``: where the module's HTTP endpoints are."""

    domain: str
    url: str  # the module's HTTP base, e.g. http://127.0.0.1:5280/xmpp_device_pairing
    timeout: float
    component: ComponentSettings

    @classmethod
    def read(cls, context: StockContext) -> ProsodySettings:
        options = Options(StockKind.PROSODY.value, context.options)
        settings = cls(
            domain=context.config.domain,
            url=options.url("url", DEFAULT_URL),
            timeout=options.number("timeout", 5.0),
            component=ComponentSettings.read(options, context.config.domain, default_port=5347),
        )
        options.finish()
        return settings


class ProsodyServer(StockServer):
    """The :class:`~server_ext.stock.base.StockServer` for Prosody with our module."""

    kind = StockKind.PROSODY

    def __init__(self, context: StockContext, settings: ProsodySettings) -> None:
        self.context = context
        self.settings = settings
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if len(self.context.secret) < 16:
            raise StockError("the shared secret for Prosody's module is missing or too short")
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout), trust_env=False
        )

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def sync_trust(self) -> None:
        """Nothing to push: the module asks the registry at every EXTERNAL attempt."""

    async def close_sessions(self, jids: Sequence[JID], reason: str) -> int:
        return await self._close(jids, reason, revoked=False)

    async def close_device(
        self, device: DeviceRecord, certificates: Sequence[CertificateRecord], reason: str
    ) -> int:
        # The module locks each certificate's resource, so the full JIDs are the sessions;
        # <revoked/> tells the device agent to stop instead of logging in again.
        return await self._close(device_jids(certificates), reason, revoked=True)

    async def _close(self, jids: Sequence[JID], reason: str, *, revoked: bool) -> int:
        wanted = [str(jid) for jid in jids if jid.domain == self.settings.domain]
        if not wanted:
            return 0
        answer = await self._call(
            "POST", "/close", {"jids": wanted, "reason": reason, "revoked": revoked}
        )
        closed = answer.get("closed") if isinstance(answer, dict) else None
        if not isinstance(closed, int):
            raise StockError("Prosody's module sent a malformed answer to /close")
        return closed

    async def online(self) -> dict[JID, str | None]:
        answer = await self._call("GET", "/sessions", None)
        rows = answer.get("sessions") if isinstance(answer, dict) else None
        if not isinstance(rows, list):
            raise StockError("Prosody's module sent a malformed answer to /sessions")
        found: dict[JID, str | None] = {}
        for row in rows:
            if not isinstance(row, dict):
                continue
            try:
                jid = JID.parse(str(row.get("jid")))
            except InvalidJID:
                continue
            fingerprint = row.get("fingerprint")
            found[jid] = fingerprint if isinstance(fingerprint, str) else None
        return found

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        if self._http is None:
            raise StockError("the Prosody adapter is not started")
        url = self.settings.url + path
        headers = {
            "Authorization": f"Bearer {self.context.secret}",
            # Prosody routes HTTP requests by Host: the module is served on the VirtualHost.
            "Host": self.settings.domain,
        }
        try:
            async with self._http.request(method, url, json=body, headers=headers) as response:
                if response.status != 200:
                    raise StockError(
                        f"Prosody's module at {self.settings.url} answered {path} with "
                        f"HTTP {response.status}"
                    )
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise StockError(
                f"Prosody's module at {self.settings.url} did not answer {path}: "
                f"{exc or type(exc).__name__}"
            ) from None


def create(context: StockContext) -> ProsodyServer:
    """The Prosody kind for ``context`` (raises ConfigError for a bad ``[stock.prosody]``)."""
    return ProsodyServer(context, ProsodySettings.read(context))
