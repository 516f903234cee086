"""Signing in to the web page with an account that lives on a stock server: the password is
checked by a password login to that server (server_ext/stock/password.py), here a private
Prosody instance, over TLS pinned to its certificate."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from pairing.protocol.https_api import XMPPServer
from pairing.protocol.jid import JID
from server_ext.stock.base import StockError
from server_ext.stock.password import password_accepted
from tests.interop.conftest import ProsodyFactory
from tests.support.certificates import CertificateFiles
from tests.support.stock_clients import PASSWORD

pytestmark = pytest.mark.interop

ALICE = JID.parse("alice@localhost")


async def test_the_stock_server_decides_the_web_password(
    prosody: ProsodyFactory, server_cert: CertificateFiles
) -> None:
    instance = prosody()
    instance.adduser("alice", PASSWORD)
    pin = hashlib.sha256(server_cert.certificate.public_bytes(Encoding.DER)).hexdigest()
    xmpp = XMPPServer("127.0.0.1", instance.c2s_port, pin)
    assert await password_accepted(xmpp, ALICE, PASSWORD)
    assert not await password_accepted(xmpp, ALICE, "not the password")
    assert not await password_accepted(xmpp, JID.parse("nobody@localhost"), PASSWORD)
    # A wrong pin: nothing is sent, and the page says the server cannot be asked.
    with pytest.raises(StockError):
        await password_accepted(
            XMPPServer("127.0.0.1", instance.c2s_port, "0" * 64), ALICE, PASSWORD
        )
