"""A client that does what MongooseIM's ``http`` auth method is documented to do for SASL
EXTERNAL (MongooseIM ``doc/authentication-methods/http.md``), to test our endpoint against
that contract without a MongooseIM (it is not packaged for Debian).

The contract, as documented:

- the auth service is reached through the outgoing pool's ``connection.host`` and the
  method's path prefix; ``get_certs`` is a **GET** of ``{prefix}get_certs`` with the
  URL-encoded query ``user=<username>&server=<domain>&pass=<password>`` (``pass`` is
  meaningless for methods that need no password);
- with ``auth.http.basic_auth = "username:password"`` every request carries HTTP basic
  authentication;
- the service MUST send a ``Content-Length``;
- ``200`` means success with "all the user's certificates listed one after another (as in a
  PEM file)"; anything else means ``get_certs`` failed (so EXTERNAL is refused);
- a presented certificate is accepted only if its DER equals one of those returned.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import urllib.parse
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


class GetCertsFailed(Exception):
    """What MongooseIM makes of any answer but 200: the login is refused."""


@dataclass(frozen=True)
class MongooseIMHTTPAuth:
    host: str
    port: int
    path_prefix: str  # e.g. "/api/v1/mongooseim/"
    basic_auth: str  # "username:password", as in mongooseim.toml

    def _get(self, method: str, user: str, server: str) -> http.client.HTTPResponse:
        query = urllib.parse.urlencode({"user": user, "server": server, "pass": "undefined"})
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the test's own server; the pool's TLS setting
        connection = http.client.HTTPSConnection(self.host, self.port, context=context)
        token = base64.b64encode(self.basic_auth.encode()).decode()
        connection.request(
            "GET",
            f"{self.path_prefix}{method}?{query}",
            headers={"Authorization": f"Basic {token}"},
        )
        return connection.getresponse()

    def get_certs(self, user: str, server: str) -> list[bytes]:
        """The DERs the service returns; :class:`GetCertsFailed` for any non-200 answer."""
        response = self._get("get_certs", user, server)
        body = response.read()
        if response.status != 200:
            raise GetCertsFailed(f"HTTP {response.status}")
        if response.getheader("Content-Length") != str(len(body)):
            raise GetCertsFailed("no Content-Length (the contract requires one)")
        if not body.strip():
            return []
        certificates = x509.load_pem_x509_certificates(body)
        return [cert.public_bytes(Encoding.DER) for cert in certificates]

    def accepts(self, user: str, server: str, presented_der: bytes) -> bool:
        """MongooseIM's EXTERNAL decision with this method: an exact DER match."""
        try:
            return presented_der in self.get_certs(user, server)
        except GetCertsFailed:
            return False

    def user_exists(self, user: str, server: str) -> bool:
        response = self._get("user_exists", user, server)
        return response.status == 200 and response.read() == b"true"
