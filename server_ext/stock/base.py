"""The interface every stock-server kind implements, and what they all share.

A kind runs inside the ``server-ext serve`` process, in its event loop. The registry stays the
one source of truth; a kind only makes the XMPP server agree with it:

- :meth:`StockServer.sync_trust` after any change that adds, retires or revokes a
  certificate (enrollment, renewal, rotation, a revocation, a disabled or enabled device, a
  certificate registered by hand). Idempotent: it reads the registry's *current* trust set
  (:func:`trust_set`), so a burst of changes may be coalesced into one sync.
- :meth:`StockServer.close_sessions` / :meth:`StockServer.close_device` to end live
  sessions at once (a revocation, ``server-ext user kick``).
- :meth:`StockServer.online` for ``devices list`` and XEP-0257 ``<users/>``.

Who calls them: the net layer (``server_ext.net.server``) for the admin channel's
``device-changed``, ``trust-changed`` and ``kick`` requests and for changes made by the app
layer's handlers (they report :class:`~server_ext.model.RegistryChange` values through
``ServerContext.changes``), and the HTTPS face (``server_ext.net.https``), which awaits
``sync_trust`` *before* it answers an enrollment, a renewal or a rotation, so the device's
first login with the new certificate is accepted.

Layering: ``server_ext.stock`` sits between ``net`` and ``session`` (pyproject.toml), because
the embedded kind's live sessions are the app layer's :class:`~server_ext.app.router.SessionTable`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.config import ServerConfig, StockKind
from server_ext.errors import ConfigError, ServerExtError
from server_ext.model import CertificateRecord, DeviceRecord, DeviceState, RegistryChange
from server_ext.storage.registry import Registry


class StockError(ServerExtError):
    """The stock server could not be brought in step; the message says what failed."""


class Unsupported(StockError):
    """The kind cannot do this at all (e.g. MongooseIM cannot be told to close a session)."""


@dataclass(frozen=True, slots=True)
class StockContext:
    """What a kind's ``create`` gets: the settings, the registry and the data directory.

    ``options`` is the kind's own table of server.toml (``[stock.ejabberd]`` and so on), as
    parsed by tomllib: each kind checks it and raises :class:`ConfigError` with one line.
    ``secret`` is the shared secret the stock server presents to the HTTPS face (the Prosody
    module's Bearer, MongooseIM's basic auth password); never logged.
    """

    config: ServerConfig
    registry: Registry
    options: Mapping[str, Any] = field(default_factory=dict)
    secret: str = field(default="", repr=False)

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir


class StockServer(Protocol):
    """One stock XMPP server kept in step with the registry (async, in the serve loop)."""

    kind: StockKind

    async def start(self) -> None:
        """Begin (e.g. the first :meth:`sync_trust`); raise :class:`StockError` if it cannot."""
        ...

    async def stop(self) -> None:
        """Finish pending work and release what :meth:`start` took."""
        ...

    async def sync_trust(self) -> None:
        """Make the server accept exactly :func:`trust_set` (idempotent; may coalesce)."""
        ...

    async def close_sessions(self, jids: Sequence[JID], reason: str) -> int:
        """End the live sessions of ``jids`` (a full JID: that resource; a bare JID: every
        resource of the account); returns how many were closed, when the server says."""
        ...

    async def online(self) -> dict[JID, str | None]:
        """Full JID → SHA-256 of the certificate it logged in with (None when unknown)."""
        ...

    async def close_device(
        self, device: DeviceRecord, certificates: Sequence[CertificateRecord], reason: str
    ) -> int:
        """End the live sessions of a revoked device. By default by the full JIDs its
        certificates name (:func:`device_jids`); a kind that knows which certificate each
        session used (the embedded server) overrides it."""
        return await self.close_sessions(device_jids(certificates), reason)


def device_jids(certificates: Sequence[CertificateRecord]) -> list[JID]:
    """The full JIDs a device's certificates name (a bare-JID certificate names no session)."""
    found: list[JID] = []
    for record in certificates:
        for text in record.subject_jids:
            try:
                jid = JID.parse(text)
            except InvalidJID:
                continue
            if jid.resource and jid not in found:
                found.append(jid)
    return found


def trust_set(registry: Registry, account: JID | None = None) -> list[CertificateRecord]:
    """The certificates a stock server must accept now (of ``account``, or of everyone).

    Active certificates of active devices that are valid now and are not CA certificates: a
    rotating device has two. Every listed certificate is a trust anchor on ejabberd
    (``c2s_cafile``) and a ``get_certs`` answer on MongooseIM, so a revoked or disabled
    device, a replaced or expired certificate, is never in it.
    """
    return registry.devices.usable(account)


async def close_stale_sessions(stock: StockServer, registry: Registry) -> list[JID]:
    """Close the live sessions that only a device no longer usable names; return their JIDs.

    Run when ``serve`` starts: a device revoked or disabled while server-ext was down (the
    admin CLI records the change in the registry; ``sync_trust`` at start then refuses its
    next login) may still hold a session opened before, which nothing else would end. A
    session is stale when its full JID is named by a revoked or disabled device's certificate
    and by no usable one (an owner's own client under another resource is never touched).
    Kinds that cannot list or close sessions (MongooseIM) are skipped.
    """
    try:
        online = await stock.online()
    except Unsupported:
        return []
    usable = set(device_jids(trust_set(registry)))
    stale = [
        jid
        for jid in online
        if jid.resource is not None
        and jid not in usable
        and any(
            device.state in (DeviceState.REVOKED, DeviceState.DISABLED)
            for device in registry.devices.for_jid(jid)
        )
    ]
    if stale:
        try:
            await stock.close_sessions(stale, "revoked")
        except Unsupported:
            return []
    return stale


def context_for(config: ServerConfig, registry: Registry, secret: str = "") -> StockContext:
    """The :class:`StockContext` of ``config``'s kind (its own ``[stock.<kind>]`` table)."""
    options = config.stock_options.get(config.stock_kind.value, {})
    return StockContext(config, registry, options, secret)


def kind_module(kind: StockKind) -> Any:
    """The module of ``kind`` (imported on first use: aiohttp alone takes a good part of a
    second to import)."""
    try:
        return importlib.import_module(f"server_ext.stock.{kind.value}")
    except ModuleNotFoundError:
        raise ConfigError(f"[stock] kind = {kind.value!r} is not available in this build") from None


def load_kind(kind: StockKind, context: StockContext) -> StockServer:
    """The :class:`StockServer` for ``kind``: ``server_ext.stock.<kind>.create(context)``."""
    module = kind_module(kind)
    create = getattr(module, "create", None)
    if create is None:
        raise ConfigError(f"server_ext.stock.{kind.value} has no create(context)")
    server: StockServer = create(context)
    return server


__all__ = [
    "RegistryChange",
    "StockContext",
    "StockError",
    "StockKind",
    "StockServer",
    "Unsupported",
    "close_stale_sessions",
    "context_for",
    "device_jids",
    "load_kind",
    "trust_set",
]
