"""The device's identity on disk: its private key (mode 0600) and self-signed certificate.

The key is made here and never leaves the device; only the certificate is shown to anyone.

The key and the certificate are installed as one unit (docs/admin.md, "The device's files")::

    state_dir/current    -> gen-000003            the switch: one symlink, replaced by rename(2)
    state_dir/gen-000003/device.key, device.crt   one generation: a key and its certificate
    state_dir/device.key -> current/device.key    stable names for people and tools
    state_dir/device.crt -> current/device.crt

A new identity (creation or rotation) is written into a fresh generation directory and synced,
then made current by renaming one symlink over ``current``, and the directory is synced. A
crash at any moment therefore leaves the old pair or the new pair, never the key of one with
the certificate of the other; leftovers of a crash (an unreferenced generation, ``.tmp-*``
files) are ignored when reading and removed at the next install or reset. A state directory
of the earlier layout (``device.key`` and ``device.crt`` as plain files) is read as it is and
moves to this layout at its next install.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from device_agent.errors import DeviceAgentError
from pairing.errors import CertificateError
from pairing.protocol.identity import (
    PeerCertificate,
    build_device_certificate,
    certificate_pem,
    generate_key,
    private_key_pem,
)
from pairing.protocol.jid import JID
from pairing.secure_files import TEMP_PREFIX, fsync_directory, write_new

KEY_NAME = "device.key"
CERT_NAME = "device.crt"
CURRENT_NAME = "current"
GENERATION_PREFIX = "gen-"
# build_device_certificate backdates notBefore by this much, as slack for slow clocks, so a
# certificate made "for N days" spans N days plus this.
CLOCK_SLACK = dt.timedelta(minutes=1)


class KeyStoreError(DeviceAgentError):
    """The identity on disk is missing, unreadable or unsafe; the message says what to do."""


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    jid: JID
    cert_path: Path  # the files of this very generation: a key and certificate that match
    key_path: Path
    fingerprint: str
    not_after: dt.datetime
    certificate_der: bytes
    not_before: dt.datetime
    certificate: PeerCertificate  # the same certificate, parsed once when it was read

    @property
    def validity(self) -> dt.timedelta:
        """How long the certificate was made to be valid (a renewed one gets as long)."""
        return self.not_after - self.not_before - CLOCK_SLACK


def _generation_number(name: str) -> int | None:
    digits = name.removeprefix(GENERATION_PREFIX)
    if digits == name or not digits.isascii() or not digits.isdigit():
        return None
    return int(digits)


def _overwrite(path: Path) -> None:
    """Fill a file with zeros before it is unlinked, so a key does not linger in its blocks."""
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.write(b"\0" * size)
        handle.flush()
        os.fsync(handle.fileno())


def _destroy(path: Path) -> None:
    """Remove a file, symlink or generation directory; files are overwritten first."""
    if path.is_symlink():
        path.unlink()
    elif path.is_dir():
        for entry in path.iterdir():
            _destroy(entry)
        path.rmdir()
    elif path.exists():
        _overwrite(path)
        path.unlink()


class KeyStore:
    """One device identity in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        # The stable names: links into the current generation, or the earlier layout's files.
        self.key_path = self.state_dir / KEY_NAME
        self.cert_path = self.state_dir / CERT_NAME
        self._current = self.state_dir / CURRENT_NAME

    def exists(self) -> bool:
        return self._current.is_symlink() or self.key_path.exists() or self.cert_path.exists()

    def create(
        self,
        jid: JID,
        *,
        valid_for: dt.timedelta = dt.timedelta(days=365),
        force: bool = False,
    ) -> DeviceIdentity:
        """Make a new P-256 key and a certificate naming ``jid`` (XEP-0178 xmppAddr)."""
        if self.exists() and not force:
            raise KeyStoreError(
                f"{self.state_dir} already holds a device identity; "
                "use --force to replace it (the old key is destroyed)"
            )
        if not jid.local:
            raise KeyStoreError(f"{jid} has no user part; a device logs in as user@domain")
        key = generate_key()
        return self.install(key, build_device_certificate(key, jid, valid_for=valid_for))

    def next_identity(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A fresh key and certificate for the same JID and lifetime (rotation), not yet saved."""
        current = self.load()
        key = generate_key()
        return key, build_device_certificate(key, current.jid, valid_for=current.validity)

    def install(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> DeviceIdentity:
        """Make ``key`` and ``cert`` this device's identity, as one unit (see the module doc)."""
        staged = self.stage(key, cert)
        try:
            return self.promote(staged)
        except KeyStoreError:
            if self._current_generation() != staged.key_path.parent.name:
                self.discard(staged)
            raise

    def stage(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> DeviceIdentity:
        """Write ``key`` and ``cert`` as a new generation that is *not* current yet.

        Renewal needs the new files before the server has accepted them (the TLS handshake
        presents them), while the current identity must stay until it has: :meth:`promote`
        makes a staged generation current, :meth:`discard` destroys it.
        """
        folder: Path | None = None
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder = self._new_generation()
            write_new(folder / KEY_NAME, private_key_pem(key), 0o600)
            write_new(folder / CERT_NAME, certificate_pem(cert), 0o644)
            fsync_directory(folder)
        except OSError as exc:
            if folder is not None:
                try:
                    _destroy(folder)
                except OSError:
                    pass  # a leftover generation is ignored, and swept at the next install
            raise KeyStoreError(f"cannot write the identity in {self.state_dir}: {exc}") from exc
        return self._read(folder / KEY_NAME, folder / CERT_NAME)

    def staged(self, generation: str) -> DeviceIdentity | None:
        """The staged generation ``generation``, if it is still whole (else None)."""
        if _generation_number(generation) is None or generation == self._current_generation():
            return None
        folder = self.state_dir / generation
        try:
            return self._read(folder / KEY_NAME, folder / CERT_NAME)
        except KeyStoreError:
            return None

    def promote(self, staged: DeviceIdentity) -> DeviceIdentity:
        """Make a staged generation the device's identity; the older ones are destroyed."""
        folder = self._generation_of(staged)
        try:
            self._switch(folder.name)
            self._link_stable_names()
            self._sweep(keep=folder.name)
        except OSError as exc:
            raise KeyStoreError(f"cannot write the identity in {self.state_dir}: {exc}") from exc
        return self.load()

    def discard(self, staged: DeviceIdentity) -> None:
        """Destroy a staged generation that will never be used (its key is overwritten)."""
        folder = self._generation_of(staged)
        if folder.name == self._current_generation():
            raise KeyStoreError(f"{folder.name} is the current identity; it cannot be discarded")
        try:
            _destroy(folder)
        except OSError:
            pass  # ignored when reading, and swept at the next install

    def _generation_of(self, identity: DeviceIdentity) -> Path:
        folder = identity.key_path.parent
        if folder.parent != self.state_dir or _generation_number(folder.name) is None:
            raise KeyStoreError(f"{folder} is not a generation of {self.state_dir}")
        return folder

    def _current_generation(self) -> str | None:
        try:
            return os.readlink(self._current)
        except OSError:
            return None

    def remove(self) -> None:
        """Delete the identity and every leftover of earlier ones (keys are overwritten first)."""
        if not self.state_dir.is_dir():
            return
        try:
            # The stable names first: in the earlier layout they *are* the identity, and while
            # ``current`` exists they are ignored, so a crash here leaves a loadable identity.
            for path in (self.key_path, self.cert_path, self._current):
                _destroy(path)
            self._sweep(keep=None)
        except OSError as exc:
            raise KeyStoreError(f"cannot wipe the identity in {self.state_dir}: {exc}") from exc

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The device key, for signing inside this process only; it is never sent anywhere."""
        identity = self.load()  # refuses loose permissions and mismatches first
        key = serialization.load_pem_private_key(identity.key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def staged_private_key(self, staged: DeviceIdentity) -> ec.EllipticCurvePrivateKey:
        """A staged generation's key, to prove possession of it (never sent anywhere)."""
        identity = self._read(staged.key_path, staged.cert_path)  # mode and match checked
        key = serialization.load_pem_private_key(identity.key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def load(self) -> DeviceIdentity:
        """Read and check the identity; refuses a key that others can read."""
        key_path, cert_path = self._files()
        if not key_path.exists() or not cert_path.exists():
            if self._current.is_symlink():
                raise KeyStoreError(
                    f"the identity in {self.state_dir} is incomplete ({key_path.parent.name} "
                    "lacks its key or certificate); run `device-agent reset` and enroll again"
                )
            raise KeyStoreError(
                f"no device identity in {self.state_dir}; create one with `device-agent init`"
            )
        return self._read(key_path, cert_path)

    def _read(self, key_path: Path, cert_path: Path) -> DeviceIdentity:
        """The identity in these two files, checked: mode 0600, a matching key, an xmppAddr."""
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if mode & 0o077:
            raise KeyStoreError(
                f"{self.key_path} is readable by others (mode {mode:o}); run chmod 600 on it"
            )
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            parsed = PeerCertificate.from_x509(cert)
        except (OSError, ValueError, TypeError, CertificateError) as exc:
            raise KeyStoreError(f"the identity in {self.state_dir} is unreadable: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise KeyStoreError(f"{self.key_path} does not belong to {self.cert_path}")
        if not parsed.jids:
            raise KeyStoreError(f"{self.cert_path} has no xmppAddr")
        return DeviceIdentity(
            jid=parsed.jids[0],
            cert_path=cert_path,
            key_path=key_path,
            fingerprint=parsed.fingerprint,
            not_after=parsed.not_after,
            certificate_der=parsed.der,
            not_before=parsed.not_before,
            certificate=parsed,
        )

    # --- the layout ---------------------------------------------------------------------

    def _files(self) -> tuple[Path, Path]:
        """The key and certificate of the current generation, resolved once so they pair."""
        try:
            target = os.readlink(self._current)
        except FileNotFoundError:
            return self.key_path, self.cert_path  # the earlier layout, or no identity at all
        except OSError as exc:
            raise KeyStoreError(
                f"{self._current} is not a link to a generation ({exc.strerror}); "
                "run `device-agent reset` and enroll again"
            ) from None
        if _generation_number(target) is None:
            raise KeyStoreError(
                f"{self._current} points to {target!r}, not to a generation in {self.state_dir}"
            )
        folder = self.state_dir / target
        return folder / KEY_NAME, folder / CERT_NAME

    def _new_generation(self) -> Path:
        numbers = (_generation_number(entry.name) for entry in self.state_dir.iterdir())
        number = max((n for n in numbers if n is not None), default=0) + 1
        folder = self.state_dir / f"{GENERATION_PREFIX}{number:06d}"
        folder.mkdir(mode=0o700)
        return folder

    def _temporary_name(self, what: str) -> Path:
        return self.state_dir / f"{TEMP_PREFIX}{what}-{secrets.token_hex(6)}"

    def _switch(self, generation: str) -> None:
        """Make ``generation`` current: the one atomic step of an install."""
        link = self._temporary_name(CURRENT_NAME)
        os.symlink(generation, link)
        os.replace(link, self._current)  # rename(2) over the old link: atomic
        fsync_directory(self.state_dir)

    def _link_stable_names(self) -> None:
        for name in (KEY_NAME, CERT_NAME):
            stable = self.state_dir / name
            target = f"{CURRENT_NAME}/{name}"
            if stable.is_symlink() and os.readlink(stable) == target:
                continue
            if stable.is_file() and not stable.is_symlink():
                _overwrite(stable)  # the earlier layout's key, dead since the switch
            link = self._temporary_name(name)
            os.symlink(target, link)
            os.replace(link, stable)
        fsync_directory(self.state_dir)

    def _sweep(self, *, keep: str | None) -> None:
        """Remove generations other than ``keep`` and every temporary file (crash leftovers)."""
        for entry in self.state_dir.iterdir():
            stale_generation = _generation_number(entry.name) is not None and entry.name != keep
            if stale_generation or entry.name.startswith(TEMP_PREFIX):
                _destroy(entry)
        fsync_directory(self.state_dir)
