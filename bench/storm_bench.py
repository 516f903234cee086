"""Reconnect storm: the server restarts under N devices running device-agent's reconnect loop.

Run:  python bench/storm_bench.py [--devices 1000] [--agents-per-process 50] [--downtime 5]
                                 [--servers ours,ejabberd,prosody]

For each server in turn, N devices of one account each run ``device_agent.runtime.run`` (the
library API behind ``device-agent run``: slixmpp, SASL EXTERNAL, XEP-0352 inactive, presence,
reconnect with full-jitter backoff), spread over client processes of
``--agents-per-process`` agents. On server-ext every device is enrolled for real (a one-time
token each, redeemed by ``device_agent``'s ``enroll``); on ejabberd 23.01 and Prosody 0.12.3
(Debian's, private instances as in tests/interop) the devices hold certificates of a device CA
the server trusts (``c2s_cafile``, ``mod_auth_ccert``), as in bench/fleet_bench.py. When all
are online the server is stopped (server-ext and Prosody with SIGTERM: every stream is closed
with ``<system-shutdown/>``; ejabberd's test node is killed), kept down for ``--downtime``
seconds and started again on the same port and data. A stock server that is not installed is
skipped with a line saying so.

Measured: the time from the restart until every device is online again, the failed attempts
on the way (the agents' "offline" reports), the server's peak CPU (over 0.5 s windows) and
peak RSS during the storm, and a histogram of the moments devices came back, in 1-second bins
from the restart: jittered backoff shows as a spread, synchronised retries as spikes at the
same offsets. The reference, in the same run, is the cold start: the same agents started
together against a running server; the ratio recovery / cold start says what the restart
cost beyond logging everyone in.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet_bench import (  # noqa: E402
    ejabberd_ca_config,
    prosody_ccert_config,
    raise_fd_limit,
    tree_cpu_seconds,
    tree_rss_kib,
)

OWNER = "alice@localhost"


# --- the server: `storm_bench.py --serve DATA PORT` ----------------------------------------------


def serve(data: Path, port: int) -> None:
    from server_ext.config import ServerConfig
    from server_ext.net.serve import serve as run_server

    raise_fd_limit()
    if os.environ.get("BENCH_SERVER_LOG"):  # the server's log on stderr, at that level
        import logging

        logging.basicConfig(level=os.environ["BENCH_SERVER_LOG"].upper())
    config = ServerConfig(
        domain="localhost",
        data_dir=data,
        port=port,
        direct_tls_port=None,
        max_unauthenticated_per_address=100_000,  # every device comes from 127.0.0.1
    )
    asyncio.run(run_server(config, ready=lambda s: print(f"ready {s.port}", flush=True)))


def start_server(data: Path, port: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(data), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "ready":
        proc.kill()
        raise SystemExit("the server did not start")
    return proc, int(line[1])


# --- agents: `storm_bench.py --agents DIR...` (state directories on stdin) --------------------


async def run_agents(state_dirs: list[Path]) -> None:
    from device_agent.runtime import run

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def reporter(index: int) -> object:
        def report(line: str) -> None:
            if line.startswith("online as"):
                print(f"online {index} {time.time():.3f}", flush=True)
            elif line.startswith("offline"):
                reason = line.removeprefix("offline: ").split("; retrying", 1)[0]
                print(f"offline {index} {time.time():.3f} {reason}", flush=True)

        return report

    tasks = [
        asyncio.create_task(run(d, report=reporter(i), min_delay=1.0, max_delay=30.0, stop=stop))  # type: ignore[arg-type]
        for i, d in enumerate(state_dirs)
    ]
    await loop.run_in_executor(None, sys.stdin.readline)  # a line or EOF: stop
    stop.set()
    await asyncio.wait(tasks, timeout=30)


def agents_main(listing: Path) -> None:
    raise_fd_limit()
    import logging

    logging.disable(logging.CRITICAL)  # slixmpp's warnings about the restart, N times over
    dirs = [Path(p) for p in json.loads(listing.read_text())]
    asyncio.run(run_agents(dirs))


# --- enrollment ----------------------------------------------------------------------------------


async def enroll_all(data: Path, folder: Path, port: int, count: int) -> list[Path]:
    import logging

    from device_agent.enrollment import enroll
    from device_agent.keystore import KeyStore
    from pairing.protocol.jid import JID
    from server_ext.admin.token_issuer import issue_token
    from server_ext.net.server_certificate import create_server_certificate
    from server_ext.policy.tokens import TokenRules
    from server_ext.storage.registry import Registry

    # slixmpp leaves a pending filter task behind per enrollment client: noise, N times over.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    cert = create_server_certificate(data, "localhost")  # the one already made: never replaced
    rules = TokenRules(max_outstanding=count + 1)
    gate = asyncio.Semaphore(20)
    dirs: list[Path] = []
    with Registry.open(data / "registry.sqlite3") as registry:
        uris = [
            issue_token(
                registry,
                rules,
                account=JID.parse(OWNER),
                resource=f"s{i}",
                name=None,
                ttl=None,
                created_by="bench",
            ).uri(host="127.0.0.1", port=port, fingerprint=cert.fingerprint)
            for i in range(count)
        ]

    async def one(i: int) -> None:
        async with gate:
            store = KeyStore(folder / f"s{i}")
            await enroll(store, uris[i])
            dirs.append(store.state_dir)

    await asyncio.gather(*(one(i) for i in range(count)))
    return sorted(dirs)


# --- the storm -----------------------------------------------------------------------------------


class Reports:
    """Every line the agent processes print, with the moment it was read."""

    def __init__(self, procs: list[subprocess.Popen[str]]) -> None:
        self.lines: queue.Queue[tuple[int, str, int, float]] = queue.Queue()
        self.reasons: collections.Counter[str] = collections.Counter()  # why attempts failed
        self.failed_at: list[float] = []  # when, by the clock the agents report with
        for number, proc in enumerate(procs):
            threading.Thread(target=self._pump, args=(number, proc), daemon=True).start()

    def _pump(self, number: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.rstrip("\n").split(maxsplit=3)
            if len(parts) >= 3 and parts[0] in ("online", "offline"):
                if len(parts) == 4:
                    # The address and port vary per attempt; the reason is what counts.
                    self.reasons[re.sub(r"127\.0\.0\.1:\d+", "the server", parts[3])] += 1
                self.lines.put((number, parts[0], int(parts[1]), float(parts[2])))

    def until_online(
        self, expected: int, deadline: float, sample: object = None
    ) -> tuple[dict[tuple[int, int], float], int]:
        """Wait until ``expected`` distinct devices reported online; returns their times and
        the number of offline reports meanwhile."""
        online: dict[tuple[int, int], float] = {}
        offline = 0
        said = time.monotonic()
        while len(online) < expected and time.monotonic() < deadline:
            if time.monotonic() - said > 10:
                print(f"  ... {len(online)} online, {offline} failed attempts", flush=True)
                said = time.monotonic()
            if callable(sample):
                sample()
            try:
                number, kind, index, at = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "online":
                online.setdefault((number, index), at)
            else:
                offline += 1
                self.failed_at.append(at)
        return online, offline


def histogram(offsets: list[float], width: int = 50) -> list[str]:
    if not offsets:
        return []
    bins: dict[int, int] = {}
    for offset in offsets:
        bins[int(offset)] = bins.get(int(offset), 0) + 1
    top = max(bins.values())
    return [
        f"  {second:4d}-{second + 1:<4d}s {bins.get(second, 0):6d} "
        + "#" * round(width * bins.get(second, 0) / top)
        for second in range(0, max(bins) + 1)
    ]


# --- the servers under the storm ---------------------------------------------------------------


@dataclass
class Target:
    """One server with its devices' state directories, and how to stop and start it."""

    name: str
    port: int
    state_dirs: list[Path]
    pid: Callable[[], int]
    stop: Callable[[], None]
    start: Callable[[], None]  # again, on the same port and data
    close: Callable[[], None]  # for good, at the end
    how_stopped: str


