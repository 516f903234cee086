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


def _earlier_layout(state: Path, jid: JID = BOT) -> str:
    """A state dir as the earlier versions wrote it: device.key and device.crt as plain files."""
    from pairing.protocol.identity import (
        build_device_certificate,
        certificate_der,
        certificate_pem,
        fingerprint,
        generate_key,
        private_key_pem,
    )
    from pairing.secure_files import write_private, write_public

    key = generate_key()
    cert = build_device_certificate(key, jid)
    state.mkdir(mode=0o700)
    write_private(state / "device.key", private_key_pem(key))
    write_public(state / "device.crt", certificate_pem(cert))
    return fingerprint(certificate_der(cert))


def test_a_state_dir_of_the_earlier_layout_keeps_working_and_moves_on_rotation(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    old = _earlier_layout(state)
    store = KeyStore(state)
    assert store.exists()
    assert store.load().fingerprint == old
    assert store.next_identity()  # rotation reads it too
    new = store.install(*store.next_identity())
    assert new.fingerprint != old
    assert KeyStore(state).load() == new
    # The stable names now lead to the new pair; the old key is gone from the directory.
    assert (state / "device.key").is_symlink() and (state / "device.crt").is_symlink()
    assert (state / "device.crt").read_bytes() == new.cert_path.read_bytes()
    names = sorted(p.name for p in state.iterdir())
    assert names == ["current", "device.crt", "device.key", new.key_path.parent.name]
    assert stat.S_IMODE(new.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(new.key_path.parent.stat().st_mode) == 0o700


def test_leftovers_of_a_crash_are_ignored_then_swept(tmp_path: Path) -> None:
    """A generation written but never made current, and temporary files, change nothing."""
    state = tmp_path / "state"
    store = KeyStore(state)
    first = store.create(BOT)
    # What a kill between "write the generation" and "switch" leaves behind, and a
    # half-written temporary file of the earlier code.
    stray = state / "gen-000999"
    stray.mkdir(mode=0o700)
    (stray / "device.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nhalf")
    (state / ".tmp-abc123").write_bytes(b"-----BEGIN PRIVATE KEY-----\nhalf")
    (state / ".tmp-current-1").symlink_to("gen-000999")
    assert KeyStore(state).load() == first
    second = store.install(*store.next_identity())
    assert second.key_path.parent.name == "gen-001000"  # never reuses a leftover's number
    assert sorted(p.name for p in state.iterdir()) == [
        "current",
        "device.crt",
        "device.key",
        "gen-001000",
    ]
    store.remove()
    assert list(state.iterdir()) == []
    assert not store.exists()


def test_validity_is_the_lifetime_the_certificate_was_made_for(tmp_path: Path) -> None:
    import datetime as dt

    identity = KeyStore(tmp_path).create(BOT, valid_for=dt.timedelta(days=2))
    assert identity.validity == dt.timedelta(days=2)
