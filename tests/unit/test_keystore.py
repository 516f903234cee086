"""The device key store: mode 0600 keys, refusals with a way out."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from device_agent.keystore import KeyStore, KeyStoreError
from pairing.protocol.jid import JID

BOT = JID.parse("alice@example.org/bot")


def test_create_writes_a_private_key_only_the_owner_can_read(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "state")
    identity = store.create(BOT)
    assert identity.jid == BOT
    assert stat.S_IMODE(identity.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert store.load() == identity
    assert not list((tmp_path / "state").glob(".tmp-*"))


def test_existing_identity_is_not_overwritten_without_force(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    first = store.create(BOT)
    with pytest.raises(KeyStoreError, match="--force"):
        store.create(BOT)
    second = store.create(BOT, force=True)
    assert second.fingerprint != first.fingerprint


def test_loose_key_permissions_are_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.create(BOT)
    store.key_path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        store.load()


def test_corrupt_or_missing_identity(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    with pytest.raises(KeyStoreError, match="device-agent init"):
        store.load()
    store.create(BOT)
    store.cert_path.write_text("not a certificate")
    with pytest.raises(KeyStoreError, match="unreadable"):
        store.load()


def test_mismatched_key_is_refused(tmp_path: Path) -> None:
    one, two = KeyStore(tmp_path / "one"), KeyStore(tmp_path / "two")
    one.create(BOT)
    two.create(BOT)
    two.cert_path.write_bytes(one.cert_path.read_bytes())
    with pytest.raises(KeyStoreError, match="does not belong"):
        two.load()


def test_a_jid_without_user_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="user part"):
        KeyStore(tmp_path).create(JID.parse("example.org"))
