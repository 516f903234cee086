"""EXTERNAL logins on ejabberd and Prosody beside our embedded server, and enrollment through
the HTTPS face.

Run:  python bench/stock_bench.py [--clients 50] [--seconds 10] [--devices 50]
                                  [--enrollments 1000] [--parallel 50]

Everything runs on 127.0.0.1 in one run, on the same machine, with the same client:
  * logins: STARTTLS with a device certificate, SASL EXTERNAL, bind, close; ``--clients``
    concurrent connections for ``--seconds``, and again one client at a time, against
      - our embedded server (``server-ext serve``, the SQLite registry),
      - ejabberd (Debian's package, a private node) as ``server-ext`` drives it: tls_verify and
        ``c2s_cafile`` = the trust-anchor file listing every device certificate
        (docs/server.md, "Stock servers"),
      - ejabberd with a device CA in ``c2s_cafile`` and CA-signed device certificates (the
        "CA mode" the issue names, which ``server-ext`` does not use because ejabberd cannot
        revoke such a certificate),
      - Prosody 0.12 with ``mod_auth_ccert`` and the same device CA (bench/fleet_bench.py's
        configuration);
    server CPU per login is read from /proc around the measured window (for ejabberd, every
    process of the node's process group);
  * enrollment: ``--enrollments`` devices, each with its own key and token (v2 URI), enroll
    through ``server-ext``'s HTTPS face with ``[stock] kind = "ejabberd"`` (the trust file
    rewritten and ``reload_config`` called, coalesced) and then log in to ejabberd with
    EXTERNAL, ``--parallel`` at a time, as ``device-agent enroll`` does (the library call).

Revocation-to-close times on the stock servers are measured by tests/interop (printed in the
run's summary): ``pytest tests/interop -q -rA``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.login_bench import cpu_seconds, drive, login_once  # noqa: E402
from pairing.protocol.identity import PeerCertificate  # noqa: E402
from pairing.protocol.jid import JID  # noqa: E402
from pairing.protocol.uri import HTTPSEnrollmentURI  # noqa: E402
from tests.support.certificates import (  # noqa: E402
    CertificateFiles,
    DeviceCA,
    self_signed_device,
    server_certificate,
)
from tests.support.rawclient import client_context  # noqa: E402
from tests.support.stock_servers import (  # noqa: E402
    EjabberdConfig,
    EjabberdNode,
    ErlangWorld,
    _group_members,
    free_port,
)

ACCOUNT = JID.parse("alice@localhost")
PASSWORD = "bench-password"


@dataclass(frozen=True)
class Result:
    count: int
    errors: int
    per_second: float
    cpu_ms: float
    p50_ms: float
    p99_ms: float


def group_cpu(pid: int) -> float:
    """CPU seconds of every process in ``pid``'s process group (an Erlang node is several)."""
    total = 0.0
    for member in _group_members(pid) or [pid]:
        try:
            total += cpu_seconds(member)
        except FileNotFoundError:
            pass  # ended meanwhile
    return total


def run_load(
    port: int, contexts: list[ssl.SSLContext], clients: int, seconds: float, pid: int
) -> Result:
    asyncio.run(drive(login_once, port, contexts, clients, 1.0))  # warm-up
    before = group_cpu(pid)
    began = time.perf_counter()
    done, latencies, errors = asyncio.run(drive(login_once, port, contexts, clients, seconds))
    wall = time.perf_counter() - began
    cpu = group_cpu(pid) - before
    latencies.sort()
    return Result(
        done,
        errors,
        done / wall,
        1000 * cpu / max(done, 1),
        1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
        1000 * latencies[max(int(len(latencies) * 0.99) - 1, 0)] if latencies else float("nan"),
    )


# --- our embedded server, in a process of its own ----------------------------------------------


def serve_child(settings: str) -> None:
    """``python bench/stock_bench.py --serve JSON``: server-ext serve with those settings."""
    from server_ext.config import ServerConfig, StockKind
    from server_ext.net.serve import serve

    given = json.loads(settings)
    config = ServerConfig(
        domain="localhost",
        data_dir=Path(given["data_dir"]),
        port=given["port"],
        direct_tls_port=None,
        max_unauthenticated_per_address=100_000,
        stock_kind=StockKind(given.get("kind", "embedded")),
        stock_xmpp_host=given.get("xmpp_host"),
        stock_xmpp_port=given.get("xmpp_port", 5222),
        stock_xmpp_pin=given.get("xmpp_pin"),
        stock_options=given.get("stock_options", {}),
        https_port=given.get("https_port"),
    )
    asyncio.run(serve(config, ready=lambda _server: print("ready", flush=True)))


