"""The device's identity on disk: its private key (mode 0600) and self-signed certificate.

The key is made here and never leaves the device; only the certificate is shown to anyone.
"""

from __future__ import annotations

import datetime as dt
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from device_agent.errors import DeviceAgentError
from pairing.errors import CertificateError
from pairing.protocol.identity import (
    build_device_certificate,
    certificate_der,
    certificate_pem,
    fingerprint,
    generate_key,
    private_key_pem,
    xmpp_addrs,
)
from pairing.protocol.jid import JID
from pairing.secure_files import write_private, write_public

KEY_NAME = "device.key"
CERT_NAME = "device.crt"


class KeyStoreError(DeviceAgentError):
    """The identity on disk is missing, unreadable or unsafe; the message says what to do."""


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    jid: JID
    cert_path: Path
    key_path: Path
    fingerprint: str
    not_after: dt.datetime
    certificate_der: bytes
    not_before: dt.datetime


class KeyStore:
    """One device identity in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.key_path = self.state_dir / KEY_NAME
        self.cert_path = self.state_dir / CERT_NAME

    def exists(self) -> bool:
        return self.key_path.exists() or self.cert_path.exists()

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
        cert = build_device_certificate(key, jid, valid_for=valid_for)
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private(self.key_path, private_key_pem(key))
            write_public(self.cert_path, certificate_pem(cert))
        except OSError as exc:
            raise KeyStoreError(f"cannot write the identity in {self.state_dir}: {exc}") from exc
        return self.load()

    def next_identity(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A fresh key and certificate for the same JID and lifetime (rotation), not yet saved."""
        current = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        jid = self.load().jid
        lifetime = current.not_valid_after_utc - current.not_valid_before_utc
        key = generate_key()
        # build_device_certificate backdates by a minute; keep the same total lifetime.
        return key, build_device_certificate(key, jid, valid_for=lifetime - dt.timedelta(minutes=1))

    def install(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> DeviceIdentity:
        """Make ``key`` and ``cert`` this device's identity (each file replaced atomically)."""
        write_private(self.key_path, private_key_pem(key))
        write_public(self.cert_path, certificate_pem(cert))
        return self.load()

    def remove(self) -> None:
        """Delete the key and certificate (the key file is overwritten first)."""
        if self.key_path.exists():
            size = self.key_path.stat().st_size
            with self.key_path.open("r+b") as handle:
                handle.write(b"\0" * size)
            self.key_path.unlink()
        self.cert_path.unlink(missing_ok=True)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The device key, for signing inside this process only; it is never sent anywhere."""
        self.load()  # refuses loose permissions and mismatches first
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def load(self) -> DeviceIdentity:
        """Read and check the identity; refuses a key that others can read."""
        if not self.key_path.exists() or not self.cert_path.exists():
            raise KeyStoreError(
                f"no device identity in {self.state_dir}; create one with `device-agent init`"
            )
        mode = stat.S_IMODE(self.key_path.stat().st_mode)
        if mode & 0o077:
            raise KeyStoreError(
                f"{self.key_path} is readable by others (mode {mode:o}); run chmod 600 on it"
            )
        try:
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            jids = xmpp_addrs(cert)
        except (OSError, ValueError, TypeError, CertificateError) as exc:
            raise KeyStoreError(f"the identity in {self.state_dir} is unreadable: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise KeyStoreError(f"{self.key_path} does not belong to {self.cert_path}")
        if not jids:
            raise KeyStoreError(f"{self.cert_path} has no xmppAddr")
        der = certificate_der(cert)
        return DeviceIdentity(
            jid=jids[0],
            cert_path=self.cert_path,
            key_path=self.key_path,
            fingerprint=fingerprint(der),
            not_after=cert.not_valid_after_utc,
            certificate_der=der,
            not_before=cert.not_valid_before_utc,
        )
