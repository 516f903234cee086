"""The registry on a real SQLite file: accounts, certificates and the audit log."""

from __future__ import annotations

import datetime as dt
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from pairing.protocol.identity import (
    PeerCertificate,
    build_device_certificate,
    certificate_der,
    generate_key,
)
from pairing.protocol.jid import JID
from server_ext.auth.credentials import credentials_for, verify_password
from server_ext.errors import (
    AccountExists,
    DuplicateCertificate,
    DuplicateName,
    JIDInUse,
    RegistryError,
    UnknownAccount,
    UnknownCertificate,
)
from server_ext.model import CertState, DeviceState, RotationFacts
from server_ext.policy.rotation import RotationRefused, check_successor
from server_ext.storage.registry import Registry

ALICE = JID.parse("alice@example.org")


def der(jid: str = "alice@example.org/bot") -> bytes:
    return certificate_der(build_device_certificate(generate_key(), JID.parse(jid)))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry.open(tmp_path / "data" / "registry.sqlite3")
    reg.accounts.add(ALICE, credentials_for("pencil"))
    return reg


def test_file_modes_and_wal(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "data" / "registry.sqlite3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_accounts_keep_scram_keys_only(registry: Registry, tmp_path: Path) -> None:
    account = registry.accounts.get(ALICE)
    assert account is not None
    assert {c.hash_name for c in account.scram} == {"sha1", "sha256"}
    creds = registry.accounts.scram_credentials(ALICE, "sha256")
    assert creds is not None and verify_password("pencil", creds)
    raw = (tmp_path / "data" / "registry.sqlite3").read_bytes()
    assert b"pencil" not in raw
    with pytest.raises(AccountExists):
        registry.accounts.add(ALICE, credentials_for("other"))


def test_password_change(registry: Registry) -> None:
    registry.accounts.set_credentials(ALICE, credentials_for("crayon"))
    creds = registry.accounts.scram_credentials(ALICE, "sha1")
    assert creds is not None and verify_password("crayon", creds)
    with pytest.raises(UnknownAccount):
        registry.accounts.set_credentials(JID.parse("ghost@example.org"), credentials_for("x"))


def test_certificate_round_trip(registry: Registry) -> None:
    data = der()
    record = registry.devices.add(
        ALICE,
        "bot",
        PeerCertificate.parse(data),
        added_by="alice@example.org/phone",
        added_via="xep-0257",
    )
    assert record.state is CertState.ACTIVE
    assert record.subject_jids == ("alice@example.org/bot",)
    assert registry.devices.by_fingerprint(record.fingerprint) == record
    assert registry.devices.current_named(ALICE, "bot") == record
    assert registry.devices.find(record.fingerprint[:8]) == [record]


def set_state(
    registry: Registry, name: str, state: DeviceState, *, actor: str = "t", reason: str = ""
) -> None:
    device = registry.devices.by_name(ALICE, name)
    registry.devices.set_state(device.id if device else 0, state, actor=actor, reason=reason)


def test_duplicate_name_while_the_device_is_not_revoked(registry: Registry) -> None:
    registry.devices.add(ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="t")
    with pytest.raises(DuplicateName):
        registry.devices.add(
            ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="t"
        )
    set_state(registry, "bot", DeviceState.DISABLED)
    with pytest.raises(DuplicateName):
        registry.devices.add(
            ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="t"
        )


def test_a_revoked_device_gives_its_name_up_and_keeps_its_id_and_history(
    registry: Registry,
) -> None:
    """Issue 10: enrolling a new device under a revoked one's name failed only on the device.
    The new device gets the name; the revoked one keeps its id, certificates and audit rows
    under a name that says when it was revoked (docs/admin.md, "Names")."""
    first = registry.devices.add(
        ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="t"
    )
    set_state(registry, "bot", DeviceState.REVOKED, reason="stolen")
    second = registry.devices.add(
        ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="t"
    )
    assert second.device.id != first.device.id
    assert second.name == "bot" and second.device.state is DeviceState.ACTIVE
    old = registry.devices.get(first.device.id)
    assert old is not None and old.state is DeviceState.REVOKED
    assert old.revoked_reason == "stolen"
    assert old.name.startswith("bot (revoked ") and f"device {old.id})" in old.name
    (old_cert,) = registry.devices.chain(old.id)
    assert old_cert.fingerprint == first.fingerprint and old_cert.name == old.name
    renamed = [e for e in registry.audit.events() if e.event == "device.renamed"]
    assert [(e.subject, e.detail["from"], e.detail["to"]) for e in renamed] == [
        (first.fingerprint, "bot", old.name)
    ]
    # The history of the revoked device is still found under its certificate.
    history = [e.event for e in registry.audit.events(subjects=[first.fingerprint])]
    assert history == ["cert.added", "device.revoked", "device.renamed"]
    # Revoked again and replaced again: every revoked device keeps a name of its own.
    set_state(registry, "bot", DeviceState.REVOKED)
    registry.devices.add(ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="t")
    names = sorted(d.name for d in registry.devices.all(ALICE))
    assert len(set(names)) == 3 and names[0] == "bot"


def test_duplicate_certificate(registry: Registry) -> None:
    data = der()
    registry.devices.add(ALICE, "one", PeerCertificate.parse(data), added_by="t", added_via="t")
    with pytest.raises(DuplicateCertificate):
        registry.devices.add(ALICE, "two", PeerCertificate.parse(data), added_by="t", added_via="t")


def test_revocation_is_final(registry: Registry) -> None:
    registry.devices.add(ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="t")
    set_state(registry, "bot", DeviceState.DISABLED)
    set_state(registry, "bot", DeviceState.ACTIVE)
    set_state(registry, "bot", DeviceState.REVOKED, reason="stolen")
    with pytest.raises(RegistryError, match="final"):
        set_state(registry, "bot", DeviceState.ACTIVE)
    with pytest.raises(UnknownCertificate):
        set_state(registry, "nope", DeviceState.REVOKED)


def test_deleting_an_account_revokes_its_certificates(registry: Registry) -> None:
    registry.devices.add(ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="t")
    revoked = registry.accounts.delete(ALICE)
    assert [r.name for r in revoked] == ["bot"]
    assert registry.devices.current_named(ALICE, "bot").state is CertState.REVOKED  # type: ignore[union-attr]
    assert registry.accounts.get(ALICE) is None


def test_audit_log_is_append_only(registry: Registry, tmp_path: Path) -> None:
    registry.devices.add(
        ALICE, "bot", PeerCertificate.parse(der()), added_by="alice", added_via="t"
    )
    set_state(registry, "bot", DeviceState.REVOKED, actor="alice", reason="lost")
    events = [e.event for e in registry.audit.events()]
    assert events == ["account.created", "cert.added", "device.revoked"]
    revoked = registry.audit.events()[-1]
    device = registry.devices.by_name(ALICE, "bot")
    assert device is not None
    assert revoked.detail == {
        "account": "alice@example.org",
        "name": "bot",
        "device": str(device.id),
        "reason": "lost",
        "certificates": revoked.subject,
    }
    conn = sqlite3.connect(tmp_path / "data" / "registry.sqlite3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET actor = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")


def test_reopen_keeps_data_and_migrations_are_idempotent(
    tmp_path: Path, registry: Registry
) -> None:
    registry.close()
    again = Registry.open(tmp_path / "data" / "registry.sqlite3")
    assert again.accounts.get(ALICE) is not None


def test_concurrent_adds_of_one_name_give_one_winner(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "data" / "registry.sqlite3"
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def add(i: int) -> None:
        reg = Registry.open(path)
        barrier.wait()
        try:
            reg.devices.add(
                ALICE,
                "bot",
                PeerCertificate.parse(der(f"alice@example.org/b{i}")),
                added_by="t",
                added_via="t",
            )
            outcomes.append("ok")
        except DuplicateName:
            outcomes.append("dup")
        finally:
            reg.close()

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["dup"] * 7 + ["ok"]


def test_unwritable_registry_is_a_clear_error(tmp_path: Path, registry: Registry) -> None:
    registry.close()
    path = tmp_path / "data" / "registry.sqlite3"
    reader = Registry.open(path)
    reader._file.conn.execute("PRAGMA query_only = ON")
    with pytest.raises(RegistryError, match="cannot register the certificate"):
        reader.devices.add(ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="t")
    reader._file.conn.execute("PRAGMA query_only = OFF")
    assert reader.devices.certificates() == []  # nothing half-written


def test_expiry_is_stored(registry: Registry) -> None:
    now = dt.datetime.now(dt.UTC)
    record = registry.devices.add(
        ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="t"
    )
    assert now + dt.timedelta(days=364) < record.not_after < now + dt.timedelta(days=366)


BOT_ACTOR = "alice@example.org/bot"


def allow_hourly(clock: list[dt.datetime]) -> Any:
    """The rotation policy as the server applies it, on the test's clock."""

    def allow(facts: RotationFacts) -> None:
        check_successor(facts, now=clock[0], interval=dt.timedelta(hours=1))

    return allow


def test_rotation_links_one_device_and_survives_a_lost_successor(tmp_path: Path) -> None:
    clock = [dt.datetime.now(dt.UTC)]
    registry = Registry.open(tmp_path / "r.sqlite3", clock=lambda: clock[0])
    registry.accounts.add(ALICE, credentials_for("pencil", iterations=4096))
    allow = allow_hourly(clock)
    first = registry.devices.add(
        ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="token"
    )
    successor = registry.devices.add_successor(
        first.fingerprint, PeerCertificate.parse(der()), actor=BOT_ACTOR, allow=allow
    )
    assert (successor.name, successor.replaces) == ("bot", first.id)
    assert successor.device == first.device  # one device, two certificates, one name
    assert [c.id for c in registry.devices.chain(first.device.id)] == [
        first.id,
        successor.id,
    ]
    # The device never stored that key and asks again from the old certificate: refused
    # within the interval, and nothing is written ...
    clock[0] += dt.timedelta(minutes=5)
    with pytest.raises(RotationRefused, match="retry in"):
        registry.devices.add_successor(
            first.fingerprint, PeerCertificate.parse(der()), actor=BOT_ACTOR, allow=allow
        )
    assert len(registry.devices.chain(first.device.id)) == 2
    # ... and allowed after it; the successor it never used is revoked, so there is never
    # more than one successor waiting.
    clock[0] += dt.timedelta(hours=1)
    again = registry.devices.add_successor(
        first.fingerprint, PeerCertificate.parse(der()), actor=BOT_ACTOR, allow=allow
    )
    assert (again.name, again.replaces) == ("bot", first.id)
    lost = registry.devices.certificate(successor.id)
    assert lost is not None and lost.state is CertState.REVOKED
    waiting = [
        c
        for c in registry.devices.chain(first.device.id)
        if c.state is CertState.ACTIVE and c.last_login_at is None and c.id != first.id
    ]
    assert [c.id for c in waiting] == [again.id]
    registry.devices.record_login(again.fingerprint, "127.0.0.1")
    retired = registry.devices.retire_replaced(again.fingerprint)
    assert [c.id for c in retired] == [first.id]
    old = registry.devices.certificate(first.id)
    assert old is not None and old.state is CertState.DISABLED
    assert old.device.state is DeviceState.ACTIVE


def test_revoking_a_device_revokes_its_whole_rotation_chain(registry: Registry) -> None:
    """Regression: revoking by name used to revoke only the successor."""
    first = registry.devices.add(
        ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="token"
    )
    successor = registry.devices.add_successor(
        first.fingerprint, PeerCertificate.parse(der()), actor=BOT_ACTOR, allow=lambda _: None
    )
    set_state(registry, "bot", DeviceState.REVOKED, reason="stolen")
    for cert_id in (first.id, successor.id):
        record = registry.devices.certificate(cert_id)
        assert record is not None
        assert record.state is CertState.REVOKED
        assert record.device.state is DeviceState.REVOKED
    # Revoking again keeps the first reason.
    device = registry.devices.by_name(ALICE, "bot")
    assert device is not None
    again, changed = registry.devices.set_state(
        device.id, DeviceState.REVOKED, actor="t", reason="second thoughts"
    )
    assert not changed and again.revoked_reason == "stolen"
    # A revoked device gets no successor, whatever the interval.
    with pytest.raises(RotationRefused, match="active device"):
        registry.devices.add_successor(
            first.fingerprint,
            PeerCertificate.parse(der()),
            actor=BOT_ACTOR,
            allow=allow_hourly([dt.datetime.now(dt.UTC) + dt.timedelta(days=1)]),
        )


def test_one_live_device_per_full_jid(registry: Registry) -> None:
    registry.devices.add(ALICE, "bot", PeerCertificate.parse(der()), added_by="t", added_via="t")
    with pytest.raises(JIDInUse, match=r"already logs in as alice@example\.org/bot"):
        registry.devices.add(
            ALICE, "bot2", PeerCertificate.parse(der()), added_by="t", added_via="t"
        )
    # Bare-JID certificates are not locked to a resource, so several may coexist.
    registry.devices.add(
        ALICE,
        "laptop",
        PeerCertificate.parse(der("alice@example.org")),
        added_by="t",
        added_via="t",
    )
    registry.devices.add(
        ALICE, "phone", PeerCertificate.parse(der("alice@example.org")), added_by="t", added_via="t"
    )
    # Once the old device is revoked, a new one may take its resource (not its name).
    set_state(registry, "bot", DeviceState.REVOKED)
    registry.devices.add(ALICE, "bot2", PeerCertificate.parse(der()), added_by="t", added_via="t")
    found = registry.devices.for_jid(JID.parse("alice@example.org/bot"))
    assert [(d.name, d.state) for d in found] == [
        ("bot2", DeviceState.ACTIVE),
        ("bot", DeviceState.REVOKED),
    ]


def test_migration_turns_rotation_chains_into_devices(tmp_path: Path) -> None:
    """A registry written before devices existed: a chain whose successor alone was revoked
    (the hole this closes) comes out as one revoked device with every certificate revoked."""
    from sqlite_utils import Database

    from server_ext.storage.migrations import migrations

    path = tmp_path / "old.sqlite3"
    db = Database(path)
    migrations.apply(db, stop_before="m005_devices")  # the schema before devices
    rows = [
        (1, "bot (aaaaaaaa)", "a" * 64, "active", None),
        (2, "bot", "b" * 64, "revoked", 1),
        (3, "cam", "c" * 64, "active", None),
    ]
    for cert_id, name, fp, state, replaces in rows:
        db.conn.execute(
            "INSERT INTO certificates (id, account, name, fingerprint, der, subject_jids, "
            "not_before, not_after, state, no_cert_management, added_by, added_via, added_at, "
            "revoked_reason, replaces) VALUES (?,?,?,?,?,?,?,?,?,1,'t','token',?,?,?)",
            (
                cert_id,
                "alice@example.org",
                name,
                fp,
                b"",
                "[]",
                "2026-11-01T00:00:00+00:00",
                "2027-11-01T00:00:00+00:00",
                state,
                "2026-11-01T00:00:00+00:00",
                "stolen" if state == "revoked" else None,
                replaces,
            ),
        )
    db.conn.commit()
    db.conn.close()
    migrated = Registry.open(path)
    chain = [migrated.devices.certificate(i) for i in (1, 2)]
    assert [(c.name, c.state, c.device.state) for c in chain if c] == [
        ("bot", CertState.REVOKED, DeviceState.REVOKED),
        ("bot", CertState.REVOKED, DeviceState.REVOKED),
    ]
    cam = migrated.devices.certificate(3)
    assert cam is not None and (cam.name, cam.device.state) == ("cam", DeviceState.ACTIVE)
    assert [d.name for d in migrated.devices.all(ALICE)] == ["bot", "cam"]


def old_registry(path: Path, accounts: list[str]) -> None:
    """A registry as versions before RFC 7622 preparation wrote it (NFC plus lower-case)."""
    from sqlite_utils import Database

    from server_ext.auth.credentials import derive_credentials
    from server_ext.storage.migrations import migrations

    db = Database(path)
    migrations.apply(db, stop_before="m006_prepare_identifiers")
    for jid in accounts:
        db.conn.execute(
            "INSERT INTO accounts (jid, is_admin, created_at) VALUES (?, 0, '2026-11-01')", (jid,)
        )
        creds = derive_credentials("pencil", "sha256", iterations=4096)
        db.conn.execute(
            "INSERT INTO scram_credentials VALUES (?,?,?,?,?,?)",
            (jid, "sha256", creds.salt, creds.iterations, creds.stored_key, creds.server_key),
        )
        db.conn.execute(
            "INSERT INTO tokens (token_hash, account, resource, name, state, created_at, "
            "expires_at, created_by) VALUES (?,?,?,?,'pending','2026-11-01','2099-01-01','t')",
            (jid + "-token", jid, "my\u00a0bot", "bot"),
        )
    db.conn.commit()
    db.conn.close()


def test_migration_prepares_stored_names_with_precis(tmp_path: Path) -> None:
    """A fullwidth account stored the old way becomes the account its name prepares to."""
    path = tmp_path / "old.sqlite3"
    old_registry(path, ["\uff41\uff4c\uff49\uff43\uff45@example.org", "bob@example.org"])
    registry = Registry.open(path)
    assert [str(a.jid) for a in registry.accounts.all()] == [
        "alice@example.org",
        "bob@example.org",
    ]
    creds = registry.accounts.scram_credentials(ALICE, "sha256")
    assert creds is not None and verify_password("pencil", creds)
    # OpaqueString maps the no-break space in the token's resource to a space.
    assert {str(t.jid) for t in registry.tokens.all(ALICE)} == {"alice@example.org/my bot"}


def test_migration_refuses_names_that_merge_and_writes_nothing(tmp_path: Path) -> None:
    from server_ext.storage.migrations import IdentifierMigrationError

    path = tmp_path / "old.sqlite3"
    old_registry(path, ["\uff41\uff4c\uff49\uff43\uff45@example.org", "alice@example.org"])
    with pytest.raises(IdentifierMigrationError, match=r"are now both 'alice@example\.org'"):
        Registry.open(path)
    conn = sqlite3.connect(path)
    names = sorted(r[0] for r in conn.execute("SELECT jid FROM accounts"))
    assert names == ["alice@example.org", "\uff41\uff4c\uff49\uff43\uff45@example.org"]


def test_the_fake_salt_key_survives_a_restart(tmp_path: Path) -> None:
    """Unknown users must get the same SCRAM salt after a restart as before, or a probe
    across a restart tells them from real accounts (whose salts never change)."""
    path = tmp_path / "r.sqlite3"
    with Registry.open(path) as first:
        key = first.accounts.server_secret("scram-fake-salt")
        assert len(key) == 32 and first.accounts.server_secret("scram-fake-salt") == key
    with Registry.open(path) as again:
        assert again.accounts.server_secret("scram-fake-salt") == key
        assert again.accounts.server_secret("another") != key
