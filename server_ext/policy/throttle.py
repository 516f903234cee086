"""Login throttling and connection caps: pure bookkeeping with the clock injected."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

from pairing.protocol.jid import JID

_MAX_KEYS = 10_000  # bounded memory: an attacker cannot grow the tables without limit


class _Window:
    """Failure times per key in a sliding window, oldest keys evicted first."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def retry_after(self, key: Hashable, now: float) -> float:
        times = self._times.get(key)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._times[key]
            return 0.0
        if len(times) < self.limit:
            return 0.0
        return times[-self.limit] + self.window - now

    def add(self, key: Hashable, now: float) -> None:
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = deque(maxlen=self.limit)
            if len(self._times) > _MAX_KEYS:
                self._times.popitem(last=False)
        else:
            self._times.move_to_end(key)
        times.append(now)

    def clear(self, key: Hashable) -> None:
        self._times.pop(key, None)


class LoginThrottle:
    """Failed password logins per account and per address, in a sliding window.

    Only password mechanisms consult it. A valid certificate login is never blocked, so an
    attacker guessing passwords cannot lock the owner's devices out.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        account_limit: int = 5,
        address_limit: int = 20,
        window: float = 300.0,
    ) -> None:
        self._clock = clock
        self._accounts = _Window(account_limit, window)
        self._addresses = _Window(address_limit, window)

    def retry_after(self, account: JID | None, address: str) -> float:
        """Seconds until a password attempt may proceed; 0.0 means now."""
        now = self._clock()
        wait = self._addresses.retry_after(address, now)
        if account is not None:
            wait = max(wait, self._accounts.retry_after(account, now))
        return wait

    def failed(self, account: JID | None, address: str) -> None:
        now = self._clock()
        self._addresses.add(address, now)
        if account is not None:
            self._accounts.add(account, now)

    def succeeded(self, account: JID, address: str) -> None:
        # The owner got in: forget the account's failures, keep the address's.
        self._accounts.clear(account)


class ConnectionCap:
    """How many unauthenticated connections each address holds, with a ceiling."""

    def __init__(self, limit_per_address: int) -> None:
        self._limit = limit_per_address
        self._counts: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        count = self._counts.get(address, 0)
        if count >= self._limit:
            return False
        self._counts[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._counts.get(address, 0) - 1
        if count <= 0:
            self._counts.pop(address, None)
        else:
            self._counts[address] = count

    def count(self, address: str) -> int:
        return self._counts.get(address, 0)
