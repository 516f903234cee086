"""bench/fleet_bench.py against private ejabberd and Prosody instances, with a tiny fleet:
the EXTERNAL configurations it records (ejabberd: the device CA in c2s_cafile; Prosody:
mod_auth_ccert with the CA in c2s_ssl) keep working. No figure is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


def bench(script: str, out: Path, *args: str) -> tuple[dict[str, dict[str, Any]], str]:
    """Run ``bench/<script>`` with ``--json out``; its rows by server, and the end of its
    output (for a failed assertion)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {row["server"]: row for row in json.loads(out.read_text())}, done.stdout[-2000:]


def test_the_fleet_bench_logs_a_small_fleet_into_both_stock_servers(tmp_path: Path) -> None:
    rows, _ = bench(
        "fleet_bench.py",
        tmp_path / "fleet.json",
        *("--sessions", "6", "--servers", "ejabberd,prosody", "--idle", "0.3"),
        *("--probes", "2", "--per-client", "3"),
    )
    for server in ("ejabberd", "prosody"):
        row = rows[server]
        assert (row["held"], row["errors"], row["probe_errors"]) == (6, 0, 0), row


def test_the_storm_bench_restarts_both_stock_servers_under_device_agents(tmp_path: Path) -> None:
    """bench/storm_bench.py's stock side: device-agent state directories with CA-signed
    certificates log in to ejabberd (c2s_cafile) and Prosody (mod_auth_ccert), with XEP-0352,
    and come back after the server restarts on the same port."""
    rows, output = bench(
        "storm_bench.py",
        tmp_path / "storm.json",
        *("--devices", "4", "--agents-per-process", "2", "--downtime", "0.5"),
        *("--timeout", "60", "--servers", "ejabberd,prosody"),
    )
    assert set(rows) == {"ejabberd 23.01", "Prosody 0.12.3"}, output
    for row in rows.values():
        assert (row["cold_start_online"], row["back_online"], row["early"]) == (4, 4, 0), row
