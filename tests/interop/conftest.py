"""Fixtures for the stock-server tests: private ejabberd and Prosody instances on loopback.

A missing server is a failure here, not a skip: CI installs the packages (``.ci/run``). For
a quick local run without them, ``XMPP_DP_SKIP_INTEROP=1`` skips every test marked
``interop``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.certificates import CertificateFiles, DeviceCA, server_certificate
from tests.support.stock_servers import (
    SKIP_ENV,
    EjabberdConfig,
    EjabberdNode,
    ErlangWorld,
    ProsodyConfig,
    ProsodyInstance,
    stop_leftovers,
)

#: (what was started, seconds) and (what was measured, seconds) for the run's summary: the
#: numbers docs/stock-servers.md quotes. Nothing asserts them.
STARTUP_TIMES: list[tuple[str, float]] = []
MEASUREMENTS: list[tuple[str, float]] = []
_FILE_TIMES: dict[str, float] = {}

Measured = Callable[[str, float], None]
EjabberdFactory = Callable[..., EjabberdNode]
ProsodyFactory = Callable[..., ProsodyInstance]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(SKIP_ENV) != "1":
        return
    skip = pytest.mark.skip(reason=f"{SKIP_ENV}=1: stock-server tests skipped on request")
    for item in items:
        if "interop" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    began = time.monotonic()
    try:
        return (yield)
    finally:
        name = item.nodeid.split("::")[0]
        _FILE_TIMES[name] = _FILE_TIMES.get(name, 0.0) + time.monotonic() - began


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = stop_leftovers()
    if leaked:
        session.config.stash[_LEAKED] = leaked
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_LEAKED = pytest.StashKey[list[int]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    leaked = terminalreporter.config.stash.get(_LEAKED, [])
    if leaked:
        terminalreporter.section("stock servers left running", red=True)
        terminalreporter.write_line(f"stopped at the end of the run, PIDs {leaked}")
    if not STARTUP_TIMES:
        return
    terminalreporter.section("stock servers: start-up times and measurements")
    for what, seconds in STARTUP_TIMES:
        terminalreporter.write_line(f"{seconds:6.2f} s  start {what}")
    for what, seconds in MEASUREMENTS:
        terminalreporter.write_line(f"{seconds:6.3f} s  {what}")
    for name, seconds in sorted(_FILE_TIMES.items()):
        if "/interop/" in name:
            terminalreporter.write_line(f"{seconds:6.2f} s  whole file {name}")


@pytest.fixture
def measured() -> Measured:
    """Record a duration for the run's summary."""
    return lambda what, seconds: MEASUREMENTS.append((what, seconds))


@pytest.fixture
def server_cert(tmp_path: Path) -> CertificateFiles:
    return server_certificate(tmp_path / "server-cert", "localhost")


@pytest.fixture
def device_ca(tmp_path: Path) -> DeviceCA:
    return DeviceCA(tmp_path / "device-ca")


@pytest.fixture
def erlang_world(tmp_path: Path) -> Iterator[ErlangWorld]:
    world = ErlangWorld.start(tmp_path / "erlang")
    try:
        yield world
    finally:
        world.stop()


@pytest.fixture
def ejabberd(
    tmp_path: Path, erlang_world: ErlangWorld, server_cert: CertificateFiles
) -> Iterator[EjabberdFactory]:
    """Start ejabberd nodes with ``EjabberdConfig`` fields; all are stopped afterwards."""
    nodes: list[EjabberdNode] = []

    def start(name: str = "ejabberd", **options: object) -> EjabberdNode:
        config = EjabberdConfig(server_cert=server_cert, **options)  # type: ignore[arg-type]
        node = erlang_world.node(tmp_path / name, config, name=f"{name}-{os.getpid()}")
        nodes.append(node)
        node.start()
        STARTUP_TIMES.append((f"ejabberd node {name}", node.startup_seconds))
        return node

    try:
        yield start
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def prosody(tmp_path: Path, server_cert: CertificateFiles) -> Iterator[ProsodyFactory]:
    """Start Prosody instances with ``ProsodyConfig`` fields; all are stopped afterwards."""
    instances: list[ProsodyInstance] = []

    def start(name: str = "prosody", **options: object) -> ProsodyInstance:
        config = ProsodyConfig(server_cert=server_cert, **options)  # type: ignore[arg-type]
        instance = ProsodyInstance(tmp_path / name, config)
        instances.append(instance)
        instance.start()
        STARTUP_TIMES.append((f"Prosody {name}", instance.startup_seconds))
        return instance

    try:
        yield start
    finally:
        for instance in instances:
            instance.stop()
