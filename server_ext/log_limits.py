"""Logging what peers do wrong without letting a peer flood the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class CappedLog:
    """At most ``burst`` lines per ``period`` seconds for each kind of event; then one summary.

    Malformed input and refused connections are the attacker's to produce; the log must
    still show that they happen, but not one line each (python-zeroconf does the same).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        now = self._clock()
        start, count = self._windows.get(kind, (now, 0))
        if now - start >= self._period:
            if count > self._burst:
                self._logger.log(
                    level,
                    "%s: %d more in the last %.0f s (not shown)",
                    kind,
                    count - self._burst,
                    now - start,
                )
            start, count = now, 0
        count += 1
        self._windows[kind] = (start, count)
        if count <= self._burst:
            self._logger.log(level, message, *args)
