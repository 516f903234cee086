"""SCRAM-SHA-256-PLUS over real TLS: a client that binds to the connection logs in; a proof
bound to another connection (a relaying man in the middle) does not.

The client is pyOpenSSL, because Python's ssl module cannot export keying material
(``tls-exporter``, RFC 9266); ``tls-server-end-point`` (RFC 5929) is also checked with scramp,
an independent SCRAM client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from server_ext.wire.tls import server_end_point

PASSWORD = "s3cret pass"  # the `served` fixture's
HEADER = (
    b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams'>"
)
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


class BindingClient:
    """A blocking XMPP client over pyOpenSSL, pinned to the server's certificate."""

    def __init__(self, port: int, pin: str, *, tls12: bool = False) -> None:
        self.plain = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.plain.sendall(HEADER)
        self._read_plain(b"</stream:features>")
        self.plain.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self._read_plain(b"<proceed")
        # pyOpenSSL wants a blocking socket (a timeout makes it raise WantReadError); the
        # test's own timeout bounds a server that never answers.
        self.plain.settimeout(None)
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if tls12:
            context.set_max_proto_version(SSL.TLS1_2_VERSION)
        else:
            context.set_min_proto_version(SSL.TLS1_3_VERSION)
        self.tls = SSL.Connection(context, self.plain)
        self.tls.set_connect_state()
        self.tls.set_tlsext_host_name(b"localhost")
        self.tls.do_handshake()
        peer = self.tls.get_peer_certificate(as_cryptography=True)
        assert peer is not None
        assert hashlib.sha256(peer.public_bytes(Encoding.DER)).hexdigest() == pin
        self.server_certificate = peer
        self.tls.sendall(HEADER)
        self.features = self.read(b"</stream:features>")

    def _read_plain(self, end: bytes) -> bytes:
        data = b""
        while end not in data:
            chunk = self.plain.recv(4096)
            assert chunk, data
            data += chunk
        return data

    def read(self, *ends: bytes) -> bytes:
        data = b""
        while not any(end in data for end in ends):
            chunk = self.tls.recv(4096)
            assert chunk, data
            data += chunk
        return data

    def binding(self, kind: str) -> bytes:
        if kind == "tls-exporter":
            data = self.tls.export_keying_material(b"EXPORTER-Channel-Binding", 32, b"")
            assert isinstance(data, bytes)
            return data
        if kind == "tls-unique":
            finished = self.tls.get_finished()  # the client's own Finished (RFC 5929 §3.1)
            assert finished is not None
            return finished
        return server_end_point(self.server_certificate)

    def scram_plus(self, kind: str, cb_data: bytes, *, password: str = PASSWORD) -> bytes:
        """SCRAM-SHA-256-PLUS, computed here from RFC 5802 §3; returns the server's verdict."""
        gs2 = f"p={kind},,".encode()
        bare = f"n=alice,r={secrets.token_urlsafe(18)}".encode()
        self.tls.sendall(
            f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256-PLUS'>".encode()
            + base64.b64encode(gs2 + bare)
            + b"</auth>"
        )
        reply = self.read(b"</challenge>", b"</failure>")
        if b"<failure" in reply:
            return reply
        first = base64.b64decode(re.search(rb">([^<]+)</challenge>", reply).group(1))  # type: ignore[union-attr]
        fields = dict(p.split("=", 1) for p in first.decode().split(","))
        salted = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
        )
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        without_proof = f"c={base64.b64encode(gs2 + cb_data).decode()},r={fields['r']}"
        auth_message = b",".join([bare, first, without_proof.encode()])
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, "sha256").digest()
        proof = bytes(x ^ y for x, y in zip(client_key, signature, strict=True))
        final = f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
        self.tls.sendall(
            f"<response xmlns='{SASL}'>".encode() + base64.b64encode(final) + b"</response>"
        )
        verdict = self.read(b"</success>", b"</failure>", b"/>")
        if b"<success" in verdict:
            # The server proves it knew the keys, over the same binding (RFC 5802 §3).
            server_key = hmac.new(salted, b"Server Key", "sha256").digest()
            expected = base64.b64encode(
                b"v=" + base64.b64encode(hmac.new(server_key, auth_message, "sha256").digest())
            )
            assert expected in verdict
        return verdict

    def close(self) -> None:
        self.plain.close()


