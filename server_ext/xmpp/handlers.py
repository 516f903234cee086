"""Shared types for the server's own IQ handlers."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pairing.protocol.jid import JID
from server_ext.policy.tokens import TokenRules
from server_ext.registry import Registry
from server_ext.xmpp.router import SessionTable


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


@dataclass(frozen=True, slots=True)
class ServerContext:
    """What every handler may use: the domain, the registry, live sessions and the clock."""

    domain: str
    registry: Registry
    sessions: SessionTable
    clock: Callable[[], dt.datetime]
    fingerprint: str = ""  # the server certificate's SHA-256, for enrollment URIs
    connect_host: str = "127.0.0.1"
    connect_port: int = 5222
    token_rules: TokenRules = field(default_factory=TokenRules)
    rotation_interval: dt.timedelta = dt.timedelta(hours=1)


#: A handler returns the result payload (or None for an empty result), or raises StanzaError.
IQHandler = Callable[[ServerContext, Requester, ET.Element], ET.Element | None]
