"""Does the server give memory back? RSS before and after 3,000 logins opened and closed.

Run:  python bench/memory_bench.py [--connections 3000]

Prosody 0.12.3 keeps every closed session for 300 s and stays at about 7x its baseline RSS
after this load (the project's design notes, not in this repository). The reference here, in
the same run, is the server's own RSS after a short warm-up, so the ratio shows what the load
left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pairing.protocol.identity import PeerCertificate
from server_ext.auth.credentials import credentials_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.login_bench import login_once, write_device  # noqa: E402
from pairing.protocol.jid import JID  # noqa: E402
from tests.support.rawclient import client_context  # noqa: E402

PORT = 15295


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def wave(count: int, contexts: list[object], concurrency: int = 50) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await login_once(PORT, contexts[i % len(contexts)])  # type: ignore[arg-type]

    await asyncio.gather(*(one(i) for i in range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=3000)
    args = parser.parse_args()
    from server_ext.net.server_certificate import create_server_certificate
    from server_ext.storage.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        cert = create_server_certificate(data / "server", "localhost")
        contexts = []
        with Registry.open(data / "server" / "registry.sqlite3") as registry:
            registry.accounts.add(JID.parse("alice@localhost"), credentials_for("bench-password"))
            for i in range(50):
                folder = data / f"d{i}"
                folder.mkdir()
                cert_path, key_path, der = write_device(folder, f"alice@localhost/m{i}")
                registry.devices.add(
                    JID.parse("alice@localhost"),
                    f"m{i}",
                    PeerCertificate.parse(der),
                    added_by="bench",
                    added_via="bench",
                )
                contexts.append(client_context(cert.cert_path, cert_path, key_path))
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "login_bench.py"),
                "--serve",
                "ours",
                str(data),
                str(PORT),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("server did not start")
            asyncio.run(wave(200, contexts))  # warm-up: imports, caches, SQLite pages
            time.sleep(1)
            baseline = rss_kib(proc.pid)
            asyncio.run(wave(args.connections, contexts))
            gc.collect()
            time.sleep(2)
            after = rss_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"{args.connections} logins opened and closed, 50 at a time")
    print(f"server RSS after warm-up (reference): {baseline / 1024:.1f} MiB")
    print(f"server RSS after the load:            {after / 1024:.1f} MiB")
    print(f"ratio after / reference: {after / baseline:.2f}")


if __name__ == "__main__":
    main()