def start_ours(settings: dict[str, object]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", json.dumps(settings)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit("server-ext did not start")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=15)


# --- the login comparison -----------------------------------------------------------------------


def devices_for(folder: Path, count: int, ca: DeviceCA | None) -> list[CertificateFiles]:
    if ca is None:
        return [
            self_signed_device(folder, f"{ACCOUNT}/bot{number}", name=f"bot{number}")
            for number in range(count)
        ]
    return [ca.issue(f"ca-bot{number}", f"{ACCOUNT}/ca-bot{number}") for number in range(count)]


def ejabberd_for(
    world: ErlangWorld, folder: Path, server: CertificateFiles, cafile: Path
) -> EjabberdNode:
    node = world.node(
        folder,
        EjabberdConfig(
            server_cert=server,
            c2s_listener={"tls_verify": True},
            top_level={"c2s_cafile": str(cafile)},
        ),
        name=f"bench-{folder.name}-{os.getpid()}",
    )
    node.start()
    node.register(ACCOUNT.local, PASSWORD)
    return node


def logins(args: argparse.Namespace, tmp: Path) -> dict[str, tuple[Result, Result]]:
    from server_ext.auth.credentials import credentials_for
    from server_ext.net.server_certificate import create_server_certificate
    from server_ext.storage.registry import Registry

    server = server_certificate(tmp / "server-cert", "localhost")
    own = create_server_certificate(tmp / "ours", "localhost")
    self_signed = devices_for(tmp / "devices", args.devices, None)
    ca = DeviceCA(tmp / "device-ca")
    signed = devices_for(tmp / "ca-devices", args.devices, ca)
    with Registry.open(tmp / "ours" / "registry.sqlite3") as registry:
        registry.accounts.add(ACCOUNT, credentials_for(PASSWORD))
        for number, device in enumerate(self_signed):
            registry.devices.add(
                ACCOUNT,
                f"bot{number}",
                PeerCertificate.from_x509(device.certificate),
                added_by="bench",
                added_via="bench",
            )
    trust = tmp / "ejabberd-trust.pem"
    trust.write_bytes(b"".join(device.cert.read_bytes() for device in self_signed))

    def contexts(pinned: Path, devices: list[CertificateFiles]) -> list[ssl.SSLContext]:
        return [client_context(pinned, device.cert, device.key) for device in devices]

    results: dict[str, tuple[Result, Result]] = {}

    def both(name: str, port: int, pid: int, ctxs: list[ssl.SSLContext]) -> None:
        print(f"  measuring {name} ...", flush=True)
        results[name] = (
            run_load(port, ctxs, args.clients, args.seconds, pid),
            run_load(port, ctxs, 1, args.seconds, pid),
        )

    port = free_port()
    proc = start_ours({"data_dir": str(tmp / "ours"), "port": port})
    try:
        both("server-ext (embedded)", port, proc.pid, contexts(own.cert_path, self_signed))
    finally:
        stop(proc)
    world = ErlangWorld.start(tmp / "erlang")
    try:
        for name, folder, cafile, devices in (
            ("ejabberd, trust-anchor file", "trust", trust, self_signed),
            ("ejabberd, device CA", "ca", ca.cert_path, signed),
        ):
            node = ejabberd_for(world, tmp / folder, server, cafile)
            try:
                assert node.process is not None
                both(name, node.c2s_port, node.process.pid, contexts(server.cert, devices))
            finally:
                node.stop()
    finally:
        world.stop()
    # Prosody checks a client certificate only against a CA (mod_auth_ccert), as in the
    # fleet bench; how server-ext runs it (its own module asking the registry) adds an HTTP
    # round trip to server-ext per login and is measured by the interop tests, not here.
    # Its certificates carry no extended key usage: Prosody 0.12 checks client chains with a
    # server's purpose (bench/fleet_bench.py, make_devices).
    from bench.fleet_bench import make_devices, start_prosody

    prosody_ca, prosody_devices = make_devices(tmp / "prosody-devices", args.devices)
    prosody = start_prosody(tmp / "prosody", prosody_ca)
    try:
        both(
            "Prosody, device CA (ccert)",
            prosody.port,
            prosody.pid,
            [client_context(prosody.server_cert, d.cert, d.key) for d in prosody_devices],
        )
    finally:
        prosody.stop()  # type: ignore[operator]
    return results


# --- enrollment through the HTTPS face, against ejabberd ----------------------------------------


async def enroll_all(
    uris: list[HTTPSEnrollmentURI], folder: Path, parallel: int
) -> tuple[float, list[float], int, str]:
    from device_agent.enrollment import enroll_https
    from device_agent.keystore import KeyStore

    gate = asyncio.Semaphore(parallel)
    latencies: list[float] = []
    errors = 0
    first_error = ""

    async def one(number: int, uri: HTTPSEnrollmentURI) -> None:
        nonlocal errors, first_error
        async with gate:
            began = time.perf_counter()
            try:
                await enroll_https(KeyStore(folder / f"device{number}"), uri)
            except Exception as exc:  # counted; the first one is shown
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
                return
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(one(number, uri) for number, uri in enumerate(uris)))
    return time.perf_counter() - began, sorted(latencies), errors, first_error


