"""Server CPU of an XEP-0198 resumption against a full login, on one server in one run.

Run:  python bench/resume_bench.py [--clients 10] [--seconds 5] [--rounds 3]

One ``server-ext`` process on 127.0.0.1 (started as bench/login_bench.py starts it). Each
client owns one device certificate and, in turn for ``--seconds`` each:
  * full login: STARTTLS, TLS with the device certificate, SASL EXTERNAL, bind,
    ``<enable resume='true'/>``, then the link is cut (the socket aborted, as a flaky link
    does): the session is detached;
  * resumption: STARTTLS, TLS with the same certificate, SASL EXTERNAL, ``<resume/>``
    (XEP-0198 §5), then the link is cut again, so the next round resumes the same session.
Resumption still needs TLS and SASL EXTERNAL (§5: the same authentication as the session);
it saves the bind, the session setup and the stream features after bind. Server CPU is read
from /proc/<pid>/stat around each measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.login_bench import cpu_seconds, write_device  # noqa: E402
from pairing.protocol.identity import PeerCertificate  # noqa: E402
from pairing.protocol.jid import JID  # noqa: E402
from server_ext.auth.credentials import credentials_for  # noqa: E402
from tests.support.rawclient import RawClient, client_context  # noqa: E402

SM = "urn:xmpp:sm:3"
LOGIN_BENCH = ROOT / "bench" / "login_bench.py"


async def authenticate(port: int, ctx: ssl.SSLContext) -> RawClient:
    client = await RawClient.connect("127.0.0.1", port, "localhost")
    await client.starttls(ctx)
    if b"<success" not in await client.auth("EXTERNAL", b""):
        raise RuntimeError("login refused")
    return client


async def full_login(port: int, ctx: ssl.SSLContext) -> str:
    """A full login that enables resumption; cuts the link; returns the resume id."""
    client = await authenticate(port, ctx)
    if b"<jid>" not in await client.bind():
        raise RuntimeError("bind failed")
    await client.send(f"<enable xmlns='{SM}' resume='true'/>")
    enabled = await client.read_until(b"/>")
    match = re.search(rb"id='([^']+)'", enabled)
    if match is None:
        raise RuntimeError(f"not enabled: {enabled!r}")
    client.writer.transport.abort()
    return match.group(1).decode()


async def resumption(port: int, ctx: ssl.SSLContext, previd: str) -> None:
    client = await authenticate(port, ctx)
    await client.open_stream()
    await client.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    reply = await client.read_until(b"/>")
    if b"<resumed" not in reply:
        raise RuntimeError(f"not resumed: {reply!r}")
    client.writer.transport.abort()


async def drive(
    mode: str, port: int, contexts: list[ssl.SSLContext], ids: list[str], seconds: float
) -> tuple[int, list[float], int]:
    done = errors = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                if mode == "login":
                    ids[i] = await full_login(port, contexts[i])
                else:
                    await resumption(port, contexts[i], ids[i])
            except (OSError, RuntimeError, ssl.SSLError, TimeoutError, ConnectionError):
                errors += 1
                await asyncio.sleep(0.01)
                continue
            latencies.append(time.perf_counter() - started)
            done += 1

    await asyncio.gather(*(worker(i) for i in range(len(contexts))))
    return done, latencies, errors


def summary(done: int, latencies: list[float], errors: int, cpu: float, wall: float) -> str:
    latencies.sort()
    p50 = 1000 * latencies[len(latencies) // 2] if latencies else float("nan")
    return (
        f"{done / wall:7.0f}/s  server CPU {1000 * cpu / max(done, 1):.2f} ms  "
        f"p50 {p50:.1f} ms  errors {errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=15293)
    args = parser.parse_args()

    from server_ext.net.server_certificate import create_server_certificate
    from server_ext.storage.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        server_cert = create_server_certificate(data / "server", "localhost")
        contexts: list[ssl.SSLContext] = []
        with Registry.open(data / "server" / "registry.sqlite3") as registry:
            registry.accounts.add(JID.parse("alice@localhost"), credentials_for("bench-password"))
            for i in range(args.clients):
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
        proc = subprocess.Popen(
            [sys.executable, str(LOGIN_BENCH), "--serve", "ours", str(data), str(args.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("server did not start")
            ids = [""] * args.clients
            asyncio.run(drive("login", args.port, contexts, ids, 1.0))  # warm-up, and ids
            print(
                f"{args.clients} concurrent clients, {args.seconds:.0f} s each, "
                f"{os.cpu_count()} cores"
            )
            # Interleaved rounds, so that load from elsewhere on the machine hits both alike.
            totals = {"login": [0, 0.0], "resume": [0, 0.0]}
            for round_ in range(args.rounds):
                for mode, name in (("login", "full login + enable"), ("resume", "resumption")):
                    cpu_before, wall_before = cpu_seconds(proc.pid), time.perf_counter()
                    done, latencies, errors = asyncio.run(
                        drive(mode, args.port, contexts, ids, args.seconds)
                    )
                    wall = time.perf_counter() - wall_before
                    cpu = cpu_seconds(proc.pid) - cpu_before
                    totals[mode][0] += done
                    totals[mode][1] += cpu
                    line = summary(done, latencies, errors, cpu, wall)
                    print(f"round {round_ + 1} {name:22} {line}")
            per_op = {m: 1000 * cpu / max(n, 1) for m, (n, cpu) in totals.items()}
            print(
                f"all rounds: full login {per_op['login']:.2f} ms, resumption "
                f"{per_op['resume']:.2f} ms server CPU per operation "
                f"(ratio {per_op['resume'] / per_op['login']:.2f})"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
