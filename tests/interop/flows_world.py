"""A stock server with ``server-ext serve`` attached, set up as docs/server.md tells a person
to: the CLIs as real processes, in a private network namespace of the test module's own.

``server-ext init``, then ``[stock]``/``[https]`` in server.toml, then ``server-ext stock
snippet --json``, whose data configures the private ejabberd or Prosody (the same listeners,
trust file, secret, module and API permissions an operator pastes), then ``server-ext serve``.
Owners use the ``pairing`` CLI with a profile of their own; devices use ``device-agent``.
Everything lives in the module's network namespace, so fixed ports cannot be taken by
another program meanwhile and LAN pairing hears only this module's windows and devices.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pairing.protocol.identity import PeerCertificate
from server_ext.model import AuditEvent
from server_ext.storage.database import Clock, utcnow
from server_ext.storage.registry import Registry
from tests.interop.conftest import STARTUP_TIMES
from tests.support.certificates import CertificateFiles, server_certificate
from tests.support.stock_clients import PASSWORD
from tests.support.stock_servers import (
    LOOPBACK,
    EjabberdConfig,
    EjabberdNode,
    ErlangWorld,
    ProsodyConfig,
    ProsodyInstance,
    StockServerError,
    _free_ports,
    join_cluster,
)

BIN = Path(sys.executable).parent
DOMAIN = "localhost"
COMPONENT = f"pairing.{DOMAIN}"


def environment(extra: dict[str, str] | None) -> dict[str, str]:
    """The CLIs' environment: no PAIRING_* or SERVER_EXT_* setting of whoever runs the tests
    leaks in (each owner's profiles live in a directory of the test's own)."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PAIRING_", "SERVER_EXT_", "DEVICE_AGENT_", "XDG_CONFIG_HOME"))
    }
    return {**clean, **(extra or {})}


