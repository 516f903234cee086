"""The registry on a real SQLite file: accounts, certificates and the audit log."""

from __future__ import annotations

import datetime as dt
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from pairing.protocol.identity import build_device_certificate, certificate_der, generate_key
from pairing.protocol.jid import JID
from server_ext.errors import (
    AccountExists,
    DuplicateCertificate,
    DuplicateName,
    RegistryError,
    UnknownAccount,
    UnknownCertificate,
)
from server_ext.model import CertState
from server_ext.registry import Registry
from server_ext.sasl.scram import verify_password

ALICE = JID.parse("alice@example.org")


def der(jid: str = "alice@example.org/bot") -> bytes:
    return certificate_der(build_device_certificate(generate_key(), JID.parse(jid)))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry.open(tmp_path / "data" / "registry.sqlite3")
    reg.add_account(ALICE, "pencil")
    return reg


def test_file_modes_and_wal(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "data" / "registry.sqlite3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_accounts_keep_scram_keys_only(registry: Registry, tmp_path: Path) -> None:
    account = registry.get_account(ALICE)
    assert account is not None
    assert {c.hash_name for c in account.scram} == {"sha1", "sha256"}
    creds = registry.scram_credentials(ALICE, "sha256")
    assert creds is not None and verify_password("pencil", creds)
    raw = (tmp_path / "data" / "registry.sqlite3").read_bytes()
    assert b"pencil" not in raw
    with pytest.raises(AccountExists):
        registry.add_account(ALICE, "other")


def test_password_change(registry: Registry) -> None:
    registry.set_password(ALICE, "crayon")
    creds = registry.scram_credentials(ALICE, "sha1")
    assert creds is not None and verify_password("crayon", creds)
    with pytest.raises(UnknownAccount):
        registry.set_password(JID.parse("ghost@example.org"), "x")


def test_certificate_round_trip(registry: Registry) -> None:
    data = der()
    record = registry.add_certificate(
        ALICE, "bot", data, added_by="alice@example.org/phone", added_via="xep-0257"
    )
    assert record.state is CertState.ACTIVE
    assert record.subject_jids == ("alice@example.org/bot",)
    assert registry.certificate_by_fingerprint(record.fingerprint) == record
    assert registry.get_certificate(ALICE, "bot") == record
    assert registry.find_certificates(record.fingerprint[:8]) == [record]


def test_duplicate_name_even_after_revocation(registry: Registry) -> None:
    registry.add_certificate(ALICE, "bot", der(), added_by="t", added_via="t")
    with pytest.raises(DuplicateName):
        registry.add_certificate(ALICE, "bot", der(), added_by="t", added_via="t")
    registry.set_certificate_state(ALICE, "bot", CertState.REVOKED, actor="t")
    with pytest.raises(DuplicateName):
        registry.add_certificate(ALICE, "bot", der(), added_by="t", added_via="t")


def test_duplicate_certificate(registry: Registry) -> None:
    data = der()
    registry.add_certificate(ALICE, "one", data, added_by="t", added_via="t")
    with pytest.raises(DuplicateCertificate):
        registry.add_certificate(ALICE, "two", data, added_by="t", added_via="t")


def test_revocation_is_final(registry: Registry) -> None:
    registry.add_certificate(ALICE, "bot", der(), added_by="t", added_via="t")
    registry.set_certificate_state(ALICE, "bot", CertState.DISABLED, actor="t")
    registry.set_certificate_state(ALICE, "bot", CertState.ACTIVE, actor="t")
    registry.set_certificate_state(ALICE, "bot", CertState.REVOKED, actor="t", reason="stolen")
    with pytest.raises(RegistryError, match="final"):
        registry.set_certificate_state(ALICE, "bot", CertState.ACTIVE, actor="t")
    with pytest.raises(UnknownCertificate):
        registry.set_certificate_state(ALICE, "nope", CertState.REVOKED, actor="t")


def test_deleting_an_account_revokes_its_certificates(registry: Registry) -> None:
    registry.add_certificate(ALICE, "bot", der(), added_by="t", added_via="t")
    revoked = registry.delete_account(ALICE)
    assert [r.name for r in revoked] == ["bot"]
    assert registry.get_certificate(ALICE, "bot").state is CertState.REVOKED  # type: ignore[union-attr]
    assert registry.get_account(ALICE) is None


def test_audit_log_is_append_only(registry: Registry, tmp_path: Path) -> None:
    registry.add_certificate(ALICE, "bot", der(), added_by="alice", added_via="t")
    registry.set_certificate_state(ALICE, "bot", CertState.REVOKED, actor="alice", reason="lost")
    events = [e.event for e in registry.audit_events()]
    assert events == ["account.created", "cert.added", "cert.revoked"]
    revoked = registry.audit_events()[-1]
    assert revoked.detail == {"account": "alice@example.org", "name": "bot", "reason": "lost"}
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
    assert again.get_account(ALICE) is not None


def test_concurrent_adds_of_one_name_give_one_winner(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "data" / "registry.sqlite3"
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def add(i: int) -> None:
        reg = Registry.open(path)
        barrier.wait()
        try:
            reg.add_certificate(
                ALICE, "bot", der(f"alice@example.org/b{i}"), added_by="t", added_via="t"
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
    reader._conn.execute("PRAGMA query_only = ON")
    with pytest.raises(RegistryError, match="cannot register the certificate"):
        reader.add_certificate(ALICE, "bot", der(), added_by="t", added_via="t")
    reader._conn.execute("PRAGMA query_only = OFF")
    assert reader.list_certificates() == []  # nothing half-written


def test_expiry_is_stored(registry: Registry) -> None:
    now = dt.datetime.now(dt.UTC)
    record = registry.add_certificate(ALICE, "bot", der(), added_by="t", added_via="t")
    assert now + dt.timedelta(days=364) < record.not_after < now + dt.timedelta(days=366)


def test_rotation_links_renames_and_survives_a_lost_successor(registry: Registry) -> None:
    first = registry.add_certificate(ALICE, "bot", der(), added_by="t", added_via="token")
    successor = registry.rotate_certificate(first.fingerprint, der(), actor="alice@example.org/bot")
    assert (successor.name, successor.replaces) == ("bot", first.id)
    old = registry.certificate_by_id(first.id)
    assert old is not None and old.name == f"bot ({first.fingerprint[:8]})"
    # The device never stored that key and rotates again from the old certificate.
    again = registry.rotate_certificate(first.fingerprint, der(), actor="alice@example.org/bot")
    assert (again.name, again.replaces) == ("bot", first.id)
    lost = registry.certificate_by_id(successor.id)
    assert lost is not None and lost.state is CertState.REVOKED
    old = registry.certificate_by_id(first.id)
    assert old is not None and old.name == f"bot ({first.fingerprint[:8]})"  # renamed once
    registry.record_login(again.fingerprint, "127.0.0.1")
    retired = registry.retire_replaced(again.fingerprint)
    assert retired is not None and retired.state is CertState.DISABLED
