"""Profiles: what `pairing login` remembers, so later commands need no flags and no password.

A profile is a directory under the user's XDG configuration directory::

    $XDG_CONFIG_HOME/xmpp-device-pairing/profiles/NAME/   (else ~/.config/...; mode 0700)
        profile.json   the account, the server (if given) and how to recognise it, and
                       server-ext's component when the account lives on a stock server
        client.key     the pairing CLI's own private key (0600), made here, never sent
        client.crt     its certificate, registered for the account over XEP-0257
        ca.pem         a copy of the CA file, when the server is checked with one

It never holds the password: the CLI logs in with its certificate (SASL EXTERNAL, XEP-0178),
and `pairing logout` revokes that certificate on the server before the directory goes.
A profile is written whole into a temporary directory and renamed into place, so a crash
leaves either no profile or a complete one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairing.errors import InvalidJID, PairingError
from pairing.protocol.address import ServerAddress
from pairing.protocol.identity import (
    PeerCertificate,
    build_device_certificate,
    certificate_pem,
    generate_key,
    private_key_pem,
)
from pairing.protocol.jid import JID, prepare_resourcepart
from pairing.secure_files import TEMP_PREFIX, fsync_directory, write_atomic, write_new

__all__ = [
    "APP_DIR",
    "DEFAULT_PROFILE",
    "CLIIdentity",
    "PendingProfile",
    "Profile",
    "ProfileError",
    "ProfileStore",
    "config_home",
    "make_cli_identity",
]

APP_DIR = "xmpp-device-pairing"
DEFAULT_PROFILE = "default"
PROFILE_FILE = "profile.json"
KEY_FILE = "client.key"
CERT_FILE = "client.crt"
CA_FILE = "ca.pem"
FORMAT = 1
#: The CLI's certificate lives as long as a device's; `pairing login` again makes a new one.
CLI_CERT_LIFETIME = dt.timedelta(days=365)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ProfileError(PairingError):
    """A profile is missing, damaged or unsafe; the message says which and what to do."""


def config_home(environ: Mapping[str, str] = os.environ) -> Path:
    """This program's configuration directory.

    XDG Base Directory Specification: ``$XDG_CONFIG_HOME`` when it is set to an absolute
    path (a relative one "is invalid and should be ignored"), else ``~/.config``.
    """
    base = environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / APP_DIR


def check_name(name: str) -> str:
    """A profile name is a directory name: letters, digits, ``.``, ``_``, ``-``; 64 at most."""
    if not _NAME.fullmatch(name):
        raise ProfileError(
            f"{name!r} is not a profile name (letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 64)"
        )
    return name


@dataclass(frozen=True, slots=True)
class CLIIdentity:
    """The pairing CLI's own key and certificate for one account, made on this machine."""

    key_pem: bytes
    cert_pem: bytes
    certificate: PeerCertificate  # cert_pem, parsed
    name: str  # its XEP-0257 name, unique per key: names stay taken after revocation
    resource: str  # what its sessions' resources start with


def make_cli_identity(account: JID, *, host: str | None = None) -> CLIIdentity:
    """A fresh P-256 key and a certificate naming ``account`` for this machine's CLI.

    The certificate names the bare JID, so it is not locked to one resource (XEP-0178 §3,
    XEP-0257 §2): a `pairing listen` left running and a `pairing devices list` typed meanwhile
    each bind a resource of their own, where a resource lock would make the second session
    replace the first (RFC 6120 §7.7.2.2).
    """
    host = host or _hostname()
    key = generate_key()
    x509_cert = build_device_certificate(key, account.bare, valid_for=CLI_CERT_LIFETIME)
    cert = PeerCertificate.from_x509(x509_cert)
    try:
        resource = prepare_resourcepart(f"pairing-{host}")
    except InvalidJID:
        resource = "pairing"
    return CLIIdentity(
        key_pem=private_key_pem(key),
        cert_pem=certificate_pem(x509_cert),
        certificate=cert,
        name=f"pairing CLI on {host} ({cert.fingerprint[:8]})",
        resource=resource,
    )


