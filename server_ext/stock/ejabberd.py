"""ejabberd (23.01) as the server devices log in to: a trust-anchor file and mod_http_api.

What ejabberd offers, measured (docs/stock-servers.md): SASL EXTERNAL only for client
certificates that verify against ``c2s_cafile``, which ``reload_config`` re-reads; no
revocation check of any kind; ``kick_session`` ends a live session cluster-wide; the
configuration is per node. So:

- **Trust.** ``c2s_cafile`` names a file this module writes: the certificate of every usable
  device (:func:`~server_ext.stock.base.trust_set`; a rotating device has two). Devices keep
  their own self-signed certificates, each its own trust anchor, so there is no CA key to
  guard. The file is replaced atomically and then ``reload_config`` runs on *every* node
  (about 0.04 s each). A burst of enrollments costs one rewrite and one reload per node
  (:class:`~server_ext.stock.coalescing.Coalesced`).
- **Revocation.** The device's certificates leave the file, every node reloads (new logins
  fail at SASL with "self signed certificate"), and ``kick_session`` ends its live sessions.
- **Limit.** ejabberd does not lock the resource a certificate names: a device enrolled as
  ``alice@example.org/sensor`` may bind any resource of alice. Its kick names the resource it
  was enrolled with.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from pairing.secure_files import write_public
from server_ext.config import StockKind
from server_ext.model import CertificateRecord
from server_ext.stock.base import StockContext, StockError, StockServer, trust_set
from server_ext.stock.coalescing import Coalesced
from server_ext.stock.options import ComponentSettings, Options

log = logging.getLogger(__name__)

DEFAULT_API = "http://127.0.0.1:5281/api"
DEFAULT_TRUST_FILE = "ejabberd-trust.pem"
_HEADER = (
    "# Written by server-ext (xmpp-device-pairing); do not edit: it is replaced whenever a\n"
    "# device is enrolled, renewed, rotated or revoked. ejabberd's c2s_cafile names it.\n"
)


@dataclass(frozen=True, slots=True)
class EjabberdSettings:
    """``[stock.ejabberd]``: every node's mod_http_api, and the file c2s_cafile names."""

    domain: str
    api: tuple[str, ...]  # one base URL per node, e.g. http://127.0.0.1:5281/api
    trust_file: Path
    timeout: float
    component: ComponentSettings

    @classmethod
    def read(cls, context: StockContext) -> EjabberdSettings:
        options = Options(StockKind.EJABBERD.value, context.options)
        settings = cls(
            domain=context.config.domain,
            api=options.urls("api", [DEFAULT_API]),
            trust_file=options.path("trust_file", DEFAULT_TRUST_FILE, context.data_dir),
            timeout=options.number("timeout", 5.0),
            component=ComponentSettings.read(options, context.config.domain, default_port=5347),
        )
        options.finish()
        return settings


def render_trust_file(certificates: Sequence[CertificateRecord]) -> bytes:
    """The PEM bundle for ``c2s_cafile``: one certificate per usable device certificate.

    OpenSSL reads only what is between the BEGIN and END lines, so each certificate is
    preceded by a comment naming its device (numbers and a fingerprint only, nothing a
    device chose).
    """
    parts = [_HEADER]
    for record in sorted(certificates, key=lambda r: r.fingerprint):
        parts.append(f"\n# device {record.device.id}, SHA-256 {record.fingerprint}\n")
        parts.append(ssl.DER_cert_to_PEM_cert(record.der))
    return "".join(parts).encode("ascii")