def ours(folder: Path, count: int) -> Target:
    from pairing.protocol.jid import JID
    from server_ext.auth.credentials import credentials_for
    from server_ext.net.server_certificate import create_server_certificate
    from server_ext.storage.registry import Registry

    data = folder / "server"
    create_server_certificate(data, "localhost")
    with Registry.open(data / "registry.sqlite3") as registry:
        registry.accounts.add(JID.parse(OWNER), credentials_for("bench-password"))
    proc, port = start_server(data, 0)
    began = time.monotonic()
    dirs = asyncio.run(enroll_all(data, folder / "devices", port, count))
    print(f"  {len(dirs)} devices enrolled with tokens in {time.monotonic() - began:.1f} s")
    running = [proc]

    def stop() -> None:
        running[0].send_signal(signal.SIGTERM)  # every stream gets <system-shutdown/>
        running[0].wait(timeout=30)

    def start() -> None:
        running[0], _ = start_server(data, port)

    def close() -> None:
        running[0].terminate()
        running[0].wait(timeout=30)

    return Target("server-ext", port, dirs, lambda: running[0].pid, stop, start, close, "SIGTERM")


def stock_state_dirs(
    folder: Path, count: int, port: int, server_cert: Path
) -> tuple[Path, list[Path]]:
    """Device CA, and ``count`` device-agent state directories with CA-signed certificates
    (the kind ejabberd's ``c2s_cafile`` and Prosody's ``mod_auth_ccert`` accept), pinned to
    the stock server's certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from bench.fleet_bench import make_devices
    from device_agent.enrollment import ServerSettings
    from device_agent.keystore import KeyStore
    from pairing.protocol.identity import certificate_der, fingerprint

    ca, devices = make_devices(folder / "certificates", count)
    pin = fingerprint(certificate_der(x509.load_pem_x509_certificate(server_cert.read_bytes())))
    dirs = []
    for device in devices:
        state = folder / "devices" / device.resource
        key = load_pem_private_key(device.key.read_bytes(), None)
        cert = x509.load_pem_x509_certificate(device.cert.read_bytes())
        KeyStore(state).install(key, cert)  # type: ignore[arg-type]
        ServerSettings("127.0.0.1", port, pin, f"{OWNER}/{device.resource}").save(state)
        dirs.append(state)
    return ca, dirs


def ejabberd(folder: Path, count: int) -> Target:
    from tests.support.certificates import server_certificate
    from tests.support.stock_servers import ErlangWorld

    server_cert = server_certificate(folder / "server-cert", "localhost")
    world = ErlangWorld.start(folder / "erlang")
    # The device CA must exist before the node's config names it: the ports are fixed
    # first so that the state directories can name them too.
    from tests.support.stock_servers import free_port

    ports = (free_port(), free_port(), free_port())
    ca, dirs = stock_state_dirs(folder, count, ports[0], server_cert.cert)
    # XEP-0352, as ejabberd's default configuration has it (queue_presence: true).
    config = ejabberd_ca_config(server_cert, ca, ports=ports, modules=("mod_client_state",))
    node = world.node(folder / "ejabberd", config)

    def start() -> None:
        if node.log_path.exists():  # its readiness is read from the log: a fresh one
            node.log_path.rename(node.log_path.with_suffix(f".{time.time():.0f}"))
        node.start()

    def close() -> None:
        node.stop()
        world.stop()

    start()
    node.register("alice", "bench-password")  # mnesia keeps it across the restart
    assert node.process is not None
    return Target(
        "ejabberd 23.01",
        ports[0],
        dirs,
        lambda: node.process.pid if node.process else 0,
        node.stop,
        start,
        close,
        "SIGKILL",
    )


def prosody(folder: Path, count: int) -> Target:
    from tests.support.certificates import server_certificate
    from tests.support.stock_servers import ProsodyInstance, free_port

    server_cert = server_certificate(folder / "server-cert", "localhost")
    ports = (free_port(), free_port(), free_port())
    ca, dirs = stock_state_dirs(folder, count, ports[0], server_cert.cert)
    # XEP-0352, in Prosody 0.12's default configuration.
    config = prosody_ccert_config(folder, server_cert, ca, ports=ports, modules=("csi_simple",))
    instance = ProsodyInstance(folder / "prosody", config)
    instance.start()
    assert instance.process is not None
    return Target(
        "Prosody 0.12.3",
        ports[0],
        dirs,
        lambda: instance.process.pid if instance.process else 0,
        instance.stop,
        instance.start,
        instance.stop,
        "SIGTERM",
    )


def _first_accept(port: int, accepted: list[float], timeout: float = 60.0) -> None:
    """Append the time the port first accepts a TCP connection (polled every 5 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                accepted.append(time.time())
                return
        except OSError:
            time.sleep(0.005)


SERVERS: dict[str, Callable[[Path, int], Target]] = {
    "ours": ours,
    "ejabberd": ejabberd,
    "prosody": prosody,
}


def storm(target: Target, folder: Path, args: argparse.Namespace) -> dict[str, object]:
    """The cold start, then a restart under the running agents; the figures of both."""
    dirs = target.state_dirs
    procs: list[subprocess.Popen[str]] = []
    try:
        cold_began = time.time()
        for start in range(0, len(dirs), args.agents_per_process):
            listing = folder / f"agents-{start}.json"
            part = dirs[start : start + args.agents_per_process]
            listing.write_text(json.dumps([str(d) for d in part]))
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--agents", str(listing)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        reports = Reports(procs)
        cold, cold_failures = reports.until_online(len(dirs), time.monotonic() + args.timeout)
        cold_seconds = max(cold.values()) - cold_began if cold else float("nan")
        print(f"  cold start: {len(cold)} online in {cold_seconds:.1f} s", flush=True)
        cold_reasons = dict(reports.reasons.most_common(5))
        reports.reasons.clear()
        reports.failed_at.clear()
        time.sleep(2)

        # The storm: stop, wait, start again on the same port.
        down_at = time.time()
        target.stop()
        time.sleep(args.downtime)
        # "Up" is the first moment the port accepts a connection: a server's own readiness
        # signal (a log line, a registration after it) can come after devices got in.
        accepted: list[float] = []
        watcher = threading.Thread(target=_first_accept, args=(target.port, accepted))
        watcher.start()
        target.start()
        watcher.join(timeout=60)
        up_at = min(accepted[0], time.time()) if accepted else time.time()
        pid = target.pid()
        peak = {"cpu": 0.0, "rss": 0}
        last = [time.monotonic(), tree_cpu_seconds(pid)]

        def sample() -> None:
            now = time.monotonic()
            if now - last[0] >= 0.5:
                cpu = tree_cpu_seconds(pid)
                peak["cpu"] = max(peak["cpu"], (cpu - last[1]) / (now - last[0]))
                last[0], last[1] = now, cpu
                peak["rss"] = max(peak["rss"], tree_rss_kib(pid))

        cpu_before = tree_cpu_seconds(pid)
        back, failures = reports.until_online(len(dirs), time.monotonic() + args.timeout, sample)
        storm_cpu = tree_cpu_seconds(pid) - cpu_before
    finally:
        for proc in procs:
            try:
                if proc.stdin is not None:
                    proc.stdin.write("stop\n")
                    proc.stdin.close()
            except OSError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    offsets = sorted(at - up_at for at in back.values())
    recovery = offsets[-1] if offsets else float("nan")
    bins: dict[int, int] = {}
    for offset in offsets:
        bins[int(max(offset, 0.0))] = bins.get(int(max(offset, 0.0)), 0) + 1
    result: dict[str, object] = {
        "server": target.name,
        "stopped_with": target.how_stopped,
        "devices": len(dirs),
        "cold_start_online": len(cold),
        "cold_start_s": round(cold_seconds, 2),
        "cold_start_failures": cold_failures,
        "downtime_s": round(up_at - down_at, 2),
        "back_online": len(back),
        "recovery_s": round(recovery, 2),
        "failed_attempts": failures,
        "failed_once_up": len([at for at in reports.failed_at if at >= up_at]),
        "peak_cpu_pct": round(100 * peak["cpu"], 1),
        "peak_rss_mib": round(peak["rss"] / 1024, 1),
        "storm_cpu_ms_per_device": round(1000 * storm_cpu / max(len(back), 1), 2),
        "largest_1s_bin": max(bins.values()) if bins else 0,
        "early": len([o for o in offsets if o < 0]),
        "cold_start_failure_reasons": cold_reasons,
        "storm_failure_reasons": dict(reports.reasons.most_common(5)),
    }
    print(json.dumps(result), flush=True)
    print(f"  devices back online after the restart, per second ({len(back)} of {len(dirs)}):")
    for line in histogram([max(o, 0.0) for o in offsets]):
        print(line)
    if cold_seconds == cold_seconds and cold_seconds > 0:
        print(f"  ratio recovery after restart / cold start: {recovery / cold_seconds:.2f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--agents-per-process", type=int, default=50)
    parser.add_argument("--downtime", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for all")
    parser.add_argument(
        "--servers",
        default="ours,ejabberd,prosody",
        help="which servers, in this order (ours, ejabberd, prosody)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--agents", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]))
        return
    if args.agents:
        agents_main(Path(args.agents))
        return

    raise_fd_limit()
    results = []
    for name in args.servers.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"== {name}: {args.devices} devices of one account", flush=True)
            try:
                target = SERVERS[name](Path(tmp), args.devices)
            except Exception as exc:
                if name == "ours":
                    raise
                print(f"  skipped: {exc}", flush=True)  # not installed, or would not start
                continue
            try:
                results.append(storm(target, Path(tmp), args))
            finally:
                target.close()
    print()
    print(
        "| server | devices | cold start | restart: all back after | failed once up | "
        "server CPU per device | peak CPU | peak RSS | largest 1 s bin |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['server']} | {r['devices']} | {r['cold_start_s']} s | {r['recovery_s']} s | "
            f"{r['failed_once_up']} | {r['storm_cpu_ms_per_device']} ms | {r['peak_cpu_pct']} % | "
            f"{r['peak_rss_mib']} MiB | {r['largest_1s_bin']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
