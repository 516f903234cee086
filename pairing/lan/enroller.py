"""How the user's client enrolls a paired device: a fresh token, or XEP-0257 ``append``."""

from __future__ import annotations

from pairing.errors import PairingError
from pairing.protocol.jid import JID
from pairing.protocol.pair_messages import DeviceHello, EnrollmentOffer, EnrollMode
from pairing.protocol.uri import HTTPSEnrollmentURI, parse_enrollment_uri
from pairing.xmpp.component import register_certificate
from pairing.xmpp.connection import PairingClient
from pairing.xmpp.saslcert import add_certificate
from pairing.xmpp.tokens import request_token


class AccountEnroller:
    """Uses the user's own logged-in session; the device never sees the password."""

    def __init__(self, client: PairingClient, *, mode: EnrollMode) -> None:
        self.client = client
        self.mode = mode

    def _server(self) -> tuple[str, int, str]:
        address = self.client.server_address
        if not self.client.server_fingerprint:
            raise PairingError("the server's certificate fingerprint is unknown")
        return address.host, address.port, self.client.server_fingerprint

    async def offer_for(self, hello: DeviceHello) -> EnrollmentOffer:
        host, port, fingerprint = self._server()
        if self.mode is EnrollMode.TOKEN:
            grant = await request_token(self.client, hello.resource, name=hello.name or None)
            uri = parse_enrollment_uri(grant.uri)
            if isinstance(uri, HTTPSEnrollmentURI):
                # A stock server: the device enrolls over server-ext's HTTPS API.
                return EnrollmentOffer.for_https(uri)
            jid = JID.parse(grant.jid)
            return EnrollmentOffer(jid, host, port, fingerprint, EnrollMode.TOKEN, uri.token)
        jid = JID.parse(str(self.client.boundjid.bare)).with_resource(hello.resource)
        return EnrollmentOffer(jid, host, port, fingerprint, EnrollMode.XEP0257)

    async def register(self, hello: DeviceHello, der: bytes) -> None:
        # A device may not manage certificates itself: a stolen sensor cannot add keys.
        name = hello.name or hello.resource
        if self.client.service is not None:
            # A stock server: server-ext's component registers it (no XEP-0257 there).
            await register_certificate(
                self.client, self.client.service, name, der, allow_management=False
            )
        else:
            await add_certificate(self.client, name, der, allow_management=False)