class EjabberdServer(StockServer):
    """The :class:`~server_ext.stock.base.StockServer` for ejabberd."""

    kind = StockKind.EJABBERD

    def __init__(self, context: StockContext, settings: EjabberdSettings) -> None:
        self.context = context
        self.settings = settings
        self._http: aiohttp.ClientSession | None = None
        self._sync = Coalesced(self._write_and_reload)
        self._loaded: bytes | None = None  # the bundle every node reloaded last

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            # mod_http_api is on loopback; a proxy from the environment must not carry it.
            trust_env=False,
        )
        # The first sync makes the file and every node agree with the registry, whatever
        # happened while server-ext was down. A node that does not answer now reads the file
        # when it starts; the next sync reloads it again.
        try:
            await self.sync_trust()
        except StockError as exc:
            if not self.settings.trust_file.exists():
                raise
            log.error(
                "ejabberd was not reloaded at start (it reads the trust file when it "
                "starts; the next change reloads it): %s",
                exc,
            )

    async def stop(self) -> None:
        await self._sync.drain()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- trust ----------------------------------------------------------------------------

    async def sync_trust(self) -> None:
        await self._sync.run()

    async def _write_and_reload(self) -> None:
        bundle = render_trust_file(trust_set(self.context.registry))
        if bundle == self._loaded:
            return
        path = self.settings.trust_file
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            current = None
        except OSError as exc:
            raise StockError(f"cannot read the ejabberd trust file {path}: {exc}") from None
        if current != bundle:
            try:
                # Certificates only, so 0644: ejabberd runs as a user of its own.
                await asyncio.to_thread(write_public, path, bundle)
            except OSError as exc:
                raise StockError(f"cannot write the ejabberd trust file {path}: {exc}") from None
        await self._on_every_node("reload_config")
        self._loaded = bundle
        log.info(
            "ejabberd trust file %s: %d certificate(s), reloaded on %d node(s)",
            path,
            bundle.count(b"-----BEGIN CERTIFICATE-----"),
            len(self.settings.api),
        )

    async def _on_every_node(self, command: str) -> None:
        """``command`` on each node (its configuration is its own); every failure named."""
        results = await asyncio.gather(
            *(self._call(api, command) for api in self.settings.api), return_exceptions=True
        )
        failed = [str(r) for r in results if isinstance(r, BaseException)]
        if failed:
            raise StockError("; ".join(failed))

    # -- sessions -------------------------------------------------------------------------

    async def close_sessions(self, jids: Sequence[JID], reason: str) -> int:
        """``kick_session`` for a full JID, ``kick_user`` for an account (cluster-wide)."""
        closed = 0
        resources: dict[JID, set[str]] = {}
        for jid in jids:
            if jid.domain != self.settings.domain:
                continue
            if not jid.resource:
                answer = await self._anywhere("kick_user", user=jid.local, host=jid.domain)
                if isinstance(answer, dict):
                    closed += int(answer.get("num_resources", 0))
                continue
            if jid.bare not in resources:
                resources[jid.bare] = await self._resources(jid.bare)
            # Kicked even when it was not listed a moment ago: it may have just bound.
            await self._anywhere(
                "kick_session",
                user=jid.local,
                host=jid.domain,
                resource=jid.resource,
                reason=reason,
            )
            if jid.resource in resources[jid.bare]:
                closed += 1
        return closed

    async def _resources(self, account: JID) -> set[str]:
        rows = await self._anywhere("user_sessions_info", user=account.local, host=account.domain)
        if not isinstance(rows, list):
            return set()
        return {str(row["resource"]) for row in rows if isinstance(row, dict) and "resource" in row}

    async def online(self) -> dict[JID, str | None]:
        """Every session of the domain; ejabberd does not say which certificate each used."""
        rows = await self._anywhere("connected_users_info")
        found: dict[JID, str | None] = {}
        for row in rows if isinstance(rows, list) else []:
            try:
                jid = JID.parse(str(row["jid"]))
            except (InvalidJID, KeyError, TypeError):
                continue
            if jid.domain == self.settings.domain and jid.resource:
                found[jid] = None
        return found

    # -- mod_http_api ---------------------------------------------------------------------

    async def _anywhere(self, command: str, **arguments: object) -> Any:
        """A cluster-wide command: the first node that answers does it."""
        errors: list[str] = []
        for api in self.settings.api:
            try:
                return await self._call(api, command, **arguments)
            except StockError as exc:
                errors.append(str(exc))
        raise StockError("; ".join(errors))

    async def _call(self, api: str, command: str, **arguments: object) -> Any:
        """POST {api}/{command} with JSON arguments; the answer's JSON, or StockError."""
        if self._http is None:
            raise StockError("the ejabberd adapter is not started")
        try:
            async with self._http.post(f"{api}/{command}", json=arguments) as response:
                body = await response.read()
                if response.status != 200:
                    text = body.decode(errors="replace").strip()[:200]
                    raise StockError(
                        f"ejabberd at {api} refused {command}: HTTP {response.status} {text}"
                    )
                return await response.json(content_type=None) if body else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise StockError(
                f"ejabberd at {api} did not answer {command}: {exc or type(exc).__name__}"
            ) from None


def create(context: StockContext) -> EjabberdServer:
    """The ejabberd kind for ``context`` (raises ConfigError for a bad ``[stock.ejabberd]``)."""
    return EjabberdServer(context, EjabberdSettings.read(context))
