"""1,000 QR-token enrollments at once against one server: wall time, p50/p99, server CPU.

Run:  python bench/enroll_bench.py [--devices 1000]

Each device has its own key and certificate and its own one-time token, and all of them
start together: STARTTLS with the device certificate, token redemption before SASL (the
server burns the token and registers the certificate in one SQLite transaction), then SASL
EXTERNAL and bind on the same stream. The reference, in the same run and on the same
machine, is the same number of bare TLS handshakes against a stdlib asyncio ``ssl`` server.
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

from server_ext.auth.credentials import credentials_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.login_bench import cpu_seconds, reference_once, write_device  # noqa: E402
from pairing.protocol.jid import JID  # noqa: E402
from tests.support.rawclient import RawClient, client_context  # noqa: E402

ENROLL_NS = "urn:xmpp-device-pairing:enroll:0"


async def enroll_once(port: int, ctx: ssl.SSLContext, token: str) -> None:
    client = await RawClient.connect("127.0.0.1", port, "localhost")
    features = await client.starttls(ctx)
    if f"<enroll xmlns='{ENROLL_NS}'/>".encode() not in features:
        raise RuntimeError("no enrollment feature offered")
    await client.send(f"<enroll xmlns='{ENROLL_NS}' token='{token}'/>")
    reply = await client.read_until(b"/>", b"</failure>", timeout=120)
    if b"<success" not in reply:
        raise RuntimeError(f"enrollment refused: {reply!r}")
    if b"<success" not in await client.auth("EXTERNAL", b""):
        raise RuntimeError("EXTERNAL refused after enrollment")
    if b"<jid>" not in await client.bind():
        raise RuntimeError("bind failed")
    client.writer.close()


async def all_at_once(jobs: list[object]) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0

    async def timed(job: object) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            await job  # type: ignore[misc]
        except (OSError, RuntimeError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            errors += 1
            if errors <= 3:
                print(f"  error: {exc}", file=sys.stderr)
            return
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(timed(job) for job in jobs))
    return time.perf_counter() - started, sorted(latencies), errors


def start(kind: str, data: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "login_bench.py"),
            "--serve",
            kind,
            str(data),
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"{kind} server did not start")
    return proc


def report(name: str, wall: float, latencies: list[float], errors: int, cpu: float) -> None:
    n = len(latencies)
    p50 = latencies[n // 2] * 1000 if n else float("nan")
    p99 = latencies[max(0, int(n * 0.99) - 1)] * 1000 if n else float("nan")
    print(
        f"{name:34} {n:5d} ok  wall {wall:6.2f} s  p50 {p50:6.0f} ms  p99 {p99:6.0f} ms  "
        f"server CPU {1000 * cpu / max(n, 1):.2f} ms each  errors {errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", type=int, default=1000)
    args = parser.parse_args()
    from server_ext.admin.token_issuer import issue_token
    from server_ext.net.server_certificate import create_server_certificate
    from server_ext.policy.tokens import TokenRules
    from server_ext.storage.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        cert = create_server_certificate(data / "server", "localhost")
        (data / "server.crt").write_bytes(cert.cert_path.read_bytes())
        (data / "server.key").write_bytes(cert.key_path.read_bytes())
        print(f"preparing {args.devices} devices and tokens ...", flush=True)
        contexts: list[ssl.SSLContext] = []
        tokens: list[str] = []
        pems: list[bytes] = []
        rules = TokenRules(max_outstanding=args.devices)
        with Registry.open(data / "server" / "registry.sqlite3") as registry:
            registry.accounts.add(JID.parse("alice@localhost"), credentials_for("bench-password"))
            for i in range(args.devices):
                folder = data / f"device{i}"
                folder.mkdir()
                cert_path, key_path, _ = write_device(folder, f"alice@localhost/bot{i}")
                contexts.append(client_context(cert.cert_path, cert_path, key_path))
                pems.append(cert_path.read_bytes())
                issued = issue_token(
                    registry,
                    rules,
                    account=JID.parse("alice@localhost"),
                    resource=f"bot{i}",
                    name=None,
                    ttl=None,
                    created_by="bench",
                )
                tokens.append(issued.token)
        (data / "devices.pem").write_bytes(b"".join(pems))

        ref = start("reference", data, 15292)
        try:
            before = cpu_seconds(ref.pid)
            ref_wall, ref_lat, ref_err = asyncio.run(
                all_at_once([reference_once(15292, ctx) for ctx in contexts])
            )
            ref_cpu = cpu_seconds(ref.pid) - before
        finally:
            ref.terminate()
            ref.wait(timeout=10)
        ours = start("ours", data, 15293)
        try:
            before = cpu_seconds(ours.pid)
            wall, lat, err = asyncio.run(
                all_at_once(
                    [enroll_once(15293, c, t) for c, t in zip(contexts, tokens, strict=True)]
                )
            )
            cpu = cpu_seconds(ours.pid) - before
        finally:
            ours.terminate()
            ours.wait(timeout=10)
    print(f"{args.devices} clients started at once, {os.cpu_count()} cores")
    report("TLS handshake only (stdlib ssl)", ref_wall, ref_lat, ref_err, ref_cpu)
    report("server-ext token enrollment+login", wall, lat, err, cpu)
    print(f"ratio wall time enrollments vs handshakes: {wall / ref_wall:.2f}")


if __name__ == "__main__":
    main()
