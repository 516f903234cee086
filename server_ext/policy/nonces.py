"""Single-use challenges for the HTTPS API: issued, burned once, forgotten after 2 minutes.

In memory only: a nonce is worth nothing after a restart (the device asks again), and keeping
them out of the registry keeps a flood of challenges from writing to disk. Pure, with the
clock injected; the cap keeps a flood from growing memory without bound.
"""

from __future__ import annotations

import base64
import secrets
from collections import OrderedDict
from collections.abc import Callable

from server_ext.errors import ServerExtError

NONCE_BYTES = 32
NONCE_LIFETIME = 120.0  # seconds: a device asks right before it signs
MAX_OUTSTANDING = 10_000


class TooManyChallenges(ServerExtError):
    """More challenges are outstanding than the server keeps; ask again later."""


class NonceBook:
    """Outstanding nonces, oldest first."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        lifetime: float = NONCE_LIFETIME,
        limit: int = MAX_OUTSTANDING,
    ) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._limit = limit
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        self._forget_expired(self._clock())
        return len(self._expiry)

    def issue(self) -> tuple[str, float]:
        """A fresh nonce (256 bits, base64url) and the clock reading at which it lapses."""
        now = self._clock()
        self._forget_expired(now)
        if len(self._expiry) >= self._limit:
            raise TooManyChallenges("too many challenges are outstanding; retry in a minute")
        nonce = base64.urlsafe_b64encode(secrets.token_bytes(NONCE_BYTES)).decode().rstrip("=")
        expires = now + self._lifetime
        self._expiry[nonce] = expires
        return nonce, expires

    def take(self, nonce: str) -> bool:
        """Burn ``nonce``: True once for a nonce issued here and not yet lapsed, else False."""
        now = self._clock()
        self._forget_expired(now)
        expires = self._expiry.pop(nonce, None)
        return expires is not None and expires > now

    def _forget_expired(self, now: float) -> None:
        while self._expiry:
            nonce, expires = next(iter(self._expiry.items()))
            if expires > now:
                break
            del self._expiry[nonce]
