"""Password throttling on loopback, with 127.0.0.x source addresses as distinct "addresses".

Issue 8: failed password logins for an account used to make the *right* password fail from
everywhere for 300 s, so an attacker could lock the owner out by failing on purpose.
"""

from __future__ import annotations

from pairing.protocol.identity import PeerCertificate
from tests.integration.conftest import PASSWORD, DeviceFactory, RunningServer, ServerFactory
from tests.support.scramclient import scram_login

ATTACKER = "127.0.0.2"
OWNER = "127.0.0.3"


async def plain(server: RunningServer, password: str, source: str) -> bytes:
    client = await server.raw_tls(source=source)
    try:
        return await client.auth("PLAIN", f"\0alice\0{password}".encode())
    finally:
        await client.close()


async def test_an_attacker_hammering_one_account_cannot_lock_its_owner_out(
    make_server: ServerFactory, make_device: DeviceFactory
) -> None:
    server = await make_server()  # the shipped limits: 5 per account and address, 20 per address
    server.add_user("alice")
    device = make_device("alice@localhost/bot")
    server.registry.devices.add(
        device.jids[0].bare,
        "bot",
        PeerCertificate.parse(device.der),
        added_by="test",
        added_via="test",
    )
    answers = []
    for attempt in range(30):
        answers.append(await plain(server, "wrong guess", ATTACKER))
        if attempt % 5 == 0:
            # A device with a certificate logs in throughout, even from the attacker's address.
            bot = await server.raw_tls(device, source=ATTACKER)
            assert b"<success" in await bot.auth("EXTERNAL", b"")
            assert b"<jid>alice@localhost/bot</jid>" in await bot.bind()
            await bot.close()
    assert all(b"<not-authorized/>" in a for a in answers[:5])
    assert all(b"<temporary-auth-failure/>" in a for a in answers[5:])
    # The attacker's address is held back even with the right password: no oracle.
    assert b"<temporary-auth-failure/>" in await plain(server, PASSWORD, ATTACKER)
    # The owner, from another address, gets in at once, with PLAIN and with SCRAM.
    assert b"<success" in await plain(server, PASSWORD, OWNER)
    client = await server.raw_tls(source=OWNER)
    assert b"<success" in await scram_login(client, "alice", PASSWORD)
    await client.close()


async def test_guessing_spread_over_many_addresses_is_slowed_not_blocked(
    make_server: ServerFactory, make_device: DeviceFactory
) -> None:
    server = await make_server(failed_logins_before_slowdown=10, slowdown_max_delay=0.2)
    server.add_user("alice")
    device = make_device("alice@localhost/bot")
    server.registry.devices.add(
        device.jids[0].bare,
        "bot",
        PeerCertificate.parse(device.der),
        added_by="test",
        added_via="test",
    )
    # Twelve addresses, three guesses each: under every per-address limit, 36 for the account.
    for host in range(10, 22):
        for _ in range(3):
            reply = await plain(server, "wrong guess", f"127.0.0.{host}")
            # Past the soft limit the failures come late, but they are failures, not refusals.
            assert b"<not-authorized/>" in reply, reply
    bot = await server.raw_tls(device, source="127.0.0.10")
    assert b"<success" in await bot.auth("EXTERNAL", b"")
    await bot.close()
    assert b"<success" in await plain(server, PASSWORD, "127.0.0.40")
    assert b"<success" in await plain(server, PASSWORD, "127.0.0.10")  # under its own limit
    # A wrong password is still answered (late) with not-authorized, from anywhere.
    assert b"<not-authorized/>" in await plain(server, "wrong again", "127.0.0.41")


async def test_a_held_back_address_cannot_tell_a_right_password_from_a_wrong_one(
    make_server: ServerFactory,
) -> None:
    """Over its limit, wrong and right passwords get the same answer (base: not-authorized vs
    temporary-auth-failure, which told the guesser when it had found the password)."""
    server = await make_server(failed_logins_per_account_and_address=3)
    server.add_user("alice")
    for _ in range(3):
        assert b"<not-authorized/>" in await plain(server, "wrong guess", ATTACKER)
    wrong = await plain(server, "another guess", ATTACKER)
    right = await plain(server, PASSWORD, ATTACKER)
    assert b"<temporary-auth-failure/>" in wrong
    assert wrong.split(b"retry in")[0] == right.split(b"retry in")[0]
