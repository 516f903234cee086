"""Shared types for the server's own IQ handlers."""

from __future__ import annotations

import datetime as dt
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pairing.protocol.jid import JID
from server_ext.admin.token_issuer import HTTPSEnrollment
from server_ext.app.router import SessionTable
from server_ext.errors import RegistryError
from server_ext.model import RegistryChange
from server_ext.policy.tokens import TokenRules
from server_ext.storage.registry import Registry


class Requester(Protocol):
    """The bound session that sent a request."""

    @property
    def jid(self) -> JID: ...

    @property
    def auth_method(self) -> str: ...

    @property
    def fingerprint(self) -> str | None: ...

    @property
    def address(self) -> str: ...


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerContext:
    """What every handler may use: the domain, the registry, live sessions and the clock."""

    domain: str
    registry: Registry
    sessions: SessionTable
    fingerprint: str = ""  # the server certificate's SHA-256, for enrollment URIs
    connect_host: str = "127.0.0.1"
    connect_port: int = 5222
    token_rules: TokenRules = field(default_factory=TokenRules)
    rotation_interval: dt.timedelta = dt.timedelta(hours=1)
    # How long after its expiry a never-revoked certificate may still renew itself.
    renewal_grace: dt.timedelta = dt.timedelta(days=30)
    # Told after a handler changed the registry (a revocation, a new certificate): the serve
    # process brings the stock server in step (server_ext.stock). Must not block or raise.
    changes: Callable[[RegistryChange], None] = field(default=lambda change: None)
    # Set when accounts live on a stock server: tokens carry v2 URIs to the HTTPS face.
    stock_enrollment: HTTPSEnrollment | None = None

    @property
    def clock(self) -> Callable[[], dt.datetime]:
        """The one clock: the registry's, so that records and decisions agree."""
        return self.registry.clock

    def audit(
        self, event: str, *, actor: str, subject: str, address: str | None = None, **detail: str
    ) -> None:
        """Write an audit row; a failing disk must not take the request down with it."""
        try:
            self.registry.audit.write(
                event, actor=actor, subject=subject, address=address, detail=detail
            )
        except RegistryError as exc:
            log.error("audit %s not recorded: %s", event, exc)


#: A handler returns the result payload (or None for an empty result), or raises StanzaError.
IQHandler = Callable[[ServerContext, Requester, ET.Element], ET.Element | None]
