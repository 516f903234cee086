"""One duration format for every CLI and configuration file: ``90s``, ``10m``, ``1h``, ``7d``.

Plain digits are seconds. Units may be combined, largest first (``1h30m``), as systemd and Go
write them. Nothing else is accepted: a typo must not become a surprising lifetime.
"""

from __future__ import annotations

import datetime as dt
import re

from pairing.errors import PairingError

__all__ = ["InvalidDuration", "format_duration", "parse_duration"]

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([dhms])")
_WHOLE = re.compile(r"(?:\d+[dhms])+|\d+")


class InvalidDuration(PairingError, ValueError):
    """Text that is not a duration in the one accepted format."""


def parse_duration(text: str) -> dt.timedelta:
    """``90s``, ``10m``, ``1h``, ``7d``, ``1h30m`` or plain seconds (``600``)."""
    cleaned = text.strip().lower()
    if len(cleaned) > 32 or not _WHOLE.fullmatch(cleaned):
        raise InvalidDuration(f"{text!r} is not a duration like 90s, 10m, 1h or 7d")
    if cleaned.isdigit():
        return dt.timedelta(seconds=int(cleaned))
    seen: list[str] = []
    seconds = 0
    for number, unit in _PART.findall(cleaned):
        if seen and list(_UNITS).index(unit) <= list(_UNITS).index(seen[-1]):
            raise InvalidDuration(f"{text!r}: give each unit once, largest first (1h30m)")
        seen.append(unit)
        seconds += int(number) * _UNITS[unit]
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta) -> str:
    """The shortest text :func:`parse_duration` reads back as ``delta`` (whole seconds)."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "0s"
    parts: list[str] = []
    for unit, size in _UNITS.items():
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)
