"""Profiles on disk (pairing/profiles.py): where they live, what a name may be, whole or
absent, and one clear error for a damaged one."""

from __future__ import annotations

from pathlib import Path

import pytest

from pairing.cli_output import EXIT_UNREACHABLE, EXIT_USAGE, BadInput
from pairing.errors import ServerUnreachable
from pairing.profiles import ProfileError, ProfileStore, check_name, config_home, make_cli_identity
from pairing.protocol.address import ServerAddress
from pairing.protocol.jid import JID

ALICE = JID.parse("alice@example.org")


def test_the_xdg_config_home_is_used_when_absolute(tmp_path: Path) -> None:
    assert config_home({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "xmpp-device-pairing"
    # XDG Base Directory: a relative path "is invalid and should be ignored".
    home = Path.home() / ".config" / "xmpp-device-pairing"
    assert config_home({"XDG_CONFIG_HOME": "relative/dir"}) == home
    assert config_home({}) == home


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "-flag", "x" * 65, "café"])
def test_a_profile_name_is_a_plain_directory_name(name: str) -> None:
    with pytest.raises(ProfileError, match="is not a profile name"):
        check_name(name)


def test_a_profile_is_installed_whole_and_read_back(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path / "cfg")
    identity = make_cli_identity(ALICE, host="laptop")
    assert identity.name == f"pairing CLI on laptop ({identity.certificate.fingerprint[:8]})"
    assert identity.certificate.jids == (ALICE,)  # the bare JID: no resource lock
    pending = store.begin("work")
    assert store.names() == []  # the temporary directory is not a profile
    pending.write(
        jid=ALICE, server=ServerAddress("xmpp.example.org", 5222), pin="ab" * 32,
        cafile_pem=None, identity=identity,
    )  # fmt: skip
    assert store.names() == []
    profile = pending.install()
    assert store.names() == ["work"]
    assert profile.jid == ALICE and profile.server == ServerAddress("xmpp.example.org", 5222)
    assert profile.certificate().fingerprint == identity.certificate.fingerprint
    assert profile.keyfile.read_bytes() == identity.key_pem
    with pytest.raises(ProfileError, match="exists already"):
        store.begin("work")
    store.delete("work")
    assert store.names() == [] and list(store.profiles.iterdir()) == []


def test_a_discarded_profile_leaves_nothing(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path / "cfg")
    pending = store.begin("default")
    pending.write(
        jid=ALICE, server=None, pin=None, cafile_pem=b"CA", identity=make_cli_identity(ALICE)
    )
    pending.discard()
    assert list(store.profiles.iterdir()) == []


@pytest.mark.parametrize(
    "content", ["{", "[]", '{"format": 1}', '{"format": 99, "jid": "a@b"}', "\xff"]
)
def test_a_damaged_profile_is_one_clear_error(tmp_path: Path, content: str) -> None:
    store = ProfileStore(tmp_path / "cfg")
    pending = store.begin("default")
    pending.write(
        jid=ALICE, server=None, pin=None, cafile_pem=None, identity=make_cli_identity(ALICE)
    )
    profile = pending.install()
    (profile.directory / "profile.json").write_text(content, encoding="latin-1")
    with pytest.raises(ProfileError, match=r"profile 'default' is damaged \("):
        store.load("default")


def test_the_exit_statuses_are_defined_once() -> None:
    assert ServerUnreachable.exit_code == EXIT_UNREACHABLE == 3
    assert BadInput.exit_code == EXIT_USAGE == 2
