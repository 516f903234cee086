"""A connected fleet: N idle EXTERNAL sessions of one account, on ours, ejabberd and Prosody.

Run:  python bench/fleet_bench.py [--sessions 1000,5000,15000] [--servers ours,ejabberd,prosody]

For each N and each server, in one run: a fresh server process; a short warm-up; then N
devices log in (STARTTLS, SASL EXTERNAL with their own certificate, bind) as N resources of
``alice@localhost`` and stay connected, idle. Measured on the server process (and its
children): RSS per held session (RSS with the fleet minus RSS before it, over N), idle CPU over
``--idle`` seconds (process CPU time from /proc, not wall time), and the p50/p99 of a fresh
login (connect, STARTTLS, EXTERNAL, bind, close) made one at a time while the fleet is held.

The same kind of certificate everywhere: P-256 device certificates signed by one device CA,
each with the device's full JID as its only xmppAddr (XEP-0178). ejabberd 23.01 trusts the CA
through ``c2s_cafile`` with ``tls_verify: true`` on the listener; Prosody 0.12 runs
``mod_auth_ccert`` (prosody-modules) with the CA in ``c2s_ssl.cafile``; ours has every
certificate registered in its registry (and ignores the CA). The stock servers are private
instances started by tests/support/stock_servers.py.

Client sockets are spread over client processes of at most ``--per-client`` sessions each
(the file-descriptor hard limit here is 20,000 per process); every process raises its own
soft limit (RLIMIT_NOFILE) to the hard limit, nothing is changed globally. A stock server that
passes ``--max-rss-gib`` or ``--max-fill-seconds`` while the fleet logs in is recorded with
the sessions it reached and why it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import queue
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.rawclient import RawClient  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DOMAIN = "localhost"
OWNER = "alice"
CONCURRENCY = 50  # logins in flight per client process while the fleet fills


def raise_fd_limit() -> int:
    """This process's soft RLIMIT_NOFILE raised to its hard limit; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- process figures from /proc --------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def process_tree(pid: int) -> Iterator[int]:
    yield pid
    for child in _children(pid):
        yield from process_tree(child)


def tree_rss_kib(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        try:
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1]) * PAGE // 1024
        except (OSError, IndexError):
            pass
    return total


def tree_cpu_seconds(pid: int) -> float:
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


# --- devices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    resource: str
    cert: Path
    key: Path


