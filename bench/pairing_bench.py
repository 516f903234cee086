"""LAN pairing latency: from the device's TCP connect to its first EXTERNAL login.

Run:  python bench/pairing_bench.py [--runs 20] [--mode token|xep0257]

The server runs in its own process. This process plays both the user's pairing window (a
logged-in owner account) and the device, connected over loopback TCP without mDNS (discovery
takes about a second of probing and is not what is measured). Each run uses a new device
with a new label: SRP-6a (3072-bit, SHA-512) on both sides, the encrypted offer, enrollment
(a one-time token, or XEP-0257 upload), and the device's first SASL EXTERNAL login. The
reference, in the same run, is a plain EXTERNAL login of an already enrolled device.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from server_ext.auth.credentials import credentials_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from device_agent import runtime  # noqa: E402
from device_agent.lan import PairingLimits, _attempt  # noqa: E402
from device_agent.setup_state import AttemptCounter, SetupState  # noqa: E402
from pairing.lan.discovery import WindowAddress  # noqa: E402
from pairing.lan.enroller import AccountEnroller  # noqa: E402
from pairing.lan.window import CodeBook, PairingWindow  # noqa: E402
from pairing.protocol.address import ServerAddress  # noqa: E402
from pairing.protocol.jid import JID  # noqa: E402
from pairing.protocol.pair_messages import DeviceHello, EnrollMode  # noqa: E402
from pairing.protocol.setup_code import SetupLabel, setup_hash  # noqa: E402
from pairing.xmpp.connection import TrustAnchor, login, make_client  # noqa: E402
from pairing.xmpp.saslcert import PLUGINS  # noqa: E402

PORT = 15294


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


async def main_async(args: argparse.Namespace, data: Path, fingerprint: str) -> None:
    owner = make_client(
        "alice@localhost/window",
        server=ServerAddress("127.0.0.1", PORT),
        trust=TrustAnchor(fingerprint=fingerprint),
        password="bench-password",
        plugins=PLUGINS,
    )
    await login(owner)
    pairing_ms: list[float] = []
    login_ms: list[float] = []
    for run in range(args.runs):
        state = data / f"device{run}"
        label = SetupLabel.generate()
        setup = SetupState.create(state, label, name=f"bench {run}", resource=f"dev{run}")
        book = CodeBook()
        book.single = label.code
        window = PairingWindow(
            book, AccountEnroller(owner, mode=EnrollMode(args.mode)), report=lambda _: None
        )
        server = await asyncio.start_server(window._connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        hello = DeviceHello(
            setup.device_id, setup_hash(setup.setup_id, setup.device_id), setup.name, setup.resource
        )
        started = time.perf_counter()
        outcome = await _attempt(
            WindowAddress("127.0.0.1", port, "bench"),
            hello,
            setup,
            AttemptCounter.load(state),
            state,
            PairingLimits(),
            lambda _: None,
        )
        pairing_ms.append(1000 * (time.perf_counter() - started))
        server.close()
        if not isinstance(outcome, JID):
            raise SystemExit(f"run {run} did not pair: {outcome}")
        started = time.perf_counter()
        client = await runtime.connect(state)
        login_ms.append(1000 * (time.perf_counter() - started))
        client.abort()
    owner.abort()
    print(f"{args.runs} pairings, mode {args.mode}")
    for name, values in (
        ("pairing, connect to first login", pairing_ms),
        ("reference: EXTERNAL login", login_ms),
    ):
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        mean = statistics.mean(values)
        print(f"{name:34} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  mean {mean:6.1f} ms")
    ratio = percentile(pairing_ms, 0.5) / percentile(login_ms, 0.5)
    print(f"ratio pairing p50 vs login p50: {ratio:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--mode", choices=["token", "xep0257"], default="token")
    args = parser.parse_args()
    from server_ext.net.server_certificate import create_server_certificate
    from server_ext.storage.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        cert = create_server_certificate(data / "server", "localhost")
        with Registry.open(data / "server" / "registry.sqlite3") as registry:
            registry.accounts.add(JID.parse("alice@localhost"), credentials_for("bench-password"))
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
            asyncio.run(main_async(args, data, cert.fingerprint))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