@pytest.mark.parametrize(
    ("kind", "tls12"),
    [
        ("tls-exporter", False),
        ("tls-server-end-point", False),
        ("tls-unique", True),  # what slixmpp binds to over TLS 1.2
        ("tls-server-end-point", True),
    ],
)
def test_a_client_that_binds_logs_in(served: tuple[Path, int, str], kind: str, tls12: bool) -> None:
    _, port, pin = served
    client = BindingClient(port, pin, tls12=tls12)
    try:
        assert b"<mechanism>SCRAM-SHA-256-PLUS</mechanism>" in client.features
        # XEP-0440: the binding types this connection offers.
        assert b"<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>" in client.features
        assert f"<channel-binding type='{kind}'/>".encode() in client.features
        assert b"<success" in client.scram_plus(kind, client.binding(kind))
    finally:
        client.close()


def test_a_proof_bound_to_another_connection_is_refused(served: tuple[Path, int, str]) -> None:
    """A man in the middle terminating TLS can relay the proof, not the binding."""
    _, port, pin = served
    first, second = BindingClient(port, pin), BindingClient(port, pin)
    try:
        relayed = first.binding("tls-exporter")
        assert relayed != second.binding("tls-exporter")
        verdict = second.scram_plus("tls-exporter", relayed)
        assert b"<not-authorized/>" in verdict and b"channel binding" in verdict
    finally:
        first.close()
        second.close()


def test_a_stripped_plus_offer_is_a_refused_downgrade(served: tuple[Path, int, str]) -> None:
    """RFC 5802 §6: 'y' says the client could bind but saw no -PLUS; the server did offer it."""
    _, port, pin = served
    client = BindingClient(port, pin)
    try:
        client.tls.sendall(
            f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>".encode()
            + base64.b64encode(b"y,,n=alice,r=abcdef")
            + b"</auth>"
        )
        verdict = client.read(b"</failure>")
        assert b"<not-authorized/>" in verdict and b"downgrade" in verdict
    finally:
        client.close()


def test_scramps_client_binds_over_python_ssl(served: tuple[Path, int, str]) -> None:
    """An independent client: scramp with tls-server-end-point from Python's ssl socket."""
    import ssl

    from scramp import ScramClient

    _, port, pin = served
    plain = socket.create_connection(("127.0.0.1", port), timeout=10)
    plain.sendall(HEADER)
    data = b""
    while b"</stream:features>" not in data:
        data += plain.recv(4096)
    plain.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    while b"<proceed" not in data:
        data += plain.recv(4096)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # pinned below instead
    with context.wrap_socket(plain, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None and hashlib.sha256(der).hexdigest() == pin

        def read(*ends: bytes) -> bytes:
            got = b""
            while not any(end in got for end in ends):
                got += tls.recv(4096)
            return got

        tls.sendall(HEADER)
        read(b"</stream:features>")
        client = ScramClient(
            ["SCRAM-SHA-256-PLUS"],
            "alice",
            PASSWORD,
            # RFC 5929 §4.1: the hash of the server certificate with its signature's hash
            # (SHA-256 for this ECDSA-with-SHA256 certificate), taken from what the handshake
            # gave Python's ssl. Given as bytes, which every scramp allowed (1.4.18 and up)
            # takes; 1.5 would also read it from the socket, 1.4.18 cannot.
            channel_binding=("tls-server-end-point", hashlib.sha256(der).digest()),
        )
        tls.sendall(
            f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256-PLUS'>".encode()
            + base64.b64encode(client.get_client_first().encode())
            + b"</auth>"
        )
        challenge = read(b"</challenge>")
        client.set_server_first(
            base64.b64decode(re.search(rb">([^<]+)</challenge>", challenge).group(1)).decode()  # type: ignore[union-attr]
        )
        tls.sendall(
            f"<response xmlns='{SASL}'>".encode()
            + base64.b64encode(client.get_client_final().encode())
            + b"</response>"
        )
        success = read(b"</success>")
        client.set_server_final(
            base64.b64decode(re.search(rb">([^<]+)</success>", success).group(1)).decode()  # type: ignore[union-attr]
        )
