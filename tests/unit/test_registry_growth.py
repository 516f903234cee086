"""The registry's work per operation does not grow with the number of devices of an account.

Work is counted in SQLite virtual-machine steps (a progress handler), not time: the same
operation on an account of 300 devices and of 3,000 must take about as many steps. The bench
with 1k, 100k and 1M certificates is bench/registry_growth_bench.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pairing.protocol.identity import (
    PeerCertificate,
    build_device_certificate,
    certificate_der,
    generate_key,
)
from pairing.protocol.jid import JID
from server_ext.auth.credentials import credentials_for
from server_ext.errors import JIDInUse
from server_ext.model import DeviceState
from server_ext.storage.registry import Registry

OWNER = JID.parse("fleet@example.org")
NOW = "2026-11-01T00:00:00+00:00"


def fill(registry: Registry, count: int) -> None:
    """``count`` devices of OWNER, one certificate each, written straight into the tables."""
    conn = registry.devices._file.conn
    with registry.devices._file.transaction("fill"):
        for i in range(count):
            cur = conn.execute(
                "INSERT INTO devices (account, name, state, added_by, added_via, added_at) "
                "VALUES (?, ?, 'active', 't', 't', ?)",
                (str(OWNER), f"d{i}", NOW),
            )
            conn.execute(
                "INSERT INTO certificates (device_id, account, name, fingerprint, der, "
                "subject_jids, not_before, not_after, state, added_by, added_via, added_at) "
                "VALUES (?,?,?,?,x'',?,?,'2099-01-01T00:00:00+00:00','active','t','t',?)",
                (
                    cur.lastrowid,
                    str(OWNER),
                    f"d{i}",
                    os.urandom(32).hex(),
                    json.dumps([f"{OWNER}/d{i}"]),
                    NOW,
                    NOW,
                ),
            )


@contextmanager
def counted(registry: Registry) -> Iterator[list[int]]:
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn = registry.devices._file.conn
    conn.set_progress_handler(tick, 100)
    try:
        yield steps
    finally:
        conn.set_progress_handler(None, 0)


def steps_for(tmp_path: Path, devices: int, operation: Callable[[Registry], object]) -> int:
    registry = Registry.open(tmp_path / f"r{devices}" / "registry.sqlite3")
    registry.accounts.add(OWNER, credentials_for("pencil"))
    fill(registry, devices)
    registry.devices._file.conn.execute("ANALYZE")
    with counted(registry) as steps:
        operation(registry)
    registry.close()
    return steps[0]


def redeem(registry: Registry) -> None:
    jid = OWNER.with_resource("new")
    token_hash = hashlib.sha256(b"token").hexdigest()
    registry.tokens.add(
        jid,
        name="new",
        token_hash=token_hash,
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
        created_by="t",
        max_outstanding=10,
    )
    cert = PeerCertificate.parse(certificate_der(build_device_certificate(generate_key(), jid)))
    registry.tokens.redeem(token_hash, cert, address="127.0.0.1")


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(redeem, id="token redemption"),
        pytest.param(lambda r: r.devices.for_jid(OWNER.with_resource("d7")), id="devices by JID"),
        pytest.param(
            lambda r: r.devices.set_state(1, DeviceState.REVOKED, actor="t"), id="revocation"
        ),
    ],
)
def test_work_per_operation_is_flat_in_the_devices_of_the_account(
    tmp_path: Path, operation: Callable[[Registry], object]
) -> None:
    small = steps_for(tmp_path, 300, operation)
    large = steps_for(tmp_path, 3000, operation)
    assert large <= 1.5 * small + 20, (small, large)


def test_the_jid_index_follows_every_write(tmp_path: Path) -> None:
    registry = Registry.open(tmp_path / "registry.sqlite3")
    registry.accounts.add(OWNER, credentials_for("pencil"))
    fill(registry, 3)
    jid = OWNER.with_resource("d1")
    assert [d.name for d in registry.devices.for_jid(jid)] == ["d1"]
    # A second live device for the same full JID is refused, found through the index.
    cert = PeerCertificate.parse(certificate_der(build_device_certificate(generate_key(), jid)))
    with pytest.raises(JIDInUse):
        registry.devices.add(OWNER, "again", cert, added_by="t", added_via="t")
    conn = registry.devices._file.conn
    with registry.devices._file.transaction("rewrite"):
        conn.execute(
            "UPDATE certificates SET subject_jids = ? WHERE name = 'd1'",
            (json.dumps([f"{OWNER}/elsewhere"]),),
        )
    assert registry.devices.for_jid(jid) == []
    assert [d.name for d in registry.devices.for_jid(OWNER.with_resource("elsewhere"))] == ["d1"]
    with registry.devices._file.transaction("delete"):
        conn.execute("DELETE FROM certificates WHERE name = 'd1'")
    assert conn.execute("SELECT count(*) FROM certificate_jids").fetchone()[0] == 2


def test_the_migration_indexes_existing_certificates(tmp_path: Path) -> None:
    from sqlite_utils import Database

    from server_ext.storage.migrations import migrations

    path = tmp_path / "old.sqlite3"
    db = Database(path)
    migrations.apply(db, stop_before="m008_certificate_jids")
    db.conn.execute(
        "INSERT INTO accounts (jid, is_admin, created_at) VALUES (?, 0, ?)", (str(OWNER), NOW)
    )
    db.conn.execute(
        "INSERT INTO devices (id, account, name, state, added_by, added_via, added_at) "
        "VALUES (1, ?, 'bot', 'active', 't', 't', ?)",
        (str(OWNER), NOW),
    )
    db.conn.execute(
        "INSERT INTO certificates (device_id, account, name, fingerprint, der, subject_jids, "
        "not_before, not_after, state, added_by, added_via, added_at) "
        "VALUES (1, ?, 'bot', ?, x'', ?, ?, '2099-01-01', 'active', 't', 't', ?)",
        (str(OWNER), "a" * 64, json.dumps([f"{OWNER}/bot", f"{OWNER}/bot"]), NOW, NOW),
    )
    db.conn.commit()
    db.conn.close()
    migrated = Registry.open(path)
    assert [d.name for d in migrated.devices.for_jid(OWNER.with_resource("bot"))] == ["bot"]
