"""The registry's schema, as sqlite-utils migrations applied in order."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("server_ext.registry")


@migrations()
def m001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE accounts (
            jid TEXT PRIMARY KEY,
            is_admin INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL
        );
        CREATE TABLE scram_credentials (
            jid TEXT NOT NULL REFERENCES accounts(jid) ON DELETE CASCADE,
            hash_name TEXT NOT NULL,
            salt BLOB NOT NULL,
            iterations INTEGER NOT NULL,
            stored_key BLOB NOT NULL,
            server_key BLOB NOT NULL,
            PRIMARY KEY (jid, hash_name)
        );
        CREATE TABLE certificates (
            id INTEGER PRIMARY KEY,
            account TEXT NOT NULL,
            name TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            der BLOB NOT NULL,
            subject_jids TEXT NOT NULL,
            not_before TEXT NOT NULL,
            not_after TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('active', 'disabled', 'revoked')),
            no_cert_management INTEGER NOT NULL DEFAULT 0,
            added_by TEXT NOT NULL,
            added_via TEXT NOT NULL,
            added_at TEXT NOT NULL,
            last_login_at TEXT,
            last_login_address TEXT
        );
        -- XEP-0257 §3.1: names are unique per account, and stay taken after revocation.
        CREATE UNIQUE INDEX certificates_account_name ON certificates(account, name);
        -- The login path looks certificates up by SHA-256 of the DER.
        CREATE UNIQUE INDEX certificates_fingerprint ON certificates(fingerprint);
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            event TEXT NOT NULL,
            actor TEXT NOT NULL,
            subject TEXT NOT NULL,
            address TEXT,
            detail TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX audit_subject ON audit(subject);
        CREATE INDEX audit_at ON audit(at);
        -- The audit log is append-only, whoever holds the file.
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        """
    )


@migrations()
def m002_tokens(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE tokens (
            id INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            account TEXT NOT NULL,
            resource TEXT NOT NULL,
            name TEXT NOT NULL,
            state TEXT NOT NULL
                CHECK (state IN ('pending', 'redeemed', 'cancelled', 'expired')),
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            redeemed_at TEXT,
            redeemed_fingerprint TEXT
        );
        CREATE INDEX tokens_account_state ON tokens(account, state);
        """
    )


@migrations()
def m003_device_inventory(db: Database) -> None:
    db.executescript(
        """
        ALTER TABLE certificates ADD COLUMN revoked_reason TEXT;
        ALTER TABLE certificates ADD COLUMN state_changed_at TEXT;
        """
    )


@migrations()
def m004_rotation(db: Database) -> None:
    db.executescript("ALTER TABLE certificates ADD COLUMN replaces INTEGER;")


@migrations()
def m005_devices(db: Database) -> None:
    """A device owns the certificates of its rotation chain and is the unit of revocation.

    Each existing chain (linked by ``replaces``) becomes one device named after its newest
    certificate; a device whose newest certificate was revoked has every certificate revoked,
    so an older certificate of a revoked device can never log in again.
    """
    db.executescript(
        """
        CREATE TABLE devices (
            id INTEGER PRIMARY KEY,
            account TEXT NOT NULL,
            name TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('active', 'disabled', 'revoked')),
            no_cert_management INTEGER NOT NULL DEFAULT 0,
            added_by TEXT NOT NULL,
            added_via TEXT NOT NULL,
            added_at TEXT NOT NULL,
            revoked_reason TEXT,
            state_changed_at TEXT
        );
        -- XEP-0257 §3.1: names are unique per account, and stay taken after revocation.
        CREATE UNIQUE INDEX devices_account_name ON devices(account, name);
        ALTER TABLE certificates ADD COLUMN device_id INTEGER REFERENCES devices(id);
        CREATE INDEX certificates_device ON certificates(device_id);
        -- Certificate names now live on the device; the certificates of one chain share it.
        DROP INDEX certificates_account_name;
        """
    )
    conn = db.conn
    device_of: dict[int, int] = {}
    rows = conn.execute(
        "SELECT id, account, name, state, no_cert_management, added_by, added_via, added_at, "
        "revoked_reason, state_changed_at, replaces FROM certificates ORDER BY id"
    ).fetchall()
    for cert_id, account, name, state, no_mgmt, by, via, at, reason, changed, replaces in rows:
        device_id = device_of.get(replaces) if replaces is not None else None
        if device_id is None:
            cur = conn.execute(
                "INSERT INTO devices (account, name, state, no_cert_management, added_by, "
                "added_via, added_at, revoked_reason, state_changed_at) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (account, f"#migrating-{cert_id}", state, no_mgmt, by, via, at, reason, changed),
            )
            device_id = cur.lastrowid
            assert device_id is not None
        else:
            # The newest certificate of a chain carries the device's name and state.
            conn.execute(
                "UPDATE devices SET state = ?, revoked_reason = ?, state_changed_at = ? "
                "WHERE id = ?",
                (state, reason, changed, device_id),
            )
        device_of[cert_id] = device_id
        conn.execute("UPDATE certificates SET device_id = ? WHERE id = ?", (device_id, cert_id))
        conn.execute("UPDATE devices SET name = ? WHERE id = ?", (name, device_id))
    conn.execute(
        "UPDATE certificates SET state = 'revoked', revoked_reason = coalesce(revoked_reason, "
        "(SELECT revoked_reason FROM devices WHERE devices.id = certificates.device_id)) "
        "WHERE state != 'revoked' AND device_id IN (SELECT id FROM devices WHERE state = 'revoked')"
    )
