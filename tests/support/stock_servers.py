"""Private ejabberd and Prosody instances on loopback, for the interop tests.

Never the system service: every instance has its own config file, its own state, spool and
log directories under a test's tmp dir, ports picked free on 127.0.0.1 and, for ejabberd,
its own Erlang node name and cookie registered with a private ``epmd`` on a port of its own.
Every process is started here and stopped here by its PID (and, as a last resort, at
interpreter exit), so nothing outlives the test that started it.

ejabberd is started with ``erl`` directly, as ``ejabberdctl foreground`` would, rather than
through ``ejabberdctl``. As root, ``ejabberdctl`` re-executes itself as the ``ejabberd``
user through ``su`` (which cannot read a test's tmp dir), reads that user's cookie, and may
run ``epmd -kill`` on the shared epmd; none of that suits a private instance. Admin commands
go the same way, through ``ejabberd_ctl`` in a short-lived hidden node (0.3 to 0.6 s each), or
through ``mod_http_api`` on a loopback port (a few milliseconds).

Prosody runs in the foreground (``prosody --config FILE -F``), and its admin commands go
through ``prosodyctl --config FILE shell …`` to ``mod_admin_shell``'s Unix socket.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.certificates import CertificateFiles

#: Set to 1 to skip the interop tests in a quick local run; in CI they are never skipped.
SKIP_ENV = "XMPP_DP_SKIP_INTEROP"

LOOPBACK = "127.0.0.1"
EJABBERDCTL = "/usr/sbin/ejabberdctl"  # where Debian's package keeps the VM's settings
START_TIMEOUT = 30.0


class StockServerError(RuntimeError):
    """A stock server could not be started or refused an admin command."""


class StockServerMissing(StockServerError):
    """The stock server's package is not installed on this machine."""


class PortInUse(StockServerError):
    """A port picked free was taken by another program before the server bound it."""