def enrollments(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    from pairing.protocol.https_api import XMPPServer
    from server_ext.admin.token_issuer import HTTPSEnrollment, issue_token
    from server_ext.net.server_certificate import create_server_certificate
    from server_ext.policy.tokens import TokenRules
    from server_ext.storage.registry import Registry

    server = server_certificate(tmp / "server-cert", "localhost")
    trust = tmp / "ejabberd-trust.pem"
    trust.write_bytes(b"")
    world = ErlangWorld.start(tmp / "erlang")
    node: EjabberdNode | None = None
    proc: subprocess.Popen[str] | None = None
    try:
        node = ejabberd_for(world, tmp / "enroll-node", server, trust)
        assert node.process is not None
        data = tmp / "server-ext"
        own = create_server_certificate(data, "localhost")
        https_port = free_port()
        pin = PeerCertificate.from_x509(server.certificate).fingerprint
        target = HTTPSEnrollment(
            "127.0.0.1", https_port, own.fingerprint, XMPPServer("127.0.0.1", node.c2s_port, pin)
        )
        with Registry.open(data / "registry.sqlite3") as registry:
            uris = [
                issue_token(
                    registry,
                    # A fleet provisioned at once: the cap on pending tokens per account
                    # (10, for people) raised for this run.
                    TokenRules(max_outstanding=args.enrollments),
                    account=ACCOUNT,
                    resource=f"enrolled{number}",
                    name=None,
                    ttl=None,
                    created_by="bench",
                    external_account=True,
                ).https_uri(target)
                for number in range(args.enrollments)
            ]
        proc = start_ours(
            {
                "data_dir": str(data),
                "port": free_port(),
                "kind": "ejabberd",
                "xmpp_host": "127.0.0.1",
                "xmpp_port": node.c2s_port,
                "xmpp_pin": pin,
                "https_port": https_port,
                "stock_options": {
                    "ejabberd": {
                        "api": [f"http://127.0.0.1:{node.http_port}/api"],
                        "trust_file": str(trust),
                    }
                },
            }
        )
        print(f"  enrolling {args.enrollments} devices ...", flush=True)
        ours_before, node_before = cpu_seconds(proc.pid), group_cpu(node.process.pid)
        wall, latencies, errors, first_error = asyncio.run(
            enroll_all(uris, tmp / "enrolled", args.parallel)
        )
        ours_cpu = cpu_seconds(proc.pid) - ours_before
        node_cpu = group_cpu(node.process.pid) - node_before
        reloads = node.log_path.read_text(errors="replace").count("API call reload_config")
    finally:
        if proc is not None:
            stop(proc)
        if node is not None:
            node.stop()
        world.stop()
    done = len(latencies)
    if first_error:
        print(f"  first error: {first_error}")
    return {
        "done": done,
        "errors": errors,
        "wall": wall,
        "per_second": done / wall,
        "p50_ms": 1000 * latencies[done // 2] if done else float("nan"),
        "p99_ms": 1000 * latencies[max(int(done * 0.99) - 1, 0)] if done else float("nan"),
        "ours_cpu_ms": 1000 * ours_cpu / max(done, 1),
        "ejabberd_cpu_ms": 1000 * node_cpu / max(done, 1),
        "reloads": reloads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent login clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="each measured window")
    parser.add_argument("--devices", type=int, default=50, help="device certificates per server")
    parser.add_argument("--enrollments", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=50, help="enrollments at a time")
    parser.add_argument("--skip", choices=("logins", "enrollments"), action="append", default=[])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_child(args.serve)
        return
    print(f"{os.cpu_count()} cores; {args.devices} devices; windows of {args.seconds:.0f} s")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if "logins" not in args.skip:
            table = logins(args, tmp / "logins")
            reference = table["server-ext (embedded)"]
            print(f"\nEXTERNAL login (STARTTLS, EXTERNAL, bind), {args.clients} clients | 1 client")
            for name, (many, one) in table.items():
                print(
                    f"  {name:29} {many.per_second:6.0f}/s CPU {many.cpu_ms:5.2f} ms "
                    f"p99 {many.p99_ms:4.0f} ms err {many.errors} | {one.per_second:5.0f}/s "
                    f"CPU {one.cpu_ms:5.2f} ms p50 {one.p50_ms:5.1f} ms | CPU ratio vs ours "
                    f"{many.cpu_ms / reference[0].cpu_ms:4.2f} / "
                    f"{one.cpu_ms / reference[1].cpu_ms:4.2f}"
                )
        if "enrollments" not in args.skip:
            measured = enrollments(args, tmp / "enrollments")
            print(
                f"\nenrollment over HTTPS then EXTERNAL on ejabberd, {args.enrollments} devices, "
                f"{args.parallel} at a time:\n"
                f"  {measured['done']:.0f} enrolled, {measured['errors']:.0f} errors in "
                f"{measured['wall']:.1f} s = {measured['per_second']:.0f}/s; p50 "
                f"{measured['p50_ms']:.0f} ms p99 {measured['p99_ms']:.0f} ms; CPU per device: "
                f"server-ext {measured['ours_cpu_ms']:.1f} ms, ejabberd "
                f"{measured['ejabberd_cpu_ms']:.1f} ms; reload_config calls "
                f"{measured['reloads']:.0f}"
            )


if __name__ == "__main__":
    main()
