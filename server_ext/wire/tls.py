"""Server-side TLS over memory buffers (pyOpenSSL), so any client certificate reaches SASL.

Python's ``ssl`` module cannot accept an unknown self-signed client certificate: with
``CERT_OPTIONAL`` the handshake fails unless the certificate chains to a loaded CA, and it has
no verify callback. XEP-0257 needs exactly that, so the handshake runs in pyOpenSSL with a
callback that accepts the certificate at the TLS layer; whether it is *trusted* is decided at
SASL EXTERNAL against the registry (XEP-0178 §3, XEP-0257 §2).

:class:`TLSEngine` is sans-I/O: ciphertext in, plaintext out, and the reverse.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from pairing.protocol.identity import PeerCertificate, UnreadableCertificate
from server_ext.errors import ServerExtError

log = logging.getLogger(__name__)

_READ_SIZE = 65536


class TLSError(ServerExtError):
    """The TLS layer failed; the connection cannot continue."""


def _accept_any_certificate(
    conn: SSL.Connection, cert: object, errnum: int, depth: int, ok: int
) -> bool:
    # XEP-0257 §2: self-signed certificates MUST be accepted. The chain is not judged here;
    # the SASL EXTERNAL decision matches the exact certificate against the registry.
    return True


def make_server_context(cert_file: Path, key_file: Path) -> SSL.Context:
    """A TLS 1.2+ server context that requests (but does not require) a client certificate."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(
        SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION
    )
    # Forward-secret AEAD suites only for TLS 1.2; TLS 1.3 suites are all fine.
    ctx.set_cipher_list(b"ECDHE+AESGCM:ECDHE+CHACHA20")
    try:
        ctx.use_certificate_chain_file(str(cert_file))
        ctx.use_privatekey_file(str(key_file))
        ctx.check_privatekey()
    except SSL.Error as exc:
        raise TLSError(f"cannot use the server certificate {cert_file}: {exc}") from exc
    # VERIFY_PEER on a server means "request a certificate"; without FAIL_IF_NO_PEER_CERT a
    # client without one still connects and may log in with a password.
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE, _accept_any_certificate)
    # No session cache or tickets: every login proves possession of the device key afresh,
    # and the server keeps no per-client state between connections.
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.set_options(SSL.OP_NO_TICKET)
    ctx.set_session_id(b"server-ext")
    # OpenSSL keeps a read and a write buffer of about 17 KB each per connection for its whole
    # life; with this mode it frees them whenever they are empty, which for an idle device
    # session (almost all of a fleet's) is nearly always. Measured in docs/performance.md.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    return ctx


TLS_EXPORTER = "tls-exporter"
TLS_UNIQUE = "tls-unique"
TLS_SERVER_END_POINT = "tls-server-end-point"
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"


def server_end_point(cert: x509.Certificate) -> bytes:
    """RFC 5929 §4.1: the certificate's hash with its signature's hash function, where MD5
    and SHA-1 are replaced by SHA-256."""
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(Encoding.DER))
    return digest.finalize()


class TLSEngine:
    """One TLS server session over memory BIOs."""

    __slots__ = ("_conn", "_handshake_done", "_peer", "peer_closed")

    def __init__(self, context: SSL.Context) -> None:
        self._conn = SSL.Connection(context, None)
        self._conn.set_accept_state()
        self._handshake_done = False
        self._peer: PeerCertificate | UnreadableCertificate | None = None
        #: The peer sent close_notify; the plaintext before it was still returned.
        self.peer_closed = False

    @property
    def handshake_done(self) -> bool:
        return self._handshake_done

    @property
    def peer_certificate(self) -> PeerCertificate | UnreadableCertificate | None:
        """The certificate the peer proved possession of in this handshake, parsed once here
        (the boundary); every later decision takes this value."""
        return self._peer

    @property
    def version(self) -> str:
        return self._conn.get_protocol_version_name()

    def channel_binding_types(self) -> tuple[str, ...]:
        """The channel bindings this connection can give SCRAM-*-PLUS, most preferred first.

        ``tls-exporter`` (RFC 9266) on TLS 1.3; ``tls-unique`` (RFC 5929 §3) on TLS 1.2, where
        clients such as slixmpp use it (it is undefined for TLS 1.3, and safe here because
        this server never resumes or renegotiates a session, which the triple-handshake
        attack needs); ``tls-server-end-point`` (RFC 5929 §4) on both.
        """
        if self._conn.get_protocol_version_name() == "TLSv1.3":
            return (TLS_EXPORTER, TLS_SERVER_END_POINT)
        return (TLS_UNIQUE, TLS_SERVER_END_POINT)

    def channel_binding(self, kind: str) -> bytes | None:
        """The channel binding data of ``kind`` for this connection, or None if unavailable."""
        if not self._handshake_done or kind not in self.channel_binding_types():
            return None
        if kind == TLS_EXPORTER:
            # RFC 9266 §2: 32 bytes exported with this label and an empty context.
            return self._conn.export_keying_material(EXPORTER_LABEL, 32, b"")
        if kind == TLS_UNIQUE:
            # RFC 5929 §3.1: the first Finished message of the handshake, which in a full
            # handshake (the only kind this server does) is the client's.
            return self._conn.get_peer_finished()
        own = self._conn.get_certificate(as_cryptography=True)
        return server_end_point(own) if own is not None else None

    def receive(self, data: bytes) -> bytes:
        """Feed ciphertext; return any plaintext it completes. Raises :class:`TLSError`."""
        conn = self._conn
        conn.bio_write(data)
        try:
            if not self._handshake_done:
                try:
                    conn.do_handshake()
                except SSL.WantReadError:
                    return b""
                self._handshake_done = True
                cert = conn.get_peer_certificate(as_cryptography=True)
                if cert is not None:
                    self._peer = UnreadableCertificate.presented(cert)
            chunks: list[bytes] = []
            while True:
                try:
                    chunks.append(conn.recv(_READ_SIZE))
                except SSL.WantReadError:
                    break
                except SSL.ZeroReturnError:
                    self.peer_closed = True
                    break
            return b"".join(chunks)
        except SSL.Error as exc:
            raise TLSError(f"TLS failed: {_describe(exc)}") from exc

    def send(self, plaintext: bytes) -> None:
        """Encrypt ``plaintext``; collect the records with :meth:`outgoing`."""
        try:
            self._conn.sendall(plaintext)
        except SSL.Error as exc:
            raise TLSError(f"TLS failed: {_describe(exc)}") from exc

    def outgoing(self) -> bytes:
        """TLS records waiting to be written to the socket."""
        conn = self._conn
        chunks: list[bytes] = []
        while True:
            try:
                chunk = conn.bio_read(_READ_SIZE)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Send close_notify (best effort)."""
        try:
            self._conn.shutdown()
        except SSL.Error:
            pass


def _describe(exc: SSL.Error) -> str:
    parts: list[str] = []
    for arg in exc.args:
        if isinstance(arg, list):
            parts.extend(str(item[-1]) for item in arg if item)
        else:
            parts.append(str(arg))
    return "; ".join(p for p in parts if p) or exc.__class__.__name__
