"""The registry's schema, as sqlite-utils migrations applied in order."""

from __future__ import annotations

import json

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID, prepare_resourcepart
from server_ext.errors import ServerExtError

migrations = Migrations("server_ext.storage.registry")


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


class IdentifierMigrationError(ServerExtError):
    """Stored names that RFC 7622 (PRECIS) refuses or that now name the same account."""


@migrations()
def m006_prepare_identifiers(db: Database) -> None:
    """Re-prepare stored JIDs with RFC 7622 (PRECIS); they were NFC plus lower-case before.

    ASCII names are unchanged. A name PRECIS refuses, or two names that now prepare to the
    same account, stop the migration with the list (nothing is written): an operator decides,
    with the previous version, which account to rename or delete.
    """
    conn = db.conn
    # Parent and child rows are renamed one after the other; the keys agree again at commit.
    conn.execute("PRAGMA defer_foreign_keys = ON")
    problems: list[str] = []

    def prepared(text: str, what: str) -> str:
        try:
            return str(JID.parse(text))
        except InvalidJID as exc:
            problems.append(f"{what} {text!r}: {exc}")
            return text

    accounts = [str(r[0]) for r in conn.execute("SELECT jid FROM accounts")]
    renamed = {old: prepared(old, "account") for old in accounts}
    seen: dict[str, str] = {}
    for old, new in renamed.items():
        if new in seen:
            problems.append(f"accounts {seen[new]!r} and {old!r} are now both {new!r}")
        seen[new] = old
    if problems:
        raise IdentifierMigrationError(
            "the registry has account names that RFC 7622 (PRECIS) refuses or merges: "
            + "; ".join(problems)
            + ". Rename or delete them with the previous version, then start again."
        )
    for old, new in renamed.items():
        if old == new:
            continue
        for table, column in (
            ("accounts", "jid"),
            ("scram_credentials", "jid"),
            ("certificates", "account"),
            ("devices", "account"),
            ("tokens", "account"),
        ):
            conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (new, old))
    for cert_id, subjects in conn.execute("SELECT id, subject_jids FROM certificates").fetchall():
        jids = json.loads(subjects)
        again = []
        for text in jids:
            try:
                again.append(str(JID.parse(text)))
            except InvalidJID:
                again.append(text)  # such a certificate cannot log in any more anyway
        if again != jids:
            conn.execute(
                "UPDATE certificates SET subject_jids = ? WHERE id = ?",
                (json.dumps(again), cert_id),
            )
    for token_id, resource in conn.execute("SELECT id, resource FROM tokens").fetchall():
        try:
            new_resource = prepare_resourcepart(resource)
        except InvalidJID:
            conn.execute(
                "UPDATE tokens SET state = 'cancelled' WHERE id = ? AND state = 'pending'",
                (token_id,),
            )
            continue
        if new_resource != resource:
            conn.execute("UPDATE tokens SET resource = ? WHERE id = ?", (new_resource, token_id))


@migrations()
def m007_server_secrets(db: Database) -> None:
    """Secrets the server keeps across restarts (the key behind unknown users' SCRAM salts)."""
    db.executescript("CREATE TABLE server_secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);")


@migrations()
def m008_certificate_jids(db: Database) -> None:
    """An index of the JIDs each certificate names, kept by triggers.

    Enrolling a device checks that no live device already logs in as its full JID; a scan of
    ``json_each(subject_jids)`` over every certificate of the account made that O(devices):
    about 100 ms per redemption at 100,000 devices of one owner (docs/performance.md,
    "Registry growth"). The triggers keep the index exact however a row is written.
    """
    db.executescript(
        """
        CREATE TABLE certificate_jids (
            jid TEXT NOT NULL,
            certificate_id INTEGER NOT NULL REFERENCES certificates(id) ON DELETE CASCADE,
            PRIMARY KEY (jid, certificate_id)
        ) WITHOUT ROWID;
        INSERT OR IGNORE INTO certificate_jids (jid, certificate_id)
            SELECT j.value, c.id FROM certificates c, json_each(c.subject_jids) j;
        CREATE TRIGGER certificate_jids_insert AFTER INSERT ON certificates BEGIN
            INSERT OR IGNORE INTO certificate_jids (jid, certificate_id)
                SELECT value, NEW.id FROM json_each(NEW.subject_jids);
        END;
        CREATE TRIGGER certificate_jids_update AFTER UPDATE OF subject_jids ON certificates
        BEGIN
            DELETE FROM certificate_jids WHERE certificate_id = OLD.id;
            INSERT OR IGNORE INTO certificate_jids (jid, certificate_id)
                SELECT value, NEW.id FROM json_each(NEW.subject_jids);
        END;
        CREATE TRIGGER certificate_jids_delete AFTER DELETE ON certificates BEGIN
            DELETE FROM certificate_jids WHERE certificate_id = OLD.id;
        END;
        """
    )
