"""Login throttling and connection caps, with a fake clock."""

from __future__ import annotations

from pairing.protocol.jid import JID
from server_ext.policy.throttle import ConnectionCap, LoginThrottle

ALICE = JID.parse("alice@example.org")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_account_limit_and_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, account_limit=3, address_limit=100, window=60)
    for _ in range(3):
        assert throttle.retry_after(ALICE, "10.0.0.1") == 0
        throttle.failed(ALICE, "10.0.0.1")
    assert throttle.retry_after(ALICE, "10.0.0.2") == 60  # per account, from any address
    clock.now += 59
    assert throttle.retry_after(ALICE, "10.0.0.1") == 1
    clock.now += 1
    assert throttle.retry_after(ALICE, "10.0.0.1") == 0


def test_address_limit_covers_every_account() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, account_limit=100, address_limit=2, window=60)
    throttle.failed(JID.parse("a@x"), "10.0.0.9")
    throttle.failed(JID.parse("b@x"), "10.0.0.9")
    assert throttle.retry_after(JID.parse("c@x"), "10.0.0.9") > 0
    assert throttle.retry_after(None, "10.0.0.9") > 0
    assert throttle.retry_after(JID.parse("c@x"), "10.0.0.8") == 0


def test_success_clears_the_account() -> None:
    throttle = LoginThrottle(clock=Clock(), account_limit=2, address_limit=100, window=60)
    throttle.failed(ALICE, "a")
    throttle.succeeded(ALICE, "a")
    throttle.failed(ALICE, "a")
    assert throttle.retry_after(ALICE, "a") == 0


def test_memory_is_bounded() -> None:
    throttle = LoginThrottle(clock=Clock(), account_limit=1, address_limit=1, window=60)
    for i in range(20_000):
        throttle.failed(None, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(throttle._addresses._times) <= 10_000


def test_connection_cap() -> None:
    cap = ConnectionCap(2)
    assert cap.acquire("a") and cap.acquire("a")
    assert not cap.acquire("a")
    assert cap.acquire("b")
    cap.release("a")
    assert cap.count("a") == 1
    assert cap.acquire("a")
