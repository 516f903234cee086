"""A peer cannot flood the server log: bursts are capped and summarised."""

from __future__ import annotations

import logging

import pytest

from server_ext.log_limits import CappedLog


def test_bursts_are_capped_then_summarised(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    capped = CappedLog(logging.getLogger("test.capped"), burst=3, period=60, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.capped"):
        for i in range(100):
            capped.log(logging.WARNING, "cap", "refused %d", i)
        assert [r.getMessage() for r in caplog.records] == ["refused 0", "refused 1", "refused 2"]
        now[0] = 61.0
        capped.log(logging.WARNING, "cap", "refused %d", 100)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[3] == "cap: 97 more in the last 61 s (not shown)"
    assert messages[4] == "refused 100"