def make_devices(folder: Path, count: int) -> tuple[Path, list[Device]]:
    """A device CA and ``count`` device certificates it signed; returns (CA file, devices).

    P-256, the device's full JID as the only xmppAddr, and no extended key usage: Prosody 0.12
    checks client chains as if they were server certificates (``lsec_ignore_purpose`` in its
    core TLS defaults), so a clientAuth-only EKU fails ``mod_auth_ccert`` with "unsuitable
    certificate purpose".
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from pairing.protocol.identity import (
        XMPP_ADDR_OID,
        certificate_pem,
        encode_utf8string,
        generate_key,
        private_key_pem,
    )
    from tests.support.certificates import DeviceCA

    ca = DeviceCA(folder / "ca")
    now = dt.datetime.now(dt.UTC)
    devices = []
    for i in range(count):
        resource_name = f"d{i}"
        jid = f"{OWNER}@{DOMAIN}/{resource_name}"
        key = generate_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, jid)]))
            .issuer_name(ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.OtherName(XMPP_ADDR_OID, encode_utf8string(jid))]
                ),
                critical=False,
            )
            .sign(ca.key, hashes.SHA256())
        )
        cert_path, key_path = folder / f"{resource_name}.crt", folder / f"{resource_name}.key"
        cert_path.write_bytes(certificate_pem(cert))
        key_path.write_bytes(private_key_pem(key))
        key_path.chmod(0o600)
        devices.append(Device(resource_name, cert_path, key_path))
    return ca.cert_path, devices


def client_context(server_cert: Path, device: Device) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(server_cert))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(device.cert), str(device.key))
    return ctx


async def login(port: int, ctx: ssl.SSLContext, resource_name: str) -> RawClient:
    client = await RawClient.connect("127.0.0.1", port, DOMAIN)
    try:
        features = await client.starttls(ctx)
        if b"EXTERNAL" not in features:
            raise RuntimeError(f"EXTERNAL not offered: {features[-300:]!r}")
        reply = await client.auth("EXTERNAL", b"")
        if b"<success" not in reply:
            raise RuntimeError(f"login refused: {reply[-300:]!r}")
        if b"<jid>" not in await client.bind(resource_name):
            raise RuntimeError("bind failed")
    except BaseException:
        client.writer.close()
        raise
    return client


# --- a client process: `fleet_bench.py --client PORT SERVER_CERT DEVICES_JSON` ----------------


async def hold_fleet(port: int, server_cert: Path, devices: list[Device]) -> None:
    """Log every device in, say how it went on stdout, hold until stdin closes."""
    gate = asyncio.Semaphore(CONCURRENCY)
    held: list[RawClient] = []
    errors: list[str] = []
    done = 0

    async def one(device: Device) -> None:
        nonlocal done
        async with gate:
            try:
                held.append(await login(port, client_context(server_cert, device), device.resource))
            except (OSError, RuntimeError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
            done += 1
            if done % 250 == 0:
                print(f"progress {len(held)} {len(errors)}", flush=True)

    await asyncio.gather(*(one(d) for d in devices))
    print(json.dumps({"held": len(held), "errors": len(errors), "first": errors[:3]}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # EOF: the bench is done with us
    for client in held:
        client.writer.close()


def run_client(port: int, server_cert: Path, listing: Path) -> None:
    raise_fd_limit()
    devices = [Device(r, Path(c), Path(k)) for r, c, k in json.loads(listing.read_text())]
    asyncio.run(hold_fleet(port, server_cert, devices))


# --- our server: `fleet_bench.py --serve-ours DATA_DIR` --------------------------------------


def serve_ours(data: Path) -> None:
    from server_ext.config import ServerConfig
    from server_ext.net.serve import serve

    raise_fd_limit()
    config = ServerConfig(
        domain=DOMAIN,
        data_dir=data,
        port=0,
        direct_tls_port=None,
        max_unauthenticated_per_address=1000,
    )
    asyncio.run(serve(config, ready=lambda server: print(f"ready {server.port}", flush=True)))


def register_devices(data: Path, devices: list[Device]) -> Path:
    """Our registry with alice and every device; returns the server certificate."""
    from cryptography import x509

    from pairing.protocol.identity import PeerCertificate, certificate_der
    from pairing.protocol.jid import JID
    from server_ext.auth.credentials import credentials_for
    from server_ext.net.server_certificate import create_server_certificate
    from server_ext.storage.registry import Registry

    cert = create_server_certificate(data, DOMAIN)
    owner = JID.parse(f"{OWNER}@{DOMAIN}")
    with Registry.open(data / "registry.sqlite3") as registry:
        registry.accounts.add(owner, credentials_for("bench-password"))
        for device in devices:
            der = certificate_der(x509.load_pem_x509_certificate(device.cert.read_bytes()))
            registry.devices.add(
                owner,
                device.resource,
                PeerCertificate.parse(der),
                added_by="bench",
                added_via="bench",
            )
    return cert.cert_path


# --- the three servers -------------------------------------------------------------------------


@dataclass
class Running:
    pid: int
    port: int
    server_cert: Path
    stop: object  # a callable


@dataclass
class Result:
    server: str
    wanted: int
    held: int = 0
    errors: int = 0
    rss_before_kib: int = 0
    rss_held_kib: int = 0
    fill_seconds: float = 0.0
    fill_cpu_seconds: float = 0.0
    idle_cpu_seconds: float = 0.0
    idle_seconds: float = 0.0
    probe_ms: list[float] = field(default_factory=list)
    probe_errors: int = 0
    stopped_because: str = ""

    def row(self) -> dict[str, object]:
        per_session = (
            (self.rss_held_kib - self.rss_before_kib) * 1024 / self.held if self.held else 0.0
        )
        probes = sorted(self.probe_ms)
        return {
            "server": self.server,
            "wanted": self.wanted,
            "held": self.held,
            "errors": self.errors,
            "rss_before_mib": round(self.rss_before_kib / 1024, 1),
            "rss_held_mib": round(self.rss_held_kib / 1024, 1),
            "kb_per_session": round(per_session / 1000, 1),
            "fill_s": round(self.fill_seconds, 1),
            "fill_cpu_ms_per_login": round(1000 * self.fill_cpu_seconds / max(self.held, 1), 2),
            "idle_cpu_pct": round(100 * self.idle_cpu_seconds / max(self.idle_seconds, 1e-9), 2),
            "probe_p50_ms": round(statistics.median(probes), 1) if probes else None,
            "probe_p99_ms": round(probes[max(int(len(probes) * 0.99) - 1, 0)], 1)
            if probes
            else None,
            "probe_errors": self.probe_errors,
            "stopped_because": self.stopped_because,
        }


def start_ours(folder: Path, devices: list[Device], probe: Device) -> Running:
    data = folder / "ours"
    data.mkdir()
    server_cert = register_devices(data, [*devices, probe])
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-ours", str(data)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "ready":
        proc.kill()
        raise SystemExit("our server did not start")

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=30)

    return Running(proc.pid, int(line[1]), server_cert, stop)


def ejabberd_ca_config(server_cert: Any, ca: Path, **more: Any) -> Any:
    """ejabberd trusting the device CA for EXTERNAL (``c2s_cafile``, ``tls_verify``)."""
    from tests.support.stock_servers import EjabberdConfig

    return EjabberdConfig(
        server_cert=server_cert,
        c2s_listener={"tls_verify": True},
        top_level={"c2s_cafile": str(ca)},
        **more,
    )


def prosody_ccert_config(folder: Path, server_cert: Any, ca: Path, **more: Any) -> Any:
    """Prosody with ``mod_auth_ccert`` and the device CA as the trust anchor."""
    from tests.support.stock_servers import ProsodyConfig

    return ProsodyConfig(
        server_cert=server_cert,
        global_lines=[
            # mod_auth_ccert needs a verified chain: the device CA is the trust anchor.
            f'c2s_ssl = {{ verify = {{ "peer", "client_once" }}; cafile = "{ca}" }}',
            # info, not debug: a debug line per stanza would be the cost measured.
            f'log = {{ info = "{folder / "prosody" / "prosody.log"}"; error = "*stderr" }}',
        ],
        host_lines=['authentication = "ccert"'],
        **more,
    )


def start_ejabberd(folder: Path, ca: Path) -> Running:
    from tests.support.certificates import server_certificate
    from tests.support.stock_servers import ErlangWorld

    server_cert = server_certificate(folder / "ejabberd-cert", DOMAIN)
    world = ErlangWorld.start(folder / "erlang")
    node = world.node(folder / "ejabberd", ejabberd_ca_config(server_cert, ca))
    try:
        node.start()
        node.register(OWNER, "bench-password")
    except BaseException:
        node.stop()
        world.stop()
        raise
    assert node.process is not None

    def stop() -> None:
        node.stop()
        world.stop()

    return Running(node.process.pid, node.c2s_port, server_cert.cert, stop)


def start_prosody(folder: Path, ca: Path) -> Running:
    from tests.support.certificates import server_certificate
    from tests.support.stock_servers import ProsodyInstance

    server_cert = server_certificate(folder / "prosody-cert", DOMAIN)
    instance = ProsodyInstance(folder / "prosody", prosody_ccert_config(folder, server_cert, ca))
    instance.start()
    assert instance.process is not None
    return Running(instance.process.pid, instance.c2s_port, server_cert.cert, instance.stop)


# --- one measurement -------------------------------------------------------------------------


async def probe_logins(
    port: int, ctx: ssl.SSLContext, resource_name: str, count: int
) -> tuple[list[float], int]:
    times: list[float] = []
    errors = 0
    for _ in range(count):
        began = time.perf_counter()
        try:
            client = await login(port, ctx, resource_name)
        except (OSError, RuntimeError, ssl.SSLError, TimeoutError, ConnectionError):
            errors += 1
            continue
        times.append(1000 * (time.perf_counter() - began))
        await client.close()
    return times, errors


def measure(
    name: str,
    running: Running,
    devices: list[Device],
    probe: Device,
    folder: Path,
    args: argparse.Namespace,
) -> Result:
    result = Result(name, len(devices))
    probe_ctx = client_context(running.server_cert, probe)
    warm, _ = asyncio.run(probe_logins(running.port, probe_ctx, probe.resource, 20))
    if not warm:
        result.stopped_because = "the warm-up logins failed"
        return result
    time.sleep(1)
    result.rss_before_kib = tree_rss_kib(running.pid)
    # The fleet: slices of at most --per-client devices, one client process each.
    clients: list[subprocess.Popen[str]] = []
    cpu_before = tree_cpu_seconds(running.pid)
    began = time.monotonic()
    for start in range(0, len(devices), args.per_client):
        listing = folder / f"{name}-{len(devices)}-{start}.json"
        part = devices[start : start + args.per_client]
        listing.write_text(json.dumps([[d.resource, str(d.cert), str(d.key)] for d in part]))
        clients.append(
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--client",
                    str(running.port),
                    str(running.server_cert),
                    str(listing),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    try:
        reports: list[dict[str, object]] = []
        progress: dict[int, int] = {}
        lines: queue.Queue[tuple[int, str]] = queue.Queue()
        for proc in clients:
            threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
        pending = {proc.pid for proc in clients}
        while pending:
            if time.monotonic() - began > args.max_fill_seconds:
                result.stopped_because = f"still filling after {args.max_fill_seconds:.0f} s"
                break
            rss = tree_rss_kib(running.pid)
            if rss > args.max_rss_gib * 1024 * 1024:
                result.stopped_because = f"RSS passed {args.max_rss_gib} GiB"
                break
            try:
                pid, line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line.startswith("progress"):
                _, held, _errors = line.split()
                progress[pid] = int(held)
            elif line.startswith("{"):
                reports.append(json.loads(line))
                pending.discard(pid)
            elif line == "":  # the client exited without a report
                pending.discard(pid)
        result.fill_seconds = time.monotonic() - began
        result.fill_cpu_seconds = tree_cpu_seconds(running.pid) - cpu_before
        result.held = sum(int(r["held"]) for r in reports)  # type: ignore[call-overload]
        result.errors = sum(int(r["errors"]) for r in reports)  # type: ignore[call-overload]
        for report in reports:
            if report["first"]:
                print(f"  {name}: first errors {report['first']}", flush=True)
        if not result.stopped_because:
            time.sleep(3)  # let the last writes settle
            result.rss_held_kib = tree_rss_kib(running.pid)
            cpu = tree_cpu_seconds(running.pid)
            wall = time.monotonic()
            time.sleep(args.idle)
            result.idle_cpu_seconds = tree_cpu_seconds(running.pid) - cpu
            result.idle_seconds = time.monotonic() - wall
            result.probe_ms, result.probe_errors = asyncio.run(
                probe_logins(running.port, probe_ctx, probe.resource, args.probes)
            )
        else:
            result.rss_held_kib = tree_rss_kib(running.pid)
            result.held = sum(progress.values())  # the last progress each client gave
    finally:
        for proc in clients:
            if result.stopped_because:
                proc.terminate()  # still logging in: it would read stdin only when done
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
        for proc in clients:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return result


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[tuple[int, str]]) -> None:
    """Every line a client prints, onto ``lines``; an empty line when it exits."""
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put((proc.pid, line.strip()))
    lines.put((proc.pid, ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", default="1000,5000,15000")
    parser.add_argument("--servers", default="ours,ejabberd,prosody")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measured")
    parser.add_argument("--probes", type=int, default=200, help="fresh logins while held")
    parser.add_argument("--per-client", type=int, default=5000, help="sessions per client process")
    parser.add_argument("--max-rss-gib", type=float, default=8.0)
    parser.add_argument("--max-fill-seconds", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--serve-ours", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        port, server_cert, listing = args.client
        run_client(int(port), Path(server_cert), Path(listing))
        return
    if args.serve_ours:
        serve_ours(Path(args.serve_ours))
        return

    sizes = [int(n) for n in args.sessions.split(",")]
    servers = args.servers.split(",")
    limit = raise_fd_limit()  # inherited by the stock servers this process starts
    print(
        f"fleet sizes {sizes}, servers {servers}, {os.cpu_count()} cores, "
        f"RLIMIT_NOFILE {limit} per process, idle window {args.idle:.0f} s, "
        f"{args.probes} probe logins",
        flush=True,
    )
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        began = time.monotonic()
        ca, devices = make_devices(folder / "devices", max(sizes) + 1)
        probe, devices = devices[-1], devices[:-1]
        print(f"{len(devices) + 1} device certificates in {time.monotonic() - began:.1f} s")
        for size in sizes:
            for name in servers:
                work = folder / f"{name}-{size}"
                work.mkdir()
                fleet = devices[:size]
                if name == "ours":
                    running = start_ours(work, fleet, probe)
                elif name == "ejabberd":
                    running = start_ejabberd(work, ca)
                elif name == "prosody":
                    running = start_prosody(work, ca)
                else:
                    raise SystemExit(f"unknown server {name!r}")
                try:
                    result = measure(name, running, fleet, probe, work, args)
                finally:
                    running.stop()  # type: ignore[operator]
                row = result.row()
                rows.append(row)
                print(json.dumps(row), flush=True)
                shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"{'server':9} {'N':>6} {'held':>6} {'err':>4} {'KB/session':>10} {'idle CPU':>9} "
        f"{'login p50':>9} {'p99':>7}  stopped"
    )
    for row in rows:
        print(
            f"{row['server']!s:9} {row['wanted']!s:>6} {row['held']!s:>6} {row['errors']!s:>4} "
            f"{row['kb_per_session']!s:>10} {row['idle_cpu_pct']!s:>8}% "
            f"{row['probe_p50_ms']!s:>9} {row['probe_p99_ms']!s:>7}  {row['stopped_because']}"
        )
    for size in sizes:
        ours = next((r for r in rows if r["server"] == "ours" and r["wanted"] == size), None)
        if ours is None or not ours["held"]:
            continue
        for row in rows:
            if row["wanted"] == size and row["server"] != "ours" and row["kb_per_session"]:
                ratio = float(ours["kb_per_session"]) / float(row["kb_per_session"])  # type: ignore[arg-type]
                print(f"N={size}: memory per session, ours / {row['server']}: {ratio:.2f}")
        verdict = "met" if float(ours["kb_per_session"]) <= 40 else "NOT met"  # type: ignore[arg-type]
        print(f"N={size}: target <= 40 KB per idle session -> {verdict}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
