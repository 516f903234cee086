"""Login throttling and connection caps, with a fake clock."""

from __future__ import annotations

from pairing.protocol.jid import JID
from server_ext.policy.throttle import ConnectionCap, LoginThrottle

ALICE = JID.parse("alice@example.org")
BOB = JID.parse("bob@example.org")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pair_limit_and_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, pair_limit=3, address_limit=100, window=60)
    for _ in range(3):
        assert throttle.retry_after(ALICE, "10.0.0.1") == 0
        throttle.failed(ALICE, "10.0.0.1")
    assert throttle.retry_after(ALICE, "10.0.0.1") == 60  # the failing address waits
    clock.now += 59
    assert throttle.retry_after(ALICE, "10.0.0.1") == 1
    clock.now += 1
    assert throttle.retry_after(ALICE, "10.0.0.1") == 0


def test_an_attacker_cannot_lock_the_owner_out_from_everywhere() -> None:
    """Issue 8: failures from one address made the right password fail everywhere for 300 s."""
    clock = Clock()
    throttle = LoginThrottle(clock=clock, pair_limit=5, address_limit=20, window=300)
    for _ in range(100):
        throttle.failed(ALICE, "203.0.113.66")
    assert throttle.retry_after(ALICE, "203.0.113.66") > 0
    assert throttle.retry_after(None, "203.0.113.66") > 0
    # The owner, from an address that has not been failing, is not held back at all.
    assert throttle.retry_after(ALICE, "198.51.100.7") == 0
    assert throttle.retry_after(None, "198.51.100.7") == 0


def test_address_limit_covers_every_account() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, pair_limit=100, address_limit=2, window=60)
    throttle.failed(JID.parse("a@x"), "10.0.0.9")
    throttle.failed(JID.parse("b@x"), "10.0.0.9")
    assert throttle.retry_after(JID.parse("c@x"), "10.0.0.9") > 0
    assert throttle.retry_after(None, "10.0.0.9") > 0
    assert throttle.retry_after(JID.parse("c@x"), "10.0.0.8") == 0


def test_guessing_from_many_addresses_slows_failures_but_never_blocks() -> None:
    clock = Clock()
    throttle = LoginThrottle(
        clock=clock,
        pair_limit=5,
        address_limit=20,
        account_soft_limit=10,
        window=300,
        base_delay=0.5,
        max_delay=4.0,
    )
    # Ten addresses, each under its own limits: nothing is refused anywhere ...
    for n in range(10):
        throttle.failed(ALICE, f"10.1.0.{n}")
        assert throttle.retry_after(ALICE, f"10.1.0.{n}") == 0
    # ... but from the soft limit on, the account's failures are answered later and later.
    delays = []
    for n in range(10, 16):
        delays.append(throttle.failure_delay(ALICE))
        throttle.failed(ALICE, f"10.1.0.{n}")
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert throttle.failure_delay(BOB) == 0  # other accounts are untouched
    assert throttle.retry_after(ALICE, "192.0.2.1") == 0  # and no address is refused
    clock.now += 301
    assert throttle.failure_delay(ALICE) == 0  # the window moves on


def test_success_clears_the_pair_only() -> None:
    throttle = LoginThrottle(clock=Clock(), pair_limit=2, address_limit=3, window=60)
    throttle.failed(ALICE, "a")
    throttle.succeeded(ALICE, "a")
    throttle.failed(ALICE, "a")
    assert throttle.retry_after(ALICE, "a") == 0
    # The address's failures for other accounts are not forgiven by alice's success.
    throttle.failed(BOB, "a")
    throttle.succeeded(ALICE, "a")
    throttle.failed(BOB, "a")
    assert throttle.retry_after(ALICE, "a") > 0


def test_memory_is_bounded() -> None:
    throttle = LoginThrottle(clock=Clock(), pair_limit=1, address_limit=1, window=60)
    for i in range(20_000):
        address = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        throttle.failed(None, address)
        throttle.failed(JID.parse(f"u{i}@x"), address)
    assert len(throttle._addresses._times) <= 10_000
    assert len(throttle._pairs._times) <= 10_000
    assert len(throttle._accounts._times) <= 10_000


def test_connection_cap() -> None:
    cap = ConnectionCap(2)
    assert cap.acquire("a") and cap.acquire("a")
    assert not cap.acquire("a")
    assert cap.acquire("b")
    cap.release("a")
    assert cap.count("a") == 1
    assert cap.acquire("a")
