"""Login throttling and connection caps: pure bookkeeping with the clock injected."""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

from pairing.protocol.jid import JID

_MAX_KEYS = 10_000  # bounded memory: an attacker cannot grow the tables without limit


class _Window:
    """Failure times per key in a sliding window, oldest keys evicted first."""

    def __init__(self, limit: int, window: float, *, keep: int | None = None) -> None:
        self.limit = limit
        self.window = window
        self._keep = max(limit, keep or 0)
        self._times: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def _live(self, key: Hashable, now: float) -> deque[float] | None:
        times = self._times.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._times[key]
            return None
        return times

    def count(self, key: Hashable, now: float) -> int:
        """Failures of ``key`` within the window (at most ``keep`` are remembered)."""
        times = self._live(key, now)
        return 0 if times is None else len(times)

    def retry_after(self, key: Hashable, now: float) -> float:
        times = self._live(key, now)
        if times is None or len(times) < self.limit:
            return 0.0
        return times[-self.limit] + self.window - now

    def add(self, key: Hashable, now: float) -> None:
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = deque(maxlen=self._keep)
            if len(self._times) > _MAX_KEYS:
                self._times.popitem(last=False)
        else:
            self._times.move_to_end(key)
        times.append(now)

    def clear(self, key: Hashable) -> None:
        self._times.pop(key, None)


class LoginThrottle:
    """Failed password logins, counted three ways in one sliding window.

    In the spirit of fail2ban and Prosody's ``mod_limit_auth``, the address that fails is the
    one that waits; an account is never locked from everywhere, or an attacker could lock its
    owner out simply by failing on purpose:

    - per (account, address), ``pair_limit``: that address may not try that account's password
      until the window has moved on, right or wrong (the same answer: no oracle);
    - per address, ``address_limit``: that address may not try any password or token;
    - per account from all addresses, ``account_soft_limit``: a guessing spread over many
      addresses. The account is not blocked; its *failures* are answered late, doubling from
      ``base_delay`` to ``max_delay``. The right password is still answered at once from any
      address that is not itself over a limit above.

    Only password mechanisms and token redemption consult it: certificate (EXTERNAL) logins
    never do, so no number of password failures keeps the owner's devices out.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        pair_limit: int = 5,
        address_limit: int = 20,
        account_soft_limit: int = 50,
        window: float = 300.0,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
    ) -> None:
        self._clock = clock
        self._pairs = _Window(pair_limit, window)
        self._addresses = _Window(address_limit, window)
        self._account_soft_limit = account_soft_limit
        self._base_delay = base_delay
        self._max_delay = max_delay
        # Enough failures remembered per account to reach max_delay by doubling.
        doublings = max(0, math.ceil(math.log2(max_delay / base_delay))) if base_delay > 0 else 0
        self._accounts = _Window(account_soft_limit, window, keep=account_soft_limit + doublings)

    def retry_after(self, account: JID | None, address: str) -> float:
        """Seconds until this address may try a password (for ``account``); 0.0 means now."""
        now = self._clock()
        wait = self._addresses.retry_after(address, now)
        if account is not None:
            wait = max(wait, self._pairs.retry_after((account, address), now))
        return wait

    def failure_delay(self, account: JID) -> float:
        """How long to hold back the answer to a failed password for ``account``."""
        excess = self._accounts.count(account, self._clock()) - self._account_soft_limit
        if excess < 0:
            return 0.0
        return min(self._max_delay, self._base_delay * 2.0 ** min(excess, 32))

    def failed(self, account: JID | None, address: str) -> None:
        now = self._clock()
        self._addresses.add(address, now)
        if account is not None:
            self._pairs.add((account, address), now)
            self._accounts.add(account, now)

    def succeeded(self, account: JID, address: str) -> None:
        # The owner got in from here: forget this pair's failures. The address's failures for
        # other accounts, and the account's failures from elsewhere, still count.
        self._pairs.clear((account, address))


def held_back(wait: float) -> tuple[int, str]:
    """For an address held back ``wait`` seconds: the whole seconds to tell it (a
    ``Retry-After``), and the one line that says so, the same on every face."""
    seconds = int(wait) + 1
    return seconds, f"too many failed attempts from your address; retry in {seconds} s"


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
