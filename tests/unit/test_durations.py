"""One duration format for every CLI and server.toml (pairing.durations)."""

from __future__ import annotations

import datetime as dt

import pytest

from pairing.durations import InvalidDuration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h", 3600), ("7d", 604800), ("600", 600), ("1h30m", 5400),
     (" 2H ", 7200), ("1d2h3m4s", 93784), ("0", 0)],
)  # fmt: skip
def test_accepted(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)
    assert parse_duration(format_duration(dt.timedelta(seconds=seconds))).total_seconds() == seconds


@pytest.mark.parametrize(
    "text", ["", "10x", "1.5h", "-5m", "m", "30m1h", "1h1h", "10 m", "9" * 40, "1e3"]
)
def test_refused(text: str) -> None:
    with pytest.raises(InvalidDuration):
        parse_duration(text)
