"""EXTERNAL logins per second and server CPU per login, against a TLS-handshake-only floor.

Run:  python bench/login_bench.py [--clients 50] [--seconds 10]

Two servers run in turn, each in its own process on 127.0.0.1, driven by the same asyncio
client with 50 concurrent connections:
  * reference: a plain Python asyncio ``ssl`` server that only completes the TLS handshake
    (TLS 1.3, P-256, the client presenting a certificate), the floor for any Python server;
  * ours: ``server-ext`` doing a full login: STARTTLS, TLS with the device certificate,
    SASL EXTERNAL against the SQLite registry, resource binding, close.
Server CPU is read from /proc/<pid>/stat around the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pairing.protocol.identity import PeerCertificate
from server_ext.auth.credentials import credentials_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pairing.protocol.identity import (  # noqa: E402
    build_device_certificate,
    certificate_der,
    certificate_pem,
    generate_key,
    private_key_pem,
)
from pairing.protocol.jid import JID  # noqa: E402
from pairing.secure_files import write_private, write_public  # noqa: E402
from tests.support.rawclient import RawClient, client_context  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def write_device(folder: Path, jid: str) -> tuple[Path, Path, bytes]:
    key = generate_key()
    cert = build_device_certificate(key, JID.parse(jid))
    key_path, cert_path = folder / "device.key", folder / "device.crt"
    write_private(key_path, private_key_pem(key))
    write_public(cert_path, certificate_pem(cert))
    return cert_path, key_path, certificate_der(cert)


# --- the two servers, each run as `python bench/login_bench.py --serve KIND DIR PORT` ---------


def serve_reference(data: Path, port: int) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(data / "server.crt"), str(data / "server.key"))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cafile=str(data / "devices.pem"))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1)  # the client closes right after the handshake
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx, backlog=1024)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def serve_ours(data: Path, port: int) -> None:
    from server_ext.config import ServerConfig
    from server_ext.net.serve import serve

    config = ServerConfig(
        domain="localhost",
        data_dir=data / "server",
        port=port,
        direct_tls_port=None,
        max_unauthenticated_per_address=1000,
    )
    asyncio.run(serve(config, ready=lambda _server: print("ready", flush=True)))


# --- load ------------------------------------------------------------------------------------


async def reference_once(port: int, ctx: ssl.SSLContext) -> None:
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass


async def login_once(port: int, ctx: ssl.SSLContext) -> None:
    client = await RawClient.connect("127.0.0.1", port, "localhost")
    await client.starttls(ctx)
    reply = await client.auth("EXTERNAL", b"")
    if b"<success" not in reply:
        raise RuntimeError(f"login refused: {reply!r}")
    if b"<jid>" not in await client.bind():
        raise RuntimeError("bind failed")
    client.writer.close()


async def drive(
    once: object, port: int, contexts: list[ssl.SSLContext], clients: int, seconds: float
) -> tuple[int, list[float], int]:
    done = 0
    errors = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal done, errors
        ctx = contexts[i % len(contexts)]
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                await once(port, ctx)  # type: ignore[operator]
            except (OSError, RuntimeError, ssl.SSLError, TimeoutError, ConnectionError):
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            done += 1

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return done, latencies, errors


def measure(
    kind: str, data: Path, port: int, contexts: list[ssl.SSLContext], args: argparse.Namespace
) -> dict[str, float]:
    script = os.environ.get("BENCH_SERVER_SCRIPT") if kind == "ours" else None
    command = (
        [sys.executable, script, str(data), str(port)]
        if script
        else [sys.executable, __file__, "--serve", kind, str(data), str(port)]
    )
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"{kind} server did not start")
        once = login_once if kind == "ours" else reference_once
        asyncio.run(drive(once, port, contexts, args.clients, 1.0))  # warm-up
        cpu_before = cpu_seconds(proc.pid)
        wall_before = time.perf_counter()
        done, latencies, errors = asyncio.run(
            drive(once, port, contexts, args.clients, args.seconds)
        )
        wall = time.perf_counter() - wall_before
        cpu = cpu_seconds(proc.pid) - cpu_before
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    return {
        "count": done,
        "errors": errors,
        "per_second": done / wall,
        "cpu_ms": 1000 * cpu / max(done, 1),
        "p50_ms": 1000 * p50,
        "p99_ms": 1000 * p99,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, folder, port = args.serve
        (serve_ours if kind == "ours" else serve_reference)(Path(folder), int(port))
        return

    from server_ext.net.server_certificate import create_server_certificate
    from server_ext.storage.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        server_cert = create_server_certificate(data / "server", "localhost")
        (data / "server.crt").write_bytes(server_cert.cert_path.read_bytes())
        (data / "server.key").write_bytes(server_cert.key_path.read_bytes())
        contexts: list[ssl.SSLContext] = []
        pems: list[bytes] = []
        with Registry.open(data / "server" / "registry.sqlite3") as registry:
            registry.accounts.add(JID.parse("alice@localhost"), credentials_for("bench-password"))
            for i in range(args.devices):
                folder = data / f"device{i}"
                folder.mkdir()
                cert_path, key_path, der = write_device(folder, f"alice@localhost/bot{i}")
                registry.devices.add(
                    JID.parse("alice@localhost"),
                    f"bot{i}",
                    PeerCertificate.parse(der),
                    added_by="bench",
                    added_via="bench",
                )
                contexts.append(client_context(server_cert.cert_path, cert_path, key_path))
                pems.append(cert_path.read_bytes())
        # The stdlib reference can only accept client certificates it trusts as CAs.
        (data / "devices.pem").write_bytes(b"".join(pems))
        print(
            f"{args.clients} concurrent clients, {args.seconds:.0f} s each, {os.cpu_count()} cores"
        )
        ref = measure("reference", data, 15290, contexts, args)
        ours = measure("ours", data, 15291, contexts, args)
    for name, r in (("TLS handshake only (stdlib ssl)", ref), ("server-ext EXTERNAL login", ours)):
        print(
            f"{name:34} {r['per_second']:8.0f}/s  server CPU {r['cpu_ms']:.2f} ms  "
            f"p50 {r['p50_ms']:.0f} ms  p99 {r['p99_ms']:.0f} ms  errors {r['errors']:.0f}"
        )
    print(f"ratio logins/s vs handshakes/s: {ours['per_second'] / ref['per_second']:.2f}")
    print(f"ratio server CPU per login vs per handshake: {ours['cpu_ms'] / ref['cpu_ms']:.2f}")
    verdict = "met" if ours["cpu_ms"] <= 2.8 else "NOT met"
    print(f"target: <= 2.8 ms server CPU per EXTERNAL login -> {verdict}")


if __name__ == "__main__":
    main()
