"""Does the registry stay flat as it grows? Lookup, token redemption and revocation at 1k,
100k and 1M registered certificates.

Run:  python bench/registry_growth_bench.py [--sizes 1000,100000,1000000] [--repeat 200]

For each size a fresh registry (the real schema and migrations, SQLite in WAL mode as the
server runs it) is bulk-loaded with that many devices, each with one certificate, one audit
row, all of them devices of ONE account (a fleet's owner: the worst case for anything that
scans an account), plus ``--other-accounts`` accounts of 10 devices each so the tables are
not one account only. Bulk rows are written straight into the tables with ``executemany`` in
one transaction (a real certificate's DER, a unique random fingerprint per row, the device's
full JID as its subject); the schema's triggers fill the JID index as for any other row.

Then, measured with the process's CPU time (``time.process_time``, not wall time) around
each operation, ``--repeat`` times each:
  * lookup: ``devices.by_fingerprint`` of a random registered certificate (the login path);
  * redemption: ``tokens.redeem`` of a freshly issued token with a new real certificate
    (burn, the uniqueness checks of a new device, registration, audit row);
  * revocation: ``devices.set_state(REVOKED)`` of a random device.
The reference is the same operation at the smallest size, in the same run: the ratio
largest / smallest says whether it is flat. Target: every p50 under 1 ms, ratios near 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pairing.protocol.identity import (  # noqa: E402
    PeerCertificate,
    build_device_certificate,
    certificate_der,
    generate_key,
)
from pairing.protocol.jid import JID  # noqa: E402
from server_ext.auth.credentials import credentials_for  # noqa: E402
from server_ext.model import DeviceState  # noqa: E402
from server_ext.storage.registry import Registry  # noqa: E402

OWNER = JID.parse("fleet@localhost")
BATCH = 50_000


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def bulk_load(registry: Registry, size: int, other_accounts: int, der: bytes) -> list[int]:
    """``size`` devices of OWNER (and 10 each of ``other_accounts`` more); returns OWNER's
    device ids. Straight SQL in one transaction: the API would take an hour for a million."""
    conn = registry.devices._file.conn  # the bench's own shortcut, never the server's
    now = dt.datetime.now(dt.UTC)
    added, not_after = iso(now), iso(now + dt.timedelta(days=365))
    credentials = credentials_for("bench-password")
    registry.accounts.add(OWNER, credentials)
    owners = [(OWNER, size)]
    for i in range(other_accounts):
        other = JID.parse(f"user{i}@localhost")
        registry.accounts.add(other, credentials)
        owners.append((other, 10))
    ids: list[int] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for account, count in owners:
            for start in range(0, count, BATCH):
                names = [f"d{i}" for i in range(start, min(start + BATCH, count))]
                first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM devices").fetchone()[0]
                conn.executemany(
                    "INSERT INTO devices (id, account, name, state, no_cert_management, "
                    "added_by, added_via, added_at) VALUES (?,?,?,'active',0,'bench','bench',?)",
                    [(first + k, str(account), n, added) for k, n in enumerate(names)],
                )
                rows = []
                audit = []
                for k, name in enumerate(names):
                    fingerprint = os.urandom(32).hex()
                    jid = f"{account}/{name}"
                    rows.append(
                        (
                            first + k,
                            str(account),
                            name,
                            fingerprint,
                            der,
                            json.dumps([jid]),
                            added,
                            not_after,
                            added,
                        )
                    )
                    audit.append((added, fingerprint))
                conn.executemany(
                    "INSERT INTO certificates (device_id, account, name, fingerprint, der, "
                    "subject_jids, not_before, not_after, state, added_by, added_via, added_at) "
                    "VALUES (?,?,?,?,?,?,?,?,'active','bench','bench',?)",
                    rows,
                )
                conn.executemany(
                    "INSERT INTO audit (at, event, actor, subject) "
                    "VALUES (?, 'certificate.added', 'bench', ?)",
                    audit,
                )
                if account == OWNER:
                    ids += [first + k for k in range(len(names))]
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("ANALYZE")
    return ids


def timed(operation: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        began = time.process_time()
        operation()
        times.append(1000 * (time.process_time() - began))
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[max(int(len(ordered) * 0.99) - 1, 0)], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def measure(size: int, args: argparse.Namespace, folder: Path) -> dict[str, object]:
    der = certificate_der(build_device_certificate(generate_key(), OWNER.with_resource("x")))
    # New devices for the redemptions: real keys and certificates, made before timing.
    fresh = []
    for i in range(args.repeat):
        jid = OWNER.with_resource(f"new{size}-{i}")
        fresh.append(
            (
                jid,
                PeerCertificate.parse(
                    certificate_der(build_device_certificate(generate_key(), jid))
                ),
            )
        )
    path = folder / f"registry-{size}.sqlite3"
    with Registry.open(path) as registry:
        began = time.monotonic()
        ids = bulk_load(registry, size, args.other_accounts, der)
        load_seconds = time.monotonic() - began
        conn = registry.devices._file.conn
        fingerprints = [
            r[0]
            for r in conn.execute(
                "SELECT fingerprint FROM certificates WHERE device_id IN "
                f"({','.join('?' * min(len(ids), 999))})",
                random.sample(ids, min(len(ids), 999)),
            )
        ]
        lookups = iter(random.choices(fingerprints, k=args.repeat))
        lookup = timed(lambda: registry.devices.by_fingerprint(next(lookups)), args.repeat)

        redeemed = iter(fresh)

        def redeem() -> None:
            jid, cert = next(redeemed)
            token_hash = hashlib.sha256(os.urandom(16)).hexdigest()
            registry.tokens.add(
                jid,
                name=jid.resource or "",
                token_hash=token_hash,
                expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
                created_by="bench",
                max_outstanding=10,
            )
            began = time.process_time()
            registry.tokens.redeem(token_hash, cert, address="127.0.0.1")
            redeem_times.append(1000 * (time.process_time() - began))

        redeem_times: list[float] = []
        for _ in range(args.repeat):
            redeem()

        victims = iter(random.sample(ids, args.repeat))
        revoke = timed(
            lambda: registry.devices.set_state(
                next(victims), DeviceState.REVOKED, actor="bench", reason="growth bench"
            ),
            args.repeat,
        )
    size_mib = path.stat().st_size / 2**20
    return {
        "certificates": size + 10 * args.other_accounts,
        "owner_devices": size,
        "load_s": round(load_seconds, 1),
        "file_mib": round(size_mib, 1),
        "lookup": summary(lookup),
        "redeem": summary(redeem_times),
        "revoke": summary(revoke),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--other-accounts", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            row = measure(size, args, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(
        f"{'certificates':>12} {'load':>7} {'lookup p50/p99':>16} {'redeem p50/p99':>16} "
        f"{'revoke p50/p99':>16}   (ms of process CPU)"
    )
    for row in rows:
        cells = [
            f"{row[k]['p50_ms']:.3f}/{row[k]['p99_ms']:.3f}" for k in ("lookup", "redeem", "revoke")
        ]  # type: ignore[index]
        print(
            f"{row['certificates']:>12} {row['load_s']:>6}s "
            f"{cells[0]:>16} {cells[1]:>16} {cells[2]:>16}"
        )
    first, last = rows[0], rows[-1]
    worst = 0.0
    for kind in ("lookup", "redeem", "revoke"):
        ratio = last[kind]["p50_ms"] / max(first[kind]["p50_ms"], 1e-6)  # type: ignore[index]
        worst = max(worst, last[kind]["p50_ms"])  # type: ignore[index]
        print(f"{kind}: p50 at {last['certificates']} / at {first['certificates']}: {ratio:.2f}")
    print(f"target: every p50 under 1 ms -> {'met' if worst < 1.0 else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