def _hostname() -> str:
    name = socket.gethostname().split(".")[0].strip()
    return name or "this machine"


@dataclass(frozen=True, slots=True)
class Profile:
    """One saved connection: an account, where its server is, and the CLI's credential."""

    name: str
    directory: Path
    jid: JID  # the account, bare
    server: ServerAddress | None  # None: looked up in DNS (SRV) at each connection
    pin: str | None  # the server certificate's SHA-256, when it is pinned
    has_cafile: bool  # the server is checked with ca.pem in the directory
    certificate_name: str
    fingerprint: str  # SHA-256 of client.crt
    resource: str
    created: str
    # Where the device-management commands go on a stock server (server-ext's XEP-0114
    # component, e.g. pairing.example.org); None: the account's own server offers them.
    component: str | None = None

    @property
    def keyfile(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def certfile(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def cafile(self) -> Path | None:
        return self.directory / CA_FILE if self.has_cafile else None

    def certificate(self) -> PeerCertificate:
        """The CLI certificate, read and checked to be the one this profile registered."""
        try:
            cert = PeerCertificate.parse(self.certfile.read_bytes())
        except OSError as exc:
            raise ProfileError(
                f"profile {self.name!r}: cannot read {self.certfile}: {exc}"
            ) from None
        if cert.fingerprint != self.fingerprint:
            raise ProfileError(
                f"profile {self.name!r}: {self.certfile} is not the certificate it registered"
            )
        return cert

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "jid": str(self.jid),
            "server": str(self.server) if self.server else None,
            "pin": self.pin,
            "cafile": str(self.cafile) if self.cafile else None,
            "certificate_name": self.certificate_name,
            "fingerprint": self.fingerprint,
            "component": self.component,
            "directory": str(self.directory),
            "created": self.created,
        }


class PendingProfile:
    """A profile being written: a private temporary directory until :meth:`install`."""

    def __init__(self, store: ProfileStore, name: str, directory: Path) -> None:
        self.store = store
        self.name = name
        self.directory = directory

    def write(
        self,
        *,
        jid: JID,
        server: ServerAddress | None,
        pin: str | None,
        cafile_pem: bytes | None,
        identity: CLIIdentity,
        component: str | None = None,
    ) -> None:
        # Every file 0600 from its first byte (secure_files.write_new), the key above all.
        write_new(self.directory / KEY_FILE, identity.key_pem, 0o600)
        write_new(self.directory / CERT_FILE, identity.cert_pem, 0o600)
        if cafile_pem is not None:
            write_new(self.directory / CA_FILE, cafile_pem, 0o600)
        record = {
            "format": FORMAT,
            "jid": str(jid.bare),
            "server": str(server) if server else None,
            "pin": pin,
            "cafile": CA_FILE if cafile_pem is not None else None,
            "certificate_name": identity.name,
            "fingerprint": identity.certificate.fingerprint,
            "resource": identity.resource,
            "component": component,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        write_new(self.directory / PROFILE_FILE, json.dumps(record, indent=2).encode(), 0o600)
        fsync_directory(self.directory)

    def set_component(self, component: str | None) -> None:
        """Record where the commands go, once login found out (before :meth:`install`)."""
        path = self.directory / PROFILE_FILE
        record = json.loads(path.read_text(encoding="utf-8"))
        record["component"] = component
        write_atomic(path, json.dumps(record, indent=2).encode(), 0o600)

    def install(self) -> Profile:
        """Rename the finished directory into place; refused if the name was taken meanwhile."""
        target = self.store.directory_of(self.name)
        if target.exists():
            raise ProfileError(f"profile {self.name!r} exists already")
        os.rename(self.directory, target)
        fsync_directory(target.parent)
        return self.store.load(self.name)

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class ProfileStore:
    """The profiles under one configuration directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.profiles = root / "profiles"

    @classmethod
    def default(cls) -> ProfileStore:
        return cls(config_home())

    def directory_of(self, name: str) -> Path:
        return self.profiles / check_name(name)

    def names(self) -> list[str]:
        if not self.profiles.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.profiles.iterdir()
            if _NAME.fullmatch(entry.name) and (entry / PROFILE_FILE).is_file()
        )

    def exists(self, name: str) -> bool:
        return (self.directory_of(name) / PROFILE_FILE).is_file()

    def load(self, name: str) -> Profile:
        directory = self.directory_of(name)
        path = directory / PROFILE_FILE
        if not path.is_file():
            raise ProfileError(self.missing_message(name))
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or record.get("format") != FORMAT:
                raise ValueError("not a profile of this version")
            profile = Profile(
                name=name,
                directory=directory,
                jid=JID.parse(str(record["jid"])).bare,
                server=ServerAddress.parse(record["server"]) if record.get("server") else None,
                pin=str(record["pin"]) if record.get("pin") else None,
                has_cafile=bool(record.get("cafile")),
                certificate_name=str(record["certificate_name"]),
                fingerprint=str(record["fingerprint"]),
                resource=str(record.get("resource") or "pairing"),
                created=str(record.get("created", "")),
                component=str(record["component"]) if record.get("component") else None,
            )
        except (OSError, ValueError, KeyError, TypeError, PairingError) as exc:
            raise ProfileError(f"profile {name!r} is damaged ({path}: {exc})") from None
        _require_private(profile.keyfile, name)
        return profile

    def missing_message(self, name: str) -> str:
        others = self.names()
        have = f" (profiles here: {', '.join(others)})" if others else ""
        if name == DEFAULT_PROFILE:
            return (
                "not logged in: run `pairing login --jid you@example.org` once (or, without a "
                "profile, `pairing --jid you@example.org --password-file FILE COMMAND`)"
                f"{have}"
            )
        return f"no profile {name!r}{have}; `pairing login --profile {name} --jid …` makes it"

    def exists_message(self, name: str) -> str:
        return (
            f"profile {name!r} exists already: `pairing logout --profile {name}` first, "
            "or choose another --profile NAME"
        )

    def begin(self, name: str) -> PendingProfile:
        """Start writing profile ``name``; it must not exist yet."""
        if self.exists(name):
            raise ProfileError(self.exists_message(name))
        _make_private_dir(self.root.parent)
        _make_private_dir(self.root)
        _make_private_dir(self.profiles)
        temp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{name}-", dir=self.profiles))
        os.chmod(temp, 0o700)
        return PendingProfile(self, name, temp)

    def delete(self, name: str) -> None:
        """Remove profile ``name``: renamed aside first, so it is gone at once or not at all."""
        directory = self.directory_of(name)
        aside = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}gone-", dir=self.profiles))
        os.rename(directory, aside / name)
        fsync_directory(self.profiles)
        shutil.rmtree(aside)


def _make_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700 if missing; our own directories are tightened to 0700."""
    if path.is_dir():
        if path.name in (APP_DIR, "profiles"):
            os.chmod(path, 0o700)
        return
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.name in (APP_DIR, "profiles"):
        os.chmod(path, 0o700)  # whatever the umask made of it


def _require_private(keyfile: Path, name: str) -> None:
    """Refuse a key others can read, as ssh does: it logs in as the account."""
    try:
        mode = keyfile.stat().st_mode & 0o777
    except OSError as exc:
        raise ProfileError(f"profile {name!r}: cannot read its key {keyfile}: {exc}") from None
    if mode & 0o077:
        raise ProfileError(
            f"profile {name!r}: its key {keyfile} is readable by others (mode {mode:04o}); "
            f"`chmod 600 {keyfile}` if nobody else could have read it, else `pairing logout "
            f"--profile {name}` and log in again"
        )