def cli(
    *args: str | Path, env: dict[str, str] | None = None, ok: bool = True, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """One of the project's CLIs as a process; ``ok``: it must succeed."""
    done = subprocess.run(
        [str(BIN / str(args[0])), *map(str, args[1:])],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(env),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if ok and done.returncode != 0:
        raise AssertionError(f"{args[:3]} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return done


class Agent:
    """A long-running CLI (``device-agent run``, ``pair``; ``pairing listen``, ``add``): its
    report lines (stderr) read in a thread, so a test can wait for one with a timeout."""

    def __init__(self, *args: str | Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [str(BIN / str(args[0])), *map(str, args[1:])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            env=environment(env),
        )
        self.lines: queue.Queue[tuple[dt.datetime, str] | None] = queue.Queue()
        self.seen: list[str] = []
        self.arrived: dict[str, dt.datetime] = {}  # when each line was read (the first time)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put((dt.datetime.now(dt.UTC), line))
        self.lines.put(None)

    def wait_for(self, wanted: str, timeout: float = 60) -> str:
        """The first report line containing ``wanted`` (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                break
            at, line = item
            self.seen.append(line)
            self.arrived.setdefault(line, at)
            if wanted in line:
                return line
        raise AssertionError(f"no {wanted!r} within {timeout} s: {''.join(self.seen)[-3000:]}")

    def pending(self) -> list[str]:
        """Every report line so far, without waiting."""
        while not self.lines.empty():
            item = self.lines.get_nowait()
            if item is not None:
                self.seen.append(item[1])
                self.arrived.setdefault(item[1], item[0])
        return list(self.seen)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Wait for the exit: (status, stdout, every report line)."""
        assert self.process.stdout is not None
        out = self.process.stdout.read() if self.process.wait(timeout) is not None else ""
        self._reader.join(10)
        while not self.lines.empty():
            item = self.lines.get_nowait()
            if item is not None:
                self.seen.append(item[1])
        return self.process.returncode, out, "".join(self.seen)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(10)


@dataclass
class Owner:
    """A person with an account on the stock server, and the ``pairing`` CLI's profile."""

    jid: str
    home: Path  # XDG_CONFIG_HOME: the CLI's profiles
    password_file: Path

    @property
    def env(self) -> dict[str, str]:
        return {"XDG_CONFIG_HOME": str(self.home)}

    @property
    def user(self) -> str:
        return self.jid.split("@")[0]


@dataclass
class World:
    """A stock server, server-ext serving beside it, and the settings the CLIs need."""

    kind: str
    folder: Path
    data: Path  # server-ext's data directory
    server_cert: CertificateFiles  # the stock server's TLS identity (pinned in v2 URIs)
    c2s_ports: list[int]
    https_port: int
    snippet: dict[str, Any]
    nodes: list[EjabberdNode] = field(default_factory=list)
    prosody: ProsodyInstance | None = None
    serve: subprocess.Popen[bytes] | None = None
    _numbers: Iterator[int] = field(default_factory=itertools.count)

    @property
    def c2s_port(self) -> int:
        return self.c2s_ports[0]

    @property
    def stock_pin(self) -> str:
        return PeerCertificate.from_x509(self.server_cert.certificate).fingerprint

    @property
    def server_ext_pin(self) -> str:
        return str(json.loads(self.admin("fingerprint", "--json").stdout)["sha256"])

    @contextlib.contextmanager
    def serve_stopped(self) -> Iterator[None]:
        """``server-ext serve`` stopped for the block (SIGTERM), started again after it."""
        _stop_serve(self)
        try:
            yield
        finally:
            _start_serve(self)

    def admin(self, *args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """``server-ext --data-dir DATA ARGS`` (the operator)."""
        return cli("server-ext", "--data-dir", self.data, *args, ok=ok)

    def registry(self, clock: Clock = utcnow) -> Registry:
        """The registry serve uses (SQLite: a second connection, as the admin CLI opens)."""
        return Registry.open(self.data / "registry.sqlite3", clock=clock)

    def audit(self, event: str) -> list[AuditEvent]:
        with self.registry() as registry:
            return [e for e in registry.audit.events() if e.event == event]

    # -- people -------------------------------------------------------------------------------

    def account(self, prefix: str = "user") -> Owner:
        """A fresh account on the stock server, with its password in a file (per test)."""
        user = f"{prefix}{next(self._numbers)}"
        if self.prosody is not None:
            self.prosody.adduser(user, PASSWORD)
        else:
            self.nodes[0].register(user, PASSWORD)
        home = self.folder / "people" / user
        home.mkdir(parents=True)
        password_file = home / "password"
        password_file.write_text(PASSWORD + "\n")
        return Owner(f"{user}@{DOMAIN}", home / "config", password_file)

    def pairing(
        self, owner: Owner, *args: str | Path, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The ``pairing`` CLI with the owner's profile."""
        return cli("pairing", *args, env=owner.env, ok=ok)

    def login(self, owner: Owner, *extra: str) -> dict[str, Any]:
        """``pairing login``: the password once, then a certificate of the CLI's own."""
        done = cli(
            "pairing",
            "--jid",
            owner.jid,
            "--server",
            f"{LOOPBACK}:{self.c2s_port}",
            "--cafile",
            self.server_cert.cert,
            "--password-file",
            owner.password_file,
            *extra,
            "login",
            "--json",
            env=owner.env,
        )
        profile: dict[str, Any] = json.loads(done.stdout)
        return profile

    def token(self, owner: Owner, resource: str, name: str | None = None) -> str:
        """``pairing token --json``: the secret URI a QR code shows."""
        args = ["token", "--resource", resource, "--json"]
        if name:
            args += ["--name", name]
        uri = json.loads(self.pairing(owner, *args).stdout)["uri"]
        assert isinstance(uri, str)
        return uri

    def devices(self, owner: Owner) -> dict[str, dict[str, Any]]:
        """``pairing devices list --json``, by device name."""
        rows = json.loads(self.pairing(owner, "devices", "list", "--json").stdout)
        return {row["name"]: row for row in rows}


def _write_settings(data: Path, kind: str, world: World, ports: dict[str, Any]) -> None:
    """[stock], [https] and [stock.<kind>] in server.toml, as docs/server.md shows."""
    path = data / "server.toml"
    text = path.read_text()

    def setting(section_key: str, old: str, new: str) -> None:
        nonlocal text
        line = next(
            line
            for line in text.splitlines()
            if line.split("=")[0].strip() == section_key and old in line
        )
        text = text.replace(line, line.replace(old, new, 1), 1)

    setting("kind", '"embedded"', f'"{kind}"')
    setting("xmpp_host", '""', f'"{LOOPBACK}"')
    setting("xmpp_port", "5222", str(world.c2s_port))
    setting("xmpp_pin", '""', f'"{world.stock_pin}"')
    # Rotation at any time, so a test can rotate right after enrolling.
    setting("interval", '"1h"', '"1s"')
    if kind == "ejabberd":
        apis = ", ".join(f'"http://{LOOPBACK}:{port}/api"' for port in ports["http"])
        text += (
            "\n[stock.ejabberd]\n"
            f"api = [{apis}]\n"
            f'trust_file = "{world.folder / "ejabberd-trust.pem"}"\n'
            f"component_port = {ports['component'][0]}\n"
        )
    else:
        text += (
            "\n[stock.prosody]\n"
            f'url = "http://{LOOPBACK}:{ports["http"][0]}/xmpp_device_pairing"\n'
            f"component_port = {ports['component'][0]}\n"
        )
    path.write_text(text)


def _ejabberd_config(world: World, number: int, ports: dict[str, Any]) -> EjabberdConfig:
    """The node's configuration from the snippet's data (what an operator pastes)."""
    snippet = world.snippet
    listeners = snippet["listeners"]
    c2s = dict(listeners["c2s"])
    assert (c2s.pop("port"), c2s.pop("module")) == (world.c2s_port, "ejabberd_c2s")
    component = listeners["component"]
    assert component["port"] == ports["component"][0]
    http = listeners["http_api"]
    assert http["request_handlers"] == {"/api": "mod_http_api"}
    assert http["port"] == ports["http"][0]
    assert snippet["modules"] == ["mod_admin_extra", "mod_http_api"]
    return EjabberdConfig(
        world.server_cert,
        c2s_listener=c2s,  # tls_verify, starttls_required
        top_level={"c2s_cafile": snippet["c2s_cafile"]},
        component_secret=component["hosts"][COMPONENT]["password"],
        api_commands=tuple(snippet["api_commands"]),
        # Every node of a cluster: its own ports (the snippet shows the first node's).
        ports=(ports["c2s"][number], ports["component"][number], ports["http"][number]),
    )


def _prosody_config(world: World, ports: dict[str, Any]) -> ProsodyConfig:
    snippet = world.snippet
    return ProsodyConfig(
        world.server_cert,
        global_lines=tuple(snippet["global_lines"]),
        host_lines=tuple(snippet["host_lines"]),
        component_secret=snippet["component"]["secret"],
        http=True,
        ports=(ports["c2s"][0], ports["component"][0], ports["http"][0]),
    )


def _start_serve(world: World) -> None:
    log = world.folder / "serve.log"
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as sink:
        world.serve = subprocess.Popen(
            [str(BIN / "server-ext"), "--data-dir", str(world.data), "serve", "-v"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment(None),
        )
    deadline = time.monotonic() + 60
    while True:
        text = log.read_bytes()[offset:].decode(errors="replace")
        # The component attaches in the background: owners find it in disco#items once it is.
        if "data: " in text and f"as the component {COMPONENT}" in text:
            return
        if world.serve.poll() is not None or time.monotonic() > deadline:
            raise StockServerError(f"server-ext serve did not come up:\n{text[-3000:]}")
        time.sleep(0.05)


@contextlib.contextmanager
def stock_world(kind: str, folder: Path, *, nodes: int = 1) -> Iterator[World]:
    """A world for ``kind`` ("ejabberd" or "prosody"), all stopped at the end."""
    count = nodes if kind == "ejabberd" else 1
    began = time.monotonic()
    picked = _free_ports(3 * count + 1)
    ports = {
        "c2s": picked[0:count],
        "component": picked[count : 2 * count],
        "http": picked[2 * count : 3 * count],
    }
    data = folder / "server-ext"
    world = World(
        kind,
        folder,
        data,
        server_certificate(folder / "stock-cert", DOMAIN),
        ports["c2s"],
        picked[-1],
        {},
    )
    cli(
        "server-ext", "--data-dir", data, "init", "--domain", DOMAIN,
        "--https-port", str(world.https_port),
    )  # fmt: skip
    _write_settings(data, kind, world, ports)
    world.snippet = json.loads(world.admin("stock", "snippet", "--json").stdout)
    with contextlib.ExitStack() as stack:
        if kind == "ejabberd":
            erlang = ErlangWorld.start(folder / "erlang")
            stack.callback(erlang.stop)
            for number in range(count):
                node = erlang.node(
                    folder / f"ejabberd{number}",
                    _ejabberd_config(world, number, ports),
                    name=f"flows{number}-{os.getpid()}",
                )
                stack.callback(node.stop)
                node.start()
                world.nodes.append(node)
            if count > 1:
                for node in world.nodes[1:]:
                    join_cluster(node, world.nodes[0])
        else:
            world.prosody = ProsodyInstance(folder / "prosody", _prosody_config(world, ports))
            stack.callback(world.prosody.stop)
            world.prosody.start()
        stack.callback(_stop_serve, world)
        _start_serve(world)
        what = f"{kind} ({count} node{'s' if count > 1 else ''}) with server-ext serve, CLIs"
        STARTUP_TIMES.append((what, time.monotonic() - began))
        yield world


def _stop_serve(world: World) -> None:
    if world.serve is not None and world.serve.poll() is None:
        world.serve.terminate()
        try:
            world.serve.wait(15)
        except subprocess.TimeoutExpired:
            world.serve.kill()
            world.serve.wait()


def since(moment: dt.datetime) -> float:
    """Seconds from ``moment`` (an audit time) to now."""
    return (dt.datetime.now(dt.UTC) - moment).total_seconds()