#: Attempts at starting with fresh ports when another program took one of ours meanwhile.
PORT_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port free on loopback now (the kernel's pick for port 0)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _free_ports(count: int) -> list[int]:
    # Hold all sockets open at once so the kernel cannot hand out the same port twice.
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


# -- processes --------------------------------------------------------------------------------

_running: dict[int, subprocess.Popen[bytes]] = {}


def stop_leftovers() -> list[int]:
    """Stop every process started here that is still running; returns their PIDs.

    The fixtures stop what they start; anything found here leaked (a fixture that never
    finalised), and the run says so.
    """
    leaked = [pid for pid, process in _running.items() if process.poll() is None]
    _stop_leftovers()
    return leaked


@atexit.register
def _stop_leftovers() -> None:
    """A process whose fixture never finalised (the run was interrupted) dies with the run."""
    for pid, process in list(_running.items()):
        if process.poll() is None:
            os.kill(pid, signal.SIGKILL)
            process.wait()
        _running.pop(pid, None)


class ManagedProcess:
    """A child process started for one test, stopped by its PID, output to a file."""

    def __init__(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, output: Path
    ) -> None:
        self.argv = list(argv)
        self.output = output
        with output.open("ab") as sink:
            self.popen = subprocess.Popen(
                self.argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C in the terminal reaches pytest, which then
                # stops the servers itself, instead of killing them mid-test.
                start_new_session=True,
            )
        self.pid = self.popen.pid
        _running[self.pid] = self.popen

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 0.0) -> None:
        """SIGTERM and ``grace`` seconds to go, then SIGKILL; always waits for the exit.

        Helpers the server forked (the Erlang VM's ``erl_child_setup``) are in the process
        group this process leads, and are stopped by their PIDs too.
        """
        if self.alive():
            if grace > 0:
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
            if self.alive():
                self.popen.kill()
            self.popen.wait()
        _running.pop(self.pid, None)
        for pid in _group_members(self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while (left := _group_members(self.pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        if left:
            raise StockServerError(f"processes {left} of {self.argv[0]} outlived it")


def _group_members(pgid: int) -> list[int]:
    """The live processes of the process group ``pgid`` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may contain spaces:
        # state, ppid, pgrp, ...
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _wait_for(ready: Callable[[], bool], *, what: str, process: ManagedProcess, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if not process.alive():
            process.popen.wait()
            ready()  # once more: the log may say why (a port in use raises PortInUse)
            raise StockServerError(f"{what} exited ({process.popen.returncode}):\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise StockServerError(f"{what} not ready after {START_TIMEOUT:.0f} s:\n{_tail(log)}")
        time.sleep(0.02)


def _with_fresh_ports(start: Callable[[], None], stop: Callable[[], None], log: Path) -> None:
    """``start()``; when a port was taken meanwhile, stop, set the log aside, try new ports."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            start()
            return
        except PortInUse:
            stop()
            if attempt == PORT_ATTEMPTS:
                raise
            log.replace(log.with_name(f"{log.name}.port-in-use-{attempt}"))


def _yaml(value: object) -> str:
    # JSON scalars are valid YAML flow scalars: strings come out quoted and escaped.
    return json.dumps(value)


# -- Erlang and ejabberd ------------------------------------------------------------------------


@dataclass(frozen=True)
class ErlangRuntime:
    """Where ``erl``, ``epmd`` and ejabberd's beam files are, as the package's ejabberdctl says."""

    erl: str
    epmd: str
    erl_libs: str

    @classmethod
    def find(cls) -> ErlangRuntime:
        script = Path(EJABBERDCTL)
        if not script.is_file():
            raise StockServerMissing(
                "ejabberd is not installed (apt-get install ejabberd); "
                f"set {SKIP_ENV}=1 to skip the interop tests"
            )
        text = script.read_text()
        found = {
            name: match.group(1)
            for name in ("ERL", "EPMD", "ERL_LIBS")
            if (match := re.search(rf"^{name}=['\"]?([^'\"\n]+)", text, re.MULTILINE))
        }
        erl = found.get("ERL") or shutil.which("erl")
        epmd = found.get("EPMD") or shutil.which("epmd")
        libs = found.get("ERL_LIBS")
        if not (erl and epmd and libs):
            raise StockServerMissing(f"cannot find erl, epmd and ERL_LIBS in {script}")
        return cls(erl, epmd, libs)


class Epmd:
    """A private Erlang port mapper on a loopback port: our nodes never meet the system's."""

    def __init__(self, runtime: ErlangRuntime, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ERL_EPMD_ADDRESS": LOOPBACK}
        log = folder / "epmd.log"
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.port = free_port()
            self.process = ManagedProcess(
                [runtime.epmd, "-port", str(self.port)], env=env, cwd=folder, output=log
            )
            try:
                _wait_for(lambda: _port_open(self.port), what="epmd", process=self.process, log=log)
                time.sleep(0.05)
                if self.process.alive():  # the open port is ours, not someone else's
                    return
            except StockServerError:
                if attempt == PORT_ATTEMPTS:
                    raise
            self.process.stop()
        raise StockServerError(f"epmd could not keep a port:\n{_tail(log)}")

    def stop(self) -> None:
        self.process.stop()


@dataclass(frozen=True)
class EjabberdConfig:
    """What differs between the ejabberd instances of the tests; the rest is fixed below.

    ``c2s_listener`` holds extra options of the c2s listener (``tls_verify``, ``cafile``);
    ``top_level`` extra global options (``c2s_cafile``). Both map to YAML values.
    """

    server_cert: CertificateFiles
    domain: str = "localhost"
    c2s_listener: Mapping[str, object] = field(default_factory=dict)
    top_level: Mapping[str, object] = field(default_factory=dict)
    component_secret: str | None = None  # adds an ejabberd_service listener for pairing.<domain>
    http_api: bool = True  # an ejabberd_http listener with mod_http_api on /api (loopback)
    # The commands loopback may call through mod_http_api; empty: all of them ("*").
    api_commands: Sequence[str] = ()
    # (c2s, component, HTTP API) ports chosen beforehand, e.g. those a server-ext snippet
    # names; None: picked free at each start. Fixed ports suit a private network namespace,
    # where no other program can take them meanwhile.
    ports: tuple[int, int, int] | None = None
    # More modules, with their default options (e.g. mod_client_state for XEP-0352).
    modules: Sequence[str] = ()

    @property
    def component_domain(self) -> str:
        return f"pairing.{self.domain}"


#: The c2s access rule before anything is revoked; revocations are written over it.
ACCESS_ALLOW_ALL = "access_rules:\n  c2s:\n    - allow: all\n"


class EjabberdNode:
    """One ejabberd 23.01 node of our own, on loopback, with its own name, cookie and state."""

    def __init__(
        self,
        folder: Path,
        config: EjabberdConfig,
        *,
        runtime: ErlangRuntime,
        epmd: Epmd,
        cookie: str,
        name: str | None = None,
    ) -> None:
        self.folder = folder
        self.config = config
        self.runtime = runtime
        self.epmd = epmd
        self.cookie = cookie
        self.node = f"{name or 'ejabberd-' + secrets.token_hex(4)}@{LOOPBACK}"
        self.spool = folder / "spool"
        self.logs = folder / "logs"
        self.config_path = folder / "ejabberd.yml"
        # Access rules live in a file of their own, included by the main config, so a
        # revocation rewrites only this file and then asks for reload_config.
        self.access_path = folder / "access.yml"
        self.log_path = self.logs / "ejabberd.log"
        self.c2s_port = self.component_port = self.http_port = 0
        self.process: ManagedProcess | None = None
        self.startup_seconds = 0.0

    # The environment both the node and the ctl nodes run in.
    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.folder),  # so no ~/.erlang.cookie of anyone is read or made
            "ERL_EPMD_PORT": str(self.epmd.port),
            "ERL_LIBS": self.runtime.erl_libs,
            "EJABBERD_CONFIG_PATH": str(self.config_path),
            "EJABBERD_LOG_PATH": str(self.log_path),
            "ERL_CRASH_DUMP": str(self.logs / "erl_crash.dump"),
            "LANG": "C.UTF-8",
        }

    def render(self) -> str:
        """The ejabberd.yml of this node (YAML; every string value JSON-quoted)."""
        cfg = self.config
        c2s: dict[str, object] = {
            "port": self.c2s_port,
            "ip": LOOPBACK,
            "module": "ejabberd_c2s",
            "starttls_required": True,
            "access": "c2s",
            "backlog": 1024,  # the default of 5 drops connections in bursts (anchors.md)
            **cfg.c2s_listener,
        }
        listeners = [c2s]
        if cfg.component_secret is not None:
            listeners.append(
                {
                    "port": self.component_port,
                    "ip": LOOPBACK,
                    "module": "ejabberd_service",
                    "hosts": {cfg.component_domain: {"password": cfg.component_secret}},
                }
            )
        if cfg.http_api:
            listeners.append(
                {
                    "port": self.http_port,
                    "ip": LOOPBACK,
                    "module": "ejabberd_http",
                    "request_handlers": {"/api": "mod_http_api"},
                }
            )
        lines = [
            f"hosts: [{_yaml(cfg.domain)}]",
            "loglevel: info",
            "log_rotate_count: 0",
            f"certfiles: [{_yaml(str(cfg.server_cert.bundle))}]",
            "auth_method: internal",
            "auth_password_format: scram",
            f"include_config_file: {_yaml(str(self.access_path))}",
            "listen:",
        ]
        for listener in listeners:
            first = True
            for key, value in listener.items():
                lines.append(f"  {'-' if first else ' '} {key}: {_yaml(value)}")
                first = False
        lines += [
            "api_permissions:",
            '  "console commands":',
            "    from: ejabberd_ctl",
            "    who: all",
            '    what: "*"',
            '  "loopback http api":',
            "    from: mod_http_api",
            "    who:",
            "      ip: 127.0.0.1/8",
        ]
        if cfg.api_commands:
            lines.append("    what:")
            lines += [f"      - {_yaml(command)}" for command in cfg.api_commands]
        else:
            lines.append('    what: "*"')
        lines += [
            "modules:",
            "  mod_admin_extra: {}",  # kick_session
            "  mod_disco: {}",
            "  mod_ping: {}",
            "  mod_roster: {}",
        ]
        if cfg.http_api:
            lines.append("  mod_http_api: {}")
        lines += [f"  {module}: {{}}" for module in cfg.modules]
        lines += [f"{key}: {_yaml(value)}" for key, value in cfg.top_level.items()]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        for folder in (self.spool, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        if not self.access_path.exists():
            self.access_path.write_text(ACCESS_ALLOW_ALL)
        _with_fresh_ports(self._start_once, self.stop, self.log_path)

    def _start_once(self) -> None:
        self.c2s_port, self.component_port, self.http_port = self.config.ports or _free_ports(3)
        self.config_path.write_text(self.render())
        began = time.monotonic()
        self.process = ManagedProcess(
            [
                self.runtime.erl,
                "-name",
                self.node,
                "-setcookie",
                self.cookie,
                "-noinput",
                # The distribution port listens on loopback only.
                "-kernel",
                "inet_dist_use_interface",
                "{127,0,0,1}",
                "-mnesia",
                "dir",
                f'"{self.spool}"',
                "-s",
                "ejabberd",
            ],
            env=self._env(),
            cwd=self.spool,
            output=self.logs / "erl.out",
        )
        started = f"is started in the node '{self.node}'"
        listening = f"Start accepting TCP connections at {LOOPBACK}:{self.c2s_port} "

        def ready() -> bool:
            try:
                text = self.log_path.read_text(errors="replace")
            except FileNotFoundError:
                return False
            if "address already in use" in text:
                raise PortInUse(f"ejabberd {self.node}: {_tail(self.log_path, 3)}")
            if "Failed to start ejabberd" in text:
                raise StockServerError(f"ejabberd {self.node} failed:\n{_tail(self.log_path)}")
            return started in text and listening in text

        _wait_for(ready, what=f"ejabberd {self.node}", process=self.process, log=self.log_path)
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        # A test's node holds nothing worth a clean shutdown (a SIGTERM takes about 3 s).
        if self.process is not None:
            self.process.stop()

    # -- admin --------------------------------------------------------------------------------

    def ctl(self, *args: str, check: bool = True, timeout: float = 30.0) -> str:
        """``ejabberdctl ARGS`` against this node; returns its output."""
        argv = [
            self.runtime.erl,
            "-name",
            f"ctl-{secrets.token_hex(4)}@{LOOPBACK}",
            "-setcookie",
            self.cookie,
            "-hidden",
            "-noinput",
            "-dist_listen",
            "false",  # a client node: it connects out and listens on nothing
            "-s",
            "ejabberd_ctl",
            "-extra",
            self.node,
            *args,
        ]
        done = subprocess.run(
            argv, env=self._env(), cwd=self.spool, capture_output=True, timeout=timeout, check=False
        )
        output = (done.stdout + done.stderr).decode(errors="replace").strip()
        if check and done.returncode != 0:
            raise StockServerError(f"ejabberdctl {args[0]} failed ({done.returncode}): {output}")
        return output

    def api(self, command: str, **arguments: object) -> object:
        """A command through ``mod_http_api`` (POST /api/COMMAND with JSON arguments)."""
        if not self.config.http_api:
            raise StockServerError("this node was started without the HTTP API")
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.http_port}/api/{command}",
            data=json.dumps(arguments).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def register(self, user: str, password: str) -> None:
        """An account, through the HTTP API when it may (ms), else ejabberd_ctl (~0.4 s)."""
        if self.config.http_api and (
            not self.config.api_commands or "register" in self.config.api_commands
        ):
            self.api("register", user=user, host=self.config.domain, password=password)
        else:
            self.ctl("register", user, self.config.domain, password)

    def kick_session(self, user: str, resource: str, reason: str = "revoked") -> None:
        self.ctl("kick_session", user, self.config.domain, resource, reason)

    def write_access_rules(self, text: str) -> None:
        """Replace the included access-rules file (then call :meth:`reload_config`)."""
        self.access_path.write_text(text)

    def reload_config(self) -> None:
        self.ctl("reload_config")


@dataclass
class ErlangWorld:
    """The private epmd and cookie that the ejabberd nodes of one test share."""

    runtime: ErlangRuntime
    epmd: Epmd
    cookie: str

    @classmethod
    def start(cls, folder: Path) -> ErlangWorld:
        runtime = ErlangRuntime.find()
        return cls(runtime, Epmd(runtime, folder / "epmd"), secrets.token_hex(16))

    def node(self, folder: Path, config: EjabberdConfig, name: str | None = None) -> EjabberdNode:
        return EjabberdNode(
            folder, config, runtime=self.runtime, epmd=self.epmd, cookie=self.cookie, name=name
        )

    def stop(self) -> None:
        self.epmd.stop()


def join_cluster(joining: EjabberdNode, existing: EjabberdNode) -> float:
    """``ejabberdctl join_cluster`` on ``joining``; returns the seconds until it serves again."""
    began = time.monotonic()
    joining.ctl("join_cluster", existing.node, timeout=60)
    deadline = time.monotonic() + START_TIMEOUT
    # join_cluster restarts ejabberd on the joining node; wait until both list each other.
    while True:
        listed = joining.ctl("list_cluster", check=False)
        if existing.node in listed and joining.node in listed and _port_open(joining.c2s_port):
            break
        if time.monotonic() > deadline:
            raise StockServerError(f"{joining.node} did not join: {listed}")
        time.sleep(0.1)
    return time.monotonic() - began


# -- Prosody ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProsodyConfig:
    """What differs between the Prosody instances of the tests.

    ``global_lines`` and ``host_lines`` are Lua lines added to the global section and to the
    ``VirtualHost``; they are the snippets docs/stock-servers.md records as verified.
    """

    server_cert: CertificateFiles
    domain: str = "localhost"
    modules: Sequence[str] = ()
    global_lines: Sequence[str] = ()
    host_lines: Sequence[str] = ()
    plugin_paths: Sequence[Path] = ()
    component_secret: str | None = None
    http: bool = False  # Prosody's HTTP server on a loopback port of its own (http_port)
    ports: tuple[int, int, int] | None = None  # (c2s, component, HTTP), as EjabberdConfig's

    @property
    def component_domain(self) -> str:
        return f"pairing.{self.domain}"


def _lua(value: str | Path) -> str:
    # A Lua long string cannot be escaped out of; JSON quoting is also valid Lua for plain
    # ASCII paths, but the long form needs no reasoning about escapes.
    text = str(value)
    if "]==]" in text:
        raise ValueError(f"cannot quote {text!r} for Lua")
    return f"[==[{text}]==]"


class ProsodyInstance:
    """One Prosody 0.12 of our own, in the foreground, on loopback ports."""

    def __init__(self, folder: Path, config: ProsodyConfig) -> None:
        self.folder = folder
        self.config = config
        self.data = folder / "data"
        self.config_path = folder / "prosody.cfg.lua"
        self.log_path = folder / "prosody.log"
        self.socket_path = self.data / "prosody.sock"
        self.c2s_port = self.component_port = self.http_port = 0
        self.process: ManagedProcess | None = None
        self.startup_seconds = 0.0

    @staticmethod
    def binaries() -> tuple[str, str]:
        prosody, prosodyctl = shutil.which("prosody"), shutil.which("prosodyctl")
        if not (prosody and prosodyctl):
            raise StockServerMissing(
                "Prosody is not installed (apt-get install prosody prosody-modules lua-sec); "
                f"set {SKIP_ENV}=1 to skip the interop tests"
            )
        return prosody, prosodyctl

    def render(self) -> str:
        cfg = self.config
        modules = ["roster", "saslauth", "tls", "disco", "ping", "admin_shell", *cfg.modules]
        lines = [
            # The test process may be root (CI); Prosody would otherwise switch to the
            # prosody user, who cannot read a test's tmp dir.
            "run_as_root = true",
            f"pidfile = {_lua(self.folder / 'prosody.pid')}",
            f"data_path = {_lua(self.data)}",
            f"admin_socket = {_lua(self.socket_path)}",
            f"certificates = {_lua(self.folder / 'certs')}",
            f'log = {{ debug = {_lua(self.log_path)}; error = "*stderr" }}',
            f'interfaces = {{ "{LOOPBACK}" }}',
            f'local_interfaces = {{ "{LOOPBACK}" }}',
            f"c2s_ports = {{ {self.c2s_port} }}",
            "c2s_direct_tls_ports = { }",
            "s2s_ports = { }",
            f"component_ports = {{ {self.component_port} }}",
            f'component_interfaces = {{ "{LOOPBACK}" }}',
            f"http_ports = {{ {self.http_port} }}" if cfg.http else "http_ports = { }",
            f'http_interfaces = {{ "{LOOPBACK}" }}',
            "https_ports = { }",
            "modules_enabled = { " + ", ".join(f'"{m}"' for m in modules) + " }",
            'modules_disabled = { "s2s" }',
            'authentication = "internal_hashed"',
            "c2s_require_encryption = true",
            f"ssl = {{ certificate = {_lua(cfg.server_cert.cert)}; "
            f"key = {_lua(cfg.server_cert.key)} }}",
        ]
        if cfg.plugin_paths:
            lines.append("plugin_paths = { " + ", ".join(_lua(p) for p in cfg.plugin_paths) + " }")
        # A global option set twice stops Prosody 0.12.3 at start when the config file's path
        # is longer than Lua's chunk names (about 60 characters, as a test's tmp dir is): the
        # duplicate warning finds no line number and fails to format. An option in
        # global_lines (a snippet) replaces ours instead.
        given = {line.split("=")[0].strip() for line in cfg.global_lines if "=" in line}
        lines = [line for line in lines if line.split("=")[0].strip() not in given]
        lines += cfg.global_lines
        lines.append(f'VirtualHost "{cfg.domain}"')
        lines += [f"    {line}" for line in cfg.host_lines]
        if cfg.component_secret is not None:
            lines.append(f'Component "{cfg.component_domain}"')
            lines.append(f"    component_secret = {_lua(cfg.component_secret)}")
        return "\n".join(lines) + "\n"

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.folder)}

    def start(self) -> None:
        for folder in (self.data, self.folder / "certs"):
            folder.mkdir(parents=True, exist_ok=True)
        _with_fresh_ports(self._start_once, self.stop, self.log_path)

    def _start_once(self) -> None:
        prosody, _ = self.binaries()
        self.c2s_port, self.component_port, self.http_port = self.config.ports or _free_ports(3)
        self.config_path.write_text(self.render())
        began = time.monotonic()
        self.process = ManagedProcess(
            [prosody, "--config", str(self.config_path), "-F"],
            env=self._env(),
            cwd=self.folder,
            output=self.folder / "prosody.out",
        )
        # Prosody logs each listening service as it binds; the admin socket comes last.
        wanted = [f"[{LOOPBACK}]:{self.c2s_port}"]
        if self.config.component_secret is not None:
            wanted.append(f"[{LOOPBACK}]:{self.component_port}")
        if self.config.http:
            wanted.append(f"[{LOOPBACK}]:{self.http_port}")

        def ready() -> bool:
            try:
                text = self.log_path.read_text(errors="replace")
            except FileNotFoundError:
                return False
            if "Failed to open server port" in text:
                raise PortInUse(f"Prosody: {_tail(self.log_path, 3)}")
            return all(w in text for w in wanted) and self.socket_path.exists() and self._ours()

        _wait_for(ready, what="Prosody", process=self.process, log=self.log_path)
        self.startup_seconds = time.monotonic() - began

    def _ours(self) -> bool:
        # mod_posix writes the pidfile once the server runs: it must name our process.
        try:
            pid = int((self.folder / "prosody.pid").read_text().strip() or 0)
        except (OSError, ValueError):
            return False
        return self.process is not None and pid == self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=2.0)  # mod_posix shuts down cleanly on SIGTERM

    def prosodyctl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        _, prosodyctl = self.binaries()
        done = subprocess.run(
            [prosodyctl, "--config", str(self.config_path), *args],
            input=stdin.encode() if stdin is not None else None,
            env=self._env(),
            cwd=self.folder,
            capture_output=True,
            timeout=30,
            check=False,
        )
        output = (done.stdout + done.stderr).decode(errors="replace").strip()
        if check and done.returncode != 0:
            raise StockServerError(f"prosodyctl {args[0]} failed ({done.returncode}): {output}")
        return output

    def adduser(self, user: str, password: str) -> None:
        """``prosodyctl adduser``, the password on stdin (never on a command line)."""
        self.prosodyctl("adduser", f"{user}@{self.config.domain}", stdin=f"{password}\n" * 2)

    def shell(self, command: str) -> str:
        """One admin-shell command (``mod_admin_shell`` over its Unix socket)."""
        return self.prosodyctl("shell", command)
