"""The embedded kind: the project's own XMPP server, in this very process.

Nothing to push: the embedded server reads the registry at every EXTERNAL login, so
:meth:`EmbeddedStock.sync_trust` has nothing to do. Its live sessions are the app layer's
:class:`~server_ext.app.router.SessionTable`, which knows the certificate each session logged
in with, so a revoked device's sessions are found by certificate, not only by JID, and are
closed with ``<reset/>`` and the typed revoked condition (RFC 6120 §4.9.3.16).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pairing.protocol.jid import JID
from server_ext.app.handlers import ServerContext
from server_ext.app.saslcert import close_device_sessions
from server_ext.config import StockKind
from server_ext.model import CertificateRecord, DeviceRecord
from server_ext.stock.base import StockServer


class EmbeddedStock(StockServer):
    """The embedded server's sessions behind the stock-server interface."""

    kind = StockKind.EMBEDDED

    def __init__(self, context: Callable[[], ServerContext]) -> None:
        self._context = context  # the server's current context (it changes on a TLS reload)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def sync_trust(self) -> None:
        return None  # the registry is read at every login

    async def close_sessions(self, jids: Sequence[JID], reason: str) -> int:
        sessions = self._context().sessions
        closed = 0
        for jid in jids:
            targets = sessions.resources(jid) if jid.is_bare else [sessions.get(jid)]
            for session in targets:
                if session is not None:
                    session.terminate("policy-violation", reason)
                    closed += 1
        return closed

    async def online(self) -> dict[JID, str | None]:
        return {session.jid: session.fingerprint for session in self._context().sessions}

    async def close_device(
        self, device: DeviceRecord, certificates: Sequence[CertificateRecord], reason: str
    ) -> int:
        return close_device_sessions(self._context(), device)
