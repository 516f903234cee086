"""Fixtures: a real embedded server on loopback, real TLS, a real SQLite file."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pairing.protocol.identity import (
    build_device_certificate,
    certificate_der,
    certificate_pem,
    fingerprint,
    generate_key,
    private_key_pem,
)
from pairing.protocol.jid import JID
from pairing.secure_files import write_private, write_public
from server_ext.auth.credentials import credentials_for
from server_ext.config import ServerConfig
from server_ext.config_file import write_config
from server_ext.model import DeviceState
from server_ext.net.data_directory import initialise
from server_ext.net.server import Server
from server_ext.storage.registry import Registry
from tests.support.netns import NamespaceUnavailable, private_network
from tests.support.rawclient import RawClient, client_context

PASSWORD = "correct horse battery staple"


@dataclass
class RunningServer:
    server: Server
    config: ServerConfig
    registry: Registry

    @property
    def domain(self) -> str:
        return self.config.domain

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def direct_tls_port(self) -> int:
        port = self.server.direct_tls_port
        assert port is not None
        return port

    @property
    def cert_path(self) -> Path:
        return self.server.certificate.cert_path

    @property
    def fingerprint(self) -> str:
        return self.server.certificate.fingerprint

    def add_user(self, local: str, password: str = PASSWORD, *, admin: bool = False) -> JID:
        jid = JID(local, self.domain)
        self.registry.accounts.add(jid, credentials_for(password), admin=admin)
        return jid

    def set_device_state(
        self, account: str, name: str, state: DeviceState, *, reason: str = ""
    ) -> None:
        """What an admin does to the device ``name`` of ``account`` (registry only)."""
        device = self.registry.devices.by_name(JID(account, self.domain), name)
        assert device is not None, f"no device {name!r}"
        self.registry.devices.set_state(device.id, state, actor="test", reason=reason)

    async def raw(self, *, source: str | None = None) -> RawClient:
        return await RawClient.connect(self.host, self.port, self.domain, source=source)

    async def raw_tls(
        self, device: Device | None = None, *, source: str | None = None
    ) -> RawClient:
        client = await self.raw(source=source)
        ctx = client_context(
            self.cert_path,
            device.cert_path if device else None,
            device.key_path if device else None,
        )
        await client.starttls(ctx)
        return client


@dataclass(frozen=True)
class Device:
    """A device identity on disk: a P-256 key and a self-signed xmppAddr certificate."""

    jids: tuple[JID, ...]
    cert_path: Path
    key_path: Path
    der: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.der)


ServerFactory = Callable[..., Awaitable[RunningServer]]
DeviceFactory = Callable[..., Device]


def clocks(clock: Callable[[], dt.datetime] | None) -> dict[str, Callable[[], dt.datetime]]:
    return {"clock": clock} if clock is not None else {}


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    started: list[tuple[Server, Registry]] = []

    async def factory(
        *, clock: Callable[[], dt.datetime] | None = None, **overrides: object
    ) -> RunningServer:
        config = ServerConfig(
            domain="localhost",
            data_dir=tmp_path / f"server{len(started)}",
            host="127.0.0.1",
            port=0,
            direct_tls_port=0,
            auth_timeout=10.0,
        )
        config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
        # Set up as `server-ext init` does, so the CLI can be run against this directory.
        certificate = initialise(config).certificate
        registry = Registry.open(config.database_path, **clocks(clock))
        server = Server(config, registry, certificate)
        await server.start()
        # What an operator's server.toml says: the ports this server listens on.
        https = server.https_address
        write_config(
            dataclasses.replace(
                config,
                port=server.port,
                direct_tls_port=server.direct_tls_port,
                https_port=https.port if https is not None else None,
            )
        )
        started.append((server, registry))
        return RunningServer(server, config, registry)

    yield factory
    for server, registry in started:
        await server.stop()
        registry.close()


@pytest.fixture
async def xmpp_server(make_server: ServerFactory) -> RunningServer:
    return await make_server()


@pytest.fixture
def make_device(tmp_path: Path) -> DeviceFactory:
    counter = [0]

    def factory(
        *jids: str,
        valid_for: dt.timedelta = dt.timedelta(days=30),
        now: dt.datetime | None = None,
        client_auth: bool = True,
    ) -> Device:
        counter[0] += 1
        parsed: Sequence[JID] = [JID.parse(j) for j in jids]
        key = generate_key()
        cert = build_device_certificate(
            key, parsed, valid_for=valid_for, now=now, client_auth=client_auth
        )
        folder = tmp_path / f"device{counter[0]}"
        folder.mkdir()
        key_path, cert_path = folder / "device.key", folder / "device.crt"
        write_private(key_path, private_key_pem(key))
        write_public(cert_path, certificate_pem(cert))
        return Device(tuple(parsed), cert_path, key_path, certificate_der(cert))

    return factory


@pytest.fixture(autouse=True)
def lan_world(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests marked ``lan`` get a network namespace of their own (tests/support/netns.py).

    Autouse fixtures are set up first, so the server and every CLI the test starts live in
    it too. A run that cannot make one fails rather than pairing with strangers.
    """
    if request.node.get_closest_marker("lan") is None:
        yield
        return
    try:
        with private_network():
            yield
    except NamespaceUnavailable as exc:
        pytest.fail(f"LAN tests need a private network namespace: {exc}")


# A server-ext *process* for the CLI tests (the fixture lives with the CLI helpers).
from tests.integration.cli_support import served  # noqa: E402, F401


@pytest.fixture(autouse=True)
def private_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every CLI a test runs keeps its `pairing` profiles in a directory of the test's own:
    the user's ~/.config is never read or written, and no PAIRING_* setting leaks in."""
    config = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    for name in (
        "PAIRING_PROFILE",
        "PAIRING_JID",
        "PAIRING_SERVER",
        "PAIRING_PIN",
        "PAIRING_CAFILE",
        "PAIRING_PASSWORD",
        "PAIRING_PASSWORD_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    return config
