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
