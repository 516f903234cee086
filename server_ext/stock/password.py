"""Checking an account's password on a stock server: a password login to it (docs/web.md).

server-ext keeps no password keys for accounts that live on ejabberd, Prosody or MongooseIM,
so the web page asks the stock server itself, the way any XMPP client would: a TLS connection
to its c2s port (pinned, or checked against the system's CAs as ``[stock] xmpp_pin`` says),
SASL with the password (SCRAM when offered), bind, and a clean close. The stock server's own
rate limits and logs see the attempt as well.
"""

from __future__ import annotations

import secrets

from pairing.errors import AuthenticationFailed, PairingError
from pairing.protocol.address import ServerAddress
from pairing.protocol.https_api import XMPPServer
from pairing.protocol.jid import JID
from pairing.xmpp.connection import TrustAnchor, login, logout, make_client
from server_ext.stock.base import StockError


async def password_accepted(
    xmpp: XMPPServer, account: JID, password: str, *, timeout: float = 10.0
) -> bool:
    """True if the stock server at ``xmpp`` logs ``account`` in with ``password``; False if
    it refuses; :class:`StockError` if it cannot be asked."""
    trust = TrustAnchor(fingerprint=xmpp.pin) if xmpp.pin else TrustAnchor(system=True)
    # A resource of its own, so the check never replaces one of the owner's sessions.
    resource = f"server-ext-web-{secrets.token_hex(4)}"
    client = make_client(
        str(account.bare.with_resource(resource)),
        server=ServerAddress(xmpp.host, xmpp.port),
        trust=trust,
        password=password,
    )
    try:
        await login(client, timeout=timeout)
    except AuthenticationFailed:
        return False
    except PairingError as exc:
        raise StockError(f"cannot ask the XMPP server at {xmpp.host}:{xmpp.port}: {exc}") from None
    await logout(client)
    return True


__all__ = ["password_accepted"]
